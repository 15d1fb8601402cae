"""Tests of medssl.tracking: run layout, failures, duplicate parents, tracking off.

Concurrent writers (8 processes, sqlite and an mlflow server) are in tests/tracking/."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from medssl import tracking


@pytest.fixture
def uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh sqlite store in tmp_path, named by MLFLOW_TRACKING_URI."""
    value = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", value)
    monkeypatch.delenv(tracking.TRACKING_ENV, raising=False)
    return value


def _client(uri: str):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri)


def _runs(uri: str, study: str) -> list:
    client = _client(uri)
    exp = client.get_experiment_by_name(study)
    return client.search_runs([exp.experiment_id], max_results=1000)


# ----------------------------------------------------------------- helpers
@pytest.mark.parametrize("args, expected", [
    (("linear", 1.0, 0), "linear/frac1.0/seed0"),
    (("finetune", 0.25, 3), "finetune/frac0.25/seed3"),
    (("linear", 1, 2), "linear/frac1.0/seed2"),
])
def test_child_name(args, expected):
    assert tracking.child_name(*args) == expected


@pytest.mark.parametrize("uri, expected", [
    ("sqlite:////abs/dir/mlflow.db", Path("/abs/dir/mlflow.db")),
    ("sqlite:///rel.db", Path("rel.db")),
    ("sqlite:///:memory:", None),
    ("http://127.0.0.1:5000", None),
])
def test_sqlite_path(uri, expected):
    assert tracking.sqlite_path(uri) == expected


def test_flatten_params():
    assert tracking.flatten_params({"lr": 0.001, "args": {"p": 0.9, "q": {"r": [1, 2]}}}) == {
        "lr": "0.001", "args.p": "0.9", "args.q.r": "[1, 2]"}


def test_retry_retries_lock_errors_only(monkeypatch, caplog):
    caplog.set_level("DEBUG", logger="medssl.tracking")
    sleeps: list[float] = []
    monkeypatch.setattr(tracking.time, "sleep", sleeps.append)
    calls = []

    def flaky(x, y=0):
        calls.append(x)
        if len(calls) < 3:
            raise RuntimeError("wrapped") from sqlite3.OperationalError("database is locked")
        return x + y

    assert tracking.retry(flaky, 2, y=3) == 5
    assert len(calls) == 3 and len(sleeps) == 2
    assert 0.05 <= sleeps[0] <= 0.15 and 0.1 <= sleeps[1] <= 0.3
    retries = [r.getMessage() for r in caplog.records if r.name == "medssl.tracking"]
    assert len(retries) == 2 and retries[0].startswith("retry 1 of flaky in 0.")
    assert retries[1].endswith("after a lock error: wrapped")

    def broken():
        calls.append("b")
        raise KeyError("not a lock error")

    calls.clear()
    with pytest.raises(KeyError):
        tracking.retry(broken)
    assert calls == ["b"]

    def locked():
        calls.append("l")
        raise RuntimeError("(sqlite3.OperationalError) database is locked")

    calls.clear()
    with pytest.raises(RuntimeError, match="database is locked"):
        tracking.retry(locked, attempts=4)
    assert calls == ["l"] * 4
    with pytest.raises(ValueError, match="attempts must be >= 1, got 0"):
        tracking.retry(locked, attempts=0)


# ------------------------------------------------------------------ layout
def test_nested_layout(uri, tmp_path):
    assert tracking.init_store() == uri
    metrics_file = tmp_path / "metrics.json"
    metrics_file.write_text(json.dumps({"metrics": {"dice": 0.5}}))
    with tracking.tracked_run("ssl3d", "genesis", "phantom_organs", "linear",
                              tracking.child_name("linear", 1.0, 0),
                              params={"lr": 0.001, "args": {"paint_prob": 0.9}},
                              tags={"seed": 0, "fraction": 1.0}) as run:
        for epoch in range(1, 4):
            run.log_metrics({"train_loss": 1.0 / epoch, "val_metric": 0.1 * epoch}, step=epoch)
        run.log_metrics({"dice": 0.5, "hd95": 4.25})
        run.log_artifact(metrics_file)
        child_id = run.run_id

    runs = {r.info.run_name: r for r in _runs(uri, "ssl3d")}
    assert sorted(runs) == ["genesis/phantom_organs", "linear/frac1.0/seed0"]
    parent, child = runs["genesis/phantom_organs"], runs["linear/frac1.0/seed0"]
    assert child.info.run_id == child_id
    assert {k: parent.data.tags[k] for k in ("study", "method", "dataset", "protocol")} == {
        "study": "ssl3d", "method": "genesis", "dataset": "phantom_organs", "protocol": "linear"}
    assert "mlflow.parentRunId" not in parent.data.tags
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert (child.data.tags["protocol"], child.data.tags["seed"], child.data.tags["fraction"]) == (
        "linear", "0", "1.0")
    assert child.data.params == {"lr": "0.001", "args.paint_prob": "0.9"}
    assert child.data.metrics == {"train_loss": pytest.approx(1 / 3), "val_metric": pytest.approx(0.3),
                                  "dice": 0.5, "hd95": 4.25}
    assert child.info.status == "FINISHED"
    history = _client(uri).get_metric_history(child_id, "train_loss")
    assert [(m.step, m.value) for m in history] == [(1, 1.0), (2, 0.5), (3, pytest.approx(1 / 3))]
    assert [a.path for a in _client(uri).list_artifacts(child_id)] == ["metrics.json"]
    stored = tmp_path / "mlartifacts" / "ssl3d" / child_id / "artifacts" / "metrics.json"
    assert json.loads(stored.read_text()) == {"metrics": {"dice": 0.5}}


def test_children_share_parent_and_protocols_accumulate(uri):
    tracking.init_store(uri)
    ids = []
    for protocol, seed in [("linear", 0), ("linear", 1), ("finetune", 0)]:
        with tracking.tracked_run("ssl3d", "scratch", "phantom_lesion", protocol,
                                  tracking.child_name(protocol, 1.0, seed), params={}, uri=uri) as run:
            ids.append(run.run_id)
    with tracking.tracked_run("ssl3d", "scratch", "phantom_corpus", "pretrain", "pretrain",
                              params={"epochs": 6}, uri=uri):
        pass
    runs = _runs(uri, "ssl3d")
    parents = {r.info.run_name: r for r in runs if r.data.tags[tracking.ROLE_TAG] == "parent"}
    assert sorted(parents) == ["scratch/phantom_corpus", "scratch/phantom_lesion"]
    assert parents["scratch/phantom_lesion"].data.tags["protocol"] == "finetune,linear"
    assert parents["scratch/phantom_corpus"].data.tags["protocol"] == "pretrain"
    children = {r.info.run_id: r.data.tags["mlflow.parentRunId"] for r in runs
                if r.data.tags[tracking.ROLE_TAG] == "child"}
    lesion = parents["scratch/phantom_lesion"].info.run_id
    assert [children[i] for i in ids] == [lesion] * 3
    assert len(children) == 4 and len(set(children.values())) == 2


def test_failure_marks_child_failed(uri):
    with pytest.raises(RuntimeError, match="boom"):
        with tracking.tracked_run("ssl3d", "genesis", "phantom_organs", "finetune",
                                  "finetune/frac1.0/seed0", params={"lr": 0.1}, uri=uri) as run:
            run.log_metrics({"train_loss": 0.75}, step=1)
            raise RuntimeError("boom")
    runs = {r.info.run_name: r for r in _runs(uri, "ssl3d")}
    child = runs["finetune/frac1.0/seed0"]
    assert child.info.status == "FAILED"
    assert child.data.metrics == {"train_loss": 0.75}  # buffered metrics still written


def test_deleted_experiment_is_restored(uri):
    with tracking.tracked_run("ssl3d", "m", "d", "linear", "c0", params={}, uri=uri):
        pass
    client = _client(uri)
    client.delete_experiment(client.get_experiment_by_name("ssl3d").experiment_id)
    with tracking.tracked_run("ssl3d", "m", "d", "linear", "c1", params={}, uri=uri):
        pass
    assert client.get_experiment_by_name("ssl3d").lifecycle_stage == "active"
    assert sorted(r.info.run_name for r in _runs(uri, "ssl3d")) == ["c0", "c1", "m/d"]


def test_bad_arguments(uri, tmp_path):
    with pytest.raises(ValueError, match="method must be a non-empty string without quotes, got \"a'b\""):
        with tracking.tracked_run("ssl3d", "a'b", "d", "linear", "c", params={}, uri=uri):
            pass
    with tracking.tracked_run("ssl3d", "m", "d", "linear", "c", params={}, uri=uri) as run:
        with pytest.raises(ValueError, match="metric 'dice' must be a number, got 'high'"):
            run.log_metrics({"dice": "high"})
        with pytest.raises(ValueError, match=f"{tmp_path / 'nope.json'}: artifact file not found"):
            run.log_artifact(tmp_path / "nope.json")


def test_tracking_off_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv(tracking.TRACKING_ENV, "off")
    db = tmp_path / "off.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    f = tmp_path / "m.json"
    f.write_text("{}")
    with tracking.tracked_run("ssl3d", "m", "d", "linear", "c", params={"a": 1}) as run:
        run.log_params({"b": 2})
        run.log_metrics({"x": 1.0}, step=1)
        run.log_artifact(f)
        run.flush()
        assert (run.run_id, run.enabled) == ("", False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


@pytest.mark.parametrize("preset, expected", [(None, "true"), ("false", "false")])
def test_mlflow_telemetry_off_unless_chosen(tmp_path, preset, expected):
    """A fresh interpreter (like a pipeline job, outside pytest) imports mlflow through
    medssl.tracking with telemetry off, whose background thread can break REST calls."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTEST_CURRENT_TEST", "MLFLOW_DISABLE_TELEMETRY", "CI")}
    if preset is not None:
        env["MLFLOW_DISABLE_TELEMETRY"] = preset
    code = ("import os, sys; from medssl import tracking; tracking._client(sys.argv[1]);"
            "from mlflow.telemetry import get_telemetry_client as g;"
            "print(os.environ['MLFLOW_DISABLE_TELEMETRY'], g() is None)")
    out = subprocess.run([sys.executable, "-c", code, f"sqlite:///{tmp_path / 'x.db'}"], env=env,
                         capture_output=True, text=True, timeout=120, check=True).stdout.split()
    assert out[0] == expected
    if preset is None:
        assert out[1] == "True"


# ------------------------------------------------- duplicate parents (server)
def test_converge_parents_merges_duplicates(uri):
    """Without the sqlite lock (a server store) writers may create a parent each; the
    earliest by (start_time, run_id) is kept, children move to it, protocols merge.
    The 8-writer test against a real server is tests/tracking/test_concurrent_writers.py."""
    with tracking.tracked_run("dup", "m", "d", "linear", "linear/frac1.0/seed0", params={}, uri=uri) as run:
        own = run.run_id
    client = _client(uri)
    exp_id = client.get_experiment_by_name("dup").experiment_id
    first = next(r for r in _runs(uri, "dup") if r.info.run_name == "m/d")
    tags = {"study": "dup", "method": "m", "dataset": "d", tracking.ROLE_TAG: "parent"}
    later = client.create_run(exp_id, start_time=first.info.start_time + 1000, run_name="m/d",
                              tags={**tags, "protocol": "finetune"}).info.run_id
    moved = client.create_run(exp_id, run_name="finetune/frac1.0/seed0",
                              tags={"protocol": "finetune", tracking.PARENT_TAG: later}).info.run_id
    earliest = client.create_run(exp_id, start_time=first.info.start_time - 1000, run_name="m/d",
                                 tags={**tags, "protocol": "pretrain"}).info.run_id
    other = client.create_run(exp_id, run_name="x/d", tags={**tags, "method": "x"}).info.run_id

    assert tracking._converge_parents(client, exp_id, "dup", "m", "d", own) == earliest
    active = {r.info.run_id for r in _runs(uri, "dup")}
    assert active == {own, moved, earliest, other}  # the two later parents were deleted
    for gone in (first.info.run_id, later):
        assert client.get_run(gone).info.lifecycle_stage == "deleted"
    assert client.get_run(own).data.tags[tracking.PARENT_TAG] == earliest
    assert client.get_run(moved).data.tags[tracking.PARENT_TAG] == earliest
    assert client.get_run(earliest).data.tags["protocol"] == "finetune,linear,pretrain"
    # idempotent: a second writer converging later changes nothing
    assert tracking._converge_parents(client, exp_id, "dup", "m", "d") == earliest
    assert {r.info.run_id for r in _runs(uri, "dup")} == active


def test_converge_parents_follows_a_parent_merged_away_meanwhile(uri):
    """Start times come from the clients, so a parent that appears later can sort first
    and another writer can merge (delete) the parent this writer keeps, without seeing
    the children this writer just moved to it. The writer must notice and move them on."""
    with tracking.tracked_run("dup2", "m", "d", "linear", "c0", params={}, uri=uri) as run:
        own = run.run_id
    real = _client(uri)
    exp_id = real.get_experiment_by_name("dup2").experiment_id
    first = next(r for r in _runs(uri, "dup2") if r.info.run_name == "m/d")
    tags = {"study": "dup2", "method": "m", "dataset": "d", tracking.ROLE_TAG: "parent", "protocol": "linear"}
    dup = real.create_run(exp_id, start_time=first.info.start_time + 1000, run_name="m/d", tags=tags).info.run_id
    orphan = real.create_run(exp_id, run_name="c1", tags={"protocol": "finetune", tracking.PARENT_TAG: dup}).info.run_id
    late: list[str] = []

    class OtherWriter:
        """The real client, plus another writer acting once the kept parent is first read."""

        def __getattr__(self, name):
            return getattr(real, name)

        def get_run(self, run_id):
            if run_id == first.info.run_id and not late:
                late.append(real.create_run(exp_id, start_time=first.info.start_time - 1000, run_name="m/d",
                                            tags=tags).info.run_id)
                real.delete_run(first.info.run_id)  # merged away; its sweep missed our children
            return real.get_run(run_id)

    keep = tracking._converge_parents(OtherWriter(), exp_id, "dup2", "m", "d", own)
    assert late and keep == late[0]
    assert {r.info.run_id for r in _runs(uri, "dup2")} == {own, orphan, keep}
    assert real.get_run(own).data.tags[tracking.PARENT_TAG] == keep
    assert real.get_run(orphan).data.tags[tracking.PARENT_TAG] == keep
    assert real.get_run(keep).data.tags["protocol"] == "finetune,linear"
