"""The MLflow store under :mod:`medssl.tracking`: creation, the store lock, lock retries.

A sqlite store (``sqlite:///<db>``) is created by the first tracked job that finds
it missing, or by ``medssl init-tracking`` (:func:`init_store`); MLflow creates its
schema on its own otherwise, and 8 jobs doing that together corrupted the file
(each ran the alembic migrations over the others'). :func:`ensure_store`, called
before every client is made (:func:`client`), serialises creation under
:func:`store_lock` and builds the store atomically: the schema goes into
``<db>.<pid>.tmp`` beside it, which is renamed onto ``<db>`` once complete, so a
crash never leaves a half-built store at the final name (the next builder deletes
the leftover temporary file).

A store at ``<db>`` whose schema is not at the revision this MLflow expects (one
half-built by an older medssl, or made by another MLflow version) is rebuilt when
it holds nothing but MLflow's own rows (no run, model, trace ...), with a warning;
one that holds data is refused with :class:`StoreError`, naming the file and what
to do. Server stores (``http://``) are the server's business: nothing is checked.

Every store call of medssl is retried on ``database is locked`` (:func:`retry`);
each retry is logged at DEBUG level on the ``medssl.tracking`` logger.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from medssl import paths

T = TypeVar("T")
log = logging.getLogger("medssl.tracking")

TELEMETRY_ENV = "MLFLOW_DISABLE_TELEMETRY"
# rows MLflow itself writes into a new store: a store holding only these is rebuilt, not refused
OWN_TABLES = frozenset({"alembic_version", "experiments", "experiment_tags", "workspaces"})


class StoreError(RuntimeError):
    """A sqlite MLflow store that medssl will not use or rebuild; the message names the file."""


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, or None for other stores and ``:memory:``."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path)


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive ``fcntl`` lock on ``<db>.lock`` beside a sqlite store.

    A no-op for non-sqlite URIs (a server serialises its own writes).
    """
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _is_lock_error(exc: BaseException) -> bool:
    """True for sqlite busy/lock errors, however MLflow or SQLAlchemy wrap them."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, sqlite3.OperationalError) or type(cur).__name__ == "OperationalError":
            return True
        text = str(cur).lower()
        if "database is locked" in text or "database table is locked" in text:
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def retry(fn: Callable[..., T], *args: Any, attempts: int = 8, **kw: Any) -> T:
    """Call ``fn(*args, **kw)``, retrying sqlite lock errors with jittered backoff.

    The waits grow 0.1, 0.2, 0.4 ... s (capped at 3 s, times a random factor in
    [0.5, 1.5]); other exceptions propagate at once, and the last lock error
    propagates after ``attempts`` tries.

    Raises:
        ValueError: if ``attempts`` is smaller than 1.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    for i in range(attempts):
        try:
            return fn(*args, **kw)
        except Exception as exc:
            if i == attempts - 1 or not _is_lock_error(exc):
                raise
            wait = min(3.0, 0.1 * 2**i) * random.uniform(0.5, 1.5)
            log.debug("retry %d of %s in %.2f s after a lock error: %s",
                      i + 1, getattr(fn, "__name__", fn), wait, str(exc).splitlines()[0][:200])
            time.sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover


# ------------------------------------------------------------ store creation
@functools.cache
def _head_revision() -> str:
    """The alembic revision of the schema this MLflow writes (read from its migration scripts)."""
    from mlflow.store.db.utils import _get_latest_schema_revision

    return _get_latest_schema_revision()


def _query(db: Path, fn: Callable[[sqlite3.Connection], T]) -> T:
    """``fn`` of a read-only connection to the sqlite file ``db``.

    Raises:
        StoreError: when ``db`` is not a sqlite database.
    """
    con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        return fn(con)
    except sqlite3.DatabaseError as exc:
        if _is_lock_error(exc):
            raise
        raise StoreError(f"{db}: not an MLflow store ({exc}); move it away or set MLFLOW_TRACKING_URI") from exc
    finally:
        con.close()


def _inspect(db: Path) -> tuple[str | None, list[str]] | None:
    """``(schema revision, tables)`` of the sqlite file ``db``; None when it has no table
    (missing, empty, or a file sqlite made on a bare connect)."""
    if not db.is_file() or db.stat().st_size == 0:
        return None

    def read(con: sqlite3.Connection) -> tuple[str | None, list[str]] | None:
        tables = sorted(r[0] for r in con.execute("select name from sqlite_master where type = 'table'"))
        if not tables:
            return None
        rows = con.execute("select version_num from alembic_version").fetchall() \
            if "alembic_version" in tables else []
        return (rows[0][0] if len(rows) == 1 else None), tables

    return _query(db, read)


def _data_rows(db: Path, tables: list[str]) -> int:
    """Rows of ``db`` in every table but MLflow's own (:data:`OWN_TABLES`) and alembic's temporary copies."""
    return _query(db, lambda con: sum(
        con.execute(f'select count(*) from "{t}"').fetchone()[0] for t in tables
        if t not in OWN_TABLES and not t.startswith(("_alembic_tmp_", "sqlite_"))))


def _publish(tmp: Path, db: Path) -> None:
    """Rename the complete store ``tmp`` onto ``db`` (atomic) and make the rename durable."""
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, db)
    fd = os.open(db.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _build(db: Path) -> None:
    """Create a complete store at ``db`` (call under :func:`store_lock`): schema and MLflow's
    Default experiment in ``<db>.<pid>.tmp``, then :func:`_publish`. Leftover temporary stores
    of builders that died are deleted first (the lock says none is running)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    for stale in db.parent.glob(f"{db.name}.*.tmp*"):
        stale.unlink(missing_ok=True)
    tmp = db.with_name(f"{db.name}.{os.getpid()}.tmp")
    tmp_uri = f"sqlite:///{tmp.resolve()}"
    # the Default experiment's artifacts would go to ./mlruns of the cwd; the studies' go beside the db
    store = SqlAlchemyStore(tmp_uri, (db.resolve().parent / "mlartifacts").as_uri())
    store.engine.dispose()
    SqlAlchemyStore._engine_map.pop(tmp_uri, None)
    _publish(tmp, db)
    log.info("created the MLflow store %s", db)


def ensure_store(uri: str) -> None:
    """Make sure the sqlite store of ``uri`` exists with the schema this MLflow expects.

    A complete store is used as it is (checked without the lock). Otherwise, under
    :func:`store_lock`: a missing or empty one is built (:func:`_build`), an incomplete
    one holding no data is rebuilt (a warning names it), and one holding data is refused.
    Does nothing for non-sqlite URIs.

    Raises:
        StoreError: naming the file, when its schema is not this MLflow's and it holds data.
    """
    db = sqlite_path(uri)
    if db is None:
        return
    state = retry(_inspect, db)
    if state is not None and state[0] == _head_revision():
        return
    with store_lock(uri):
        state = retry(_inspect, db)
        if state is None:
            _build(db)
            return
        revision, tables = state
        if revision == _head_revision():
            return
        import mlflow

        data = retry(_data_rows, db, tables)
        found = (f"schema at revision {revision}" if revision else "no schema revision (alembic_version)")
        leftovers = [t for t in tables if t.startswith("_alembic_tmp_")]
        found += f", leftover migration tables {', '.join(leftovers)}" if leftovers else ""
        if data:
            raise StoreError(
                f"{db}: MLflow store not at the schema of this MLflow {mlflow.__version__} ({found}; expected "
                f"{_head_revision()}), and it holds data ({data} row(s) of runs, metrics ...), so medssl does not "
                f"rebuild it. If another MLflow version made it, back it up and run "
                f"`mlflow db upgrade sqlite:///{db.resolve()}`; if it was half-built, delete it (or move it "
                f"away): the next tracked job or `medssl init-tracking` creates a new one.")
        log.warning("%s: rebuilding an incomplete MLflow store that holds no runs (%s)", db, found)
        _build(db)


def client(uri: str) -> Any:
    """An ``MlflowClient`` of ``uri``, its store created first if needed (:func:`ensure_store`).

    The first call imports mlflow with its usage telemetry off unless
    ``$MLFLOW_DISABLE_TELEMETRY`` says otherwise: besides phoning home from compute
    nodes, its background thread deletes ``_MLFLOW_TELEMETRY_SESSION_ID`` from
    ``os.environ`` when it cannot reach its server, and a REST call iterating
    ``os.environ`` at that moment (requests' proxy lookup) fails with ``KeyError`` --
    a lost run (2 of ~240 writer processes against a server on a closed network
    failed in that proxy lookup; none of ~320 since; mlflow 3.17).
    """
    os.environ.setdefault(TELEMETRY_ENV, "true")
    import mlflow

    ensure_store(uri)
    return mlflow.MlflowClient(tracking_uri=uri)


def init_store(uri: str | None = None) -> str:
    """Create the store before parallel jobs start (``medssl init-tracking``); return the URI.

    A sqlite store is built as by :func:`ensure_store`; a server is asked once for an
    experiment, so an unreachable one fails here rather than in every job.

    Args:
        uri: tracking URI; defaults to :func:`medssl.paths.mlflow_uri`.
    """
    uri = uri or paths.mlflow_uri()
    retry(lambda: client(uri).search_experiments(max_results=1))
    return uri
