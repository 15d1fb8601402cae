"""Did a run converge? The gain of its curve over the last quarter of its training.

A reference row that is still improving when its run stops makes every
comparison against it meaningless (issue 14: "the supervised reference of
each study reaches its plateau: its validation metric improves by less than
1 % (relative) over the last quarter of its steps"). Each ``metrics.json``
carries its ``history``; this module reads the curve from it and reports, per
run, the relative gain over the last quarter of the epochs (or steps):

* a **validation metric** (``val_metric`` entries, higher is better: Dice or
  AUC of the downstream loop, which keeps the best epoch): the best value up to
  the end against the best value up to 3/4 of the run,
  ``(best_all - best_before) / |best_before|``;
* otherwise the **training loss** (``train_loss`` / ``loss`` per epoch, or a
  bare list of per-step losses; lower is better, and noisy): the mean over the
  last quarter (x > 3/4 of the last x) against the mean over the quarter before
  it (1/2 < x <= 3/4), ``(mean_prev - mean_last) / |mean_prev|``.

Training runs from x = 0 (no point) to its last x, so "the last quarter" is
x > 0.75 * last x.

A run is *at plateau* when that gain is below :data:`PLATEAU` (1 %). Runs
whose curve has fewer than :data:`MIN_POINTS` points before the last quarter
get NaN (not judged).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["MIN_POINTS", "PLATEAU", "curve", "last_quarter_gain", "runs_convergence", "summary_markdown"]

PLATEAU = 0.01   # relative gain over the last quarter below which a run is at its plateau
MIN_POINTS = 1   # points needed before the last quarter


def curve(history) -> tuple[str, np.ndarray, np.ndarray, bool]:
    """``(name, x, y, higher_is_better)`` of the curve a run's ``history`` holds.

    ``x`` is the epoch (or step, for a bare list of losses) of each point.
    Returns ``("", [], [], True)`` when the history holds no usable curve.
    """
    if not history:
        return "", np.array([]), np.array([]), True
    if all(isinstance(h, (int, float)) for h in history):  # per-step losses (template study)
        y = np.asarray(history, float)
        return "train loss", np.arange(1, len(y) + 1, dtype=float), y, False
    rows = [h for h in history if isinstance(h, dict)]
    val = [(h["epoch"], h["val_metric"]) for h in rows if h.get("val_metric") is not None and "epoch" in h]
    if val:
        x, y = zip(*val, strict=True)
        return "validation", np.asarray(x, float), np.asarray(y, float), True
    for key in ("train_loss", "loss"):
        pts = [(h.get("epoch", i + 1), h[key]) for i, h in enumerate(rows) if h.get(key) is not None]
        if pts:
            x, y = zip(*pts, strict=True)
            return "train loss", np.asarray(x, float), np.asarray(y, float), False
    return "", np.array([]), np.array([]), True


def last_quarter_gain(x: Sequence[float], y: Sequence[float], higher_is_better: bool) -> float:
    """The relative improvement of a curve over the last quarter of its x range (module docstring).

    Args:
        x: epoch or step of each point, increasing.
        y: the value at each point.
        higher_is_better: True for a validation metric (best-so-far rule),
            False for a training loss (mean of the last quarter vs the quarter before).

    Returns:
        The relative gain (positive: still improving), or NaN when too few
        points lie before the last quarter or the baseline is 0.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size == 0:
        return math.nan
    end = float(x.max())
    cut = 0.75 * end  # training runs from step (epoch) 0 to `end`
    if higher_is_better:
        before = y[x <= cut]
        if before.size < MIN_POINTS:
            return math.nan
        base = float(before.max())
        return math.nan if base == 0 else (float(y.max()) - base) / abs(base)
    last, prev = y[x > cut], y[(x > 0.5 * end) & (x <= cut)]
    if last.size == 0 or prev.size < MIN_POINTS:
        return math.nan
    base = float(prev.mean())
    return math.nan if base == 0 else (base - float(last.mean())) / abs(base)


def runs_convergence(files: Sequence[Path]) -> pd.DataFrame:
    """One row per ``metrics.json``: its setting, the curve used, the last-quarter gain and whether at plateau."""
    rows = []
    for path in files:
        rec = json.loads(Path(path).read_text())
        name, x, y, higher = curve(rec.get("history"))
        gain = last_quarter_gain(x, y, higher) if name else math.nan
        rows.append({"dataset": rec.get("dataset"), "protocol": rec.get("protocol"), "method": rec.get("method"),
                     "fraction": float(rec.get("fraction", 1.0)), "seed": int(rec.get("seed", 0)),
                     "curve": name or "none", "points": int(len(y)), "gain": gain,
                     "plateau": bool(np.isfinite(gain) and gain < PLATEAU)})
    return pd.DataFrame(rows, columns=["dataset", "protocol", "method", "fraction", "seed", "curve", "points",
                                       "gain", "plateau"])


def summary_markdown(df: pd.DataFrame, methods_order: Sequence[str] | None = None,
                     reference: str | None = None, settings: bool = True) -> str:
    """A Markdown section: per row and setting, the runs at plateau and the median (max) gain over seeds."""
    if df.empty or (df["curve"] == "none").all():  # no run recorded a curve: nothing to report
        return ""
    keys = ["dataset", "protocol", "fraction"] if settings else ["dataset"]
    order = {m: i for i, m in enumerate(methods_order or [])}
    lines = ["## Convergence", "",
             f"Gain of each run's curve over the last quarter of its training (validation metric, best so far; "
             f"or the training loss, mean of the last quarter against the quarter before): at plateau when below "
             f"{PLATEAU:.0%}. Median (max) over seeds; k/n runs at plateau."
             + (f" Reference row: {reference}." if reference else ""), "",
             "| row | " + " | ".join(keys) + " | curve | at plateau | gain median (max) |",
             "|" + "---|" * (len(keys) + 4)]
    df = df.assign(_o=df["method"].map(lambda m: order.get(m, len(order))))
    for (_, method, *setting), grp in df.groupby(["_o", "method", *keys], sort=True):
        gains = grp["gain"].to_numpy(float)
        finite = gains[np.isfinite(gains)]
        shown = (f"{np.median(finite):+.1%} ({finite.max():+.1%})" if finite.size else "–")
        label = f"**{method}**" if method == reference else method
        cells = [str(s) if k != "fraction" else f"{float(s):.0%}" for k, s in zip(keys, setting, strict=True)]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {grp['curve'].iloc[0]} | "
                     f"{int(grp['plateau'].sum())}/{len(grp)} | {shown} |")
    return "\n".join(lines) + "\n"
