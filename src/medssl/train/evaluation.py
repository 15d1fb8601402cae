"""Evaluation metrics of the downstream protocols (MONAI implementations).

Conventions (written down because papers differ):
- Dice per foreground class; a class absent from both prediction and ground
  truth is NaN and left out of the mean; absent from the ground truth only
  (a false positive) it scores 0.
- HD95 in mm (the 95th percentile symmetric Hausdorff distance, MONAI) with
  the voxel spacing of the processed data; when a class is in the ground truth
  but missing from the prediction the distance is undefined, and we score the
  diagonal of the volume (the worst possible) instead of dropping the case.
- Classification: ROC AUC of the positive class (MONAI ``compute_roc_auc``) and
  accuracy at the arg-max.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch


def one_hot(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(D, H, W) integer labels -> (1, C, D, H, W) float one-hot."""
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"label values must lie in [0, {n_classes - 1}], got [{int(labels.min())}, {int(labels.max())}]")
    oh = torch.nn.functional.one_hot(labels.long(), n_classes)
    return oh.permute(3, 0, 1, 2).unsqueeze(0).float()


def segmentation_metrics(pred: torch.Tensor, truth: torch.Tensor, classes: Sequence[str],
                         spacing: Sequence[float], distances: bool = True) -> dict[str, float]:
    """Per-class Dice and HD95 of one case, plus their means over foreground classes.

    Args:
        pred: (D, H, W) predicted label map.
        truth: (D, H, W) ground-truth label map.
        classes: class names, index 0 is the background.
        spacing: voxel size in mm of the three axes.
        distances: compute HD95 (False: Dice only, e.g. for model selection on validation).
    """
    from monai.metrics import compute_dice, compute_hausdorff_distance

    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != ground truth shape {tuple(truth.shape)}")
    n = len(classes)
    p, t = one_hot(pred, n), one_hot(truth, n)
    dice = compute_dice(p, t, include_background=False, ignore_empty=True)[0]
    present_t = t[0, 1:].flatten(1).any(1)
    present_p = p[0, 1:].flatten(1).any(1)
    # MONAI gives NaN for an empty ground truth; a false positive there is a 0.
    dice = torch.where(~present_t & present_p, torch.zeros_like(dice), dice)
    diag = float(math.sqrt(sum((s * d) ** 2 for s, d in zip(spacing, pred.shape, strict=True))))
    hd = torch.full((n - 1,), float("nan"))
    both = present_t & present_p
    if not distances:
        return {**{f"dice_{name}": float(dice[i]) for i, name in enumerate(classes[1:])}, "dice": _nanmean(dice.numpy())}
    if both.any():
        with warnings.catch_warnings():  # empty classes are handled below; MONAI's own deprecation notice
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", FutureWarning)
            hd_all = compute_hausdorff_distance(p, t, include_background=False, percentile=95,
                                                spacing=list(map(float, spacing)))[0]
        hd = torch.where(both, hd_all, hd)
    hd = torch.where(present_t & ~present_p, torch.full_like(hd, diag), hd)
    hd = torch.where(~present_t & present_p, torch.full_like(hd, diag), hd)
    out: dict[str, float] = {}
    for i, name in enumerate(classes[1:]):
        out[f"dice_{name}"] = float(dice[i])
        out[f"hd95_{name}"] = float(hd[i])
    out["dice"] = _nanmean(dice.numpy())
    out["hd95"] = _nanmean(hd.numpy())
    return out


def classification_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """ROC AUC (one-vs-rest macro for more than two classes) and accuracy.

    Args:
        probs: (N, C) class probabilities.
        labels: (N,) integer labels.
    """
    from monai.metrics import compute_roc_auc

    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels).astype(int)
    if probs.ndim != 2 or probs.shape[0] != labels.shape[0]:
        raise ValueError(f"probs must be (N, C) matching labels (N,), got {probs.shape} and {labels.shape}")
    acc = float((probs.argmax(1) == labels).mean()) if len(labels) else float("nan")
    if len(np.unique(labels)) < 2:
        auc = float("nan")  # undefined with a single class in the set
    elif probs.shape[1] == 2:
        auc = float(compute_roc_auc(torch.as_tensor(probs[:, 1]), torch.as_tensor(labels)))
    else:
        oh = np.eye(probs.shape[1])[labels]
        auc = float(compute_roc_auc(torch.as_tensor(probs), torch.as_tensor(oh), average="macro"))
    return {"auc": auc, "accuracy": acc}


def summarise(per_case: list[dict[str, float]]) -> dict[str, float]:
    """Mean over cases of every numeric metric (NaNs ignored)."""
    keys = [k for k in per_case[0] if k != "case"] if per_case else []
    return {k: _nanmean(np.array([c[k] for c in per_case], dtype=float)) for k in keys}


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=float)
    return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")
