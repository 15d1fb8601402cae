"""Connected-component count of thresholded outputs on hand-made masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medssl.geometry.components import connected_components, count_components


def two_blobs() -> np.ndarray:
    m = np.zeros((12, 12, 12), dtype=bool)
    m[1:4, 1:4, 1:4] = True
    m[7:10, 6:11, 2:5] = True
    return m


def touching(kind: str) -> np.ndarray:
    """Two voxels sharing a face, an edge or only a corner."""
    m = np.zeros((6, 6, 6), dtype=np.uint8)
    m[2, 2, 2] = 1
    m[{"face": (3, 2, 2), "edge": (3, 3, 2), "corner": (3, 3, 3)}[kind]] = 1
    return m


def test_two_blobs_numpy_and_torch():
    m = two_blobs()
    labels, n = connected_components(m)
    assert n == 2 and isinstance(n, int)
    assert set(np.unique(labels)) == {0, 1, 2} and labels.shape == m.shape and labels.dtype == np.int32
    assert (labels > 0).sum() == m.sum() == 27 + 45
    assert count_components(torch.from_numpy(m)) == 2
    assert count_components(torch.from_numpy(m).float()) == 2
    assert count_components(np.zeros((5, 5, 5))) == 0


@pytest.mark.parametrize(("kind", "expected"), [
    ("face", {1: 1, 2: 1, 3: 1}), ("edge", {1: 2, 2: 1, 3: 1}), ("corner", {1: 2, 2: 2, 3: 1})])
def test_connectivity(kind, expected):
    m = touching(kind)
    for conn, n in expected.items():
        assert count_components(m, connectivity=conn) == n
    assert count_components(m) == expected[3]  # default: full (26-) connectivity


def test_threshold_is_strict():
    p = np.zeros((8, 8, 8), dtype=np.float32)
    p[1:3, 1:3, 1:3] = 0.9
    p[5:7, 5:7, 5:7] = 0.5  # exactly at the threshold: background for p > 0.5
    p[3, 3, 3] = 0.7  # touches the first blob diagonally
    assert count_components(p) == 1
    assert count_components(p, connectivity=1) == 2
    assert count_components(p, threshold=0.45) == 2
    assert count_components(p, threshold=0.45, connectivity=1) == 3
    assert count_components(p, threshold=0.8) == 1
    assert count_components(p, threshold=0.95) == 0
    assert count_components(p > 0.45, threshold=0.99) == 2  # a boolean mask ignores the threshold


def test_batched_and_2d():
    b = np.stack([two_blobs(), np.zeros((12, 12, 12), bool), two_blobs() & (np.arange(12) < 5)[:, None, None]])
    counts = count_components(torch.from_numpy(b)[:, None])  # (B, 1, D, H, W)
    assert counts.shape == (3, 1) and counts[:, 0].tolist() == [2, 0, 1]
    labels, n = connected_components(b)
    assert labels.shape == b.shape and n.tolist() == [2, 0, 1]
    img = np.eye(5)  # a diagonal line in 2D
    assert count_components(img, spatial_dims=2) == 1
    assert count_components(img, spatial_dims=2, connectivity=1) == 5


def test_checks():
    m = two_blobs()
    for bad in (0, 4, 1.5):
        with pytest.raises(ValueError, match="connectivity"):
            count_components(m, connectivity=bad)
    with pytest.raises(ValueError, match="spatial_dims"):
        count_components(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="threshold"):
        count_components(m, threshold=float("nan"))
