"""GVSL geometry against independent references: scipy rotations, numpy products, np.roll."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from medssl.config import SyntheticSource
from medssl.data.synthetic import generate
from medssl.geometry.affine import affine_ddf, affine_matrix, fuse, fuse_fixed_frame, rotation_matrix
from medssl.geometry.warp import warp

ANGLES = [(0.0, 0.0, 0.0), (0.3, -0.2, 0.1), (-0.35, 0.34, -0.3), (np.pi / 9, np.pi / 9, np.pi / 9)]


@pytest.mark.parametrize("angles", ANGLES)
def test_rotation_block_equals_scipy(angles):
    ours = rotation_matrix(torch.tensor([angles], dtype=torch.float64))[0].numpy()
    ref = Rotation.from_euler("xyz", angles).as_matrix()  # extrinsic x, then y, then z = Rz Ry Rx
    np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_zero_parameters_give_identity():
    m = affine_matrix(torch.zeros(2, 3), torch.ones(2, 3), torch.zeros(2, 6), torch.zeros(2, 3))
    assert torch.equal(m, torch.eye(4).expand(2, 4, 4))
    assert affine_ddf(m, (5, 6, 7)).abs().max() == 0


def _one(angles=(0.0, 0.0, 0.0), scales=(1.0, 1.0, 1.0), shears=(0.0,) * 6, translations=(0.0, 0.0, 0.0)):
    """``affine_matrix`` of one parameter set (float64)."""
    return affine_matrix(*(torch.tensor(np.array([v], dtype=np.float64)) for v in (angles, scales, shears, translations)))[0]


def _apply(m: torch.Tensor, points: np.ndarray) -> np.ndarray:
    """Homogeneous ``m`` applied to ``(n, 3)`` points."""
    return points @ m[:3, :3].numpy().T + m[:3, 3].numpy()


def test_each_factor_moves_known_points_as_its_geometry_says():
    """Rotation (scipy), scale, shear and translation on points, then their order (Eq. 8: R · S · Sh · T)."""
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(20, 3)) * 5
    ang, sc, sh, tr = rng.uniform(-0.3, 0.3, 3), rng.uniform(0.8, 1.2, 3), rng.uniform(-0.2, 0.2, 6), rng.normal(0, 3, 3)
    np.testing.assert_allclose(_apply(_one(angles=ang), pts), Rotation.from_euler("xyz", ang).apply(pts), atol=1e-12)
    np.testing.assert_allclose(_apply(_one(scales=sc), pts), pts * sc, atol=1e-12)  # axis k stretched by s_k
    np.testing.assert_allclose(_apply(_one(translations=tr), pts), pts + tr, atol=1e-12)
    # shear (sh_yx, sh_zx, sh_xy, sh_zy, sh_xz, sh_yz): a step along y moves x by sh_yx, along z moves x
    # by sh_zx; a step along x moves y by sh_xy, along z moves y by sh_zy; x and y move z by sh_xz, sh_yz
    yx, zx, xy, zy, xz, yz = sh
    shear = _one(shears=sh)
    np.testing.assert_allclose(_apply(shear, np.eye(3)), [[1, xy, xz], [yx, 1, yz], [zx, zy, 1]], atol=1e-12)
    # the translation is applied first, the rotation last: p -> R(S(Sh(p + t)))
    ref = Rotation.from_euler("xyz", ang).apply(_apply(shear, pts + tr) * sc)
    np.testing.assert_allclose(_apply(_one(ang, sc, sh, tr), pts), ref, atol=1e-10)
    # and not, e.g., the reverse order
    rev = _apply(shear, Rotation.from_euler("xyz", ang).apply(pts) * sc) + tr
    assert np.abs(_apply(_one(ang, sc, sh, tr), pts) - rev).max() > 1e-2


def test_affine_matrix_is_differentiable_and_batched():
    params = [torch.zeros(3, 3, requires_grad=True), torch.ones(3, 3, requires_grad=True),
              torch.zeros(3, 6, requires_grad=True), torch.zeros(3, 3, requires_grad=True)]
    m = affine_matrix(*params)
    (m * torch.randn(3, 4, 4)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)


def test_rotation_turns_about_the_volume_centre():
    m = affine_matrix(torch.tensor([[0.0, 0.0, 0.4]]), torch.ones(1, 3), torch.zeros(1, 6), torch.zeros(1, 3))
    ddf = affine_ddf(m, (5, 7, 9))
    assert ddf[0, :, 2, 3, 4].abs().max() < 1e-6  # the centre voxel stays
    assert ddf.abs().max() > 1.0


def _phantom_image():
    src = SyntheticSource(kind="synthetic", labels="organs", n_cases=1, seed=3, shape=(24, 24, 24),
                          spacing=(12.0, 12.0, 12.0))
    return torch.tensor(generate(src, 0).image)[None, None].float()


def test_zero_dvf_is_the_identity():
    img = _phantom_image()
    out = warp(img, torch.zeros(1, 3, *img.shape[2:]))
    assert (out - img).abs().max() <= 1e-5 * img.abs().max()


@pytest.mark.parametrize(("axis", "k"), [(0, 2), (1, -3), (2, 1)])
def test_constant_dvf_shifts_by_k_voxels(axis, k):
    img = _phantom_image()
    ddf = torch.zeros(1, 3, *img.shape[2:])
    ddf[:, axis] = k
    out = warp(img, ddf)[0, 0].numpy()
    ref = np.roll(img[0, 0].numpy(), -k, axis=axis)  # out(p) = in(p + k)
    inner = [slice(3, -3)] * 3
    np.testing.assert_allclose(out[tuple(inner)], ref[tuple(inner)], rtol=0, atol=1e-5 * np.abs(ref).max())


def test_fusion_with_zero_deformable_is_the_affine_alone():
    m = affine_matrix(torch.tensor([[0.1, -0.1, 0.2]]), torch.tensor([[1.1, 0.9, 1.0]]),
                      torch.full((1, 6), 0.05), torch.tensor([[1.0, -2.0, 0.5]]))
    shape = (8, 9, 10)
    np.testing.assert_allclose(fuse(m, torch.zeros(1, 3, *shape)).numpy(), affine_ddf(m, shape).numpy(), atol=1e-6)


def test_fusion_reads_the_deformable_field_at_the_moved_position():
    # Eq. 9 with a pure translation t and a deformable field that is linear along axis 0:
    # psi(p) = psi_l(p + t) + t.
    shape = (12, 12, 12)
    t = torch.tensor([[2.0, 0.0, 0.0]])
    m = affine_matrix(torch.zeros(1, 3), torch.ones(1, 3), torch.zeros(1, 6), t)
    lin = torch.arange(12, dtype=torch.float32).view(1, 12, 1, 1).expand(1, 12, 12, 12) * 0.1
    deformable = torch.zeros(1, 3, *shape)
    deformable[:, 1] = lin
    fused = fuse(m, deformable)
    np.testing.assert_allclose(fused[0, 0, 2:8].numpy(), 2.0, atol=1e-6)
    np.testing.assert_allclose(fused[0, 1, 2:8].numpy(), (lin[0, 4:10]).numpy(), atol=1e-5)


def test_warp_checks_shapes():
    with pytest.raises(ValueError, match="ddf"):
        warp(torch.zeros(1, 1, 4, 4, 4), torch.zeros(1, 2, 4, 4, 4))


def test_fixed_frame_fusion_is_warping_by_the_affine_then_by_the_field():
    """The published order, ``stn(atn(B, M), flow)``: two warps in turn equal one warp by the fused DVF.

    A linear image makes trilinear interpolation exact, so the two sides agree
    to rounding away from the border; Eq. 9's :func:`fuse` (the field read at the
    moved position) does not agree for a rotated, non-constant field.
    """
    shape = (16, 16, 16)
    idx = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in shape], indexing="ij"))
    image = (0.7 * idx[0] - 0.4 * idx[1] + 0.25 * idx[2] + 3.0)[None, None]
    m = affine_matrix(torch.tensor([[0.15, -0.1, 0.2]], dtype=torch.float64),
                      torch.tensor([[1.05, 0.95, 1.0]], dtype=torch.float64),
                      torch.full((1, 6), 0.03, dtype=torch.float64), torch.tensor([[0.6, -0.4, 0.3]], dtype=torch.float64))
    u = torch.zeros(1, 3, *shape, dtype=torch.float64)
    u[:, 0] = 0.8 * torch.sin(idx[1] / 3)
    u[:, 2] = 0.5 * torch.cos(idx[0] / 4)
    two = warp(warp(image, affine_ddf(m, shape)), u)
    one = warp(image, fuse_fixed_frame(m, u))
    inner = (0, 0, *[slice(4, -4)] * 3)
    np.testing.assert_allclose(one[inner].numpy(), two[inner].numpy(), atol=1e-6)
    assert (warp(image, fuse(m, u))[inner] - two[inner]).abs().max() > 1e-2
    with pytest.raises(ValueError, match="deformable"):
        fuse_fixed_frame(m, u[:, :2])
