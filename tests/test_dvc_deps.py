"""Each dvc.yaml stage depends on every module its commands import (issue 16 item 13).

Editing the Sinkhorn never retrained S2DC under `dvc repro`: the pretrain stage's hand-written deps
lacked `ot/`, `geometry/`, `registry.py`, `config.py`. Here the modules a stage runs are found from
the code itself -- the medssl commands its Snakemake rules call (parsed from workflow/rules), the
`cmd_*` function of each in commands.py, and every import below it, function-level imports included
(commands import lazily) -- and each must lie under one of the stage's deps.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"

# The Snakemake targets of each stage run these rules' commands (the rule files name them).
STAGE_RULE_FILES = {
    "data": ["data.smk"],
    "pretrain": ["pretrain.smk"],
    "pretext": ["report.smk:pretext_table"],
    "downstream": ["downstream.smk", "template.smk", "uda.smk"],
    "report": ["report.smk:table", "report.smk:figures", "report.smk:figures_ssl"],
    "claims": ["report.smk:claims"],
}


def _commands(spec: str) -> set[str]:
    """The medssl subcommands in a rule file (or in its rules whose name contains ``:word``)."""
    name, _, only = spec.partition(":")
    text = (ROOT / "workflow" / "rules" / name).read_text()
    if only:
        blocks = re.split(r"^\s*rule ", text, flags=re.M)  # rules may sit under an `if`
        text = "\n".join(b for b in blocks if b.split(":", 1)[0].strip() == only)
    found = set(re.findall(r"(?:medssl|\{params\.launcher\}) ([a-z][a-z-]+)", text))
    return found - {"init-tracking"}  # onstart, not a stage's command


def _module_file(name: str) -> Path | None:
    base = SRC / Path(*name.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _imports(tree: ast.AST, module: str, is_pkg: bool) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = module.split(".")
                base = parts if is_pkg else parts[:-1]
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names}  # `from medssl.ot import sinkhorn`
    return {m for m in out if m == "medssl" or m.startswith("medssl.")}


REGISTRY = SRC / "medssl" / "registry.py"


def _lazy_targets() -> set[str]:
    """The modules registry.py names as "module:attribute" (imported by registry.resolve only)."""
    return {m.group(1) for node in ast.walk(ast.parse(REGISTRY.read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            for m in [re.fullmatch(r"(medssl(?:\.\w+)+):\w+", node.value)] if m}


def closure(start: set[str]) -> set[Path]:
    """The files of every medssl module reachable by imports from ``start`` (packages' __init__ too);
    once a reached module calls ``registry.resolve``, every module the registry names is reached too."""
    files = _closure(start)
    if any("registry.resolve(" in f.read_text() for f in files if f != REGISTRY):
        files = _closure(start | _lazy_targets())
    return files


def _closure(start: set[str]) -> set[Path]:
    seen: dict[str, Path] = {}
    todo = list(start)
    while todo:
        name = todo.pop()
        f = _module_file(name)
        if f is None or name in seen:
            continue
        seen[name] = f
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        todo += _imports(ast.parse(f.read_text()), name, f.name == "__init__.py")
    return set(seen.values())


def command_modules(command: str) -> set[Path]:
    """The files `medssl COMMAND` may run: cli.py, its cmd function in commands.py, the helpers
    there that it calls, and every module below them."""
    cli, commands = SRC / "medssl" / "cli.py", SRC / "medssl" / "commands.py"
    tree = ast.parse(commands.read_text())
    func = f"cmd_{command.replace('-', '_')}"
    fn = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == func), None)
    assert fn is not None, f"commands.py has no {func} for `medssl {command}`"
    defs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("cmd_")}
    helpers, todo = [], [fn]
    while todo:  # the helpers the command calls, and the helpers they call
        used = {n.id for n in ast.walk(todo.pop()) if isinstance(n, ast.Name)}
        for name in sorted(used & set(defs)):
            if defs[name] not in helpers:
                helpers.append(defs[name])
                todo.append(defs[name])
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    roots = _imports(ast.parse(cli.read_text()), "medssl.cli", False) - {"medssl.commands"}
    for node in [fn, *helpers, *top]:
        roots |= _imports(node, "medssl.commands", False)
    return closure(roots - {"medssl.commands"}) | {cli, commands}


def _stage_deps() -> dict[str, list[str]]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {name: (st.get("do", st)).get("deps", []) for name, st in stages.items()}


def test_every_stage_is_mapped_to_its_rules():
    assert set(_stage_deps()) == set(STAGE_RULE_FILES)
    for stage, specs in STAGE_RULE_FILES.items():
        assert set().union(*map(_commands, specs)), f"no medssl command found for stage {stage}"


@pytest.mark.parametrize("stage", sorted(STAGE_RULE_FILES))
def test_stage_deps_cover_the_modules_its_commands_import(stage):
    deps = [ROOT / d for d in _stage_deps()[stage]]
    commands = set().union(*map(_commands, STAGE_RULE_FILES[stage]))
    files = set().union(*map(command_modules, commands))
    missing = sorted(str(f.relative_to(ROOT)) for f in files
                     if not any(f == d or d in f.parents for d in deps))
    assert not missing, f"dvc.yaml stage {stage!r} (medssl {', '.join(sorted(commands))}) lacks deps: {missing}"


def test_the_closure_finds_a_lazy_import_below_a_function():
    """The check can fail: pre-training reaches the Sinkhorn (medssl.ot) only through S2DC's module,
    which only registry.py's lazy "module:attribute" string names."""
    files = {str(f.relative_to(SRC)) for f in command_modules("pretrain")}
    assert "medssl/ot/sinkhorn.py" in files or any(f.startswith("medssl/ot/") for f in files), sorted(files)
    assert "medssl/registry.py" in files and "medssl/config.py" in files
    assert not any(f.startswith("medssl/report/") for f in files)  # not everything: the report is not run
