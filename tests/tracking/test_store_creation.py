"""A missing sqlite store is created once and atomically, whoever meets it first.

8 jobs started together without ``medssl init-tracking`` used to run MLflow's
migrations over each other (7-8 of 8 failed, and half the time the file was left
half-built for good). Here 8 fresh interpreters (tests/tracking/_store_writer.py)
meet a missing store together in each of several rounds: all succeed and the
store is complete. A builder killed mid-way leaves no ``mlflow.db``; the next
writer builds it. A store left half-built by an older version is rebuilt when it
holds no runs and refused, naming the file, when it does.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medssl import tracking, tracking_store

from ._store_writer import pair

WRITER = Path(__file__).with_name("_store_writer.py")
N_WRITERS, ROUNDS = 8, 3
READY_TIMEOUT = 120  # s for 8 interpreters to import mlflow on 2 cores (about 3 s each)
ROUND_TIMEOUT = 120


@pytest.fixture(autouse=True)
def _tracking_on(monkeypatch):
    monkeypatch.setenv(tracking.TRACKING_ENV, "on")  # tests/conftest.py turns it off


def _env() -> dict[str, str]:
    env = dict(os.environ, MEDSSL_TRACKING="on")
    for key in ("MLFLOW_TRACKING_URI", "PYTEST_CURRENT_TEST", "MLFLOW_DISABLE_TELEMETRY"):
        env.pop(key, None)  # as pipeline jobs see it
    return env


def _wait(cond, procs, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        dead = [p for p in procs if p.poll() is not None]
        assert not dead, f"a writer exited early ({what}): {dead[0].communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, f"writers not {what} in time"
        time.sleep(0.01)


def _assert_complete(db: Path) -> sqlite3.Connection:
    """``db`` is at this MLflow's schema head, with no migration leftovers or temporary stores beside it."""
    con = sqlite3.connect(db)
    assert con.execute("select version_num from alembic_version").fetchall() == [(tracking_store._head_revision(),)]
    tables = {r[0] for r in con.execute("select name from sqlite_master where type = 'table'")}
    assert not [t for t in tables if t.startswith("_alembic_tmp_")]
    assert not list(db.parent.glob(f"{db.name}.*.tmp*"))
    return con


def test_eight_jobs_meet_a_missing_store(tmp_path):
    dbs = [tmp_path / f"r{r}" / "mlflow.db" for r in range(ROUNDS)]
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    procs = []
    for idx in range(N_WRITERS):
        spec = {"uris": [f"sqlite:///{db}" for db in dbs], "idx": idx, "barrier": str(barrier),
                "timeout": READY_TIMEOUT + ROUNDS * ROUND_TIMEOUT}
        procs.append(subprocess.Popen([sys.executable, str(WRITER), json.dumps(spec)], env=_env(),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    start = time.monotonic()
    try:
        for r in range(ROUNDS):
            _wait(lambda: len(list(barrier.glob(f"ready.{r}.*"))) == N_WRITERS, procs,
                  READY_TIMEOUT if r == 0 else ROUND_TIMEOUT, f"ready for round {r}")
            ready = ready if r else time.monotonic() - start
            (barrier / f"go.{r}").touch()
        outs = [p.communicate(timeout=ROUND_TIMEOUT) for p in procs]
    finally:
        for p in procs:  # only on failure: stop the writers still running, by PID
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
    assert [p.returncode for p in procs] == [0] * N_WRITERS, [err[-3000:] for _, err in outs]
    reports = [json.loads(ln) for out, _ in outs for ln in out.splitlines() if ln.startswith("{")]
    assert len(reports) == N_WRITERS * ROUNDS
    errors = [f"round {x['round']} writer {x['idx']}:\n{x['error']}" for x in reports if x["error"]]
    assert not errors, "\n".join(errors)

    for db in dbs:
        con = _assert_complete(db)
        runs = dict(con.execute("select name, status from runs"))
        children = {pair(i)[1] for i in range(1, N_WRITERS)}
        parents = {f"{pair(i)[0]}/d" for i in range(1, N_WRITERS)}
        assert runs == {name: "FINISHED" for name in children | parents}, db
        assert con.execute("select count(*) from experiments where name in ('Default', 'fresh')").fetchone() == (2,)
    slowest = [max(x["seconds"] for x in reports if x["round"] == r) for r in range(ROUNDS)]
    print(f"\n{ROUNDS} rounds of {N_WRITERS} writers on a missing store; ready after {ready:.1f} s, slowest "
          f"writer per round {', '.join(f'{s:.1f}' for s in slowest)} s")


CRASH = """
import os, signal, sys
from medssl import tracking, tracking_store

def die(*args, **kw):
    os.kill(os.getpid(), signal.SIGKILL)

if sys.argv[2] == "rename":      # the temporary store is complete, the rename not done
    tracking_store._publish = die
else:                            # MLflow's initial tables made, its migrations not run
    import mlflow.store.db.utils as utils
    utils._upgrade_db = die
with tracking.tracked_run("crash", "m", "d", "linear", "c0", params={}, uri=sys.argv[1]):
    pass
"""


@pytest.mark.parametrize("point", ["migrations", "rename"])
def test_a_builder_killed_midway_leaves_no_store(tmp_path, point):
    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    res = subprocess.run([sys.executable, "-c", CRASH, uri, point], env=_env(), capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == -signal.SIGKILL, res.stderr[-3000:]
    assert not db.exists()
    leftovers = list(tmp_path.glob("mlflow.db.*.tmp*"))
    assert leftovers, sorted(p.name for p in tmp_path.iterdir())  # what the killed builder left

    with tracking.tracked_run("crash", "m", "d", "linear", "c0", params={"a": 1}, uri=uri) as run:
        run.log_metrics({"dice": 0.5})
    con = _assert_complete(db)  # the leftovers are gone too
    assert dict(con.execute("select name, status from runs")) == {"m/d": "FINISHED", "c0": "FINISHED"}


def _half_built(db: Path) -> None:
    """What a builder killed between MLflow's initial tables and its migrations leaves."""
    import sqlalchemy
    from mlflow.store.tracking.dbmodels.initial_models import Base as InitialBase

    engine = sqlalchemy.create_engine(f"sqlite:///{db}")
    InitialBase.metadata.create_all(engine)
    engine.dispose()


def test_a_half_built_store_without_runs_is_rebuilt(tmp_path, caplog):
    db = tmp_path / "mlflow.db"
    _half_built(db)
    uri = f"sqlite:///{db}"
    with tracking.tracked_run("hb", "m", "d", "linear", "c0", params={}, uri=uri):
        pass
    assert f"{db}: rebuilding an incomplete MLflow store that holds no runs" in caplog.text
    assert "no schema revision" in caplog.text
    con = _assert_complete(db)
    assert con.execute("select count(*) from runs").fetchone() == (2,)


def test_a_store_with_runs_at_another_schema_is_refused(tmp_path):
    db = tmp_path / "mlflow.db"
    uri = tracking.init_store(f"sqlite:///{db}")
    with tracking.tracked_run("old", "m", "d", "linear", "c0", params={}, uri=uri):
        pass
    con = sqlite3.connect(db)
    con.execute("update alembic_version set version_num = 'a8c4a736bde6'")  # as an older MLflow left it
    con.commit()
    con.close()
    before = db.read_bytes()
    with pytest.raises(tracking.StoreError) as err:
        tracking.init_store(uri)
    msg = str(err.value)
    assert msg.startswith(f"{db}: MLflow store not at the schema of this MLflow")
    assert "schema at revision a8c4a736bde6" in msg and re.search(r"holds data \(\d+ row\(s\) of runs", msg)
    assert f"mlflow db upgrade sqlite:///{db}" in msg and "delete it" in msg
    assert db.read_bytes() == before  # left as it was


def test_not_a_database_is_refused(tmp_path):
    db = tmp_path / "mlflow.db"
    db.write_text("not sqlite\n" * 100)
    with pytest.raises(tracking.StoreError, match=f"{db}: not an MLflow store"):
        tracking.init_store(f"sqlite:///{db}")
