"""Short-axis cardiac phantoms (bSSFP / LGE) of the uda2d study: determinism, anatomy, contrasts."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import binary_dilation, binary_fill_holes

from medssl.data.cardiac import CLASSES, affine_of, generate_cardiac
from medssl.data.deform import Geometry

SHAPE, SPACING = (96, 96, 6), (1.5, 1.5, 10.0)


def test_deterministic_types_and_layout():
    a = generate_cardiac(SHAPE, SPACING, 5, 2, "bssfp")
    b = generate_cardiac(SHAPE, SPACING, 5, 2, "bssfp")
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])
    image, label, affine = a
    assert image.shape == SHAPE and image.dtype == np.float32 and np.isfinite(image).all()
    assert label.shape == SHAPE and label.dtype == np.uint8
    assert affine.shape == (4, 4)
    assert np.allclose(affine, Geometry(SHAPE, SPACING).affine)  # the torso / breast convention
    assert affine_of((96, 96, 1), SPACING).shape == (4, 4)  # a single slice is allowed
    assert CLASSES == ["background", "LV", "myocardium", "RV"]


def test_unpaired_and_varied():
    lab = {(c, i): generate_cardiac(SHAPE, SPACING, 0, i, c)[1] for c in ("bssfp", "lge") for i in (0, 1)}
    assert not np.array_equal(lab["bssfp", 0], lab["lge", 0])  # same index, other sequence: another heart
    assert not np.array_equal(lab["bssfp", 0], lab["bssfp", 1])
    lv = [(lab[k] == 1).sum() for k in lab]
    assert len(set(lv)) == 4  # every subject has its own LV volume
    assert not np.array_equal(generate_cardiac(SHAPE, SPACING, 1, 0, "bssfp")[1], lab["bssfp", 0])  # seed


@pytest.mark.parametrize("contrast", ["bssfp", "lge"])
@pytest.mark.parametrize("index", range(4))
def test_labels_and_myocardium_encloses_lv(contrast, index):
    _, label, _ = generate_cardiac(SHAPE, SPACING, 3, index, contrast)
    assert set(np.unique(label)) == {0, 1, 2, 3}
    assert (label[..., 0] == 3).any()  # the RV is there at the base
    for k in range(SHAPE[2]):
        lv, myo = label[..., k] == 1, label[..., k] == 2
        assert lv.sum() > 50 and myo.sum() > 50
        # every neighbour (8-connected) of the LV pool is LV or myocardium: it never touches RV / background
        ring = binary_dilation(lv, np.ones((3, 3), bool)) & ~lv
        assert ring.any() and myo[ring].all()
        # the LV is a hole of the myocardium: filling the myocardium's holes gives LV + myocardium
        assert np.array_equal(binary_fill_holes(myo), lv | myo)
        assert not lv[0].any() and not lv[-1].any() and not lv[:, 0].any() and not lv[:, -1].any()


@pytest.mark.parametrize("index", range(3))
def test_contrasts_differ_in_the_stated_direction(index):
    img, lab, _ = generate_cardiac(SHAPE, SPACING, 7, index, "bssfp")
    blood, myo = img[lab == 1].mean(), img[lab == 2].mean()
    assert blood > 2.5 * myo  # bSSFP: bright blood, dark myocardium
    img, lab, _ = generate_cardiac(SHAPE, SPACING, 7, index, "lge")
    blood, myo_vals = img[lab == 1].mean(), img[lab == 2]
    normal = np.median(myo_vals)
    assert normal < 0.5 * blood  # LGE: normal myocardium nulled, blood mid-grey
    enhanced = myo_vals > 1.3 * blood  # scar: brighter than the blood pool
    assert enhanced.sum() > 20 and enhanced.mean() < 0.6  # present, in part of the myocardium


def test_lge_blood_is_darker_relative_to_the_background_than_bssfp():
    ratios = {}
    for c in ("bssfp", "lge"):
        img, lab, _ = generate_cardiac(SHAPE, SPACING, 0, 0, c)
        ratios[c] = img[lab == 1].mean() / img[lab == 0].mean()
    assert ratios["bssfp"] > 1.3 * ratios["lge"]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"contrast": "t2"}, "contrast must be one of"),
    ({"shape": (96, 96)}, "shape must be three ints"),
    ({"shape": (96, 96, 0)}, "S >= 1"),
    ({"shape": (96.0, 96, 6)}, "shape must be three ints"),
    ({"spacing": (1.5, -1.0, 10.0)}, "spacing must be three positive"),
    ({"spacing": (0.5, 0.5, 10.0)}, "field of view must be >= 80"),
])
def test_bad_arguments(kwargs, match):
    args = {"shape": SHAPE, "spacing": SPACING, "seed": 0, "index": 0, "contrast": "lge"} | kwargs
    with pytest.raises(ValueError, match=match):
        generate_cardiac(**args)
