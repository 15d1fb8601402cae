"""Segmentation and classification metrics shared by every study (MONAI implementations).

One rule, used by the ssl3d downstream evaluation (Dice + HD95), the template
study (Dice + max Hausdorff distance) and the uda2d study (Dice + ASSD). For
each case and foreground class ``k`` (a *pair*):

============================  ============  ==================================  =========================
reference (truth) / prediction  Dice          distance (HD95 / Hausdorff / ASSD)  counted as
============================  ============  ==================================  =========================
both present                   MONAI Dice    MONAI distance, mm, with spacing    --
present / empty                0             the volume diagonal ``D``           ``empty_pred`` (a miss)
empty / present                0             the volume diagonal ``D``           ``empty_truth`` (false +)
both empty                     undefined     undefined                           not counted
============================  ============  ==================================  =========================

* ``D = sqrt(sum_k ((N_k - 1) s_k)^2)`` mm: the distance between the centres
  of opposite corner voxels of the grid (``N_k`` voxels of ``s_k`` mm along
  axis ``k``), the largest distance any two voxels of the volume can have, so
  a miss never scores better than any defined distance. (The old downstream
  code used ``N_k s_k``, the field of view; ``(N_k - 1) s_k`` is the bound of
  the metric itself and gives 0 along an axis with a single slice.)
* Undefined pairs (both empty: the structure is absent and correctly not
  predicted) are NaN and left out of every mean; they are not errors.
* ``misses = empty_pred + empty_truth``: the number of pairs whose distance
  is the diagonal, reported next to every distance so a reader sees how much
  of a mean distance is the penalty. (CMEVAE's and the template paper's
  published tables do not say what they did with a missed structure; MONAI
  returns NaN/inf there; dropping the pair would flatter a method that misses
  whole structures, so it is scored as the worst case instead.)

The distances are MONAI's (`monai.metrics`, surfaces = mask minus its binary
erosion, Euclidean distance in mm): ``hd95`` = 95th-percentile symmetric
Hausdorff distance, ``hausdorff`` = maximum symmetric Hausdorff distance,
``assd`` = average symmetric surface distance (mean over the surface points of
both masks). Classification: ROC AUC of the positive class for two classes,
one-vs-rest macro average for more (MONAI ``compute_roc_auc``); undefined
(NaN) when the labels hold a single class.

References: Dice, L. R. (1945), doi:10.2307/1932409; Hausdorff distance as
in Huttenlocher et al. (1993), doi:10.1109/34.232073, the metric of
Diffeomorphic Template Transformers Sec. 5.3 (Tables 2-3); Dice and ASSD as
CMEVAE (Qiao et al.) reports them on MS-CMRSeg; ROC AUC: Hanley & McNeil
(1982), doi:10.1148/radiology.143.1.7063747; implementations:
https://docs.monai.io/en/stable/metrics.html.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import torch

__all__ = ["DISTANCES", "class_metrics", "diagonal", "one_hot", "roc_auc", "undefined_reasons", "nanmean"]

DISTANCES = ("hd95", "hausdorff", "assd")

#: why a metric is undefined, by name prefix (written beside a null in metrics.json)
_BOTH = ("the class is absent from both the reference and the prediction (of every test case, for a mean); "
         "both-empty pairs are left out")
REASONS = {
    "dice": _BOTH, "hd95": _BOTH, "hausdorff": _BOTH, "assd": _BOTH,
    "auc": "ROC AUC is undefined: the test labels hold a single class",
    "accuracy": "no test cases",
    "neg_jacobian_pct": "the model has no transformation (no ddf), so no Jacobian determinant",
}


def one_hot(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """``(*spatial)`` integer labels -> ``(1, C, *spatial)`` float one-hot.

    Raises:
        ValueError: when a label lies outside ``[0, n_classes - 1]``.
    """
    labels = torch.as_tensor(labels)
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        raise ValueError(f"label values must lie in [0, {n_classes - 1}], got [{int(labels.min())}, "
                         f"{int(labels.max())}]")
    oh = torch.nn.functional.one_hot(labels.long(), n_classes)
    return oh.movedim(-1, 0).unsqueeze(0).float()


def diagonal(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """The volume diagonal ``sqrt(sum(((N_k - 1) s_k)^2))`` in mm: the distance a missed pair scores.

    Raises:
        ValueError: when ``spacing`` does not match ``shape`` or is not positive.
    """
    if len(spacing) != len(shape) or not all(float(s) > 0 for s in spacing):
        raise ValueError(f"spacing must be {len(shape)} positive numbers for shape {tuple(shape)}, "
                         f"got {tuple(spacing)}")
    return float(math.sqrt(sum(((int(n) - 1) * float(s)) ** 2 for n, s in zip(shape, spacing))))


def class_metrics(pred: torch.Tensor, truth: torch.Tensor, n_classes: int, spacing: Sequence[float],
                  distance: str | None = "hd95") -> dict[str, np.ndarray]:
    """Dice and one distance of every foreground class of one case, with the module's empty rule.

    Args:
        pred: ``(*spatial)`` predicted label map (2D or 3D).
        truth: ``(*spatial)`` reference label map of the same shape.
        n_classes: number of classes, index 0 the background.
        spacing: voxel size in mm per spatial axis.
        distance: ``"hd95"``, ``"hausdorff"``, ``"assd"`` or ``None`` (Dice only).

    Returns:
        ``{"dice": (C-1,), distance: (C-1,) (when asked), "empty_pred", "empty_truth", "in_truth",
        "in_pred": (C-1,) bool}``, NaN where undefined (both empty).

    Raises:
        ValueError: on shape or spacing mismatch, bad labels, ``n_classes < 2`` or an unknown distance.
    """
    from monai.metrics import compute_average_surface_distance, compute_dice, compute_hausdorff_distance

    pred, truth = torch.as_tensor(pred), torch.as_tensor(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != ground truth shape {tuple(truth.shape)}")
    if len(spacing) != pred.ndim:
        raise ValueError(f"spacing needs {pred.ndim} values for a {pred.ndim}D case, got {tuple(spacing)}")
    if distance is not None and distance not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES} or None, got {distance!r}")
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2 (background + one class), got {n_classes}")
    p, t = one_hot(pred, n_classes), one_hot(truth, n_classes)
    in_t, in_p = t[0, 1:].flatten(1).any(1), p[0, 1:].flatten(1).any(1)
    both, one = in_t & in_p, in_t ^ in_p
    dice = compute_dice(p, t, include_background=False, ignore_empty=True)[0].float()
    dice = torch.where(one, torch.zeros_like(dice), dice)
    out = {"dice": dice.numpy().astype(float), "empty_pred": (in_t & ~in_p).numpy(),
           "empty_truth": (~in_t & in_p).numpy(), "in_truth": in_t.numpy(), "in_pred": in_p.numpy()}
    if distance is None:
        return out
    d = torch.full((n_classes - 1,), math.nan)
    if both.any():
        sp = [float(s) for s in spacing]
        with warnings.catch_warnings():  # MONAI warns about the empty classes, handled by the rule
            warnings.simplefilter("ignore")
            if distance == "assd":
                got = compute_average_surface_distance(p, t, include_background=False, symmetric=True, spacing=sp)
            else:
                got = compute_hausdorff_distance(p, t, include_background=False, spacing=sp,
                                                 percentile=95 if distance == "hd95" else None)
        d = torch.where(both, got[0].float().cpu(), d)
    d = torch.where(one, torch.full_like(d, diagonal(pred.shape, spacing)), d)
    out[distance] = d.numpy().astype(float)
    return out


def roc_auc(probs: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC (MONAI): binary on ``probs[:, 1]``, one-vs-rest macro average for ``C > 2``; NaN with one class.

    Args:
        probs: ``(N, C)`` class probabilities.
        labels: ``(N,)`` integer labels in ``[0, C - 1]``.

    Raises:
        ValueError: on mismatched shapes or labels outside ``[0, C - 1]``.
    """
    from monai.metrics import compute_roc_auc

    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels).astype(int)
    if probs.ndim != 2 or probs.shape[0] != labels.shape[0] or labels.ndim != 1:
        raise ValueError(f"probs must be (N, C) matching labels (N,), got {probs.shape} and {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        raise ValueError(f"labels must lie in [0, {probs.shape[1] - 1}], got [{labels.min()}, {labels.max()}]")
    if len(np.unique(labels)) < 2:
        return math.nan
    if probs.shape[1] == 2:
        return float(compute_roc_auc(torch.as_tensor(probs[:, 1]), torch.as_tensor(labels)))
    # a class absent from the labels has no one-vs-rest curve; MONAI would give NaN for it
    present = np.unique(labels)
    oh = np.eye(probs.shape[1])[labels][:, present]
    return float(compute_roc_auc(torch.as_tensor(probs[:, present]), torch.as_tensor(oh), average="macro"))


def nanmean(x) -> float:
    """Mean of the finite values of ``x``; NaN (not a warning) when there are none."""
    x = np.asarray(x, dtype=float)
    ok = np.isfinite(x)
    return float(x[ok].mean()) if ok.any() else math.nan


def undefined_reasons(metrics: Mapping[str, object], prefix: str = "metrics") -> dict[str, str]:
    """Why each non-finite entry of ``metrics`` is undefined, keyed ``"<prefix>.<name>"``.

    The key is the dotted path :func:`medssl.io.write_json` reports under
    ``"undefined"`` when it writes the value as ``null``.
    """
    out = {}
    for name, value in metrics.items():
        if isinstance(value, (float, np.floating)) and not math.isfinite(float(value)):
            reason = next((r for k, r in REASONS.items() if name.startswith(k)), "undefined for this run")
            out[f"{prefix}.{name}"] = reason
    return out
