"""Training curves of a study: each run's loss and validation metric per epoch, aggregated over seeds.

Every ``metrics.json`` carries its ``history`` (the shapes are those
:func:`medssl.report.convergence.curve` reads):

* downstream (ssl studies): ``[{"epoch", "train_loss", "val_metric"?}, ...]``,
  the validation metric (Dice or AUC) on the epochs it was measured;
* stn and uda: ``[{"epoch", "loss", ...}, ...]`` (the total loss; the terms
  beside it are not plotted);
* template: a bare list of per-step losses, so x is the *step* there.

The validation curve reads ``val_metric`` (written at every validation) and is
named by the ``val_<metric>`` key beside it where the run has exactly one
(``val_dice``, ``val_auc``, ``val_accuracy`` when the AUC is undefined), else by
the one ``val_*`` key that is not a loss (older runs have ``val_metric`` alone).

:func:`study_curves` aggregates the runs of a study (exactly the files its
rule names, :func:`medssl.report.inputs.study_metrics`) per setting, row,
curve and x over seeds: mean, sample std (``ddof=1``, empty below two seeds),
min, max and n. The frame is written as ``results/<study>/curves.csv``, the
DVC plot of the study (``dvc plots show``; template
``workflow/plots/curves.json``), and drawn by :mod:`medssl.report.figures`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from medssl import paths
from medssl.io import write_text
from medssl.report.inputs import read_metrics
from medssl.report.render import fraction_label

__all__ = ["CURVE_COLUMNS", "LOSS_KEYS", "curves_path", "run_curves", "setting_label", "study_curves",
           "validation_label", "write_curves"]

LOSS_KEYS = ("train_loss", "loss")
CURVE_COLUMNS = ["setting", "dataset", "protocol", "fraction", "method", "curve", "metric", "epoch", "mean", "std",
                 "min", "max", "n"]


def curves_path(study: str, base: Path | None = None) -> Path:
    """``results/<study>/curves.csv``: the study's training curves over seeds (the DVC plot)."""
    return paths.study_results(study, base) / "curves.csv"


def _val_key(rows: Sequence[dict]) -> tuple[str | None, str | None]:
    """``(key read, name shown)`` of the validation curve: ``val_metric`` where present (the downstream
    loop writes it at every validation, beside the named key), named by the one ``val_<metric>`` beside it."""
    keys = {k for h in rows for k, v in h.items() if k.startswith("val_") and "loss" not in k and v is not None}
    named = sorted(keys - {"val_metric"})
    if "val_metric" in keys:
        return "val_metric", named[0] if len(named) == 1 else "val_metric"
    return (named[0], named[0]) if named else (None, None)


def run_curves(history) -> dict[str, tuple[str, np.ndarray, np.ndarray]]:
    """The curves of one run's ``history``: ``{"loss": (name, x, y), "validation": (name, x, y)}``.

    ``name`` is the history key (``train_loss``, ``loss``), for the validation
    curve the named key (``val_dice``) where the run wrote one beside ``val_metric``.

    A curve the history lacks is left out; an empty or unusable history gives ``{}``.
    Non-finite values are dropped (a diverged step is not a point).
    """
    out: dict[str, tuple[str, np.ndarray, np.ndarray]] = {}
    if not history:
        return out
    if all(h is None or (isinstance(h, (int, float)) and not isinstance(h, bool)) for h in history):
        y = np.asarray([math.nan if h is None else h for h in history], float)  # per-step losses (null: NaN)
        x = np.arange(1, len(y) + 1, dtype=float)
        ok = np.isfinite(y)
        return {"loss": ("loss", x[ok], y[ok])} if ok.any() else {}
    rows = [h for h in history if isinstance(h, dict)]
    loss = next((k for k in LOSS_KEYS if any(h.get(k) is not None for h in rows)), None)
    for curve, (key, name) in (("loss", (loss, loss)), ("validation", _val_key(rows))):
        if key is None:
            continue
        pts = [(float(h.get("epoch", i + 1)), float(h[key])) for i, h in enumerate(rows)
               if isinstance(h.get(key), (int, float)) and math.isfinite(float(h[key]))]
        if pts:
            x, y = (np.asarray(v, float) for v in zip(*pts, strict=True))
            out[curve] = (name, x, y)
    return out


def validation_label(key: str, task: str) -> str:
    """Axis label of a key: ``val_dice`` (or ``val_metric`` of a segmentation run) -> ``"validation Dice"``."""
    if key == "val_metric":
        named = {"segmentation": "Dice", "classification": "AUC"}.get(task)
        return f"validation {named}" if named else "validation metric"
    name = key.removeprefix("val_")
    return "validation " + {"dice": "Dice", "auc": "AUC"}.get(name, name.replace("_", " "))


def setting_label(dataset: str, protocol: str, fraction: float, settings: bool) -> str:
    """``"organs · linear · 17%"`` (ssl studies, ``settings=True``) or the dataset / direction alone."""
    return f"{dataset} · {protocol} · {fraction_label(fraction)}" if settings else str(dataset)


def study_curves(files: Sequence[Path], methods_order: Sequence[str] | None = None,
                 datasets_order: Sequence[str] | None = None, protocols_order: Sequence[str] | None = None,
                 settings: bool = True) -> pd.DataFrame:
    """The curves of ``files`` aggregated over seeds, one row per setting x row x curve x epoch.

    Args:
        files: the study's metrics.json files (each must exist and be valid).
        methods_order, datasets_order, protocols_order: row and setting order
            (names not listed follow, sorted); fractions ascending.
        settings: whether the setting label names protocol and fraction (ssl studies).

    Returns:
        DataFrame with columns :data:`CURVE_COLUMNS` plus ``task``; ``std`` is
        NaN below two seeds. Empty (with those columns) when no run has a curve.

    Raises:
        ValueError: naming a missing or invalid file.
    """
    pts = []
    for path in files:
        rec = read_metrics(path)
        for curve, (key, x, y) in run_curves(rec.get("history")).items():
            pts += [(rec["dataset"], rec["protocol"], rec["fraction"], rec["method"], rec["seed"], rec["task"],
                     curve, key, xi, yi) for xi, yi in zip(x, y, strict=True)]
    cols = ["dataset", "protocol", "fraction", "method", "seed", "task", "curve", "metric", "epoch", "value"]
    df = pd.DataFrame(pts, columns=cols)
    if df.empty:
        return pd.DataFrame(columns=[*CURVE_COLUMNS, "task"])
    keys = ["dataset", "protocol", "fraction", "method", "task", "curve", "metric", "epoch"]
    g = df.groupby(keys, sort=False)["value"]
    agg = g.agg(["mean", "min", "max", "count"]).assign(std=g.std(ddof=1)).reset_index()
    agg = agg.rename(columns={"count": "n"})
    agg["setting"] = [setting_label(d, p, f, settings) for d, p, f in
                      zip(agg["dataset"], agg["protocol"], agg["fraction"], strict=True)]

    def rank(values: pd.Series, order: Sequence[str] | None) -> pd.Series:
        listed = list(dict.fromkeys(order or []))
        names = listed + sorted(set(values) - set(listed))
        return values.map({n: i for i, n in enumerate(names)})

    agg = agg.assign(_m=rank(agg["method"], methods_order), _d=rank(agg["dataset"], datasets_order),
                     _p=rank(agg["protocol"], protocols_order), _c=agg["curve"].map({"loss": 0, "validation": 1}))
    agg = agg.sort_values(["_d", "_p", "fraction", "_m", "_c", "epoch"], kind="stable")
    return agg[[*CURVE_COLUMNS, "task"]].reset_index(drop=True)


def write_curves(study: str, curves: pd.DataFrame, base: Path | None = None) -> Path:
    """Write ``results/<study>/curves.csv`` (atomically, ``%.6g`` numbers, empty cells for NaN)."""
    out = curves_path(study, base)
    frame = curves[CURVE_COLUMNS].copy()
    frame["n"] = frame["n"].astype(int)
    write_text(out, frame.to_csv(index=False, lineterminator="\n", float_format="%.6g"))
    return out
