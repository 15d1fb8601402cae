"""medssl.metrics against scipy distance transforms, closed forms, scikit-learn and hand cases.

The distance references below are written from the definitions (surface =
mask minus its binary erosion; Euclidean distance transform in mm with
``sampling=spacing``), not from MONAI, which the module wraps.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.ndimage import binary_erosion, distance_transform_edt
from sklearn.metrics import roc_auc_score

from medssl import metrics
from medssl.template.train import _hausdorff
from medssl.template.train import evaluate as template_evaluate
from medssl.train.evaluation import segmentation_metrics, summarise
from medssl.uda.metrics import case_metrics
from medssl.uda.metrics import evaluate as uda_evaluate


def _surface_distances(a: np.ndarray, b: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from the surface voxels of ``a`` to the surface of ``b`` and back."""
    ea, eb = a & ~binary_erosion(a), b & ~binary_erosion(b)
    return distance_transform_edt(~eb, sampling=spacing)[ea], distance_transform_edt(~ea, sampling=spacing)[eb]


def _reference(a: np.ndarray, b: np.ndarray, spacing, kind: str) -> float:
    da, db = _surface_distances(a, b, spacing)
    if kind == "hausdorff":
        return float(max(da.max(), db.max()))
    if kind == "hd95":
        return float(max(np.percentile(da, 95), np.percentile(db, 95)))
    return float((da.sum() + db.sum()) / (da.size + db.size))


def _sphere(shape, centre, radius, spacing) -> np.ndarray:
    grid = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    return sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius ** 2


@pytest.mark.parametrize("kind", metrics.DISTANCES)
@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.0, 0.7, 1.3)])
def test_sphere_vs_shifted_sphere_matches_scipy(kind, spacing):
    shape = (22, 30, 26)
    truth = _sphere(shape, (20.0, 10.0, 16.0), 8.0, spacing)
    pred = _sphere(shape, (23.0, 11.5, 16.0), 7.0, spacing)
    got = metrics.class_metrics(torch.from_numpy(pred).long(), torch.from_numpy(truth).long(), 2, spacing, kind)
    ref = _reference(pred, truth, spacing, kind)
    assert got[kind][0] == pytest.approx(ref, rel=1e-5)
    assert ref > 1.0  # the shift is felt
    dice = 2 * (pred & truth).sum() / (pred.sum() + truth.sum())
    assert got["dice"][0] == pytest.approx(dice, rel=1e-6)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 1.0, 0.5)])
def test_two_cubes_a_known_distance_apart(spacing):
    shape = (20, 12, 12)
    truth = np.zeros(shape, bool)
    pred = np.zeros(shape, bool)
    truth[2:6, 3:9, 3:9] = True    # faces at i = 2 and 5
    pred[10:14, 3:9, 3:9] = True   # faces at i = 10 and 13
    t, p = torch.from_numpy(truth).long(), torch.from_numpy(pred).long()
    hd = metrics.class_metrics(p, t, 2, spacing, "hausdorff")
    # farthest surface point of either cube: the far face, 8 voxels along axis 0 from the other's near face
    assert hd["hausdorff"][0] == pytest.approx(8 * spacing[0])
    assert hd["dice"][0] == 0.0 and not hd["empty_pred"][0] and not hd["empty_truth"][0]
    for kind in ("hd95", "assd"):
        got = metrics.class_metrics(p, t, 2, spacing, kind)[kind][0]
        assert got == pytest.approx(_reference(pred, truth, spacing, kind), rel=1e-5)
        assert 5 * spacing[0] - 1e-9 <= got <= 8 * spacing[0] + 1e-9  # between the near and far faces


@pytest.mark.parametrize("kind", metrics.DISTANCES)
def test_single_voxels(kind):
    spacing = (0.5, 2.0, 3.0)
    a, b = torch.zeros(7, 8, 9, dtype=torch.long), torch.zeros(7, 8, 9, dtype=torch.long)
    a[1, 2, 3] = 1
    b[4, 6, 5] = 1
    expected = math.sqrt((3 * 0.5) ** 2 + (4 * 2.0) ** 2 + (2 * 3.0) ** 2)
    assert metrics.class_metrics(a, b, 2, spacing, kind)[kind][0] == pytest.approx(expected)
    assert metrics.class_metrics(a, a, 2, spacing, kind)[kind][0] == 0.0


def test_diagonal_closed_form():
    assert metrics.diagonal((4, 5, 6), (1.0, 2.0, 3.0)) == pytest.approx(math.sqrt(3 ** 2 + 8 ** 2 + 15 ** 2))
    assert metrics.diagonal((1, 11), (5.0, 0.5)) == pytest.approx(5.0)  # one slice: no extent along axis 0
    with pytest.raises(ValueError, match=r"got \(1.0, 2.0\)"):
        metrics.diagonal((4, 5, 6), (1.0, 2.0))
    with pytest.raises(ValueError, match=r"got \(1.0, 0.0\)"):
        metrics.diagonal((4, 5), (1.0, 0.0))


@pytest.mark.parametrize("kind", metrics.DISTANCES)
def test_the_empty_rule(kind):
    """Miss and false positive: Dice 0, the diagonal, counted; both empty: undefined, not counted."""
    shape, spacing = (6, 7, 8), (1.5, 1.0, 2.0)
    diag = math.sqrt((5 * 1.5) ** 2 + 6 ** 2 + (7 * 2.0) ** 2)
    truth = torch.zeros(shape, dtype=torch.long)
    truth[1:3, 1:3, 1:3] = 1               # class 1 in the reference only: a miss
    pred = torch.zeros(shape, dtype=torch.long)
    pred[4:6, 4:6, 4:6] = 2                # class 2 in the prediction only: a false positive
    m = metrics.class_metrics(pred, truth, 4, spacing, kind)  # class 3: in neither
    assert m["dice"][:2].tolist() == [0.0, 0.0] and math.isnan(m["dice"][2])
    assert m[kind][:2] == pytest.approx([diag, diag]) and math.isnan(m[kind][2])
    assert m["empty_pred"].tolist() == [True, False, False]
    assert m["empty_truth"].tolist() == [False, True, False]
    # the diagonal bounds every defined distance in the grid
    corner_a, corner_b = torch.zeros(shape, dtype=torch.long), torch.zeros(shape, dtype=torch.long)
    corner_a[0, 0, 0], corner_b[-1, -1, -1] = 1, 1
    assert metrics.class_metrics(corner_a, corner_b, 2, spacing, kind)[kind][0] == pytest.approx(diag)


def test_every_study_applies_the_same_rule():
    """A missed structure scores the same diagonal in the ssl3d, template and uda evaluations."""
    shape, spacing = (6, 7, 8), (1.5, 1.0, 2.0)
    diag = metrics.diagonal(shape, spacing)
    truth = torch.zeros(shape, dtype=torch.long)
    truth[1:4, 2:5, 2:6] = 1
    empty = torch.zeros(shape, dtype=torch.long)
    ssl = segmentation_metrics(empty, truth, ["bg", "a"], spacing)
    assert ssl["hd95_a"] == pytest.approx(diag) and ssl["dice_a"] == 0.0 and ssl["misses"] == 1
    assert _hausdorff(empty.numpy() > 0, truth.numpy() > 0, spacing) == pytest.approx(diag)
    assert math.isnan(_hausdorff(empty.numpy() > 0, empty.numpy() > 0, spacing))
    uda = case_metrics(empty, truth, 2, spacing)
    assert uda["assd"][0] == pytest.approx(diag) and uda["dice"][0] == 0.0

    class Fixed:
        def predict(self, x, batch_size=32):
            return empty.permute(2, 0, 1)  # slices along the last axis

    res = uda_evaluate(Fixed(), torch.zeros(shape[2], 1, *shape[:2]), truth.permute(2, 0, 1), ["bg", "a"],
                       spacing, groups=[("c", 0, shape[2])])
    assert res["assd"] == pytest.approx(diag) and res["misses"] == 1 and res["empty_pred_a"] == 1

    class Blank(torch.nn.Module):
        def forward(self, x):
            return {"prob": torch.zeros_like(x)}

    t = template_evaluate(Blank(), torch.zeros(1, 1, *shape), truth[None, None].float(), spacing)
    assert t["hausdorff"] == [pytest.approx(diag)] and t["dice"] == [0.0] and t["misses"] == 1


def test_summarise_sums_counts_and_averages_the_rest():
    rows = [{"case": "a", "dice": 0.5, "hd95": math.nan, "misses": 1, "empty_pred": 1, "empty_truth": 0},
            {"case": "b", "dice": 1.0, "hd95": 2.0, "misses": 2, "empty_pred": 0, "empty_truth": 2}]
    assert summarise(rows) == {"dice": 0.75, "hd95": 2.0, "misses": 3, "empty_pred": 1, "empty_truth": 2}


def test_class_metrics_checks_its_input():
    z = torch.zeros(4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="prediction shape"):
        metrics.class_metrics(z, torch.zeros(4, 5, dtype=torch.long), 2, (1.0, 1.0))
    with pytest.raises(ValueError, match="spacing needs 2 values"):
        metrics.class_metrics(z, z, 2, (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="'hd99'"):
        metrics.class_metrics(z, z, 2, (1.0, 1.0), "hd99")
    with pytest.raises(ValueError, match=r"\[0, 1\], got \[0, 3\]"):
        metrics.class_metrics(z + 3 * (torch.arange(4) == 0), z, 2, (1.0, 1.0))


# --------------------------------------------------------------------- AUC
def test_binary_auc_matches_sklearn():
    g = np.random.default_rng(0)
    labels = g.integers(0, 2, 60)
    p1 = np.clip(0.3 * labels + g.random(60) * 0.7, 0, 1)
    probs = np.stack([1 - p1, p1], 1)
    assert metrics.roc_auc(probs, labels) == pytest.approx(roc_auc_score(labels, p1))


@pytest.mark.parametrize("n_classes", [3, 5])
def test_multiclass_auc_matches_sklearn_ovr_macro(n_classes):
    g = np.random.default_rng(n_classes)
    labels = g.integers(0, n_classes, 80)
    logits = g.normal(size=(80, n_classes)) + 1.5 * np.eye(n_classes)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    ref = roc_auc_score(labels, probs, multi_class="ovr", average="macro")
    assert metrics.roc_auc(probs, labels) == pytest.approx(ref)
    # a class absent from the labels has no one-vs-rest curve: macro over the classes present
    keep = labels != 1
    ref_present = np.mean([roc_auc_score(labels[keep] == c, probs[keep, c]) for c in np.unique(labels[keep])])
    assert metrics.roc_auc(probs[keep], labels[keep]) == pytest.approx(ref_present)


def test_auc_undefined_with_one_class_and_checks_input():
    assert math.isnan(metrics.roc_auc(np.array([[0.2, 0.8], [0.6, 0.4]]), np.array([1, 1])))
    with pytest.raises(ValueError, match=r"\(3, 2\) and \(2,\)"):
        metrics.roc_auc(np.zeros((3, 2)), np.zeros(2))
    with pytest.raises(ValueError, match=r"\[0, 1\], got \[0, 2\]"):
        metrics.roc_auc(np.full((2, 2), 0.5), np.array([0, 2]))


def test_undefined_reasons_name_the_dotted_path():
    got = metrics.undefined_reasons({"dice": 0.5, "auc": math.nan, "hd95_a": math.inf, "misses": 2})
    assert set(got) == {"metrics.auc", "metrics.hd95_a"} and "single class" in got["metrics.auc"]
    assert json.loads(json.dumps(got))  # plain strings
