"""Dice / ASSD of ``evaluate`` against hand cases and a scipy distance-transform reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import binary_erosion, distance_transform_edt

from medssl.uda.metrics import case_metrics, evaluate

CLASSES = ["background", "LV", "myocardium", "RV"]


class Fixed:
    """A stand-in model whose prediction is given."""

    def __init__(self, pred: torch.Tensor) -> None:
        self.pred = pred

    def predict(self, x, batch_size=32):
        assert x.shape[0] == self.pred.shape[0]
        return self.pred


def _assd_reference(a: np.ndarray, b: np.ndarray, spacing) -> float:
    """Symmetric mean surface distance with scipy: border pixels, Euclidean distance transform."""
    ea, eb = a & ~binary_erosion(a), b & ~binary_erosion(b)
    da = distance_transform_edt(~eb, sampling=spacing)[ea]
    db = distance_transform_edt(~ea, sampling=spacing)[eb]
    return float((da.sum() + db.sum()) / (da.size + db.size))


def test_two_offset_squares_2d():
    pred = torch.zeros(1, 32, 32, dtype=torch.long)
    truth = torch.zeros(1, 32, 32, dtype=torch.long)
    pred[0, 10:20, 10:20] = 1
    truth[0, 12:22, 13:23] = 1
    spacing = (1.0, 2.0)
    res = evaluate(Fixed(pred), torch.zeros(1, 1, 32, 32), truth, CLASSES[:2], spacing)
    assert res["mode"] == "2d" and res["n_cases"] == 1
    assert math.isclose(res["dice_LV"], 2 * (8 * 7) / (100 + 100), rel_tol=1e-6)
    ref = _assd_reference(pred[0].numpy() == 1, truth[0].numpy() == 1, spacing)
    assert math.isclose(res["assd_LV"], ref, rel_tol=1e-5)
    assert ref > 2.0  # the offset (2 px x 1 mm, 3 px x 2 mm) is felt
    assert res["dice"] == res["dice_LV"] and res["assd"] == res["assd_LV"]


def test_per_subject_3d_stacks_and_class_means():
    g = np.random.default_rng(0)
    truth = np.zeros((6, 24, 24), np.int64)
    pred = np.zeros((6, 24, 24), np.int64)
    for k in range(6):  # two subjects of three slices: discs of varying size, prediction shifted
        r = 4 + k % 3
        yy, xx = np.mgrid[:24, :24]
        truth[k][(yy - 12) ** 2 + (xx - 12) ** 2 < r * r] = 1
        truth[k][(yy - 12) ** 2 + (xx - 12) ** 2 < 4] = 2
        pred[k][(yy - 12 - int(g.integers(0, 3))) ** 2 + (xx - 12) ** 2 < r * r] = 1
        pred[k][(yy - 12) ** 2 + (xx - 13) ** 2 < 4] = 2
    spacing = (1.5, 1.5, 10.0)
    groups = [("a", 0, 3), ("b", 3, 6)]
    res = evaluate(Fixed(torch.from_numpy(pred)), torch.zeros(6, 1, 24, 24), torch.from_numpy(truth),
                   CLASSES[:3], spacing, groups)
    assert res["mode"] == "3d" and res["n_cases"] == 2
    for ci, name in ((1, "LV"), (2, "myocardium")):
        dices, assds = [], []
        for _, s, e in groups:
            p = np.moveaxis(pred[s:e], 0, -1) == ci
            t = np.moveaxis(truth[s:e], 0, -1) == ci
            dices.append(2 * (p & t).sum() / (p.sum() + t.sum()))
            assds.append(_assd_reference(p, t, spacing))
        assert math.isclose(res[f"dice_{name}"], np.mean(dices), rel_tol=1e-5)
        assert math.isclose(res[f"assd_{name}"], np.mean(assds), rel_tol=1e-5)
    assert math.isclose(res["dice"], (res["dice_LV"] + res["dice_myocardium"]) / 2)


def test_a_missed_structure_scores_the_diagonal_and_is_counted():
    """The rule of medssl.metrics: a miss or a false positive is Dice 0, ASSD = the diagonal, counted."""
    truth = torch.zeros(2, 16, 16, dtype=torch.long)
    truth[:, 4:10, 4:10] = 1
    truth[:, 12:15, 2:6] = 3
    pred = truth.clone()
    pred[1][pred[1] == 3] = 0  # subject 1 misses the RV entirely
    pred[0, 0:2, 0:2] = 2  # subject 0 predicts a myocardium that is not there
    spacing = (1.0, 1.5)
    diag = math.sqrt((15 * 1.0) ** 2 + (15 * 1.5) ** 2)
    res = evaluate(Fixed(pred), torch.zeros(2, 1, 16, 16), truth, CLASSES, spacing)
    assert res["dice_LV"] == 1.0 and res["assd_LV"] == 0.0
    assert res["dice_RV"] == 0.5  # 1 and 0
    assert res["assd_RV"] == pytest.approx((0.0 + diag) / 2)  # the miss counts, as the worst case
    assert res["empty_pred_RV"] == 1 and res["empty_pred_LV"] == 0
    assert res["dice_myocardium"] == 0.0  # false positive where the class is absent
    # subject 0: the diagonal; subject 1: absent from both, left out
    assert res["assd_myocardium"] == pytest.approx(diag) and res["empty_truth_myocardium"] == 1
    assert res["misses"] == 2
    assert math.isclose(res["dice"], (1.0 + 0.0 + 0.5) / 3)
    assert res["assd"] == pytest.approx((0.0 + diag + diag / 2) / 3)


def test_a_method_that_misses_a_structure_scores_worse_than_one_that_finds_it_badly():
    """Dropping the miss (the old rule) made the method that missed the RV look better."""
    truth = torch.zeros(1, 32, 32, dtype=torch.long)
    truth[0, 4:12, 4:12] = 1
    truth[0, 20:28, 20:28] = 3
    misses = truth.clone()
    misses[misses == 3] = 0
    finds = truth.clone()
    finds[0, 20:28, 20:28] = 0
    finds[0, 17:25, 16:24] = 3  # found, shifted by (3, 4) px
    spacing = (1.0, 1.0)
    a = evaluate(Fixed(misses), torch.zeros(1, 1, 32, 32), truth, CLASSES, spacing)
    b = evaluate(Fixed(finds), torch.zeros(1, 1, 32, 32), truth, CLASSES, spacing)
    ref = _assd_reference(finds[0].numpy() == 3, truth[0].numpy() == 3, spacing)
    assert b["assd_RV"] == pytest.approx(ref, rel=1e-5) and 0 < ref < 10
    assert a["assd"] > b["assd"] and a["misses"] == 1 and b["misses"] == 0


def test_case_metrics_and_evaluate_check_their_inputs():
    with pytest.raises(ValueError, match="prediction shape"):
        case_metrics(torch.zeros(4, 4), torch.zeros(4, 5), 2, (1.0, 1.0))
    with pytest.raises(ValueError, match="spacing needs 2 values"):
        case_metrics(torch.zeros(4, 4), torch.zeros(4, 4), 2, (1.0, 1.0, 1.0))
    y = torch.zeros(2, 8, 8, dtype=torch.long)
    with pytest.raises(ValueError, match="needs three spacings"):
        evaluate(Fixed(y), torch.zeros(2, 1, 8, 8), y, CLASSES, (1.0, 1.0), [("a", 0, 2)])
    with pytest.raises(ValueError, match="outside 0:2"):
        evaluate(Fixed(y), torch.zeros(2, 1, 8, 8), y, CLASSES, (1.0, 1.0, 1.0), [("a", 0, 3)])
    with pytest.raises(ValueError, match=r"label values must lie in \[0, 1\]"):
        evaluate(Fixed(y), torch.zeros(2, 1, 8, 8), y + 2, CLASSES[:2], (1.0, 1.0))
