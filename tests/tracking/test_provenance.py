"""Provenance tags of every tracked run (medssl.provenance) and the parents' aggregates (medssl.tracking_summary).

The tags are checked against values computed here independently (git, hashlib,
json); the aggregates against numpy over the children's own final metrics.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import medssl
from medssl import paths, provenance, tracking, tracking_summary


@pytest.fixture
def uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh sqlite store in tmp_path, tracking on, the project root in tmp_path."""
    value = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", value)
    monkeypatch.setenv(tracking.TRACKING_ENV, "on")
    monkeypatch.setenv(paths.ROOT_ENV, str(tmp_path))
    return value


def _client(uri: str):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri)


def _runs(uri: str, study: str) -> dict[str, list]:
    client = _client(uri)
    exp = client.get_experiment_by_name(study)
    out: dict[str, list] = {}
    for r in client.search_runs([exp.experiment_id], max_results=1000):
        out.setdefault(r.info.run_name, []).append(r)
    return out


def _git(where: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", *args], cwd=where, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


# -------------------------------------------------------------------- git
def test_git_state_clean_dirty_and_none(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.txt").write_text("a")
    _git(repo, "add", "a.txt")
    _git(repo, "commit", "-q", "-m", "one")
    head = _git(repo, "rev-parse", "HEAD")
    provenance.git_state.cache_clear()
    assert provenance.git_state(str(repo)) == {"medssl.git_commit": head, "medssl.git_dirty": "false",
                                               "mlflow.source.git.commit": head}
    (repo / "a.txt").write_text("changed")
    assert provenance.git_state(str(repo))["medssl.git_dirty"] == "false"  # cached: git runs once per process
    provenance.git_state.cache_clear()
    assert provenance.git_state(str(repo))["medssl.git_dirty"] == "true"

    plain = tmp_path / "plain"
    plain.mkdir()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # no repository above tmp_path either
    state = provenance.git_state(str(plain))
    assert (state["medssl.git_commit"], state["medssl.git_dirty"]) == ("none", "unknown")
    assert state["medssl.git_note"].startswith(f"{plain} is not in a git work tree")
    assert "mlflow.source.git.commit" not in state

    provenance.git_state.cache_clear()
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    assert provenance.git_state(str(repo))["medssl.git_note"] == "git is not installed"
    provenance.git_state.cache_clear()


# ------------------------------------------------------------------- tags
def test_every_tracked_run_carries_the_provenance_tags(uri, tmp_path):
    provenance.git_state.cache_clear()
    dl = paths.datalist("ds")
    dl.parent.mkdir(parents=True)
    dl.write_text(json.dumps({"training": [{"case": "a"}]}))
    section = {"lr": 0.001, "patch": [16, 16, 16], "nested": {"b": 1, "a": 2}}
    with tracking.tracked_run("prov", "m", "ds", "linear", "linear/frac1.0/seed0", params={"lr": 0.001},
                              tags=provenance.run_tags(section, ["ds", "absent"])):
        pass
    (run,) = _runs(uri, "prov")["linear/frac1.0/seed0"]
    tags = run.data.tags
    canonical = json.dumps(section, sort_keys=True, separators=(",", ":")).encode()
    assert tags["medssl.config_sha256"] == hashlib.sha256(canonical).hexdigest()
    assert tags["medssl.datalist_sha256.ds"] == hashlib.sha256(dl.read_bytes()).hexdigest()
    assert tags["medssl.datalist_sha256.absent"] == "missing"
    assert tags["medssl.version"] == medssl.__version__
    # the work tree of the medssl package that ran, asked here with git itself
    code = Path(medssl.__file__).resolve().parent
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=code, capture_output=True, text=True)
    if head.returncode == 0:
        status = subprocess.run(["git", "status", "--porcelain"], cwd=code, capture_output=True, text=True)
        assert tags["medssl.git_commit"] == tags["mlflow.source.git.commit"] == head.stdout.strip()
        assert tags["medssl.git_dirty"] == ("true" if status.stdout.strip() else "false")
    else:
        assert (tags["medssl.git_commit"], tags["medssl.git_dirty"]) == ("none", "unknown")
        assert tags["medssl.git_note"]


def test_backbone_tags_hash_the_file_not_the_record(tmp_path):
    weights = tmp_path / "backbone.safetensors"
    weights.write_bytes(b"weights")
    tags = provenance.backbone_tags(weights, {"weights_sha256": "stale", "mlflow_run_id": "abc"})
    assert tags == {"medssl.backbone_sha256": hashlib.sha256(b"weights").hexdigest(),
                    "medssl.pretrain_run_id": "abc"}
    assert provenance.backbone_tags(weights, {"mlflow_run_id": None})["medssl.pretrain_run_id"] == "none"


# ------------------------------------------------------------- aggregates
def _child(study: str, name: str, protocol: str, metrics: dict, fail: bool = False) -> str:
    try:
        with tracking.tracked_run(study, "m", "ds", protocol, name, params={}) as run:
            run.log_metrics({"train_loss": 9.0}, step=1)
            run.log_metrics({"train_loss": metrics.pop("last_loss", 1.0)}, step=2)  # final = latest step
            run.log_metrics(metrics)
            if fail:
                raise RuntimeError("boom")
    except RuntimeError:
        pass
    return run.run_id


def test_parent_carries_mean_and_std_of_its_childrens_final_metrics(uri):
    rng = np.random.default_rng(0)
    values = {("linear", s): float(rng.random()) for s in range(3)}
    values.update({("finetune", s): float(rng.random()) for s in range(2)})
    loss = {k: float(rng.random()) for k in values}
    for (protocol, seed), dice in values.items():
        _child("agg", tracking.child_name(protocol, 1.0, seed), protocol,
               {"test_dice": dice, "last_loss": loss[protocol, seed]})
    _child("agg", tracking.child_name("finetune", 1.0, 3), "finetune", {"test_dice": 100.0}, fail=True)  # FAILED
    # seed 0 of finetune run again: only the later run counts
    values["finetune", 0] = 0.125
    _child("agg", tracking.child_name("finetune", 1.0, 0), "finetune", {"test_dice": 0.125,
                                                                         "last_loss": loss["finetune", 0]})
    (parent,) = _runs(uri, "agg")["m/ds"]
    got = parent.data.metrics
    for protocol, n in (("linear", 3), ("finetune", 2)):
        dice = np.array([v for (p, _), v in values.items() if p == protocol])
        losses = np.array([v for (p, _), v in loss.items() if p == protocol])
        group = f"{protocol}/frac1.0"
        assert got[f"{group}/test_dice_mean"] == pytest.approx(dice.mean(), abs=1e-12)
        assert got[f"{group}/test_dice_std"] == pytest.approx(dice.std(ddof=1), abs=1e-12)
        assert got[f"{group}/train_loss_mean"] == pytest.approx(losses.mean(), abs=1e-12)
        assert got[f"{group}/n_runs"] == n
    history = _client(uri).get_metric_history(parent.info.run_id, "linear/frac1.0/test_dice_mean")
    assert [m.step for m in history] == [1, 2, 3]  # updated as each child finished, step = runs in it


def test_single_run_groups_have_no_std_and_unnamed_rows():
    class R:
        def __init__(self, name, metrics, status="FINISHED", start=0):
            self.info = type("I", (), {"run_name": name, "status": status, "lifecycle_stage": "active",
                                       "start_time": start, "run_id": name + str(start)})()
            self.data = type("D", (), {"metrics": metrics})()

    out = {k: (v, s) for k, v, s in tracking_summary.aggregate(
        [R("seed0", {"acc": 0.5}), R("seed1", {"acc": 0.75, "x": float("nan")}), R("pretrain", {"loss": 2.0}),
         R("seed2", {"acc": 9.0}, status="KILLED")])}
    assert out == {"acc_mean": (0.625, 2), "acc_std": (pytest.approx(np.std([0.5, 0.75], ddof=1)), 2),
                   "n_runs": (2.0, 2), "pretrain/loss_mean": (2.0, 1), "pretrain/n_runs": (1.0, 1)}
    assert [tracking_summary.group_of(n) for n in ("linear/frac0.17/seed2", "seed0", "pretrain")] == [
        "linear/frac0.17", "", "pretrain"]
