"""Sharpe-ratio weights of the patch-to-patch losses (S2DC supplement D.4, Eq. 1).

For a patch token ``t_n`` of sub-volume ``V_i`` and the cosine similarities
``D_n`` of ``t_n`` with the ``N`` patch tokens of ``V_i'``,

    sr_n = (max(D_n) - (1/N) Σ_m D_n[m]) / σ(D_n)            (Eq. 1)

A single clear match (one extreme value among small similarities) gives a
large ratio; several similar candidates raise the mean and the spread and
lower it, so weighting the patch losses by ``sr`` softens one-to-many
relations that a strict one-to-one transport would distort.

σ is the population standard deviation (the 1/N of the mean in Eq. 1); the
ratio is unchanged by a positive affine map of the similarities, e.g. the
published code's ``(1 + cos) / 2``. The published code turns the ratios into
weights with a softmax over patches; Eq. 1 and the text only say the ratio
weights the loss, so :func:`sharpe_weights` uses the ratios themselves,
rescaled to mean 1 over the counted patches and without gradient (a weight,
not a target: with a gradient the network could lower the loss by blurring
the similarities of hard patches).
"""

from __future__ import annotations

import torch

__all__ = ["sharpe_ratio", "sharpe_weights"]


def sharpe_ratio(similarity: torch.Tensor, dim: int = -1, eps: float = 1e-8) -> torch.Tensor:
    """Sharpe ratio of S2DC supplement Eq. 1 along ``dim``: ``(max - mean) / std`` (population std).

    Args:
        similarity: cosine similarities, e.g. (B, N, M) of the N tokens of
            V_i with the M tokens of V_i'.
        dim: the axis holding ``D_n``.
        eps: added to σ so that a constant vector gives 0, not NaN.

    Returns:
        The ratios, ``similarity`` with ``dim`` removed.
    """
    if similarity.shape[dim] < 2:
        raise ValueError(f"the Sharpe ratio needs at least 2 similarities along dim {dim}, "
                         f"got shape {tuple(similarity.shape)}")
    mean = similarity.mean(dim)
    std = similarity.std(dim, correction=0)
    return (similarity.amax(dim) - mean) / (std + eps)


def sharpe_weights(similarity: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-patch loss weights from Eq. 1: Sharpe ratios (no gradient), mean 1 over ``mask`` per batch item.

    Args:
        similarity: (B, N, M) cosine similarities of the tokens of A with those of B.
        mask: (B, N) bool, the patches whose losses are weighted (e.g. those
            with a true match); all when None.

    Returns:
        (B, N) weights; entries outside ``mask`` are 0.
    """
    with torch.no_grad():
        sr = sharpe_ratio(similarity.detach(), dim=-1)
        m = torch.ones_like(sr, dtype=torch.bool) if mask is None else mask.to(torch.bool)
        sr = torch.where(m, sr, torch.zeros_like(sr))
        mean = sr.sum(-1, keepdim=True) / m.sum(-1, keepdim=True).clamp(min=1)
        return torch.where(mean > 0, sr / mean.clamp(min=1e-12), m.to(sr.dtype))
