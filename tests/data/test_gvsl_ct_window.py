"""GVSL's CT window: HU [-1024, 1024] -> [0, 1], as the published downstream loader computes it.

The published loader (github.com/YutingHe-list/GVSL, PyTorch/Downstream/utils/
dataloader_heart_whs.py, commit 77c89ba) does ``img = img + 1024``, clips to
[0, 2048] and divides by 2048. A synthetic HU ramp goes through the real
preprocessing with every GVSL CT recipe of the catalog, and the output is
compared with that closed form, written out by hand below.
"""

from __future__ import annotations

import numpy as np
import pytest

from medssl.data.catalog import catalog
from medssl.data.preprocess import preprocess_case
from medssl.io import save_nifti

GVSL_CT = ("gvsl_cardiac_ct", "mmwhs_ct", "asoca", "stoic2021")
# HU of each slab along axis 0 and the published loader's value, min(max(hu + 1024, 0), 2048) / 2048
RAMP = [(-3000.0, 0.0), (-1024.0, 0.0), (-1000.0, 24 / 2048), (-800.0, 224 / 2048), (-100.0, 924 / 2048),
        (0.0, 0.5), (40.0, 1064 / 2048), (500.0, 1524 / 2048), (1024.0, 1.0), (3000.0, 1.0)]


@pytest.mark.parametrize("name", GVSL_CT)
def test_gvsl_ct_recipes_map_hu_like_the_published_loader(tmp_path, name):
    spec = catalog()[name]
    assert spec.modality == "CT" and spec.recipe.intensity.kind == "ct"
    hu = np.zeros((len(RAMP), 6, 5), dtype=np.float32)
    for i, (v, _) in enumerate(RAMP):
        hu[i] = v
    path = tmp_path / "ramp.nii.gz"
    save_nifti(path, hu, np.diag([*spec.recipe.spacing, 1.0]))  # RAS, already on the recipe's grid
    # the recipe's own intensity and spacing; no ROI / lung crop (a ramp has no lungs)
    recipe = spec.recipe.model_copy(update={"roi": None, "crop": None})
    img, _, _ = preprocess_case(path, None, recipe, None)
    assert img.shape == hu.shape
    for i, (v, expected) in enumerate(RAMP):
        np.testing.assert_allclose(img[i], expected, atol=1e-6, err_msg=f"{name}: {v} HU")
    assert img[2].max() == pytest.approx(0.0117, abs=1e-4)  # air is not clipped to 0
    assert img[3].min() > 0.1  # lung parenchyma survives (STOIC's lungs no longer vanish)
