"""Evaluation metrics of the downstream protocols (ssl3d study), on :mod:`medssl.metrics`.

Per case: Dice and HD95 (mm, with the case's voxel spacing) of every
foreground class under the one empty rule of :mod:`medssl.metrics` (a class
missed by the prediction, or predicted where the reference has none, scores
Dice 0 and the volume diagonal, and is counted; absent from both it is
undefined and left out), their means over the defined classes of the case,
and the counts ``empty_pred``, ``empty_truth`` and ``misses`` (their sum).
:func:`summarise` averages the per-case values over cases and *sums* the
counts. Classification: ROC AUC (binary, or one-vs-rest macro) and accuracy
at the arg-max.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from medssl.metrics import class_metrics, nanmean, one_hot, roc_auc

__all__ = ["COUNTS", "classification_metrics", "one_hot", "segmentation_metrics", "summarise"]

#: per-case counts, summed (not averaged) over cases by :func:`summarise`
COUNTS = ("misses", "empty_pred", "empty_truth")


def segmentation_metrics(pred: torch.Tensor, truth: torch.Tensor, classes: Sequence[str],
                         spacing: Sequence[float], distances: bool = True) -> dict[str, float]:
    """Per-class Dice and HD95 of one case, their means over foreground classes, and the empty counts.

    Args:
        pred: (D, H, W) predicted label map.
        truth: (D, H, W) ground-truth label map.
        classes: class names, index 0 is the background.
        spacing: voxel size in mm of the three axes.
        distances: compute HD95 (False: Dice only, e.g. for model selection on validation).

    Raises:
        ValueError: on a shape mismatch or labels outside the classes.
    """
    m = class_metrics(pred, truth, len(classes), spacing, "hd95" if distances else None)
    out: dict[str, float] = {}
    for i, name in enumerate(classes[1:]):
        out[f"dice_{name}"] = float(m["dice"][i])
        if distances:
            out[f"hd95_{name}"] = float(m["hd95"][i])
    out["dice"] = nanmean(m["dice"])
    if distances:
        out["hd95"] = nanmean(m["hd95"])
    out["empty_pred"] = int(m["empty_pred"].sum())
    out["empty_truth"] = int(m["empty_truth"].sum())
    out["misses"] = out["empty_pred"] + out["empty_truth"]
    return out


def classification_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """ROC AUC (:func:`medssl.metrics.roc_auc`) and accuracy.

    Args:
        probs: (N, C) class probabilities.
        labels: (N,) integer labels.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels).astype(int)
    if probs.ndim != 2 or probs.shape[0] != labels.shape[0]:
        raise ValueError(f"probs must be (N, C) matching labels (N,), got {probs.shape} and {labels.shape}")
    acc = float((probs.argmax(1) == labels).mean()) if len(labels) else math.nan
    return {"auc": roc_auc(probs, labels), "accuracy": acc}


def summarise(per_case: list[dict[str, float]]) -> dict[str, float]:
    """Mean over cases of every metric (NaNs left out); the :data:`COUNTS` are summed."""
    keys = [k for k in per_case[0] if k != "case"] if per_case else []
    return {k: int(sum(c[k] for c in per_case)) if k in COUNTS else nanmean([c[k] for c in per_case])
            for k in keys}
