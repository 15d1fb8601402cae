"""Baker-Campbell-Hausdorff combination of velocity fields (Diffeomorphic Template Transformers, Eq. 4).

A piece-wise constant time-dependent velocity (fields ``v_1, ..., v_T``, one
per time interval) is folded into one stationary velocity ``Z`` with
``exp(Z) ~= exp(v_T) o ... o exp(v_1)``, which is then integrated once by
scaling and squaring (:func:`medssl.geometry.integrate.exp_velocity`).

Conventions (checked against ``scipy.linalg.logm(expm(A) @ expm(B))`` on
linear fields in ``tests/geometry/test_bch.py``):

* ``o`` is map composition, ``exp(u) o exp(v)`` applies ``exp(v)`` first
  (as :func:`medssl.geometry.integrate.compose`).
* The bracket is ``[u, v] = (Du) v - (Dv) u`` with ``Du[i, j] = d u_i / d x_j``.
  For linear fields ``u = A x``, ``v = B x`` it is ``(AB - BA) x``: the matrix
  commutator, so Eq. 4 reads exactly as for matrices,
  ``bch(u, v) = log(exp(u) o exp(v))``. (This is minus the bracket of
  differential geometry, ``(Dv) u - (Du) v``.)
* Derivatives: central differences in voxel units, one-sided at the border
  (:func:`medssl.geometry.jacobian.spatial_jacobian`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from medssl.geometry.jacobian import spatial_jacobian


def _apply(jac: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``(Du) w``: ``jac`` ``(B, 3, 3, D, H, W)`` times vectors ``w`` ``(B, 3, D, H, W)``."""
    return torch.einsum("bij...,bj...->bi...", jac, w)


def _check_order(order: int) -> None:
    if isinstance(order, bool) or not isinstance(order, int) or order not in (1, 2, 3):
        raise ValueError(f"order must be the int 1, 2 or 3, got {order!r}")


def lie_bracket(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Lie bracket ``[u, v] = (Du) v - (Dv) u`` of two vector fields (the bracket of Eq. 4).

    Sign chosen so that ``[A x, B x] = (AB - BA) x`` (see the module docstring).

    Args:
        u: ``(B, 3, D, H, W)`` velocity field in voxels.
        v: ``(B, 3, D, H, W)`` velocity field of the same shape.

    Returns:
        ``(B, 3, D, H, W)``.

    Raises:
        ValueError: a field is not ``(B, 3, D, H, W)`` or the shapes differ.
    """
    if u.shape != v.shape:
        raise ValueError(f"u {tuple(u.shape)} and v {tuple(v.shape)} must have the same shape")
    return _apply(spatial_jacobian(u), v) - _apply(spatial_jacobian(v), u)


def bch(u: torch.Tensor, v: torch.Tensor, order: int = 2) -> torch.Tensor:
    """Truncated BCH series ``Z ~= log(exp(u) o exp(v))`` (paper Eq. 4).

    * order 1: ``u + v``
    * order 2: ``+ 1/2 [u, v]`` (the paper's choice, Sec. 5.1)
    * order 3: ``+ 1/12 ([u, [u, v]] + [v, [v, u]])``

    Truncation error is ``O(eps^(order+1))`` for fields scaled by ``eps``.

    Args:
        u: ``(B, 3, D, H, W)`` velocity applied second (outer map).
        v: ``(B, 3, D, H, W)`` velocity applied first (inner map).
        order: 1, 2 or 3.

    Raises:
        ValueError: ``order`` is not 1, 2 or 3, or the fields do not match.
    """
    _check_order(order)
    if u.shape != v.shape:
        raise ValueError(f"u {tuple(u.shape)} and v {tuple(v.shape)} must have the same shape")
    z = u + v
    if order >= 2:
        uv = lie_bracket(u, v)
        z = z + 0.5 * uv
        if order >= 3:
            z = z + (lie_bracket(u, uv) - lie_bracket(v, uv)) / 12.0  # [v, [v, u]] = -[v, [u, v]]
    return z


def bch_combine(fields: Sequence[torch.Tensor], order: int = 2) -> torch.Tensor:
    """Fold time-dependent velocities into one with BCH in a balanced binary tree (Eq. 4, Sec. 3).

    ``fields[0]`` acts first (earliest time), ``fields[-1]`` last:
    ``exp(result) ~= exp(f[-1]) o ... o exp(f[0])``, matching
    :func:`medssl.geometry.integrate.compose_tree` on the integrated fields.
    The list is split in halves and the halves combined with
    ``bch(later, earlier, order)``, so no field goes through more than
    ``ceil(log2 n)`` truncated BCH steps.

    Args:
        fields: non-empty sequence of ``(B, 3, D, H, W)`` velocity fields of equal shape.
        order: BCH order, 1, 2 or 3 (the paper uses 2).

    Raises:
        ValueError: ``fields`` is empty, the shapes differ, or ``order`` is invalid.
    """
    fields = list(fields)
    if not fields:
        raise ValueError("fields must hold at least one velocity field, got an empty sequence")
    _check_order(order)
    for i, f in enumerate(fields):
        if not isinstance(f, torch.Tensor) or f.ndim != 5 or f.shape[1] != 3 or f.shape != fields[0].shape:
            shape = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
            raise ValueError(f"fields[{i}] must be (B, 3, D, H, W) like fields[0], got {shape}")

    def fold(fs: list[torch.Tensor]) -> torch.Tensor:
        if len(fs) == 1:
            return fs[0]
        mid = len(fs) // 2
        return bch(fold(fs[mid:]), fold(fs[:mid]), order)

    return fold(fields)
