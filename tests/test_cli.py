from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from medssl import cli

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["check", "config", "schema", "fetch", "validate", "preprocess", "figures", "pretrain", "downstream", "template", "stn", "uda", "table",
          "init-tracking"]


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_has_help(stage, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([stage, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert f"medssl {stage}" in out and "--params" in out


def test_check_and_schema(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert cli.main(["check"]) == 0
    assert "valid" in capsys.readouterr().out
    out = tmp_path / "schema.json"
    assert cli.main(["schema", "-o", str(out)]) == 0
    assert json.loads(out.read_text())["title"] == "medssl params.yaml"


def test_bad_params_exit_2_with_message(tmp_path, capsys):
    import yaml

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["studies"]["ssl3d"]["methods"] = ["mae"]
    bad = tmp_path / "p.yaml"
    bad.write_text(yaml.safe_dump(raw))
    assert cli.main(["check", "--params", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "p.yaml: invalid configuration" in err and "'mae' is not defined" in err


def test_unknown_dataset_is_named(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit, match="unknown dataset 'nih'"):
        cli.main(["fetch", "nih"])


def test_console_script_installed():
    res = subprocess.run([str(Path(sys.executable).parent / "medssl"), "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.startswith("medssl ")


def test_training_stages_leave_by_fast_exit_with_their_status_and_flushed_output():
    """`medssl stn` (a FAST_EXIT stage) ends with os._exit: its status and its last log lines survive."""
    code = ("import atexit, sys; from medssl import cli; atexit.register(lambda: print('ATEXIT', flush=True)); "
            "cli.run(sys.argv[1:])")
    res = subprocess.run([sys.executable, "-c", code, "stn", "stn", "nosuch", "--params", str(ROOT / "params.yaml")],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert res.returncode == 1, res.stderr
    assert res.stderr.splitlines()[-1].startswith("error: model 'nosuch' is not in study 'stn'"), res.stderr
    assert "ATEXIT" not in res.stdout  # the interpreter's teardown (atexit handlers) was skipped
    other = subprocess.run([sys.executable, "-c", code, "check", "--params", str(ROOT / "params.yaml")],
                           capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert other.returncode == 0 and "ATEXIT" in other.stdout  # other stages exit normally


def test_a_failing_stage_prints_its_error_once(tmp_path, capfd, monkeypatch):
    """Issue 16 item 14: the message was logged and printed (twice on the terminal)."""
    monkeypatch.chdir(ROOT)
    assert cli.main(["stn", "stn", "nosuch"]) == 1
    err = capfd.readouterr().err
    assert err.count("model 'nosuch' is not in study 'stn'") == 1, err


def test_permission_denied_is_a_message_naming_the_read_only_folder(tmp_path, capfd, monkeypatch):
    """A read-only output folder gave a raw PermissionError traceback. The tests run as root (mode bits
    do not bind root), so the denial is raised as the OS would raise it and the folder made read-only
    for os.access."""
    ro = tmp_path / "results"
    ro.mkdir()

    def denied(args):
        raise PermissionError(13, "Permission denied", str(ro / ".table.md.x.tmp"))

    monkeypatch.setattr(cli, "cmd_table", denied)
    monkeypatch.setattr(cli.os, "access", lambda path, mode: Path(path) != ro)
    monkeypatch.chdir(ROOT)
    assert cli.main(["table", "ssl3d"]) == 1
    err = capfd.readouterr().err
    assert f"error: cannot write in {ro}: the folder is read-only" in err and "Traceback" not in err
    monkeypatch.setattr(cli.os, "access", lambda path, mode: True)  # the folder is fine: the file is named
    assert cli.main(["table", "ssl3d"]) == 1
    assert f"error: {ro / '.table.md.x.tmp'}: permission denied" in capfd.readouterr().err
