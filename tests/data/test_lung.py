"""The intensity-based lung mask and lung crop (medssl.data.lung) on a synthetic chest phantom."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from medssl.config import Recipe
from medssl.data.lung import axial_axis, crop_to_mask, lung_crop, lung_mask
from medssl.data.preprocess import PreprocessError, preprocess_case, ras_affine

SHAPE = (64, 56, 40)  # (i, j, k): x, y, z
SPACING = (5.0, 5.0, 6.0)


def chest_phantom(seed: int = 0, trachea: bool = False, gas: bool = True, noise: float = 30.0
                  ) -> tuple[np.ndarray, np.ndarray]:
    """A CT chest in HU, voxel order (i, j, k), and its true lung mask.

    Air -1000 outside an elliptic body cylinder (40 HU) through every slice; two
    lung ellipsoids (-800) with vessels (40 HU) inside; optionally a trachea and
    main bronchi joining the lungs (-1000) and a gas bubble below them (-900);
    Gaussian noise everywhere.
    """
    rng = np.random.default_rng(seed)
    c = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(SHAPE, SPACING)]
    x, y, z = np.meshgrid(*c, indexing="ij")  # mm from the centre
    ct = np.full(SHAPE, -1000.0)
    ct[(x / 140) ** 2 + (y / 110) ** 2 <= 1] = 40.0
    lungs = np.zeros(SHAPE, dtype=bool)
    for side in (-1, 1):
        lungs |= ((x - side * 62) / 45) ** 2 + ((y + 5) / 65) ** 2 + ((z + 5) / 80) ** 2 <= 1
    ct[lungs] = -800.0
    for side in (-1, 1):  # vessels inside the lungs: holes to fill
        ct[(x - side * 55) ** 2 + (y - 10) ** 2 + (z + 10) ** 2 <= 12**2] = 40.0
    if trachea:
        ct[(x**2 + (y + 5) ** 2 <= 9**2) & (z >= 45)] = -1000.0
        for side in (-1, 1):
            seg = (np.abs(x) <= 64) & (x * side >= 0)
            ct[seg & ((y + 5) ** 2 + (z - 50) ** 2 <= 7**2)] = -1000.0
    if gas:
        ct[(x + 20) ** 2 + (y - 30) ** 2 + (z + 100) ** 2 <= 30**2] = -900.0
    return (ct + rng.normal(0, noise, SHAPE)).astype(np.float32), lungs


def ct_without_gas(trachea: bool) -> np.ndarray:
    return chest_phantom(trachea=trachea, gas=False)[0]


def to_image(a: np.ndarray, direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)) -> sitk.Image:
    img = sitk.GetImageFromArray(np.ascontiguousarray(a.transpose(2, 1, 0)))
    img.SetSpacing(SPACING)
    img.SetOrigin((-100.0, 50.0, 20.0))
    img.SetDirection(direction)
    return img


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.mark.parametrize("trachea", [False, True], ids=["two_lungs", "joined_by_trachea"])
def test_mask_matches_phantom_lungs(trachea):
    ct, truth = chest_phantom(trachea=trachea)
    mask = lung_mask(ct, spacing=SPACING)
    assert mask.dtype == bool and mask.shape == SHAPE
    assert dice(mask, truth) >= 0.95
    assert not mask[ct_without_gas(trachea) != ct].any()  # the gas bubble is not lung
    # the image path gives the same mask on the same grid
    img = to_image(ct)
    out = lung_mask(img)
    assert out.GetSize() == img.GetSize() and out.GetOrigin() == img.GetOrigin()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(out).transpose(2, 1, 0).astype(bool), mask)


@pytest.mark.parametrize(("min_fraction", "min_ratio", "gas_kept"),
                         [(0.0, 0.0, True), (0.0, 0.1, False), (0.02, 0.0, False)])
def test_each_size_rule_drops_the_gas_bubble(min_fraction, min_ratio, gas_kept):
    """Lungs joined by the trachea: the second largest region is the gas bubble (~100 mL, 5 % of the
    lungs, 1 % of the body); the ratio rule or the body-share rule alone drops it."""
    ct, truth = chest_phantom(trachea=True)
    gas = ct_without_gas(True) != ct
    mask = lung_mask(ct, spacing=SPACING, min_fraction=min_fraction, min_ratio=min_ratio)
    assert mask[gas].all() if gas_kept else not mask[gas].any()
    assert mask[truth].mean() > 0.99


def test_vessels_inside_the_lungs_are_filled():
    """The vessels are filled: every voxel of the true lungs is in the mask (noise aside)."""
    ct, truth = chest_phantom(noise=0.0, gas=False)
    mask = lung_mask(ct, spacing=SPACING)
    assert mask[truth].all()
    assert dice(mask, truth) >= 0.99


def test_axial_axis_from_direction():
    permuted = (0, 0, 1, 1, 0, 0, 0, 1, 0)  # i -> y, j -> z, k -> x
    assert axial_axis(to_image(np.zeros(SHAPE))) == 2
    assert axial_axis(to_image(np.zeros(SHAPE), permuted)) == 1


def test_crop_holds_the_lungs_plus_margin():
    ct, truth = chest_phantom(trachea=True)
    img = to_image(ct)
    label = to_image(truth.astype(np.uint8))
    cropped, lab = lung_crop(img, sitk.Cast(label, sitk.sitkUInt8), margin_mm=10.0, source="chest.mha")
    assert cropped.GetSize() == lab.GetSize() and cropped.GetOrigin() == lab.GetOrigin()
    assert cropped.GetSpacing() == img.GetSpacing() and cropped.GetDirection() == img.GetDirection()
    # every lung voxel survives, at the same world position
    assert sitk.GetArrayViewFromImage(lab).sum() == truth.sum()
    idx = np.argwhere(truth)
    lo, hi = idx.min(0), idx.max(0)
    start = np.round(np.subtract(cropped.GetOrigin(), img.GetOrigin()) / SPACING).astype(int)
    end = start + np.array(cropped.GetSize())
    margin = np.ceil(10.0 / np.array(SPACING)).astype(int)
    np.testing.assert_array_equal(start, lo - margin)  # exactly the margin (2, 2, 2 voxels) around
    np.testing.assert_array_equal(end[:2], hi[:2] + 1 + margin[:2])
    assert end[2] == SHAPE[2]  # the trachea runs to the top slice
    assert np.prod(cropped.GetSize()) < 0.6 * np.prod(SHAPE)  # the crop is a real crop


def test_crop_to_mask_arguments():
    img = to_image(np.zeros(SHAPE, np.float32))
    with pytest.raises(PreprocessError, match="x.mha: the crop mask is empty"):
        crop_to_mask(img, np.zeros(SHAPE, bool), 5.0, source="x.mha")
    with pytest.raises(ValueError, match="shape"):
        crop_to_mask(img, np.zeros((2, 2, 2), bool))
    m = np.zeros(SHAPE, bool)
    m[0, 5, 39] = True
    out, lab = crop_to_mask(img, m, 5.0)
    assert lab is None and out.GetSize() == (2, 3, 2)  # 1-voxel margin per axis, clipped at the borders


def test_no_lung_names_the_file():
    ct = np.full(SHAPE, -1000.0, np.float32)
    ct[8:-8, 8:-8, :] = 40.0  # a body without lungs
    with pytest.raises(PreprocessError, match=r"scan_7\.mha: no lung found"):
        lung_mask(ct, spacing=SPACING, source="scan_7.mha")


def test_preprocess_case_lung_crop(tmp_path):
    ct, truth = chest_phantom(seed=1)
    img = to_image(ct)
    f = tmp_path / "chest.mha"
    sitk.WriteImage(img, str(f))
    recipe = Recipe(spacing=(None, None, None), crop="lung", crop_margin=10.0)
    out, _, affine = preprocess_case(f, None, recipe, None)
    full, _, full_affine = preprocess_case(f, None, Recipe(spacing=(None, None, None)), None)
    assert out.size < full.size
    # the lungs' world bounding box lies inside the cropped volume's extent
    lps = np.array([img.TransformIndexToPhysicalPoint(tuple(int(v) for v in i)) for i in np.argwhere(truth)])
    ras = lps * [-1, -1, 1]
    inv = np.linalg.inv(affine)
    vox = (inv[:3, :3] @ ras.T).T + inv[:3, 3]
    assert (vox >= -1e-6).all() and (vox <= np.array(out.shape) - 1 + 1e-6).all()
    np.testing.assert_allclose(np.abs(np.diag(affine)[:3]), SPACING)
    # same voxels as the uncropped volume at the same world positions
    off = np.linalg.inv(full_affine) @ affine[:, 3]
    o = np.round(off[:3]).astype(int)
    np.testing.assert_allclose(out, full[o[0]:o[0] + out.shape[0], o[1]:o[1] + out.shape[1],
                                         o[2]:o[2] + out.shape[2]], atol=1e-4)
    np.testing.assert_allclose(off[:3], o, atol=1e-6)
    np.testing.assert_allclose(full_affine[:3, :3], ras_affine(sitk.DICOMOrient(img, "RAS"))[:3, :3])


@pytest.mark.parametrize("index", [0, 1])
def test_mask_on_the_torso_phantom(index):
    """An independent anatomy: medssl's torso phantom (ribs, trachea, vessel tree, partial volume)."""
    from medssl.config import SyntheticSource
    from medssl.data.synthetic import STRUCTURES, generate

    source = SyntheticSource(kind="synthetic", n_cases=2, shape=(64, 64, 32), spacing=(6.0, 6.0, 12.0), seed=5)
    ph = generate(source, index)
    lung = [STRUCTURES[k] for k in ("lung_left", "lung_right", "lung_vessel", "lesion")]
    truth = np.isin(ph.structures, lung)
    mask = lung_mask(ph.image, spacing=np.sqrt((ph.affine[:3, :3] ** 2).sum(0)))
    assert dice(mask, truth) >= 0.95
