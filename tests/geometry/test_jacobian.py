"""Jacobian determinant against closed forms (affine maps) and SimpleITK."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage

from medssl.geometry.integrate import exp_velocity
from medssl.geometry.jacobian import jacobian_determinant, negative_fraction, spatial_jacobian
from medssl.geometry.warp import identity_grid


def smooth_np(shape, sigma: float, vmax: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    f = np.stack([ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap") for _ in range(3)])
    return f * vmax / np.linalg.norm(f, axis=0).max()


def affine(m: np.ndarray, shape, t=(0.0, 0.0, 0.0)) -> torch.Tensor:
    x = identity_grid(shape).double()
    return (torch.einsum("ij,jdhw->idhw", torch.as_tensor(m), x)
            + torch.tensor(t, dtype=torch.float64).view(3, 1, 1, 1))[None]


def sitk_jacobian_determinant(ddf: np.ndarray) -> np.ndarray:
    """SimpleITK's determinant of ``(3, D, H, W)`` (channel k along numpy axis k).

    SimpleITK indexes ``(x, y, z)`` = numpy axes ``(2, 1, 0)``, and vector
    components are ``(x, y, z)`` too, so the channels are reversed.
    """
    img = sitk.GetImageFromArray(np.moveaxis(ddf[::-1], 0, -1).copy(), isVector=True)
    return sitk.GetArrayFromImage(sitk.DisplacementFieldJacobianDeterminant(img))


def test_affine_displacement_gives_det_i_plus_m():
    rng = np.random.default_rng(0)
    shape = (8, 10, 12)
    for _ in range(3):
        m = rng.normal(0.0, 0.3, (3, 3))
        u = affine(m, shape, t=(1.0, -2.0, 0.5))
        expected = np.linalg.det(np.eye(3) + m)
        det = jacobian_determinant(u)
        assert det.shape == (1, *shape)
        # Central and one-sided differences are exact on affine fields: everywhere, float64 round-off.
        assert torch.allclose(det, torch.full_like(det, expected), atol=1e-10)
        assert torch.allclose(spatial_jacobian(u)[0, :, :, 4, 5, 6], torch.as_tensor(m), atol=1e-12)
    det32 = jacobian_determinant(affine(m, shape).float())
    assert (det32 - expected).abs().max() < 1e-5


def test_differences_central_inside_one_sided_at_border():
    # u_0 = x_2^2 along the last axis: central differences give exactly 2 x inside;
    # the first / last voxel use f[1] - f[0] = 2 x + 1 and f[-1] - f[-2] = 2 x - 1.
    x = torch.arange(6, dtype=torch.float64)
    u = torch.zeros(1, 3, 4, 5, 6, dtype=torch.float64)
    u[0, 0] = x**2
    d = spatial_jacobian(u)[0, 0, 2, 0, 0]
    assert d.tolist() == [1.0, 2.0, 4.0, 6.0, 8.0, 9.0]
    assert spatial_jacobian(u)[0, 1:].abs().max() == 0 and spatial_jacobian(u)[0, 0, :2].abs().max() == 0


def test_matches_simpleitk_on_smooth_field():
    shape = (16, 20, 24)  # non-cubic: an axis or component mix-up changes the answer
    u = smooth_np(shape, 2.0, 3.0, 0)
    ref = sitk_jacobian_determinant(u)
    ours = jacobian_determinant(torch.as_tensor(u[None]))[0].numpy()
    inner = (slice(1, -1),) * 3  # SimpleITK treats the outer voxel layer differently
    assert np.abs(ours - ref)[inner].max() < 1e-10  # measured 1.3e-15 (float64)
    ours32 = jacobian_determinant(torch.as_tensor(u[None]).float())[0].numpy()
    assert np.abs(ours32 - ref)[inner].max() < 1e-5  # measured 5.5e-7 (float32)
    assert ref[inner].std() > 0.2  # the field is far from a rigid motion
    # A swapped channel order is not equivalent (guards the reference itself).
    assert np.abs(ours - sitk_jacobian_determinant(u[::-1]))[inner].max() > 0.5


def test_batched_and_negative_fraction():
    shape = (12, 12, 12)
    fold = affine(np.diag([-2.0, 0.0, 0.0]), shape)  # det(I + M) = -1 everywhere
    ident = torch.zeros_like(fold)
    squash = affine(np.diag([-1.0, 0.0, 0.0]), shape)  # det = 0: counted as folding
    u = torch.cat([fold, ident, squash])
    assert torch.allclose(jacobian_determinant(u)[1], torch.ones(shape, dtype=torch.float64))
    assert negative_fraction(u).tolist() == [100.0, 0.0, 100.0]
    # A local fold: a sharp bump pushing one slab past its neighbour.
    local = torch.zeros(1, 3, *shape, dtype=torch.float64)
    local[0, 0, 6] = 3.0
    frac = float(negative_fraction(local)[0])
    assert 0.0 < frac < 100.0 and frac == pytest.approx(100 / 12)  # slab 7: d/dx = (0 - 3) / 2 -> det -0.5


def test_exp_of_smooth_field_does_not_fold_but_direct_use_does():
    v = torch.as_tensor(smooth_np((24, 24, 24), 2.0, 4.0, 1)[None], dtype=torch.float32)
    assert float(negative_fraction(exp_velocity(v))[0]) == 0.0
    assert float(jacobian_determinant(exp_velocity(v)).min()) > 0.05
    assert float(negative_fraction(v)[0]) > 0.0  # the same field used directly folds


def test_checks():
    with pytest.raises(ValueError, match=r"\(B, 3, D, H, W\)"):
        jacobian_determinant(torch.zeros(1, 2, 4, 4, 4))
    with pytest.raises(ValueError, match="at least 2 voxels"):
        jacobian_determinant(torch.zeros(1, 3, 4, 1, 4))
