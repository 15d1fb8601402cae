"""The template and stn study stages through the Python API, and their tables."""

from __future__ import annotations

import json
import math

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from medssl import paths
from medssl.data.datalist import read_datalist
from medssl.report.tables import write_study_tables
from medssl.stn.study import run_stn
from medssl.template.study import load_cases, run_template


@pytest.fixture(scope="module")
def tiny(tiny_root):
    return tiny_root("phantom_breast")


def test_load_cases_reads_the_processed_volumes(tiny):
    entries = read_datalist(paths.datalist("phantom_breast"), "training")
    x, y, spacing, cases = load_cases(entries)
    assert x.shape == (len(entries), 1, 16, 16, 12) and y.shape == x.shape
    assert spacing == pytest.approx((10.0, 10.0, 10.0))
    assert set(np.unique(y.numpy())) <= {0.0, 1.0} and y.sum() > 0
    ref = np.asarray(nib.load(entries[0]["label"]).dataobj)
    assert np.array_equal(y[0, 0].numpy() > 0, ref > 0)
    assert cases == [e["case"] for e in entries]


def test_load_cases_names_the_bad_file(tiny, tmp_path):
    entries = read_datalist(paths.datalist("phantom_breast"), "training")
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a nifti")
    with pytest.raises(ValueError, match="bad.nii.gz: unreadable NIfTI"):
        load_cases([entries[0], {**entries[1], "label": str(bad)}])
    other = tmp_path / "other.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)), other)
    with pytest.raises(ValueError, match="other.nii.gz: shape"):
        load_cases([entries[0], {**entries[1], "image": str(other)}])
    with pytest.raises(ValueError, match="has no label map"):
        load_cases([{"case": "x", "image": entries[0]["image"]}])


def _strict_json(path):
    """The file through a strict reader: bare NaN / Infinity tokens are refused."""
    def refuse(token):
        raise AssertionError(f"{path}: non-standard JSON token {token}")
    return json.loads(path.read_text(), parse_constant=refuse)


def _hausdorff_reference(a: np.ndarray, b: np.ndarray, spacing) -> float:
    """Max symmetric surface distance with scipy (surface = mask minus its erosion), or the diagonal."""
    from scipy.ndimage import binary_erosion, distance_transform_edt

    if a.any() != b.any():
        return math.sqrt(sum(((n - 1) * s) ** 2 for n, s in zip(a.shape, spacing)))
    ea, eb = a & ~binary_erosion(a), b & ~binary_erosion(b)
    return float(max(distance_transform_edt(~eb, sampling=spacing)[ea].max(),
                     distance_transform_edt(~ea, sampling=spacing)[eb].max()))


def test_run_template_writes_metrics_and_table(tiny, monkeypatch):
    import medssl.template.study as study

    p = tiny
    seen = {}
    real = study.evaluate

    def spy(model, images, masks, spacing):  # keep the trained model to recompute its metrics
        seen["last"] = (model, images, masks, spacing)
        return real(model, images, masks, spacing=spacing)

    monkeypatch.setattr(study, "evaluate", spy)
    rows, models = {}, {}
    for model in p.studies["template"].models:
        rows[model] = run_template(p, "template", model, 0, progress=False)
        models[model] = seen["last"]
    for model, rec in rows.items():
        saved = _strict_json(paths.method_metrics("template", "phantom_breast", model, 0))
        assert saved == rec  # the record returned is the record on disk
        assert saved["protocol"] == "template" and saved["task"] == "template" and saved["fraction"] == 1.0
        assert len(rec["per_case"]) == 2
        # recompute every case from the trained model with scipy / hand Dice
        net, x, y, spacing = models[model]
        with torch.no_grad():
            pred = np.stack([(net(x[i:i + 1])["prob"] > 0.5)[0, 0].numpy() for i in range(x.shape[0])])
        gt = (y[:, 0] > 0.5).numpy()
        for i, row in enumerate(rec["per_case"]):
            denom = pred[i].sum() + gt[i].sum()
            assert row["dice"] == pytest.approx(2 * (pred[i] & gt[i]).sum() / denom, abs=1e-6)
            assert row["hausdorff"] == pytest.approx(_hausdorff_reference(pred[i], gt[i], spacing), rel=1e-5)
        assert rec["metrics"]["dice"] == pytest.approx(np.mean([r["dice"] for r in rec["per_case"]]))
        assert rec["metrics"]["hausdorff"] == pytest.approx(np.mean([r["hausdorff"] for r in rec["per_case"]]))
        assert rec["metrics"]["misses"] == sum(int(not pred[i].any()) for i in range(len(pred)))
    assert rows["unet"]["metrics"]["neg_jacobian_pct"] is None  # no transformation: null, with the reason
    assert "no ddf" in rows["unet"]["undefined"]["metrics.neg_jacobian_pct"]
    assert 0.0 <= rows["diffeo_trained"]["metrics"]["neg_jacobian_pct"] <= 100.0
    written = write_study_tables(p, "template")
    # the table: one row per model in params order, the headline columns, each cell the metrics.json value
    csv = pd.read_csv(written["csv"])
    assert list(dict.fromkeys(csv["method"])) == list(p.studies["template"].models)
    assert list(dict.fromkeys(csv["metric"])) == ["dice", "hausdorff", "misses", "neg_jacobian_pct", "components"]
    for r in csv.itertuples():
        value = rows[r.method]["metrics"][r.metric]
        assert (math.isnan(r.mean) and value is None) or r.mean == pytest.approx(value), (r.method, r.metric)
        assert r.n == (value is not None)
    md = written["md"].read_text()
    assert "misses ↓" in md and "unet" in md and "diffeo_trained" in md
    assert "## Convergence" in md and "| **unet** | phantom_breast | train loss |" in md  # the per-step loss curve


def test_run_template_is_deterministic(tiny):
    a = run_template(tiny, "template", "diffeo_trained", 3, progress=False)
    b = run_template(tiny, "template", "diffeo_trained", 3, progress=False)
    assert a["metrics"] == b["metrics"] and a["final_loss"] == b["final_loss"]
    assert len(a["history"]) == a["steps"] and a["history"][-1] == pytest.approx(a["final_loss"], abs=1e-6)


def test_run_template_rejects_bad_names(tiny):
    with pytest.raises(ValueError, match="is not a study of kind 'template'"):
        run_template(tiny, "ssl3d", "unet", 0)
    with pytest.raises(ValueError, match="model 'nope' is not in study 'template'"):
        run_template(tiny, "template", "nope", 0)


def test_run_stn_writes_metrics_and_table(tiny):
    p = tiny
    recs = {m: run_stn(p, "stn", m, 0, progress=False) for m in p.studies["stn"].models}
    for m, rec in recs.items():
        saved = _strict_json(paths.method_metrics("stn", "rotated_digits", m, 0))
        assert saved["metrics"] == rec["metrics"] and saved["task"] == "stn"
        assert 0.0 <= rec["metrics"]["accuracy"] <= 1.0
        assert len(rec["history"]) == p.studies["stn"].epochs and math.isfinite(rec["history"][-1]["loss"])
    assert recs["cnn"]["metrics"]["neg_jacobian_pct"] is None
    assert 0.0 <= recs["stn_diffeo"]["metrics"]["neg_jacobian_pct"] <= 100.0
    assert recs["stn_diffeo"]["n_params"] > recs["cnn"]["n_params"]
    md = write_study_tables(p, "stn")["md"].read_text()
    assert "stn_diffeo" in md and "accuracy" in md
    with pytest.raises(ValueError, match="is not a study of kind 'stn'"):
        run_stn(p, "template", "cnn", 0)


def test_stn_seeds_grouped_in_one_process_equal_single_runs(tiny):
    """group_seeds: a seed run after another in the same process gives what it gives alone."""
    from medssl.train.common import run_seeds

    alone = run_stn(tiny, "stn", "stn_diffeo", 1, progress=False)
    grouped = run_seeds(lambda s: run_stn(tiny, "stn", "stn_diffeo", s, progress=False), [0, 1], "stn")
    assert [r["seed"] for r in grouped] == [0, 1]
    assert grouped[1]["metrics"] == alone["metrics"] and grouped[1]["history"] == alone["history"]
    assert grouped[0]["metrics"] != alone["metrics"]
