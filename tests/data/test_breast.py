"""Breast-like phantoms: deterministic, one simply connected target, MR layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.ndimage import binary_fill_holes, label

from medssl.config import SyntheticSource
from medssl.data import synthetic

SRC = SyntheticSource(kind="synthetic", generator="breast", labels="breast", n_cases=4, seed=61,
                      shape=(40, 40, 16), spacing=(4.0, 4.0, 8.0))


def test_deterministic_and_varied():
    a, b = synthetic.generate(SRC, 1), synthetic.generate(SRC, 1)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.structures, b.structures)
    c = synthetic.generate(SRC, 2)
    assert not np.array_equal(synthetic.label_map(a, "breast"), synthetic.label_map(c, "breast"))


@pytest.mark.parametrize("index", range(8))
def test_target_is_one_simply_connected_region(index):
    mask = synthetic.label_map(synthetic.generate(SRC, index), "breast").astype(bool)
    assert mask.sum() > 20
    assert label(mask, structure=np.ones((3, 3, 3)))[1] == 1
    assert np.array_equal(binary_fill_holes(mask), mask)  # no cavities


def test_intensities_separate_the_tissues():
    ph = synthetic.generate(SRC, 0)
    med = {k: np.median(ph.image[ph.structures == v]) for k, v in
           {"air": 0, "fat": 1, "muscle": 2, "fg": 3}.items()}
    assert med["air"] < 100 < med["fat"] < med["muscle"] < med["fg"]
    assert ph.displacement.shape == (*SRC.shape, 3) and np.abs(ph.displacement).max() > 0


def test_labels_must_match_the_generator():
    with pytest.raises(ValueError, match="labels 'breast' go with generator 'breast'"):
        synthetic.generate(SRC.model_copy(update={"labels": "organs"}), 0)
    with pytest.raises(ValueError, match="labels 'breast' go with generator 'breast'"):
        synthetic.generate(SRC.model_copy(update={"generator": "torso"}), 0)


def test_written_dataset_is_mr_with_labels(tmp_path):
    synthetic.write_dataset(tmp_path, SRC.model_copy(update={"n_cases": 2}), progress=False, name="breast")
    meta = json.loads((tmp_path / "dataset.json").read_text())
    assert meta["modality"] == {"0": "MR"} and meta["labels"] == {"0": "background", "1": "fibroglandular"}
    assert all((tmp_path / e["label"]).is_file() for e in meta["training"])
