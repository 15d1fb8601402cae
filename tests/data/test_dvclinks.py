"""data/raw/<dataset> linked to the user's storage and DVC (issue 16 item 12)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from medssl import cli
from medssl.data import dvclinks

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _project(tmp_path: Path) -> tuple[Path, Path]:
    proj, ext = tmp_path / "proj", tmp_path / "storage" / "my_ct"
    (proj / "data" / "raw" / "kept").mkdir(parents=True)
    (proj / "data" / "raw" / "kept" / "a.nii.gz").write_bytes(b"a")
    ext.mkdir(parents=True)
    for i in range(3):
        (ext / f"case{i}.nii.gz").write_bytes(bytes([i]))
    os.symlink(ext, proj / "data" / "raw" / "my_ct")
    return proj, ext


def test_dvc_records_none_of_a_linked_folder(tmp_path):
    """The premise, with the installed DVC: `dvc add data/raw` skips a link to a folder."""
    proj, _ = _project(tmp_path)
    subprocess.run(["git", "init", "-q"], cwd=proj, check=True)
    subprocess.run([str(BIN / "dvc"), "init", "-q"], cwd=proj, check=True)
    subprocess.run([str(BIN / "dvc"), "add", "-q", "data/raw"], cwd=proj, check=True, capture_output=True)
    out = yaml.safe_load((proj / "data" / "raw.dvc").read_text())["outs"][0]
    assert out["nfiles"] == 1  # kept/a.nii.gz only: the three linked cases are not versioned


def test_check_dvc_refuses_a_link_leaving_data_raw_with_the_alternatives(tmp_path, capsys, monkeypatch):
    proj, ext = _project(tmp_path)
    (proj / "data.dvc").write_text("outs:\n- path: data/raw\n")
    monkeypatch.chdir(proj)
    assert cli.main(["check", "--dvc", "--params", str(ROOT / "params.yaml")]) == 1
    err = capsys.readouterr().err
    assert f"data/raw/my_ct is a symbolic link to {ext}, outside data/raw" in err
    for way in ("cp -r --reflink=auto", "dvc cache dir", "dvc import-url", "dvc remove data.dvc"):
        assert way in err
    assert cli.main(["check", "--params", str(ROOT / "params.yaml")]) == 0  # without --dvc: Snakemake is fine


def test_a_link_inside_data_raw_is_a_warning_and_no_dvc_no_check(tmp_path, caplog, monkeypatch):
    proj, _ = _project(tmp_path)
    (proj / "data" / "raw" / "my_ct").unlink()
    os.symlink("kept", proj / "data" / "raw" / "alias")  # two datasets of one release, one folder
    (proj / "data.dvc").write_text("outs:\n- path: data/raw\n")
    with caplog.at_level("WARNING"):
        assert dvclinks.check(proj) == []
    assert "data/raw/alias is a link to" in caplog.text and "re-create it" in caplog.text
    links = dvclinks.folder_links(proj / "data" / "raw")
    assert [(link.path.name, link.inside) for link in links] == [("alias", True)]
    proj2, _ = _project(tmp_path / "b")
    assert dvclinks.check(proj2) == []  # no data.dvc: the project does not version data/raw


def test_the_dvc_data_stage_runs_the_check_first():
    cmd = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["data"]["cmd"]
    assert cmd.startswith("medssl check --dvc && ")
