"""Provenance of a tracked run: which code, configuration, data and checkpoint made it (MLflow tags).

Every run (:func:`medssl.tracking.tracked_run` adds :func:`code_tags` itself) carries:

==================================  ==========================================================
``medssl.version``                  ``medssl.__version__``
``medssl.git_commit``               ``git rev-parse HEAD`` of the work tree holding the medssl
                                    package that ran, or ``none`` (then ``medssl.git_note`` says
                                    why: not a work tree, no git, a timeout)
``medssl.git_dirty``                ``true`` when ``git status --porcelain`` lists anything
                                    (modified, staged or untracked, not ignored), ``false``,
                                    ``unknown`` without a commit
``mlflow.source.git.commit``        the commit again, where MLflow's UI looks for it
``medssl.config_sha256``            :func:`config_hash` of the resolved configuration section
                                    the run used (the stages pass it, :func:`run_tags`)
``medssl.datalist_sha256.<name>``   sha256 of ``data/processed/<name>/datalist.json``, for each
                                    dataset the run read (``missing`` when there is none)
==================================  ==========================================================

Downstream runs add :func:`backbone_tags`: ``medssl.backbone_sha256`` (sha256 of the
``backbone.safetensors`` they loaded) and ``medssl.pretrain_run_id`` (the MLflow run id
that pre-training recorded in ``backbone.json`` as ``mlflow_run_id``; ``none`` when it
ran untracked).

Git is asked once per process and work tree (:func:`git_state` is cached), each
command with a :data:`GIT_TIMEOUT_S` timeout, so a slow network file system costs
one wait, not one per run.
"""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from medssl import __version__, paths

GIT_TIMEOUT_S = 10.0
CODE_DIR = Path(__file__).resolve().parent  # the medssl package that runs (src/medssl in an editable install)
NO_COMMIT = "none"


def sha256_file(path: Path | str) -> str:
    """Hex sha256 of the file ``path``, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def config_hash(section: Any) -> str:
    """Hex sha256 of ``section`` as canonical JSON (sorted keys, no spaces; non-JSON values as ``str``)."""
    text = json.dumps(section, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@functools.cache
def git_state(directory: str) -> dict[str, str]:
    """The git tags of the work tree holding ``directory`` (cached: git runs once per process and tree)."""
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=directory, capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_S, check=False)

    def none(why: str) -> dict[str, str]:
        return {"medssl.git_commit": NO_COMMIT, "medssl.git_dirty": "unknown", "medssl.git_note": why}

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            first = (head.stderr.strip().splitlines() or [f"exit status {head.returncode}"])[0]
            return none(f"{directory} is not in a git work tree with a commit ({first[:200]})")
        status = git("status", "--porcelain")
    except FileNotFoundError:
        return none("git is not installed")
    except subprocess.TimeoutExpired:
        return none(f"git did not answer within {GIT_TIMEOUT_S:g} s in {directory}")
    except OSError as exc:  # cwd missing, permission denied ...
        return none(f"git could not run in {directory} ({exc})")
    commit = head.stdout.strip()
    dirty = "unknown" if status.returncode != 0 else ("true" if status.stdout.strip() else "false")
    return {"medssl.git_commit": commit, "medssl.git_dirty": dirty, "mlflow.source.git.commit": commit}


def code_tags() -> dict[str, str]:
    """medssl's version and the git state of its work tree (set on every tracked run)."""
    return {"medssl.version": __version__, **git_state(str(CODE_DIR))}


def datalist_tags(datasets: Iterable[str]) -> dict[str, str]:
    """``medssl.datalist_sha256.<name>``: sha256 of each dataset's ``datalist.json`` (``missing`` if absent)."""
    out = {}
    for name in datasets:
        path = paths.datalist(name)
        out[f"medssl.datalist_sha256.{name}"] = sha256_file(path) if path.is_file() else "missing"
    return out


def run_tags(config: Any, datasets: Iterable[str] = ()) -> dict[str, str]:
    """The per-run provenance: ``medssl.config_sha256`` of ``config`` and the datalist hashes."""
    return {"medssl.config_sha256": config_hash(config), **datalist_tags(datasets)}


def backbone_tags(weights: Path | str, record: Mapping[str, Any]) -> dict[str, str]:
    """The checkpoint a downstream run loaded: its sha256 and the pre-training run that wrote it.

    Args:
        weights: the ``backbone.safetensors`` file (hashed here, not read from the record).
        record: its ``backbone.json`` (``mlflow_run_id``: the pre-training run, None when untracked).
    """
    return {"medssl.backbone_sha256": sha256_file(weights),
            "medssl.pretrain_run_id": str(record.get("mlflow_run_id") or NO_COMMIT)}
