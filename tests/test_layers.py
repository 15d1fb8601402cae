"""--configfile layers for every medssl command, and the DVC route to a preset (issue 16 item 11)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from medssl import cli, config, layers
from medssl.yamlfile import read_yaml

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params.yaml"
BIN = Path(sys.executable).parent


def test_an_overlay_merges_key_by_key_and_replaces_lists(tmp_path):
    over = tmp_path / "over.yaml"
    over.write_text("downstream: {epochs: 3}\nstudies: {ssl3d: {fractions: [1.0]}}\n")
    base, merged = config.load(PARAMS), layers.load(PARAMS, [over])
    assert merged.downstream.epochs == 3
    assert merged.downstream.lr == base.downstream.lr  # a sibling key of the overlay survives
    assert merged.studies["ssl3d"].fractions == [1.0] != base.studies["ssl3d"].fractions  # a list is replaced
    assert merged.studies["ssl3d"].methods == base.studies["ssl3d"].methods
    assert list(merged.studies) == list(base.studies)


def test_the_layer_that_makes_the_configuration_invalid_is_named(tmp_path):
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text("downstream: {epochs: 3}\n")
    bad.write_text("studies: {ssl3d: {methods: [nosuch]}}\n")
    with pytest.raises(config.ConfigError, match=r"(?s)'nosuch' is not defined.*becomes invalid in .*bad\.yaml"):
        layers.load(PARAMS, [good, bad])
    with pytest.raises(config.ConfigError, match=r"(?s)becomes invalid in .*bad\.yaml"):
        layers.load(PARAMS, [bad, good])
    dup = tmp_path / "dup.yaml"
    dup.write_text("downstream:\n  epochs: 3\n  epochs: 4\n")
    with pytest.raises(config.ConfigError, match=r"dup\.yaml.*epochs"):  # strict YAML in overlays too
        layers.load(PARAMS, [dup])


def test_check_table_and_datasets_read_configfile_layers(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    over = tmp_path / "over.yaml"
    corpus = read_yaml(PARAMS)["datasets"]["phantom_corpus"]
    over.write_text(yaml.safe_dump({"datasets": {"my_extra": corpus}}))
    assert cli.main(["check", "--configfile", str(over)]) == 0
    out = capsys.readouterr().out
    assert f"params.yaml + {over}: valid" in out
    n_plain = len(config.load(PARAMS).datasets)
    assert f"({n_plain + 1} datasets" in out
    assert cli.main(["datasets", "--params-only", "--json", "--configfile", str(over)]) == 0
    assert '"my_extra"' in capsys.readouterr().out
    # one file per flag: a positional after --configfile stays a positional
    args = cli.build_parser().parse_args(["table", "--configfile", str(over), "ssl3d"])
    assert args.study == "ssl3d" and args.configfile == [str(over)]


def _dvc_project(tmp_path: Path) -> Path:
    proj = tmp_path / "proj"
    proj.mkdir()
    for rel in ("params.yaml", "dvc.yaml", "workflow/presets"):
        src = ROOT / rel
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, proj / rel)
    subprocess.run(["git", "init", "-q"], cwd=proj, check=True)
    subprocess.run([str(BIN / "dvc"), "init", "-q"], cwd=proj, check=True)
    return proj


def _stages(proj: Path) -> set[str]:
    res = subprocess.run([str(BIN / "dvc"), "stage", "list", "--name-only"], cwd=proj, capture_output=True,
                         text=True, check=True)
    return set(res.stdout.split())


def test_dvc_runs_a_preset_through_medssl_config_only_targets(tmp_path):
    """DVC reads params.yaml only and its foreach runs every study: `medssl config --configfile PRESET
    --only-targets -o params.yaml` gives it the preset's target studies and nothing else."""
    proj = _dvc_project(tmp_path)
    before = _stages(proj)
    assert {"downstream@ssl3d", "report@ssl3d"} <= before and "downstream@gvsl_paper" not in before
    res = subprocess.run([str(BIN / "medssl"), "config", "--configfile", "workflow/presets/gvsl.yaml",
                          "--only-targets", "-o", "params.yaml"], cwd=proj, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    after = _stages(proj)
    assert {s for s in after if "@" in s} == {"downstream@gvsl_paper", "report@gvsl_paper"}, after
    dag = subprocess.run([str(BIN / "dvc"), "dag", "--md", "report"], cwd=proj, capture_output=True, text=True,
                         check=True).stdout
    assert set(re.findall(r'node\d+\["([^"]+)"\]', dag)) == {"data", "pretrain", "downstream@gvsl_paper",
                                                             "report@gvsl_paper"}, dag
    written = read_yaml(proj / "params.yaml")
    preset = read_yaml(ROOT / "workflow/presets/gvsl.yaml")
    assert "targets" not in written and list(written["studies"]) == ["gvsl_paper"]
    assert written["studies"]["gvsl_paper"]["datasets"] == preset["studies"]["gvsl_paper"]["datasets"]
    assert config.load(proj / "params.yaml").studies["gvsl_paper"].kind == "ssl"
