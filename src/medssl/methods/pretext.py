"""Pretext scores: does a pre-training method learn its own task on volumes it never saw?

A downstream table can only say that a pre-trained backbone did or did not
help; it cannot say whether the pre-training learned anything. Each method
scores its own task on held-out volumes, at step 0 and after the last step
(:mod:`medssl.train.pretext`), every draw seeded with :data:`PRETEXT_SEED`:

* Models Genesis: PSNR of the restoration of damaged volumes
  (:func:`restoration_psnr`), baseline the damaged input;
* GVSL: organ Dice of a labelled volume's labels warped onto another by the
  predicted DVF (:func:`warped_label_dice`), baseline the unwarped labels;
* S2DC: top-1 accuracy of matching the patches of two overlapping views
  (:func:`match_accuracy`), baseline chance.

The functions run in eval mode without gradients and never draw from a
method's training random streams, so scoring a run does not change it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: seed of every random draw of a pretext score (damage, views): the same draws at step 0 and at the end
PRETEXT_SEED = 20231


@dataclass
class Pretext:
    """A method's pretext task scored on held-out volumes.

    Attributes:
        metric: what is scored, e.g. ``restoration_psnr``.
        values: one score per held-out case (or ordered pair of cases, ``over``).
        baseline: what the scores are compared with, e.g. ``damaged input``.
        baseline_values: the baseline per case / pair (None when it is a constant such as chance).
        over: ``cases`` or ``pairs``.
        unit: of the scores (``dB``), or ``""``.
    """

    metric: str
    values: np.ndarray
    baseline: str
    baseline_values: np.ndarray | None = None
    over: str = "cases"
    unit: str = ""


@torch.no_grad()
def restoration_psnr(backbone: nn.Module, head: nn.Module, damage, images: torch.Tensor) -> Pretext:
    """Restoration PSNR (dB, peak 1) of each held-out volume, damaged with :data:`PRETEXT_SEED`.

    Models Genesis (Zhou et al., MedIA 2021, https://doi.org/10.1016/j.media.2020.101840,
    Sec. 2.1): the network restores the original from a damaged copy.
    MONAI's ``PSNRMetric``, ``10 log10(1 / MSE)`` per volume. Baseline: the
    PSNR of the damaged input (what a network that copies its input scores).

    Args:
        backbone, head: the restoration is ``sigmoid(head(backbone(x)["local"]))``.
        damage: the method's :class:`~medssl.transforms.genesis.GenesisDamage`;
            a copy with its settings and a fresh seed is used.
        images: (N, 1, D, H, W) in [0, 1].
    """
    from monai.metrics import PSNRMetric

    damage = copy.deepcopy(damage)
    damage.set_random_state(PRETEXT_SEED)
    damaged = damage.batch(images)
    restored = torch.sigmoid(head(backbone(damaged)["local"]))
    psnr = PSNRMetric(max_val=1.0, reduction="none")
    return Pretext("restoration_psnr", psnr(restored, images).flatten().cpu().numpy(), "damaged input",
                   psnr(damaged, images).flatten().cpu().numpy(), unit="dB")


def _mean_dice(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Mean foreground Dice per item over the classes present in ``ref`` (one-hot inputs)."""
    from monai.metrics import compute_dice

    return torch.nanmean(compute_dice(pred, ref, include_background=False, ignore_empty=True), dim=1)


@torch.no_grad()
def warped_label_dice(predict_dvf: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], images: torch.Tensor,
                      labels: torch.Tensor | None, n_classes: int, chunk: int = 4) -> Pretext | None:
    """Warped-label Dice of every ordered pair (i, j), i != j, of held-out labelled volumes.

    GVSL (He et al., CVPR 2023, Eqs. 8-9; https://github.com/YutingHe-list/GVSL)
    learns to register image A to image B; if it does, A's labels warped by
    the predicted DVF overlap B's labels better than A's own labels do. Per
    pair: mean foreground Dice (MONAI ``compute_dice``, classes present in B)
    of warp(one-hot labels of i, DVF(i -> j)) (linear interpolation, then
    argmax) against the labels of j; baseline: the same Dice without warping.

    Args:
        predict_dvf: ``(moving, fixed) -> DVF`` in voxels, (B, 3, D, H, W).
        images: (N, 1, D, H, W); labels: (N, D, H, W) integer maps, or None.
        n_classes: label classes, background included.
        chunk: pairs per forward pass.

    Returns:
        None without labels or with fewer than two volumes.
    """
    from medssl.geometry.warp import warp

    if labels is None or len(images) < 2:
        return None
    pairs = [(i, j) for i in range(len(images)) for j in range(len(images)) if i != j]
    onehot = F.one_hot(labels.long(), n_classes).permute(0, 4, 1, 2, 3).float()
    warped, unwarped = [], []
    for k in range(0, len(pairs), chunk):
        ii = [i for i, _ in pairs[k:k + chunk]]
        jj = [j for _, j in pairs[k:k + chunk]]
        dvf = predict_dvf(images[ii], images[jj])
        moved = F.one_hot(warp(onehot[ii], dvf).argmax(1), n_classes).permute(0, 4, 1, 2, 3).float()
        warped.append(_mean_dice(moved, onehot[jj]))
        unwarped.append(_mean_dice(onehot[ii], onehot[jj]))
    return Pretext("warped_label_dice", torch.cat(warped).cpu().numpy(), "unwarped labels",
                   torch.cat(unwarped).cpu().numpy(), over="pairs")


@torch.no_grad()
def match_accuracy(make_views: Callable, predict_matches: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                   images: torch.Tensor, repeats: int = 4) -> Pretext:
    """Top-1 patch-matching accuracy per held-out volume over ``repeats`` view pairs.

    The matching task of S2DC (supplement D.1 and Alg. 1;
    https://arxiv.org/abs/2507.02581, code https://github.com/Ashespt/S2DC):
    of the patches of view A that have a same-location patch in view B, the
    share whose most probable match is that patch. Baseline: chance,
    1 / (patches per view).

    Args:
        make_views: ``(images, generator=g) -> (view_a, view_b, target)``, target
            (N, patches) the true index or -1 (:meth:`medssl.methods.s2dc.S2DC.make_views`).
        predict_matches: ``(view_a, view_b) -> (N, patches)`` predicted indices.
        images: (N, 1, D, H, W).
    """
    g = torch.Generator().manual_seed(PRETEXT_SEED)
    hits = torch.zeros(len(images))
    total = torch.zeros(len(images))
    for _ in range(repeats):
        a, b, target = make_views(images, generator=g)
        valid = target >= 0
        hits += ((predict_matches(a, b) == target) & valid).sum(1).cpu().float()
        total += valid.sum(1).cpu().float()
    return Pretext("patch_match_accuracy", (hits / total).numpy(), f"chance ({1.0 / target.shape[1]:.3f})")
