"""Metrics against hand-computed cases (and scipy for distances)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import distance_transform_edt

from medssl.train.evaluation import classification_metrics, segmentation_metrics, summarise

CLASSES = ["background", "a", "b"]


def _cube(shape, lo, hi, value=1):
    m = torch.zeros(shape, dtype=torch.long)
    m[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = value
    return m


def test_dice_hand_case():
    shape = (10, 10, 10)
    truth = _cube(shape, (0, 0, 0), (4, 4, 4))          # 64 voxels of class a
    pred = _cube(shape, (0, 0, 0), (4, 4, 2))           # 32 voxels, all inside
    m = segmentation_metrics(pred, truth, CLASSES, (1, 1, 1))
    assert m["dice_a"] == pytest.approx(2 * 32 / (64 + 32))
    assert math.isnan(m["dice_b"])                      # absent from both: excluded
    assert m["dice"] == pytest.approx(2 * 32 / 96)


def test_false_positive_class_scores_zero():
    shape = (8, 8, 8)
    truth = _cube(shape, (0, 0, 0), (3, 3, 3))
    pred = truth.clone()
    pred[6:, 6:, 6:] = 2                                # class b only in prediction
    m = segmentation_metrics(pred, truth, CLASSES, (1, 1, 1))
    assert m["dice_a"] == pytest.approx(1.0)
    assert m["dice_b"] == 0.0
    assert m["dice"] == pytest.approx(0.5)


def _hd95_reference(pred, truth, spacing):
    """Symmetric 95th-percentile surface distance with scipy's EDT (MONAI's definition)."""
    from scipy.ndimage import binary_erosion

    def surface(m):
        return m & ~binary_erosion(m)

    p, t = pred.numpy().astype(bool), truth.numpy().astype(bool)
    sp, st = surface(p), surface(t)
    d_to_t = distance_transform_edt(~st, sampling=spacing)[sp]
    d_to_p = distance_transform_edt(~sp, sampling=spacing)[st]
    return max(np.percentile(d_to_t, 95), np.percentile(d_to_p, 95))


def test_hd95_shifted_cube_matches_scipy():
    shape = (16, 16, 16)
    truth = _cube(shape, (4, 4, 4), (10, 10, 10))
    pred = _cube(shape, (6, 4, 4), (12, 10, 10))        # shifted 2 voxels along axis 0
    spacing = (2.0, 1.0, 1.0)
    m = segmentation_metrics(pred, truth, ["background", "a"], spacing)
    assert m["hd95_a"] == pytest.approx(_hd95_reference(pred, truth, spacing), rel=1e-5)
    assert m["hd95_a"] == pytest.approx(4.0)            # 2 voxels x 2 mm


def test_missing_prediction_scores_the_diagonal():
    """The rule of medssl.metrics: the diagonal between opposite corner voxel centres, (N_k - 1) s_k."""
    shape = (4, 5, 6)
    truth = _cube(shape, (0, 0, 0), (2, 2, 2))
    m = segmentation_metrics(torch.zeros(shape, dtype=torch.long), truth, ["background", "a"], (1, 2, 3))
    assert m["dice_a"] == 0.0
    assert m["hd95_a"] == pytest.approx(math.sqrt(3**2 + 8**2 + 15**2))
    assert (m["misses"], m["empty_pred"], m["empty_truth"]) == (1, 1, 0)


def test_false_positive_and_absent_classes_in_hd95_and_counts():
    shape = (8, 8, 8)
    truth = _cube(shape, (0, 0, 0), (3, 3, 3))
    pred = truth.clone()
    pred[6:, 6:, 6:] = 2                                # class b only in prediction: a false positive
    m = segmentation_metrics(pred, truth, ["background", "a", "b", "c"], (1, 1, 1))
    assert m["hd95_a"] == 0.0 and m["hd95_b"] == pytest.approx(math.sqrt(3 * 7**2))
    assert math.isnan(m["hd95_c"]) and math.isnan(m["dice_c"])  # absent from both: left out
    assert m["hd95"] == pytest.approx(math.sqrt(3 * 7**2) / 2)
    assert (m["misses"], m["empty_pred"], m["empty_truth"]) == (1, 0, 1)


def test_bad_labels_rejected():
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        segmentation_metrics(torch.full((2, 2, 2), 3), torch.zeros(2, 2, 2, dtype=torch.long), CLASSES, (1, 1, 1))
    with pytest.raises(ValueError, match="shape"):
        segmentation_metrics(torch.zeros(2, 2, 2, dtype=torch.long), torch.zeros(2, 2, 3, dtype=torch.long),
                             CLASSES, (1, 1, 1))


def test_auc_and_accuracy_hand_case():
    # positives score 0.9, 0.4; negatives 0.45, 0.1 -> 3 of 4 pairs ordered: AUC 0.75
    p1 = np.array([0.9, 0.4, 0.45, 0.1])
    probs = np.stack([1 - p1, p1], 1)
    labels = np.array([1, 1, 0, 0])
    m = classification_metrics(probs, labels)
    assert m["auc"] == pytest.approx(0.75)
    assert m["accuracy"] == pytest.approx(0.75)         # only the positive at 0.4 is wrong
    single = classification_metrics(probs[:2], labels[:2])
    assert math.isnan(single["auc"])


def test_multiclass_auc_matches_sklearn():
    from sklearn.metrics import roc_auc_score

    g = np.random.default_rng(1)
    labels = np.arange(40) % 4
    probs = g.dirichlet(np.ones(4), 40) + 0.5 * np.eye(4)[labels]
    probs /= probs.sum(1, keepdims=True)
    m = classification_metrics(probs, labels)
    assert m["auc"] == pytest.approx(roc_auc_score(labels, probs, multi_class="ovr", average="macro"))
    assert m["accuracy"] == pytest.approx(float((probs.argmax(1) == labels).mean()))


def test_summarise_ignores_nan_and_sums_counts():
    s = summarise([{"case": "a", "dice": 0.5, "x": float("nan"), "misses": 1},
                   {"case": "b", "dice": 1.0, "x": 2.0, "misses": 2}])
    assert s == {"dice": 0.75, "x": 2.0, "misses": 3}
