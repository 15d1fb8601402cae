"""Parent-run aggregates: mean and std over seeds of the final metrics of a parent's children.

A parent (one method/dataset pair, :mod:`medssl.tracking`) holds several rows: every
protocol x label fraction of a downstream pair (children ``linear/frac1.0/seed0`` ...),
one row for the template, stn and uda studies (children ``seed0`` ...), one pre-training
child. Its children are grouped by their run name without the seed part
(:func:`group_of`), and for each group and each metric its children logged, the parent
gets

* ``<group>/<metric>_mean``: the mean over the group's runs of the metric's final value
  (MLflow's latest: the value at the largest step),
* ``<group>/<metric>_std``: their sample standard deviation (``ddof=1``, as the results
  tables; only with two runs or more),
* ``<group>/n_runs``: how many runs went in,

(``<metric>_mean`` ... without the prefix when the group name is empty) each logged at
step = the group's ``n_runs``, so the most complete aggregate is the latest value even
when writers without a lock (a server store) finish out of order. Only FINISHED runs
count, and of runs sharing a name (a seed run again) only the one that started last.
When a child ends, :func:`refresh` recomputes its row from the store, under the sqlite
store lock, so concurrent children never lose each other's values.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from medssl.tracking_store import retry, store_lock

log = logging.getLogger("medssl.tracking")

_SEED_PART = re.compile(r"(^|/)seed[^/]*$")


def group_of(run_name: str) -> str:
    """The row of a child run: ``'linear/frac1.0/seed0' -> 'linear/frac1.0'``, ``'seed2' -> ''``,
    ``'pretrain' -> 'pretrain'``."""
    return _SEED_PART.sub("", run_name)


def _latest_by_name(children: Iterable[Any]) -> dict[str, Any]:
    """The FINISHED, active children, one per run name (the one started last)."""
    latest: dict[str, Any] = {}
    for run in children:
        if run.info.status != "FINISHED" or run.info.lifecycle_stage != "active":
            continue
        name = run.info.run_name or ""
        prev = latest.get(name)
        if prev is None or (run.info.start_time or 0, run.info.run_id) > (prev.info.start_time or 0,
                                                                          prev.info.run_id):
            latest[name] = run
    return latest


def aggregate(children: Iterable[Any], group: str | None = None) -> list[tuple[str, float, int]]:
    """``(key, value, step)`` of the parent aggregates of ``children`` (MLflow ``Run`` objects): of
    every group, or of ``group`` only."""
    groups: dict[str, list[dict[str, float]]] = defaultdict(list)
    for name, run in _latest_by_name(children).items():
        if group is None or group_of(name) == group:
            groups[group_of(name)].append(dict(run.data.metrics))
    out: list[tuple[str, float, int]] = []
    for group, metrics in sorted(groups.items()):
        prefix, n = (f"{group}/" if group else ""), len(metrics)
        for key in sorted(set().union(*metrics)):
            values = np.array([m[key] for m in metrics if key in m and math.isfinite(m[key])], dtype=np.float64)
            if not len(values):
                continue
            out.append((f"{prefix}{key}_mean", float(values.mean()), n))
            if len(values) > 1:
                out.append((f"{prefix}{key}_std", float(values.std(ddof=1)), n))
        out.append((f"{prefix}n_runs", float(n), n))
    return out


def update_parent(client: Any, parent_id: str, children: list[Any], group: str | None = None,
                  max_batch: int = 1000) -> int:
    """Log :func:`aggregate` of ``children`` (``group`` only, if given) to the parent ``parent_id``;
    return how many values went.

    Call it under :func:`medssl.tracking_store.store_lock` for a sqlite store.
    """
    from mlflow.entities import Metric

    stamp = int(time.time() * 1000)
    values = [Metric(k, v, stamp, step) for k, v, step in aggregate(children, group)]
    for i in range(0, len(values), max_batch):
        retry(client.log_batch, parent_id, metrics=values[i:i + max_batch])
    return len(values)


def refresh(client: Any, uri: str, parent_id: str, children: Callable[[], list[Any]], child_name: str) -> None:
    """:func:`update_parent` of the row of the child ``child_name`` that just ended, with the children
    ``children()`` lists, under the store lock of ``uri``.

    A failure is logged as a warning, not raised: the child that ended is complete without it.
    """
    try:
        with store_lock(uri):
            update_parent(client, parent_id, children(), group_of(child_name))
    except Exception as exc:  # noqa: BLE001 - an aggregate is a convenience; the run stays FINISHED
        log.warning("could not update the aggregates of parent run %s: %s", parent_id, exc)
