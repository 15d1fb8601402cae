"""8 OS processes write runs through medssl.tracking at once: nothing is lost or doubled.

Each writer is a fresh interpreter (tests/tracking/_writer.py, started with
subprocess: the spawn start method of multiprocessing cannot import this
module under pytest's importlib import mode). They import MLflow, wait at a
file barrier, then all write together: a child run with 44 params and
3 metrics x 50 steps flushed every 2 steps, plus an artifact. The store
(sqlite file, or an ``mlflow server`` over HTTP) must then hold exactly one
parent per method/dataset pair, every child once, FINISHED, under its
parent, with every metric step at its exact value, and each parent's mean and
std over its children must cover them all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from medssl import tracking

from ._writer import METRICS, expected, flat_params, pair

WRITER = Path(__file__).with_name("_writer.py")
N_WRITERS, N_STEPS, FLUSH_EVERY = 8, 50, 2
READY_TIMEOUT = 120  # s for 8 interpreters to import mlflow on 2 cores (≈ 3 s each)
RUN_TIMEOUT = 180  # s for the writes once released


@pytest.fixture(params=["sqlite", pytest.param("server", marks=pytest.mark.slow)])
def store(request, tmp_path) -> str:
    """Tracking URI of a fresh sqlite file (schema created first, as ``medssl init-tracking``
    does before a pipeline fans out) or of the session's ``mlflow server``."""
    if request.param == "sqlite":
        return tracking.init_store(f"sqlite:///{tmp_path / 'mlflow.db'}")
    return request.getfixturevalue("mlflow_server").url


def _launch(uri: str, study: str, barrier: Path) -> tuple[list[dict], float]:
    """Start the writers, release them together, return their reports and the wall time from release."""
    env = dict(os.environ, MEDSSL_TRACKING="on")
    env.pop("MLFLOW_TRACKING_URI", None)  # the writers get the URI explicitly
    # as pipeline jobs do: mlflow switches telemetry and some checks by these
    for key in ("PYTEST_CURRENT_TEST", "MLFLOW_DISABLE_TELEMETRY"):
        env.pop(key, None)
    procs = []
    for idx in range(N_WRITERS):
        spec = {"uri": uri, "idx": idx, "study": study, "n_steps": N_STEPS, "flush_every": FLUSH_EVERY,
                "barrier": str(barrier), "timeout": READY_TIMEOUT + 30}
        procs.append(subprocess.Popen([sys.executable, str(WRITER), json.dumps(spec)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while len(list(barrier.glob("ready.*"))) < N_WRITERS:
            dead = [p for p in procs if p.poll() is not None]
            assert not dead, f"a writer exited before the barrier: {dead[0].communicate()[1][-3000:]}"
            assert time.monotonic() < deadline, "writers not ready in time"
            time.sleep(0.02)
        released = time.monotonic()
        (barrier / "go").touch()
        outs = [p.communicate(timeout=RUN_TIMEOUT) for p in procs]
        wall = time.monotonic() - released
    finally:
        for p in procs:  # only on failure: stop the writers still running, by PID
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
    errors = [f"writer {i} exited {p.returncode}:\n{err[-3000:]}"
              for i, (p, (_, err)) in enumerate(zip(procs, outs)) if p.returncode != 0]
    assert not errors, "\n".join(errors)
    # MLflow prints "View run ..." lines for HTTP stores; the report is the last JSON line.
    reports = [json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1]) for out, _ in outs]
    return reports, wall


def test_eight_writers_lose_nothing(store, tmp_path, request):
    import mlflow

    study = f"conc_{request.node.callspec.id}"
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    reports, wall = _launch(store, study, barrier)
    assert sorted(r["idx"] for r in reports) == list(range(N_WRITERS))

    client = mlflow.MlflowClient(tracking_uri=store)
    exp = client.get_experiment_by_name(study)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get(tracking.ROLE_TAG) == "parent"]
    children = [r for r in runs if r.data.tags.get(tracking.ROLE_TAG) == "child"]
    assert len(runs) == len(parents) + len(children)

    # exactly one parent per pair, FINISHED, its protocol tag covering its children's
    pairs = {pair(i)[:2] for i in range(N_WRITERS)}
    assert sorted(r.info.run_name for r in parents) == sorted(f"{m}/{d}" for m, d in pairs)
    parent_of = {r.info.run_name: r for r in parents}
    for r in parents:
        assert r.info.status == "FINISHED"
        want = {pair(i)[2] for i in range(N_WRITERS) if "/".join(pair(i)[:2]) == r.info.run_name}
        assert r.data.tags["protocol"] == ",".join(sorted(want)), r.info.run_name

    # every child once, FINISHED, under its pair's parent, params and metrics complete
    by_name = {r.info.run_name: r for r in children}
    assert len(by_name) == len(children) == N_WRITERS
    for rep in reports:
        idx = rep["idx"]
        method, dataset, protocol = pair(idx)
        run = by_name[tracking.child_name(protocol, 1.0, idx)]
        assert run.info.run_id == rep["run_id"]
        assert run.info.status == "FINISHED"
        assert run.data.tags[tracking.PARENT_TAG] == parent_of[f"{method}/{dataset}"].info.run_id
        assert run.data.params == flat_params(idx)
        assert run.data.tags["seed"] == str(idx)
        for key, history in expected(idx, N_STEPS).items():
            got = client.get_metric_history(run.info.run_id, key)
            assert sorted((m.step, m.value) for m in got) == history, (idx, key)
        assert [a.path for a in client.list_artifacts(run.info.run_id)] == [f"artifact.{idx}.json"]
    assert set(METRICS) == set(by_name[tracking.child_name("linear", 1.0, 0)].data.metrics)

    # each parent's mean / std over its children (medssl.tracking_summary) saw every child's final
    # value: no update was lost to a concurrent one (sqlite: the store lock; server: step = run count)
    for parent in parents:
        kids = [r for r in children if r.data.tags[tracking.PARENT_TAG] == parent.info.run_id]
        for protocol in {r.data.tags["protocol"] for r in kids}:
            row = [r for r in kids if r.data.tags["protocol"] == protocol]
            got = parent.data.metrics
            assert got[f"{protocol}/frac1.0/n_runs"] == len(row), (parent.info.run_name, protocol)
            for key in METRICS:
                values = np.array([r.data.metrics[key] for r in row])
                assert got[f"{protocol}/frac1.0/{key}_mean"] == pytest.approx(values.mean()), (protocol, key)
                if len(row) > 1:
                    assert got[f"{protocol}/frac1.0/{key}_std"] == pytest.approx(values.std(ddof=1))

    retries = sum(r["retries"] for r in reports)
    slowest = max(r["seconds"] for r in reports)
    print(f"\n{request.node.callspec.id}: {N_WRITERS} writers, wall {wall:.1f} s from release, "
          f"slowest writer {slowest:.1f} s, {retries} lock retries")
