"""MLflow conventions of the benchmark: one experiment per study, one parent
run per method/dataset pair, one nested run per protocol x fraction x seed.

Files under ``results/`` are the source of truth; MLflow is where people
browse them. Layout in the store::

    experiment  <study>
      parent    "<method>/<dataset>"        tags study, method, dataset, protocol,
                                            medssl.role=parent
        child   "linear/frac1.0/seed0"      tags study, method, dataset, protocol,
                                            medssl.role=child, mlflow.parentRunId
        child   "pretrain"                  (pre-training: dataset = pretrain dataset)

Children carry the provenance tags of :mod:`medssl.provenance`; a child ending FINISHED
updates its parent's mean and std over seeds of the final metrics (:mod:`medssl.tracking_summary`).

A parent's ``protocol`` tag lists the protocols of its children, sorted and
comma-joined (``"finetune,linear"``; ``"pretrain"`` for a pre-training parent),
because one parent holds every protocol of its method/dataset pair.

The default store is ``sqlite:///<root>/mlflow.db`` (:func:`medssl.paths.mlflow_uri`);
``MLFLOW_TRACKING_URI`` overrides it. Several OS processes may write one sqlite
file: the first client of a process creates the store if it is missing, once and
atomically under a lock (:mod:`medssl.tracking_store`, which also holds
:func:`init_store`, :func:`retry` and :func:`store_lock`), every store call is
retried on ``database is locked``, and the experiment/parent lookup-or-create
runs under an ``fcntl`` lock on ``<db>.lock`` so two processes never create two
parents of one pair. For sqlite stores, artifacts go to ``<db folder>/mlartifacts/<study>``
(MLflow's own default is ``./mlruns`` of the current directory); a server store
keeps its own artifact location.

With an HTTP server (``MLFLOW_TRACKING_URI=http://host:port``, for jobs on several
machines) there is no lock to take: writers that start together each create a
parent, so every writer merges duplicates right after creating its parent and
again when its child ends (:func:`_converge_parents`): the earliest parent is
kept, the others' children are re-tagged to it and the others are deleted.
Each retry is logged at DEBUG level on the ``medssl.tracking`` logger. MLflow's
usage telemetry is off unless ``MLFLOW_DISABLE_TELEMETRY`` is set (see
:func:`medssl.tracking_store.client`).

``MEDSSL_TRACKING=off`` (or ``0``/``false``/``no``) disables tracking: :func:`tracked_run`
yields a no-op logger and mlflow is never imported.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from medssl import paths, provenance, tracking_summary
from medssl.tracking_store import (  # noqa: F401  (re-exported: medssl.tracking is the API)
    TELEMETRY_ENV, StoreError, ensure_store, init_store, retry, sqlite_path, store_lock)
from medssl.tracking_store import client as _client

log = logging.getLogger(__name__)

TRACKING_ENV = "MEDSSL_TRACKING"
ROLE_TAG = "medssl.role"
PARENT_TAG = "mlflow.parentRunId"
MAX_BATCH_PARAMS = 100  # MLflow's log_batch limits
MAX_BATCH_METRICS = 1000


# ------------------------------------------------------------------ helpers
def tracking_enabled() -> bool:
    """False when ``$MEDSSL_TRACKING`` is ``off``, ``0``, ``false`` or ``no``."""
    return os.environ.get(TRACKING_ENV, "on").strip().lower() not in {"off", "0", "false", "no"}


def child_name(protocol: str, fraction: float | str, seed: int | str) -> str:
    """Name of a downstream child run: ``('linear', 1.0, 0) -> 'linear/frac1.0/seed0'``."""
    return f"{protocol}/{paths.frac_tag(fraction)}/{paths.seed_tag(seed)}"


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten nested mappings to dotted keys with string values: ``{'a': {'b': 1}} -> {'a.b': '1'}``."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_params(value, name + "."))
        else:
            out[name] = str(value)
    return out


def _check_name(what: str, value: str) -> None:
    if not isinstance(value, str) or not value or "'" in value or '"' in value:
        raise ValueError(f"{what} must be a non-empty string without quotes, got {value!r}")


# ------------------------------------------------------------------ logger
class RunLogger:
    """Thin wrapper around one MLflow run, with retries and buffered metrics.

    Metrics are buffered and written with ``log_batch`` when ``flush_every``
    values are waiting, when ``flush_seconds`` passed since the last write, and
    when the run ends. With ``client=None`` every method is a no-op (tracking
    off) and ``run_id`` is ``""``.
    """

    def __init__(self, client: Any, run_id: str, flush_every: int = 200,
                 flush_seconds: float = 30.0) -> None:
        if flush_every < 1:
            raise ValueError(f"flush_every must be >= 1, got {flush_every}")
        self._client = client
        self.run_id = run_id
        self.flush_every = flush_every
        self.flush_seconds = flush_seconds
        self._buffer: list[Any] = []
        self._last_flush = time.monotonic()

    @property
    def enabled(self) -> bool:
        return self._client is not None

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log ``params`` (nested mappings flattened to dotted keys, values as strings)."""
        if not self.enabled or not params:
            return
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in flatten_params(params).items()]
        for i in range(0, len(items), MAX_BATCH_PARAMS):
            retry(self._client.log_batch, self.run_id, params=items[i:i + MAX_BATCH_PARAMS])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Buffer ``metrics`` at ``step`` (0 when None); flush when the buffer is due.

        Raises:
            ValueError: naming the metric whose value is not a number.
        """
        if not self.enabled:
            return
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        for key, value in metrics.items():
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"metric {key!r} must be a number, got {value!r}") from None
            self._buffer.append(Metric(key, number, stamp, int(step or 0)))
        if (len(self._buffer) >= self.flush_every
                or time.monotonic() - self._last_flush >= self.flush_seconds):
            self.flush()

    def flush(self) -> None:
        """Write the buffered metrics now."""
        if not self.enabled:
            return
        while self._buffer:
            chunk = self._buffer[:MAX_BATCH_METRICS]
            retry(self._client.log_batch, self.run_id, metrics=chunk)
            del self._buffer[:MAX_BATCH_METRICS]
        self._last_flush = time.monotonic()

    def log_artifact(self, path: Path | str, artifact_path: str | None = None) -> None:
        """Copy the file ``path`` into the run's artifacts.

        Raises:
            ValueError: naming ``path`` when it is not a file.
        """
        if not self.enabled:
            return
        if not Path(path).is_file():
            raise ValueError(f"{path}: artifact file not found")
        retry(self._client.log_artifact, self.run_id, str(path), artifact_path)

    def log_artifacts(self, folder: Path | str, artifact_path: str | None = None) -> None:
        """Copy every file under ``folder`` into the run's artifacts (under ``artifact_path``)."""
        if not self.enabled:
            return
        if not Path(folder).is_dir():
            raise ValueError(f"{folder}: artifact folder not found")
        retry(self._client.log_artifacts, self.run_id, str(folder), artifact_path)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set string tags on the run."""
        if not self.enabled:
            return
        for key, value in tags.items():
            retry(self._client.set_tag, self.run_id, key, str(value))


# ----------------------------------------------------------- runs / layout
def _experiment_id(client: Any, study: str, uri: str) -> str:
    """Id of the experiment named ``study``, created if missing (call under the store lock)."""
    from mlflow.exceptions import MlflowException

    exp = retry(client.get_experiment_by_name, study)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":  # deleted in the UI: its name is still taken
            retry(client.restore_experiment, exp.experiment_id)
        return exp.experiment_id
    db = sqlite_path(uri)
    location = (db.resolve().parent / "mlartifacts" / study).as_uri() if db else None
    try:
        return retry(client.create_experiment, study, artifact_location=location)
    except MlflowException:  # created meanwhile by a process outside the lock (server store)
        exp = retry(client.get_experiment_by_name, study)
        if exp is None:
            raise
        return exp.experiment_id


def _search_all(client: Any, experiment_id: str, filt: str) -> list[Any]:
    """Every active run of ``experiment_id`` matching ``filt`` (all pages)."""
    runs: list[Any] = []
    token = None
    while True:
        page = retry(client.search_runs, [experiment_id], filter_string=filt, max_results=1000,
                     page_token=token)
        runs.extend(page)
        token = getattr(page, "token", None)
        if not token:
            return runs


def _parent_filter(study: str, method: str, dataset: str) -> str:
    return (f"tags.study = '{study}' and tags.method = '{method}' "
            f"and tags.dataset = '{dataset}' and tags.`{ROLE_TAG}` = 'parent'")


def _protocols(run: Any) -> set[str]:
    return set(filter(None, run.data.tags.get("protocol", "").split(",")))


def _unless_deleted(client: Any, run_id: str, fn: Callable[..., Any], *args: Any) -> None:
    """``fn(*args)`` on the run ``run_id``, ignoring its failure when the run was deleted
    meanwhile (a parent merged away by a concurrent :func:`_converge_parents`)."""
    from mlflow.exceptions import MlflowException

    try:
        retry(fn, *args)
    except MlflowException:
        if retry(client.get_run, run_id).info.lifecycle_stage != "deleted":
            raise


def _parent_run_id(client: Any, experiment_id: str, study: str, method: str,
                   dataset: str, protocol: str) -> tuple[str, bool]:
    """Find or create the parent run of ``method``/``dataset`` (call under the store lock).

    Returns its id and whether it was created by this call.
    """
    found = retry(client.search_runs, [experiment_id], filter_string=_parent_filter(study, method, dataset),
                  max_results=1, order_by=["attributes.start_time ASC"])
    if found:
        run = found[0]
        protocols = _protocols(run)
        if protocol not in protocols:
            _unless_deleted(client, run.info.run_id, client.set_tag, run.info.run_id, "protocol",
                            ",".join(sorted(protocols | {protocol})))
        return run.info.run_id, False
    run = retry(client.create_run, experiment_id, run_name=f"{method}/{dataset}",
                tags={"study": study, "method": method, "dataset": dataset,
                      "protocol": protocol, ROLE_TAG: "parent"})
    # The parent only groups children; leaving it RUNNING would read as "in progress".
    _unless_deleted(client, run.info.run_id, client.set_terminated, run.info.run_id, "FINISHED")
    return run.info.run_id, True


def _children(client: Any, experiment_id: str, parent_id: str) -> list[Any]:
    return _search_all(client, experiment_id, f"tags.`{PARENT_TAG}` = '{parent_id}'")


def _converge_parents(client: Any, experiment_id: str, study: str, method: str, dataset: str,
                      child_id: str | None = None, rounds: int = 20) -> str:
    """Merge duplicate parents of ``method``/``dataset`` into one; return its id.

    For stores without :func:`store_lock` (an HTTP server): writers that start
    together each find no parent and create one. A writer calls this after
    creating a parent, and always when its child ends (with ``child_id``).

    The kept parent is the smallest live one by ``(start_time, run_id)``; a
    duplicate's children are re-tagged to it, the duplicate is deleted, and
    its children are swept once more (a writer with an older view may have
    re-tagged one to it meanwhile). With ``child_id`` (the caller's own child,
    at its end) that child is pointed at the kept parent too, and the kept
    parent's ``protocol`` tag is made to cover its children's protocols,
    re-read after each write until no concurrent read-modify-write undid it.
    Last, the kept parent must still be live: start times come from the
    clients, so a parent that appears later may sort first and another writer
    may have merged ours into it; then the round repeats against the new
    minimum, re-pointing every child this call moved. Deleted parents are
    never written to again, so the writers converge on one parent.

    Raises:
        RuntimeError: when the pair has no live parent, or no stable one after ``rounds``.
    """
    moved: set[str] = {child_id} if child_id else set()
    for _ in range(rounds):
        parents = sorted(_search_all(client, experiment_id, _parent_filter(study, method, dataset)),
                         key=lambda r: (r.info.start_time or 0, r.info.run_id))
        if not parents:
            raise RuntimeError(f"no parent run of {method}/{dataset} in experiment {study}")
        keep = parents[0].info.run_id
        protocols = set().union(*(_protocols(r) for r in parents))
        for dup in parents[1:]:
            dup_id = dup.info.run_id
            for sweep in (0, 1):  # before and after the delete
                for child in _children(client, experiment_id, dup_id):
                    retry(client.set_tag, child.info.run_id, PARENT_TAG, keep)
                    moved.add(child.info.run_id)
                if sweep == 0:
                    _unless_deleted(client, dup_id, client.delete_run, dup_id)
            log.debug("merged duplicate parent %s of %s/%s into %s", dup_id, method, dataset, keep)
        for run_id in sorted(moved):
            if retry(client.get_run, run_id).data.tags.get(PARENT_TAG) != keep:
                retry(client.set_tag, run_id, PARENT_TAG, keep)
        if child_id is not None:
            current = _protocols(parents[0])
            for _ in range(10):
                protocols |= {c.data.tags["protocol"] for c in _children(client, experiment_id, keep)
                              if c.data.tags.get("protocol")}
                if protocols <= current:
                    break
                protocols |= current
                _unless_deleted(client, keep, client.set_tag, keep, "protocol", ",".join(sorted(protocols)))
                current = _protocols(retry(client.get_run, keep))
        if retry(client.get_run, keep).info.lifecycle_stage == "active":
            return keep
        log.debug("parent %s of %s/%s was merged away meanwhile; again", keep, method, dataset)
    raise RuntimeError(f"the parents of {method}/{dataset} in {study} did not settle in {rounds} rounds")


@contextlib.contextmanager
def tracked_run(study: str, method: str, dataset: str, protocol: str, child: str,
                params: Mapping[str, Any], tags: Mapping[str, Any] | None = None,
                uri: str | None = None) -> Iterator[RunLogger]:
    """Open the nested run ``child`` under the parent of ``method``/``dataset``.

    Sets the experiment ``study`` (created if needed), finds or creates the
    parent run ``"<method>/<dataset>"`` race-free, creates the child run with
    ``params`` logged, and yields its :class:`RunLogger`. On normal exit the
    buffered metrics are flushed and the child ends FINISHED; on an exception
    it ends FAILED (KILLED for KeyboardInterrupt) and the exception propagates.

    Args:
        study: experiment name.
        method: method name (parent identity, tag).
        dataset: dataset name (parent identity, tag); the pretrain dataset for pre-training.
        protocol: ``linear``, ``finetune``, ``pretrain`` ... (child tag; added to the parent's).
        child: run name of the child, e.g. :func:`child_name` or ``"pretrain"``.
        params: run parameters; nested mappings are flattened to dotted keys.
        tags: extra tags of the child (seed, :func:`medssl.provenance.run_tags` ...; code_tags are added).
        uri: tracking URI; defaults to :func:`medssl.paths.mlflow_uri`.

    Raises:
        ValueError: naming the offending value when a name is empty or has quotes.
    """
    for what, value in (("study", study), ("method", method), ("dataset", dataset),
                        ("protocol", protocol), ("child", child)):
        _check_name(what, value)
    if not tracking_enabled():
        yield RunLogger(None, "")
        return
    uri = uri or paths.mlflow_uri()
    client = _client(uri)
    locked = sqlite_path(uri) is not None  # else a server: no lock, parents are merged instead
    with store_lock(uri):
        experiment_id = _experiment_id(client, study, uri)
        parent_id, created = _parent_run_id(client, experiment_id, study, method, dataset, protocol)
    if created and not locked:  # others may have created one too; the end merges again in any case
        parent_id = _converge_parents(client, experiment_id, study, method, dataset)
    child_tags = {**provenance.code_tags(), **{str(k): str(v) for k, v in (tags or {}).items()}}
    child_tags.update({"study": study, "method": method, "dataset": dataset,
                       "protocol": protocol, ROLE_TAG: "child", PARENT_TAG: parent_id})
    run = retry(client.create_run, experiment_id, run_name=child, tags=child_tags)
    logger = RunLogger(client, run.info.run_id)
    status = "FINISHED"
    try:
        logger.log_params(params)
        yield logger
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except BaseException:
        status = "FAILED"
        raise
    finally:
        try:
            logger.flush()
            if not locked:
                parent_id = _converge_parents(client, experiment_id, study, method, dataset, run.info.run_id)
        except BaseException:
            status = "FAILED"
            raise
        finally:
            retry(client.set_terminated, run.info.run_id, status)
            if status == "FINISHED":  # the parent's mean/std over seeds, recomputed under the store lock
                tracking_summary.refresh(client, uri, parent_id, lambda: _children(client, experiment_id, parent_id),
                                         child)
