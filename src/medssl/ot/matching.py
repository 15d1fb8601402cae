"""Patch-to-patch matching: ground truth, dustbin Sinkhorn, dual-softmax and the matching loss.

S2DC (ICCV 2025) matches the patch tokens of two overlapping sub-volumes
``V`` and ``V'``. The ground truth comes from the known overlap (supplement
D.1, Fig. 1); the soft assignment is either the log-domain Sinkhorn plan
(Alg. 1, :mod:`medssl.ot.sinkhorn`), optionally with a SuperGlue dustbin
(Sarlin et al., CVPR 2020, Sec. 3.2) so that patches of ``V`` outside the
overlap have somewhere to go, or the dual-softmax operator (supplement D.3;
Rocco et al., NeurIPS 2018; LoFTR, Sun et al., CVPR 2021, Eq. 2). The loss is
the negative log of the assignment probability of the true match (SuperGlue
Eq. 10).

Unlike the published S2DC code, whose dustbin score is a ``Parameter`` created
inside a loss object and never given to the optimiser, the dustbin score of
:class:`SinkhornMatcher` is a registered ``nn.Parameter`` and is trained.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medssl.ot.sinkhorn import log_sinkhorn

__all__ = ["SinkhornMatcher", "add_dustbin", "correspondence", "dual_softmax", "dustbin_marginals",
           "matching_loss", "patch_nll"]


def correspondence(
    shape: Sequence[int],
    offset_a: Sequence[int],
    offset_b: Sequence[int],
    p: int,
    shape_b: Sequence[int] | None = None,
) -> torch.Tensor:
    """Ground-truth patch correspondence of two translated views (S2DC supplement D.1, Fig. 1).

    Both views are crops of one volume, view A of size ``shape`` at voxel
    ``offset_a`` and view B of size ``shape_b`` (default ``shape``) at
    ``offset_b``. Each view is tiled by p-sized patches numbered in row-major
    (C) order over the patch grid ``shape // p``; patch ``i`` of A and patch
    ``j`` of B correspond when they cover the same voxels of the volume.

    Args:
        shape: spatial size of view A (any number of dimensions), each a multiple of ``p``.
        offset_a, offset_b: the views' corners in the volume, multiples of ``p``.
        p: patch size (voxels).
        shape_b: spatial size of view B; defaults to ``shape``.

    Returns:
        LongTensor of length ``prod(shape // p)``: for each patch of A the index
        of the same-location patch of B, or -1 when it lies outside B.

    Raises:
        ValueError: if the sizes or offsets are not multiples of ``p`` or the
            dimensions disagree.
    """
    shape_b = shape if shape_b is None else shape_b
    if isinstance(p, bool) or not isinstance(p, int) or p < 1:
        raise ValueError(f"patch size p must be a positive integer, got {p!r}")
    dims = len(shape)
    for name, v in (("shape_b", shape_b), ("offset_a", offset_a), ("offset_b", offset_b)):
        if len(v) != dims:
            raise ValueError(f"{name} {tuple(v)} has {len(v)} dimensions, shape {tuple(shape)} has {dims}")
    for name, v in (("shape", shape), ("shape_b", shape_b), ("offset_a", offset_a), ("offset_b", offset_b)):
        if any(int(x) % p for x in v) or any(int(x) < 0 for x in v):
            raise ValueError(f"{name} {tuple(int(x) for x in v)} must be non-negative multiples of p={p}")
    grid_a = [int(s) // p for s in shape]
    grid_b = [int(s) // p for s in shape_b]
    if any(g < 1 for g in grid_a + grid_b):
        raise ValueError(f"views {tuple(shape)} and {tuple(shape_b)} must hold at least one patch of size {p}")
    coords = torch.stack(torch.meshgrid(*[torch.arange(g) for g in grid_a], indexing="ij"), -1).reshape(-1, dims)
    shift = torch.tensor([(int(a) - int(b)) // p for a, b in zip(offset_a, offset_b)])
    in_b = coords + shift
    gb = torch.tensor(grid_b)
    inside = ((in_b >= 0) & (in_b < gb)).all(-1)
    strides = torch.tensor([math.prod(grid_b[k + 1:]) for k in range(dims)])
    index = (in_b * strides).sum(-1)
    return torch.where(inside, index, torch.full_like(index, -1)).long()


def add_dustbin(scores: torch.Tensor, bin_score: torch.Tensor) -> torch.Tensor:
    """Append a dustbin row and column holding ``bin_score`` (SuperGlue Sec. 3.2): (B, N, M) -> (B, N+1, M+1)."""
    b, n, m = scores.shape
    alpha = bin_score.to(scores.dtype).reshape(1, 1, 1)
    col = alpha.expand(b, n, 1)
    row = alpha.expand(b, 1, m + 1)
    return torch.cat([torch.cat([scores, col], -1), row], 1)


def dustbin_marginals(n: int, m: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SuperGlue marginals: ``r = [1]*n + [m]`` and ``c = [1]*m + [n]``, both divided by ``n + m``."""
    r = torch.ones(n + 1, dtype=like.dtype, device=like.device)
    c = torch.ones(m + 1, dtype=like.dtype, device=like.device)
    r[-1], c[-1] = m, n
    return r / (n + m), c / (n + m)


class SinkhornMatcher(nn.Module):
    """Soft patch assignment by log-domain Sinkhorn (S2DC supplement Alg. 1), optionally with a trained dustbin.

    Args:
        iterations: Sinkhorn iterations T (10 and 100 in Table 3 of the supplement).
        lam: entropic regularisation λ (1 in the paper); the plan is ``∝ exp(S / λ)``.
        dustbin: add a SuperGlue dustbin row / column whose score is the
            trained parameter :attr:`bin_score`.
        bin_init: initial dustbin score (1.0 in the published code), in the
            units of the similarity scores.

    ``forward(scores)`` maps similarities (B, N, M) to log assignment
    probabilities ``log P``: ``P[n, m]`` is the probability that patch ``n`` of
    A matches patch ``m`` of B; each row of a real patch sums to 1. With the
    dustbin the result is (B, N+1, M+1): column M is "n has no match" and
    row N is "m has no match" (the plan times ``N + M``, as in SuperGlue);
    without it the plan times ``N`` (uniform marginals).
    """

    def __init__(self, iterations: int = 100, lam: float = 1.0, dustbin: bool = True, bin_init: float = 1.0) -> None:
        super().__init__()
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"iterations must be an integer >= 1, got {iterations!r}")
        if not (isinstance(lam, (int, float)) and lam > 0):
            raise ValueError(f"lam must be > 0, got {lam!r}")
        self.iterations = iterations
        self.lam = float(lam)
        self.dustbin = bool(dustbin)
        if self.dustbin:
            self.bin_score = nn.Parameter(torch.tensor(float(bin_init)))
        else:
            self.register_parameter("bin_score", None)

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        if scores.ndim != 3:
            raise ValueError(f"scores must be (B, N, M), got shape {tuple(scores.shape)}")
        b, n, m = scores.shape
        if not self.dustbin:
            return log_sinkhorn(scores, self.lam, self.iterations) + math.log(n)
        r, c = dustbin_marginals(n, m, scores)
        log_plan = log_sinkhorn(add_dustbin(scores, self.bin_score), self.lam, self.iterations, r, c)
        return log_plan + math.log(n + m)

    def extra_repr(self) -> str:
        return f"iterations={self.iterations}, lam={self.lam}, dustbin={self.dustbin}"


def dual_softmax(scores: torch.Tensor, temperature: float = 1.0, log: bool = False) -> torch.Tensor:
    """Dual-softmax operator (S2DC supplement D.3; LoFTR Eq. 2): ``softmax_m(S/τ) * softmax_n(S/τ)``.

    Args:
        scores: similarities (..., N, M).
        temperature: τ > 0.
        log: return the log of the product (numerically safer for a loss).

    Returns:
        The (log) matching confidence, same shape as ``scores``.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    z = scores / temperature
    out = F.log_softmax(z, dim=-1) + F.log_softmax(z, dim=-2)
    return out if log else out.exp()


def patch_nll(
    log_assign: torch.Tensor, target: torch.Tensor, dustbin: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-patch negative log assignment probability of the true match (SuperGlue Eq. 10).

    Args:
        log_assign: (B, N, M) log assignment probabilities, or (B, N+1, M+1)
            with the dustbin last (as returned by :class:`SinkhornMatcher`).
        target: (B, N) long, for each patch of A the index of its match in B
            or -1 (from :func:`correspondence`).
        dustbin: whether ``log_assign`` has the dustbin row and column.

    Returns:
        ``(row_nll, row_mask, col_nll, col_mask)``: (B, N) losses of the
        patches of A (true match, or the dustbin column for unmatched patches
        when ``dustbin``) and which of them count; (B, M) dustbin losses of the
        patches of B that no patch of A matches (all masked out without dustbin).

    Raises:
        ValueError: on shapes that do not fit or targets out of range.
    """
    if log_assign.ndim != 3 or target.ndim != 2:
        raise ValueError(f"log_assign must be (B, N, M) and target (B, N), got {tuple(log_assign.shape)} "
                         f"and {tuple(target.shape)}")
    b, n1, m1 = log_assign.shape
    n, m = (n1 - 1, m1 - 1) if dustbin else (n1, m1)
    if target.shape != (b, n):
        raise ValueError(f"target must have shape ({b}, {n}) for log_assign {tuple(log_assign.shape)} "
                         f"(dustbin={dustbin}), got {tuple(target.shape)}")
    target = target.long().to(log_assign.device)
    if bool(((target < -1) | (target >= m)).any()):
        raise ValueError(f"target indices must be in [-1, {m}), got range [{int(target.min())}, {int(target.max())}]")
    matched = target >= 0
    cols = torch.where(matched, target, torch.full_like(target, m if dustbin else 0))
    row_nll = -log_assign[:, :n, :].gather(-1, cols.unsqueeze(-1)).squeeze(-1)
    row_mask = torch.ones_like(matched) if dustbin else matched
    hit = torch.zeros(b, m, dtype=torch.bool, device=log_assign.device)
    hit.scatter_(1, cols.masked_fill(~matched, 0), matched)
    if dustbin:
        col_nll = -log_assign[:, n, :m]
        col_mask = ~hit
    else:
        col_nll = torch.zeros(b, m, dtype=log_assign.dtype, device=log_assign.device)
        col_mask = torch.zeros_like(hit)
    return row_nll, row_mask, col_nll, col_mask


def matching_loss(
    log_assign: torch.Tensor,
    target: torch.Tensor,
    dustbin: bool = False,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Weighted mean negative log-likelihood of the true patch matches (SuperGlue Eq. 10).

    The terms are: every matched patch of A (``-log P[n, target[n]]``, weighted
    by ``weights[n]``, e.g. the Sharpe ratios of S2DC supplement Eq. 1) and,
    with the dustbin, every unmatched patch of A (``-log P[n, dustbin]``) and of
    B (``-log P[dustbin, m]``), weight 1. The loss is ``Σ w ℓ / Σ w`` over the
    whole batch; without dustbin, unmatched patches do not count.

    Args:
        log_assign, target, dustbin: as in :func:`patch_nll`.
        weights: (B, N) non-negative weights of the matched patches of A, or None (all 1).
    """
    row_nll, row_mask, col_nll, col_mask = patch_nll(log_assign, target, dustbin)
    w_row = row_mask.to(row_nll.dtype)
    if weights is not None:
        if weights.shape != target.shape:
            raise ValueError(f"weights must have the shape of target {tuple(target.shape)}, got {tuple(weights.shape)}")
        w_row = torch.where(target.to(row_nll.device) >= 0, weights.to(row_nll), w_row)
    w_col = col_mask.to(col_nll.dtype)
    total = w_row.sum() + w_col.sum()
    if float(total) == 0:
        return log_assign.sum() * 0.0
    return ((w_row * row_nll).sum() + (w_col * col_nll).sum()) / total
