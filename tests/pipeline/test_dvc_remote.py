"""DVC remote round trip: push data and checkpoints, lose workspace and cache, pull them back.

A copied project with the tiny configuration (one ssl study, one method) is
put under git, its raw data added to DVC, and ``dvc repro pretrain`` builds
``data/processed`` and ``checkpoints``. ``dvc push`` to a local-directory
remote, then the workspace copies *and* ``.dvc/cache`` are deleted, so
``dvc pull`` can only succeed from the remote; every file must come back byte
for byte and the stages must be up to date. S3 and SSH remotes work the same
way with the ``dvc[s3]`` / ``dvc[ssh]`` extras (README, "DVC remote").
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from .conftest import copy_project, env_for

pytestmark = pytest.mark.slow

OUTS = ("data/raw", "data/processed", "checkpoints")
# What this test builds; the other stages never ran, so a bare `dvc pull` would fail on them.
TARGETS = ["data.dvc", "data", "pretrain"]
TIMES: dict[str, float] = {}


def _run(cmd: list[str], project: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``cmd`` in ``project`` (tracking off: not under test here), timed into TIMES."""
    env = env_for(project)
    env["MEDSSL_TRACKING"] = "off"
    start = time.monotonic()
    res = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, timeout=timeout)
    TIMES[" ".join(cmd[:2])] = time.monotonic() - start
    assert res.returncode == 0, (
        f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}")
    return res


def _snapshot(project: Path) -> dict[str, str]:
    """sha256 of every file under the DVC-tracked folders, by relative path."""
    return {str(f.relative_to(project)): hashlib.sha256(f.read_bytes()).hexdigest()
            for out in OUTS for f in sorted((project / out).rglob("*")) if f.is_file()}


def _status(project: Path, *flags: str) -> dict:
    return json.loads(_run(["dvc", "status", "--json", *flags, *TARGETS], project).stdout or "{}")


def test_push_wipe_pull_round_trip(tmp_path, tiny_params):
    project = copy_project(tmp_path / "project")
    p = tiny_params()
    p["targets"] = ["ssl3d"]
    p["studies"]["ssl3d"]["methods"] = ["genesis"]
    (project / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    git = ["git", "-c", "user.email=ci@medssl", "-c", "user.name=ci"]
    _run(["git", "init", "-q"], project)
    _run(["git", "add", "-A"], project)
    _run([*git, "commit", "-qm", "tiny"], project)
    study = p["studies"]["ssl3d"]
    corpus = study["pretrain_dataset"]
    datasets = study["datasets"] + (corpus if isinstance(corpus, list) else [corpus])
    _run(["medssl", "fetch", "--no-progress", *sorted(set(datasets))], project)
    _run(["dvc", "add", "-q", "data/raw"], project)
    _run(["dvc", "repro", "pretrain"], project, timeout=600)

    before = _snapshot(project)
    assert any(k.startswith("checkpoints/ssl3d/genesis/backbone.safetensors") for k in before), sorted(before)
    assert any(k.endswith("datalist.json") for k in before) and any(k.startswith("data/raw/") for k in before)
    assert _status(project) == {}

    remote = tmp_path / "remote"
    _run(["dvc", "remote", "add", "-d", "local", str(remote)], project)
    pushed = _run(["dvc", "push", *TARGETS], project)
    count = re.search(r"(\d+) files? pushed", pushed.stdout)
    assert count and int(count.group(1)) >= len(set(before.values())), pushed.stdout  # + .dir manifests
    assert len([f for f in remote.rglob("*") if f.is_file()]) >= len(set(before.values()))
    assert _status(project, "--cloud") == {}

    for out in OUTS:
        shutil.rmtree(project / out)
    shutil.rmtree(project / ".dvc" / "cache")
    assert _snapshot(project) == {}
    missing = _status(project)
    assert set(missing) == set(TARGETS), missing  # every stage sees its outs gone

    _run(["dvc", "pull", *TARGETS], project)
    assert _snapshot(project) == before
    assert _status(project) == {}
    assert _status(project, "--cloud") == {}
    print(f"\n{len(before)} files; " + ", ".join(f"{k} {v:.1f} s" for k, v in TIMES.items()))
