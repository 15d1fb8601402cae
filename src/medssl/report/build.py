"""Building a study table: a long frame of metrics -> per-cell mean, std, n, marks, p-values.

The conventions (columns, decimals, units, marks, tests) are those of
:mod:`medssl.report.tables`, the module to use.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from medssl.report import stats
from medssl.report.inputs import LONG_COLUMNS

HEADLINE: dict[str, list[str]] = {"segmentation": ["dice", "hd95", "misses"], "classification": ["auc"],
                                  "template": ["dice", "hausdorff", "misses", "neg_jacobian_pct", "components"],
                                  "stn": ["accuracy", "neg_jacobian_pct"], "uda": ["dice", "assd", "misses"]}
LOWER_PREFIXES = ("hd", "assd", "hausdorff", "neg_jacobian", "components", "misses")
#: counts shown beside a distance (medssl.metrics): 1 decimal, never marked best / second
COUNTS = ("misses",)
COLUMN_LEVELS = ["dataset", "protocol", "fraction", "metric"]
EMPTY = "–"
#: units shown in the headers, by metric-name prefix (every distance of medssl.metrics is in mm)
UNITS = (("hd", "mm"), ("assd", "mm"), ("hausdorff", "mm"), ("neg_jacobian_pct", "%"))


def unit(metric: str) -> str:
    """The unit of ``metric`` (``"mm"`` for a distance, ``"%"`` for a percentage) or ``""``."""
    return next((u for prefix, u in UNITS if metric.lower().startswith(prefix)), "")


def metric_label(metric: str) -> str:
    """``metric`` with its unit, if any: ``hd95 -> 'hd95 (mm)'``."""
    u = unit(metric)
    return f"{metric} ({u})" if u else metric


def lower_is_better(metric: str) -> bool:
    """True for distance/error metrics: names starting with one of :data:`LOWER_PREFIXES` or containing ``error``.

    ``components`` (connected components of a single-object segmentation) is
    lower-is-better because every non-empty output has at least one; an
    empty output (0) would win, so read it together with Dice.
    """
    name = metric.lower()
    return name.startswith(LOWER_PREFIXES) or "error" in name


@dataclass
class TableData:
    """One study table; frames are indexed by method with :data:`COLUMN_LEVELS` columns.

    Attributes:
        mean, std, n: per-cell mean, sample std (ddof=1, NaN below two seeds) and seed count.
        marks: ``"best"``, ``"second"``, ``"tie"`` or ``""`` per cell (:func:`medssl.report.stats.rank_marks`).
        p: per cell, the paired-test p-value against the reference row (NaN for
            the reference itself, a count column, or fewer than two paired seeds).
        text: the cell as displayed, without markup.
        decimals: decimals used per metric.
        reference: the reference row, or None (then no p-values).
        settings: whether the headers show protocol and label fraction (ssl studies).
    """

    mean: pd.DataFrame
    std: pd.DataFrame
    n: pd.DataFrame
    marks: pd.DataFrame
    p: pd.DataFrame
    text: pd.DataFrame
    decimals: dict[str, int]
    reference: str | None = None
    settings: bool = True

    @property
    def methods(self) -> list[str]:
        return list(self.mean.index)

    @property
    def columns(self) -> list[tuple[str, str, float, str]]:
        return list(self.mean.columns)

    @property
    def n_max(self) -> int:
        return int(self.n.to_numpy().max()) if self.n.size else 0


def _ordered(present: Sequence[str], order: Sequence[str] | None) -> list[str]:
    """``order`` first (only names present), then the other present names sorted."""
    order = list(order or [])
    return [x for x in order if x in present] + sorted(set(present) - set(order))


def _columns(df: pd.DataFrame, metrics: Mapping[str, list[str]] | None,
             datasets_order: Sequence[str] | None,
             protocols_order: Sequence[str] | None) -> list[tuple[str, str, float, str]]:
    cols = []
    for dataset in _ordered(df["dataset"].unique(), datasets_order):
        sub = df[df["dataset"] == dataset]
        tasks = sorted(sub["task"].unique())
        if len(tasks) != 1:
            raise ValueError(f"dataset {dataset!r} has results of several tasks: {tasks}")
        task = tasks[0]
        chosen = (metrics or {}).get(dataset) or (metrics or {}).get(task) or HEADLINE.get(task)
        if not chosen:
            raise ValueError(f"dataset {dataset!r}: no headline metrics for task {task!r}; "
                             f"pass metrics={{{task!r}: [...]}}")
        # a count column only where the results have it (older metrics.json files do not)
        chosen = [m for m in chosen if m not in COUNTS or (sub["metric"] == m).any()]
        for protocol in _ordered(sub["protocol"].unique(), protocols_order):
            for fraction in sorted(sub.loc[sub["protocol"] == protocol, "fraction"].unique()):
                cols += [(dataset, protocol, float(fraction), m) for m in chosen]
    return cols


def _fmt(x: float, decimals: int) -> str:
    return f"{x:.{decimals}f}"


def build_table(df: pd.DataFrame, metrics: Mapping[str, list[str]] | None = None,
                methods_order: Sequence[str] | None = None,
                datasets_order: Sequence[str] | None = None,
                protocols_order: Sequence[str] | None = None,
                reference: str | None = None, settings: bool = True) -> TableData:
    """Aggregate a :func:`collect` frame over seeds into a :class:`TableData`.

    Args:
        df: long frame with columns :data:`LONG_COLUMNS`.
        metrics: metrics to show, keyed by dataset name or task name (dataset
            first); datasets not covered use :data:`HEADLINE` of their task.
        methods_order: row order (the study's methods in params.yaml). Every
            listed method gets a row, results or not; methods with results but
            not listed follow, sorted.
        datasets_order, protocols_order: column order; names not listed follow,
            sorted. Fractions are always ascending.
        reference: the row the others are tested against (None: no p-values).
        settings: whether the rendered headers show protocol and fraction.

    Raises:
        ValueError: naming missing columns, a dataset with several tasks, or a
            task without headline metrics.
    """
    missing = [c for c in LONG_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"results frame lacks column(s) {', '.join(missing)}")
    if df.empty:
        raise ValueError("results frame is empty")
    cols = _columns(df, metrics, datasets_order, protocols_order)
    listed = list(dict.fromkeys(methods_order or []))
    methods = listed + sorted(set(df["method"]) - set(listed))
    index = pd.MultiIndex.from_tuples(cols, names=COLUMN_LEVELS)
    grouped = df.groupby(["method", *COLUMN_LEVELS])["value"]
    agg = grouped.agg(["mean", "count"]).assign(std=grouped.std(ddof=1))

    def wide(name: str) -> pd.DataFrame:
        return agg[name].unstack(COLUMN_LEVELS).reindex(index=methods, columns=index)

    mean, std, n = wide("mean"), wide("std"), wide("count").fillna(0).astype(int)
    # one value per (method, seed) and column: collect() rejects repeated runs
    per_seed = df.set_index(["method", "seed", *COLUMN_LEVELS])["value"].unstack(COLUMN_LEVELS)
    decimals = {}
    for metric in dict.fromkeys(c[3] for c in cols):
        vals = df.loc[df["metric"] == metric, "value"].dropna()
        decimals[metric] = 1 if metric in COUNTS else 3 if ((vals >= 0) & (vals <= 1)).all() else 2
    n_max = int(n.to_numpy().max()) if n.size else 0
    marks = pd.DataFrame("", index=mean.index, columns=index)
    pvals = pd.DataFrame(math.nan, index=mean.index, columns=index)
    text = pd.DataFrame(EMPTY, index=mean.index, columns=index)
    present = set(per_seed.index.get_level_values("method"))
    for col in cols:
        d = decimals[col[3]]
        if col[3] not in COUNTS:
            values = {m: per_seed[col].xs(m, level="method").dropna() if col in per_seed else pd.Series(dtype=float)
                      for m in methods if m in present}
            marks[col] = stats.rank_marks(mean[col], values, lower_is_better(col[3]))
            pvals[col] = stats.p_against(reference, methods, values)
        for method in methods:
            k, m, s = n.at[method, col], mean.at[method, col], std.at[method, col]
            if k == 0 or math.isnan(m):
                continue
            cell = _fmt(m, d) if k < 2 else f"{_fmt(m, d)} ± {_fmt(s, d)}"
            text.at[method, col] = cell if k >= n_max else f"{cell} (n={k})"
    return TableData(mean, std, n, marks, pvals, text, decimals, reference, settings)


