"""Integration of velocity fields into displacement fields (Diffeomorphic Template Transformers, Sec. 3).

Composition order, used everywhere in medssl: a displacement ``u`` stands for
the map ``Phi_u(p) = p + u(p)`` and

    compose(u, v) = v + warp(u, v)   is the displacement of   Phi_u o Phi_v,

i.e. ``v`` is applied first, then ``u``: ``(u o v)(p) = v(p) + u(p + v(p))``.
Since ``warp`` samples ``out(p) = in(p + ddf(p))``, warping an image by the
composition equals warping by ``u`` first and by ``v`` second:
``warp(img, compose(u, v)) == warp(warp(img, u), v)`` (up to interpolation).

Positions are resampled with MONAI's ``Warp`` (trilinear, ``"border"``
padding by default, so the field outside the volume repeats its boundary
value). MONAI's ``DVF2DDF`` runs the same squaring loop with ``"zeros"``
padding and a step count fixed in advance; here ``T`` follows Alg. 1 of the
paper. ``bench/bench_integrate.py`` checks the two agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from medssl.geometry.warp import warp

METHODS = ("ss", "direct")


def _check_field(field: torch.Tensor, name: str) -> None:
    """2-D fields ``(B, 2, H, W)`` are accepted as well as 3-D ones (the STN study is 2-D)."""
    if not isinstance(field, torch.Tensor) or field.ndim not in (4, 5) or field.shape[1] != field.ndim - 2:
        shape = tuple(field.shape) if isinstance(field, torch.Tensor) else type(field).__name__
        raise ValueError(f"{name} must be a (B, 3, D, H, W) or (B, 2, H, W) tensor, got {shape}")


def compose(u: torch.Tensor, v: torch.Tensor, padding_mode: str = "border") -> torch.Tensor:
    """Displacement of ``Phi_u o Phi_v`` (apply ``v`` first, then ``u``).

    The composition "o" of Alg. 1 and of the binary-tree composition (Sec. 3
    of the paper): ``(u o v)(p) = v(p) + u(p + v(p))``, with ``u`` sampled
    trilinearly (paper Eq. 2) at the displaced positions.

    Args:
        u: ``(B, 3, D, H, W)`` displacement applied second.
        v: ``(B, 3, D, H, W)`` displacement applied first.
        padding_mode: how ``u`` is extended outside the volume (``"border"``, ``"zeros"``).

    Raises:
        ValueError: a field is not ``(B, 3, D, H, W)`` or the shapes differ.
    """
    _check_field(u, "u")
    _check_field(v, "v")
    if u.shape != v.shape:
        raise ValueError(f"u {tuple(u.shape)} and v {tuple(v.shape)} must have the same shape")
    return v + warp(u, v, padding_mode=padding_mode)


def n_squarings(v: torch.Tensor, steps: int | None = None) -> int:
    """Number of squarings ``T`` of Alg. 1: ``T = ceil(log2(max ||v||) + 1)``.

    ``max ||v||`` is the largest Euclidean norm (voxels) of a vector of ``v``
    over the whole batch, so one ``T`` serves the batch and
    ``max ||v|| / 2^T <= 0.5`` (the paper's condition). ``T`` is at least 0;
    a zero field gives 0. (Alg. 1 as printed, ``ceil(log2(max(||v||) + 1)``,
    leaves a parenthesis open; we read it as the text's ``||v|| / 2^T < 0.5``.)

    Args:
        v: ``(B, 3, D, H, W)`` velocity field.
        steps: fixed ``T`` overriding Alg. 1 (e.g. the paper's network uses a
            fixed count); ``None`` computes it from ``v``.

    Raises:
        ValueError: ``v`` has the wrong shape or non-finite values, or ``steps`` is negative.
    """
    _check_field(v, "v")
    if steps is not None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be a non-negative int or None, got {steps!r}")
        return steps
    vmax = float(torch.linalg.vector_norm(v.detach(), dim=1).max()) if v.numel() else 0.0
    if not math.isfinite(vmax):
        raise ValueError(f"v must be finite, its largest norm is {vmax}")
    if vmax == 0.0:
        return 0
    return max(0, math.ceil(math.log2(vmax) + 1))


def exp_velocity(v: torch.Tensor, steps: int | None = None) -> torch.Tensor:
    """Displacement of ``exp(v)`` by scaling and squaring (paper Alg. 1).

    ``phi_0 = v / 2^T``, then ``T`` times ``phi <- phi o phi`` with
    :func:`compose`; ``T`` from :func:`n_squarings`. ``exp(0)`` is exactly the
    identity (zero displacement). Differentiable with respect to ``v``.

    Args:
        v: ``(B, 3, D, H, W)`` stationary velocity field in voxels.
        steps: fixed number of squarings; ``None`` uses Alg. 1.

    Returns:
        ``(B, 3, D, H, W)`` displacement of the time-1 flow of ``v``.

    Raises:
        ValueError: see :func:`n_squarings`.
    """
    t = n_squarings(v, steps)
    phi = v / (2.0 ** t)
    for _ in range(t):
        phi = compose(phi, phi)
    return phi


def direct(v: torch.Tensor, steps: int | None = None) -> torch.Tensor:
    """The non-diffeomorphic variant: the field is used as the displacement itself.

    The "Non-diffeomorphic-STN (w/o field integration)" row of the paper's
    Table 1. ``steps`` is accepted and ignored, so both methods share a call.

    Raises:
        ValueError: ``v`` is not ``(B, 3, D, H, W)``.
    """
    _check_field(v, "v")
    return v


def integrate(v: torch.Tensor, method: str = "ss", steps: int | None = None) -> torch.Tensor:
    """Turn a velocity field into a displacement by name.

    Args:
        v: ``(B, 3, D, H, W)`` velocity field.
        method: ``"ss"`` (scaling and squaring, Alg. 1: :func:`exp_velocity`)
            or ``"direct"`` (no integration: :func:`direct`).
        steps: number of squarings for ``"ss"`` (``None``: Alg. 1); ignored by ``"direct"``.

    Raises:
        ValueError: unknown ``method``, or see the chosen function.
    """
    if method == "ss":
        return exp_velocity(v, steps)
    if method == "direct":
        return direct(v, steps)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def compose_tree(fields: Sequence[torch.Tensor]) -> torch.Tensor:
    """Compose displacements in a balanced binary tree (paper Sec. 3, "Binary Tree Composition").

    ``fields[0]`` is applied first and ``fields[-1]`` last: the result is the
    displacement of ``Phi_{f[-1]} o ... o Phi_{f[1]} o Phi_{f[0]}``, the same as
    the chain ``compose(f[n-1], compose(..., compose(f[1], f[0])))`` up to
    interpolation error, but each field is resampled only ``O(log n)`` times.
    The list is split in halves, ``[f0, f1, f2, f3] -> (f3 o f2) o (f1 o f0)``.

    Args:
        fields: non-empty sequence of ``(B, 3, D, H, W)`` displacements of equal shape.

    Raises:
        ValueError: ``fields`` is empty or the shapes differ.
    """
    fields = list(fields)
    if not fields:
        raise ValueError("fields must hold at least one displacement field, got an empty sequence")
    for i, f in enumerate(fields):
        _check_field(f, f"fields[{i}]")
        if f.shape != fields[0].shape:
            raise ValueError(f"fields[{i}] has shape {tuple(f.shape)}, fields[0] {tuple(fields[0].shape)}")

    def fold(fs: list[torch.Tensor]) -> torch.Tensor:
        if len(fs) == 1:
            return fs[0]
        mid = len(fs) // 2
        return compose(fold(fs[mid:]), fold(fs[:mid]))

    return fold(fields)
