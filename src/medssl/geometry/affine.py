"""GVSL affine matrices (supplement Eq. 8) and their fusion with a deformable field (Eq. 9).

Positions are voxel indices relative to the volume centre, so a rotation turns
the volume about its centre. All functions are differentiable and batched:
the published code builds the matrix with ``torch.FloatTensor([...])``, which
cuts the gradient (the affine head never trains) and handles one pair only.
"""

from __future__ import annotations

import torch

from medssl.geometry.warp import identity_grid, warp


def rotation_matrix(angles: torch.Tensor) -> torch.Tensor:
    """Rotation block of Eq. 8, ``R = Rz(θz) · Ry(θy) · Rx(θx)``.

    This is the matrix printed in Eq. 8 (its entry (0, 2) is misprinted there as
    ``sinθy cosθx cosθz + sinθx cosθz``; the product of the three elementary
    rotations gives ``... + sinθx sinθz``), i.e. scipy's
    ``Rotation.from_euler("xyz", [θx, θy, θz])``.

    Args:
        angles: ``(B, 3)`` radians ``(θx, θy, θz)``.

    Returns:
        ``(B, 3, 3)``.
    """
    if angles.ndim != 2 or angles.shape[1] != 3:
        raise ValueError(f"angles must be (B, 3), got {tuple(angles.shape)}")
    cx, cy, cz = torch.cos(angles).unbind(1)
    sx, sy, sz = torch.sin(angles).unbind(1)
    row0 = torch.stack([cy * cz, sx * sy * cz - cx * sz, cx * sy * cz + sx * sz], 1)
    row1 = torch.stack([cy * sz, cx * cz + sx * sy * sz, cx * sy * sz - sx * cz], 1)
    row2 = torch.stack([-sy, sx * cy, cx * cy], 1)
    return torch.stack([row0, row1, row2], 1)


def affine_matrix(angles: torch.Tensor, scales: torch.Tensor, shears: torch.Tensor,
                  translations: torch.Tensor) -> torch.Tensor:
    """The 4x4 matrix of Eq. 8: Rotation · Scaling · Shearing · Translation.

    Args:
        angles: ``(B, 3)`` rotation angles (θx, θy, θz), radians.
        scales: ``(B, 3)`` scale factors (sx, sy, sz).
        shears: ``(B, 6)`` off-diagonal shear coefficients in the order
            (sh_yx, sh_zx, sh_xy, sh_zy, sh_xz, sh_yz), placed as in Eq. 8:
            ``[[1, sh_yx, sh_zx], [sh_xy, 1, sh_zy], [sh_xz, sh_yz, 1]]``.
        translations: ``(B, 3)`` translation in voxels.

    Returns:
        ``(B, 4, 4)`` homogeneous matrices.
    """
    b = angles.shape[0]
    for name, t, n in (("scales", scales, 3), ("shears", shears, 6), ("translations", translations, 3)):
        if t.shape != (b, n):
            raise ValueError(f"{name} must be ({b}, {n}), got {tuple(t.shape)}")
    eye = torch.eye(4, dtype=angles.dtype, device=angles.device).expand(b, 4, 4)
    rot = eye.clone()
    rot[:, :3, :3] = rotation_matrix(angles)
    scale = torch.diag_embed(torch.cat([scales, torch.ones_like(scales[:, :1])], 1))
    shear = eye.clone()
    yx, zx, xy, zy, xz, yz = shears.unbind(1)
    shear[:, 0, 1], shear[:, 0, 2] = yx, zx
    shear[:, 1, 0], shear[:, 1, 2] = xy, zy
    shear[:, 2, 0], shear[:, 2, 1] = xz, yz
    trans = eye.clone()
    trans[:, :3, 3] = translations
    return rot @ scale @ shear @ trans


def affine_ddf(matrix: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Displacement ``p̂ - p`` of the affine ``p̂ = M p`` on a voxel grid (centred coordinates).

    Args:
        matrix: ``(B, 4, 4)`` (or ``(B, 3, 4)``).
        shape: spatial size ``(D, H, W)``.

    Returns:
        ``(B, 3, D, H, W)`` displacement in voxels.
    """
    grid = identity_grid(shape, device=matrix.device).to(matrix.dtype)  # (3, D, H, W)
    flat = grid.reshape(3, -1)
    moved = torch.einsum("bij,jn->bin", matrix[:, :3, :3], flat) + matrix[:, :3, 3:4]
    return (moved - flat).reshape(matrix.shape[0], 3, *shape)


def fuse(matrix: torch.Tensor, deformable: torch.Tensor) -> torch.Tensor:
    """Fuse the affine and the deformable field into one DVF (Eq. 9).

    ``ψ(p) = ψˡ(p̂) + p̂ − p`` with ``p̂ = ψᵍ p``: the deformable field is read at
    the affinely moved position (trilinear, the same sampling as :func:`warp`),
    so the result moves a voxel by the affine, then by the deformable field.

    Args:
        matrix: ``(B, 4, 4)`` affine ψᵍ.
        deformable: ``(B, 3, D, H, W)`` deformable field ψˡ in voxels.
    """
    aff = affine_ddf(matrix, tuple(deformable.shape[2:]))
    return aff + warp(deformable, aff)


def fuse_fixed_frame(matrix: torch.Tensor, deformable: torch.Tensor) -> torch.Tensor:
    """One DVF for "warp by the affine, then by a field defined in the fixed frame".

    The published GVSL code (github.com/YutingHe-list/GVSL, ``PyTorch/models/gvsl.py``,
    commit 77c89ba, ``GVSL.forward``) computes ``stn(atn(B, M), flow)``: the
    moving image is resampled by the affine, and that result is resampled by a
    flow predicted from the *affinely warped* moving features and the fixed
    features, so the flow lives on the fixed grid. A voxel ``p`` then reads the
    moving image at ``M (p + u(p))``, and the displacement is

    ``ψ(p) = M (p + u(p)) − p = (M p − p) + R u(p)``, with ``R`` the 3x3 block of ``M``.

    It differs from Eq. 9 of the supplement (``ψ(p) = ψˡ(p̂) + p̂ − p``, the field
    read at the affinely moved position, :func:`fuse`) in the frame of the field;
    medssl follows the published code, whose field is predicted in the frame it
    is applied in. The composition is exact (``R u`` is linear), so the image is
    interpolated once, not twice as in the published code.

    Args:
        matrix: ``(B, 4, 4)`` (or ``(B, 3, 4)``) affine, voxel coordinates about the centre.
        deformable: ``(B, 3, D, H, W)`` field on the fixed grid, voxels.

    Returns:
        ``(B, 3, D, H, W)`` displacement in voxels.

    Raises:
        ValueError: if the shapes do not match.
    """
    if deformable.ndim != 5 or deformable.shape[1] != 3 or matrix.shape[0] != deformable.shape[0] \
            or tuple(matrix.shape[1:]) not in ((4, 4), (3, 4)):
        raise ValueError(f"expected matrix (B, 4, 4) and deformable (B, 3, D, H, W), got {tuple(matrix.shape)} "
                         f"and {tuple(deformable.shape)}")
    aff = affine_ddf(matrix, tuple(deformable.shape[2:]))
    return aff + torch.einsum("bij,bj...->bi...", matrix[:, :3, :3].to(deformable.dtype), deformable)
