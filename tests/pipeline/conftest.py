"""A temporary copy of the project with a tiny configuration, for end-to-end runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def copy_project(dest: Path) -> Path:
    """Copy the files git knows (tracked or not ignored) into ``dest``."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           check=True, capture_output=True, text=True).stdout.split("\n")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_symlink():  # profiles -> workflow/profiles
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.readlink(src), dest / rel)
        elif src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def env_for(project: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("MLFLOW_TRACKING_URI", None)
    env["MEDSSL_TRACKING"] = "on"
    env.pop("MEDSSL_PARAMS", None)
    env["OMP_NUM_THREADS"] = "1"
    return env


def run(cmd: list[str], project: Path, timeout: int = 900, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=project, env=env_for(project), capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-4000:]}\n{res.stderr[-6000:]}")
    return res


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory, tiny_params) -> Path:
    project = copy_project(tmp_path_factory.mktemp("project"))
    (project / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    return project
