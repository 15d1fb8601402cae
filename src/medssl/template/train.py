"""Training and evaluation of the template-transformer models (Diffeomorphic Template Transformers, Sec. 5).

* :func:`fit`: Adam on the binary cross-entropy of the probability map
  ("a standard cross entropy loss", Sec. 5.1).
* :func:`evaluate`: the Table 2/3 metrics per case: Dice (``p > 0.5``),
  Hausdorff distance in mm (both under the empty rule of
  :mod:`medssl.metrics`), the percentage of negative Jacobian determinants
  of the ddf ("% |J_phi| < 0", NaN for the U-Net, which has no ddf) and the
  number of connected components of ``p > 0.5``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medssl.geometry.components import count_components
from medssl.geometry.jacobian import negative_fraction
from medssl.metrics import class_metrics, nanmean
from medssl.train.common import progress_bar

METRICS = ("dice", "hausdorff", "neg_jacobian_pct", "components")


def _check_data(images: torch.Tensor, masks: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 5 or images.shape[1] != 1:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a (N, 1, D, H, W) tensor, got {got}")
    if not isinstance(masks, torch.Tensor) or masks.shape != images.shape:
        got = tuple(masks.shape) if isinstance(masks, torch.Tensor) else type(masks).__name__
        raise ValueError(f"masks must be a tensor of shape {tuple(images.shape)}, got {got}")


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def fit(model: nn.Module, images: torch.Tensor, masks: torch.Tensor, steps: int = 100,
        lr: float = 2e-4, batch_size: int = 1, seed: int = 0, progress: bool = False,
        desc: str = "template") -> dict[str, list[float]]:
    """Train ``model`` with Adam on ``BCE(prob, mask)`` (Sec. 5.1; the paper: lr 2e-4, batch 1).

    Each step draws ``batch_size`` cases without replacement from a generator
    seeded with ``seed``. (Cut: the paper's cosine annealing and 40k steps.)

    Args:
        model: a :mod:`medssl.template.models` model, ``forward(image)["prob"]``.
        images: ``(N, 1, D, H, W)`` inputs.
        masks: ``(N, 1, D, H, W)`` binary targets.
        steps: number of optimiser steps.
        lr: Adam learning rate (betas 0.9, 0.999).
        batch_size: cases per step, ``<= N``.
        seed: seed of the batch sampler.
        progress: show a progress bar (labelled ``desc``) over the steps.

    Returns:
        ``{"loss": [loss per step]}``.

    Raises:
        ValueError: bad data shapes, ``steps``, ``lr`` or ``batch_size``.
    """
    _check_data(images, masks)
    _positive_int("steps", steps)
    _positive_int("batch_size", batch_size)
    if batch_size > images.shape[0]:
        raise ValueError(f"batch_size must be <= number of cases {images.shape[0]}, got {batch_size}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    gen = torch.Generator().manual_seed(int(seed))
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999))
    model.train()
    history: list[float] = []
    for _ in progress_bar(range(steps), steps, desc, progress):
        idx = torch.randperm(images.shape[0], generator=gen)[:batch_size]
        prob = model(images[idx])["prob"].clamp(1e-6, 1 - 1e-6)
        loss = F.binary_cross_entropy(prob, masks[idx].to(prob.dtype))
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    return {"loss": history}


def _hausdorff(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> float:
    """Max symmetric Hausdorff distance (mm) of two binary masks under the rule of :mod:`medssl.metrics`.

    The volume diagonal ``sqrt(sum(((N_k - 1) s_k)^2))`` when exactly one mask is empty, NaN
    (undefined, left out of the mean) when both are.
    """
    m = class_metrics(torch.from_numpy(np.asarray(pred, bool)).long(), torch.from_numpy(np.asarray(gt, bool)).long(),
                      2, spacing, "hausdorff")
    return float(m["hausdorff"][0])


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, masks: torch.Tensor,
             spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> dict:
    """Table 2/3 metrics per case and their means (Sec. 5.3).

    Args:
        model: a :mod:`medssl.template.models` model.
        images: ``(N, 1, D, H, W)`` inputs.
        masks: ``(N, 1, D, H, W)`` binary ground truth.
        spacing: voxel size in mm per axis, for the Hausdorff distance.

    Returns:
        ``{"dice", "hausdorff", "neg_jacobian_pct", "components"}``: lists of
        ``N`` per-case values (Dice of ``p > 0.5`` and HD in mm, percentile
        None = max, under the empty rule of :mod:`medssl.metrics`: exactly one
        mask empty scores Dice 0 and the volume diagonal
        ``sqrt(sum(((N_k - 1) s_k)^2))`` and is counted in ``"misses"``, both
        empty is NaN; ``negative_fraction(ddf)`` in percent, NaN without a
        ddf; components of ``p > 0.5``), plus ``"<name>_mean"`` for each
        (NaN values left out) and ``"misses"`` (an int).

    Raises:
        ValueError: bad data shapes or ``spacing``.
    """
    _check_data(images, masks)
    if (not isinstance(spacing, Sequence) or len(spacing) != 3
            or not all(isinstance(s, (int, float)) and not isinstance(s, bool) and s > 0 for s in spacing)):
        raise ValueError(f"spacing must be 3 positive numbers, got {spacing!r}")
    was_training = model.training
    model.eval()
    out: dict = {k: [] for k in METRICS}
    out["misses"] = 0
    for i in range(images.shape[0]):
        res = model(images[i:i + 1])
        prob = res["prob"]
        pred = (prob > 0.5)[0, 0].cpu().numpy()
        gt = (masks[i, 0] > 0.5).cpu().numpy()
        m = class_metrics(torch.from_numpy(pred).long(), torch.from_numpy(gt).long(), 2, spacing, "hausdorff")
        out["dice"].append(float(m["dice"][0]))
        out["hausdorff"].append(float(m["hausdorff"][0]))
        out["misses"] += int(m["empty_pred"][0]) + int(m["empty_truth"][0])
        ddf = res.get("ddf")
        out["neg_jacobian_pct"].append(float("nan") if ddf is None else float(negative_fraction(ddf)[0]))
        out["components"].append(int(count_components(prob[0, 0])))
    model.train(was_training)
    for k in METRICS:  # undefined cases (NaN: both masks empty, or no ddf) are left out
        out[f"{k}_mean"] = nanmean(out[k])
    return out
