# Two entry points for a fresh clone (see README):
#   make benchmark   install, fetch the built-in phantoms, run the default benchmark
#   make test        install with the test extras, run the test-suite
# TORCH pins the CPU wheel on laptops/CI; on a GPU cluster `torch==2.13.0` from
# PyPI is the CUDA build, which is what you want there.
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
CORES  ?= 2
BIN     = $(VENV)/bin

.PHONY: install install-test benchmark test clean-results

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH)"

install: $(BIN)/python
	$(BIN)/pip install -q -e .

install-test: $(BIN)/python
	$(BIN)/pip install -q -e ".[test]"

benchmark: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --cores $(CORES)
	@cat results/*/table.md

test: install-test
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest

clean-results:
	rm -rf results checkpoints logs .snakemake/incomplete
