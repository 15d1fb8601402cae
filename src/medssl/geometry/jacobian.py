"""Spatial Jacobians of dense fields and the folding metric of the Diffeomorphic Template Transformers paper.

The paper (Sec. 5.3, Tables 1-3) reports "% |J_phi| < 0", the percentage of
voxels where the Jacobian determinant of the transformation is not positive,
as a measure of folding. Fields follow the package convention: ``(B, 3, D, H,
W)`` in voxel units, channel ``k`` along spatial axis ``k``.

Derivatives are finite differences in voxel units (``torch.gradient``):
second-order central differences ``(f[i+1] - f[i-1]) / 2`` in the interior,
first-order one-sided differences on the first and last voxel of each axis.
Both are exact for fields that are affine in the coordinates.
"""

from __future__ import annotations

import torch


def _check_field(field: torch.Tensor, name: str = "field") -> None:
    """3-D ``(B, 3, D, H, W)`` or 2-D ``(B, 2, H, W)`` fields."""
    if not isinstance(field, torch.Tensor) or field.ndim not in (4, 5) or field.shape[1] != field.ndim - 2:
        shape = tuple(field.shape) if isinstance(field, torch.Tensor) else type(field).__name__
        raise ValueError(f"{name} must be a (B, 3, D, H, W) or (B, 2, H, W) tensor, got {shape}")
    if min(field.shape[2:]) < 2:
        raise ValueError(f"{name} needs at least 2 voxels along each spatial axis, got {tuple(field.shape[2:])}")


def spatial_jacobian(field: torch.Tensor) -> torch.Tensor:
    """Jacobian matrix ``Du`` of a vector field, ``Du[:, i, j] = d u_i / d x_j``.

    Central differences in the interior, one-sided at the border (see the
    module docstring), voxel units. Used by :func:`jacobian_determinant` and by
    the Lie bracket of :mod:`medssl.geometry.bch` (paper Eq. 4).

    Args:
        field: ``(B, 3, D, H, W)`` displacement or velocity field.

    Returns:
        ``(B, 3, 3, D, H, W)``: row ``i`` = component, column ``j`` = axis.

    Raises:
        ValueError: ``field`` is not ``(B, 3, D, H, W)`` or an axis is shorter than 2.
    """
    _check_field(field)
    grads = torch.gradient(field, dim=tuple(range(2, field.ndim)), edge_order=1)  # grads[j] = d field / d x_j
    return torch.stack(grads, dim=2)


def jacobian_determinant(ddf: torch.Tensor) -> torch.Tensor:
    """Jacobian determinant ``det(I + Du)`` of the map ``p -> p + u(p)``.

    The quantity behind the paper's "% |J_phi| < 0" metric (Sec. 5.3,
    Tables 1-3); equal to ``det(I + M)`` everywhere for an affine
    displacement ``u(x) = M x + t``.

    Args:
        ddf: ``(B, 3, D, H, W)`` displacement field in voxels.

    Returns:
        ``(B, D, H, W)`` determinants, same dtype as ``ddf``.

    Raises:
        ValueError: ``ddf`` is not ``(B, 3, D, H, W)`` or an axis is shorter than 2.
    """
    jac = spatial_jacobian(ddf).movedim((1, 2), (-2, -1))  # (B, *spatial, n, n)
    eye = torch.eye(jac.shape[-1], dtype=jac.dtype, device=jac.device)
    return torch.linalg.det(jac + eye)


def negative_fraction(ddf: torch.Tensor) -> torch.Tensor:
    """Percentage of voxels whose Jacobian determinant is ``<= 0`` (folding).

    The paper's "% |J_phi| < 0" (Sec. 5.3, Tables 1-3); a zero determinant
    is counted too, since the map is not invertible there either.

    Args:
        ddf: ``(B, 3, D, H, W)`` displacement field in voxels.

    Returns:
        ``(B,)`` percentages in ``[0, 100]``, one per sample (``float64``).

    Raises:
        ValueError: ``ddf`` is not ``(B, 3, D, H, W)`` or an axis is shorter than 2.
    """
    det = jacobian_determinant(ddf.detach())
    return (det <= 0).flatten(1).double().mean(1) * 100.0
