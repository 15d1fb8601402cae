from __future__ import annotations

from pathlib import Path

from medssl import paths


def test_contract_paths(monkeypatch, tmp_path):
    monkeypatch.setenv(paths.ROOT_ENV, str(tmp_path))
    assert paths.raw("d") == tmp_path / "data/raw/d"
    assert paths.datalist("d") == tmp_path / "data/processed/d/datalist.json"
    assert paths.backbone_weights("s", "m") == tmp_path / "checkpoints/s/m/backbone.safetensors"
    assert paths.downstream_metrics("s", "d", "linear", "m", 0.1, 2) == (
        tmp_path / "results/s/runs/d/linear/m/frac0.1/seed2/metrics.json")
    assert paths.table("s", "tex") == tmp_path / "results/s/table.tex"


def test_wildcard_patterns_round_trip():
    pattern = str(paths.downstream_metrics("{study}", "{dataset}", "{protocol}", "{method}", "{frac}", "{seed}",
                                           base=Path(".")))
    assert pattern == "results/{study}/runs/{dataset}/{protocol}/{method}/frac{frac}/seed{seed}/metrics.json"
    concrete = str(paths.downstream_metrics("s", "d", "finetune", "m", 1.0, 0, base=Path(".")))
    assert concrete == pattern.format(study="s", dataset="d", protocol="finetune", method="m", frac="1.0", seed=0)
    assert paths.frac_tag(1) == paths.frac_tag("1.0") == "frac1.0"
