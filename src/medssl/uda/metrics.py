"""Target-domain evaluation of the uda2d study: Dice and ASSD per class (on :mod:`medssl.metrics`).

CMEVAE reports Dice and ASSD (average symmetric surface distance, mm) of LV,
myocardium and RV on the target. Conventions here:

* **3D per subject** when ``groups`` is given (the slices of each case are
  stacked back into an ``(H, W, S)`` volume and scored with the 3D spacing,
  as MS-CMRSeg evaluations do); otherwise every slice is its own 2D case.
  Per-class values are means over cases; ``dice`` / ``assd`` are means of
  the per-class means.
* **Empty masks**: the one rule of :mod:`medssl.metrics`. A class in the
  reference but missing from the prediction of a case (a complete miss), or
  predicted where the reference has none (a false positive), scores Dice 0
  and ASSD = the volume diagonal, and is counted (``empty_pred_<class>``,
  ``empty_truth_<class>``; ``misses`` is their total over classes and cases).
  A class absent from both is undefined for that case and left out. (The old
  rule dropped a missed structure from the ASSD mean, which flattered a
  method that misses whole structures.) A class undefined in every case gets
  NaN, which the overall mean skips.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from medssl.metrics import class_metrics
from medssl.metrics import nanmean as _nanmean

__all__ = ["case_metrics", "evaluate"]


def case_metrics(pred: torch.Tensor, truth: torch.Tensor, n_classes: int, spacing: Sequence[float]) -> dict:
    """Dice and ASSD of every foreground class for one case (2D or 3D label maps of equal shape).

    Returns:
        ``{"dice": (n_classes - 1,) array, "assd": (n_classes - 1,) array, "in_truth": bool array,
        "in_pred": bool array}`` with NaN where undefined (module docstring).
    """
    m = class_metrics(pred, truth, n_classes, spacing, "assd")
    return {k: m[k] for k in ("dice", "assd", "in_truth", "in_pred")}


def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, classes: Sequence[str],
             spacing: Sequence[float], groups: Sequence[tuple[str, int, int]] | None = None,
             batch_size: int = 32) -> dict:
    """Dice and ASSD on labelled (target) slices.

    Args:
        model: a :class:`~medssl.uda.models.CMEVAENet` (its ``predict``), or anything with a
            ``predict(x) -> (N, H, W)`` method.
        x: ``(N, C, H, W)`` images; y: ``(N, H, W)`` long labels.
        classes: class names, index 0 the background (e.g. ``medssl.data.cardiac.CLASSES``).
        spacing: mm; ``(sx, sy, sz)`` with ``groups`` (3D), ``(sx, sy)`` or more without (2D, the
            first two are used).
        groups: ``(case, start, stop)`` per subject: slices ``start:stop`` of ``x`` stacked along
            the last axis form its volume (as :func:`medssl.uda.data.load_slices` returns them).
        batch_size: slices per forward pass.

    Returns:
        ``dice_<class>``, ``assd_<class>`` (mm), ``empty_pred_<class>``, ``empty_truth_<class>`` for
        every foreground class; ``dice``, ``assd`` (means over classes); ``misses`` (the number of
        case x class pairs scored the diagonal); ``n_cases``; ``mode`` (``"3d"`` or ``"2d"``).
    """
    if x.ndim != 4 or y.ndim != 3 or x.shape[0] != y.shape[0] or x.shape[-2:] != y.shape[-2:]:
        raise ValueError(f"expected x (N, C, H, W) and y (N, H, W), got {tuple(x.shape)} and {tuple(y.shape)}")
    n = len(classes)
    if n < 2:
        raise ValueError(f"classes must name the background and at least one class, got {list(classes)!r}")
    if int(y.min()) < 0 or int(y.max()) >= n:
        raise ValueError(f"label values must lie in [0, {n - 1}], got [{int(y.min())}, {int(y.max())}]")
    pred = model.predict(x, batch_size=batch_size).cpu()
    y = y.cpu()
    if groups is not None:
        if len(spacing) != 3:
            raise ValueError(f"3D evaluation (groups given) needs three spacings (sx, sy, sz), got {tuple(spacing)}")
        cases = []
        for case, start, stop in groups:
            if not 0 <= start < stop <= x.shape[0]:
                raise ValueError(f"group {case!r} has slices {start}:{stop} outside 0:{x.shape[0]}")
            cases.append((pred[start:stop].permute(1, 2, 0), y[start:stop].permute(1, 2, 0)))
        sp, mode = [float(s) for s in spacing], "3d"
    else:
        if len(spacing) < 2:
            raise ValueError(f"spacing needs at least the in-plane (sx, sy), got {tuple(spacing)}")
        cases = [(pred[i], y[i]) for i in range(x.shape[0])]
        sp, mode = [float(s) for s in spacing[:2]], "2d"
    per = [case_metrics(p, t, n, sp) for p, t in cases]
    dice = np.stack([c["dice"] for c in per])
    assd = np.stack([c["assd"] for c in per])
    in_t = np.stack([c["in_truth"] for c in per])
    in_p = np.stack([c["in_pred"] for c in per])
    out: dict = {"mode": mode, "n_cases": len(per)}
    for i, name in enumerate(classes[1:]):
        out[f"dice_{name}"] = _nanmean(dice[:, i])
        out[f"assd_{name}"] = _nanmean(assd[:, i])
        out[f"empty_pred_{name}"] = int((in_t[:, i] & ~in_p[:, i]).sum())
        out[f"empty_truth_{name}"] = int((~in_t[:, i] & in_p[:, i]).sum())
    out["dice"] = _nanmean([out[f"dice_{c}"] for c in classes[1:]])
    out["assd"] = _nanmean([out[f"assd_{c}"] for c in classes[1:]])
    out["misses"] = int((in_t ^ in_p).sum())
    return out
