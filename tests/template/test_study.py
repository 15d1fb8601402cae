"""The template and stn study stages through the Python API, and their tables."""

from __future__ import annotations

import json
import math

import nibabel as nib
import numpy as np
import pytest

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


def test_run_template_writes_metrics_and_table(tiny):
    p = tiny
    rows = {}
    for model in p.studies["template"].models:
        rows[model] = run_template(p, "template", model, 0, progress=False)
    for model, rec in rows.items():
        out = paths.method_metrics("template", "phantom_breast", model, 0)
        saved = json.loads(out.read_text())
        assert saved["metrics"] == rec["metrics"]
        assert saved["protocol"] == "template" and saved["task"] == "template" and saved["fraction"] == 1.0
        assert 0.0 <= rec["metrics"]["dice"] <= 1.0 and rec["metrics"]["components"] >= 0
        assert len(rec["per_case"]) == 2
    assert rows["unet"]["metrics"]["neg_jacobian_pct"] is None  # no transformation
    assert 0.0 <= rows["diffeo_trained"]["metrics"]["neg_jacobian_pct"] <= 100.0
    written = write_study_tables(p, "template")
    md = written["md"].read_text()
    assert "unet" in md and "diffeo_trained" in md and "hausdorff" in md and "neg_jacobian_pct" in md


def test_run_template_is_deterministic(tiny):
    a = run_template(tiny, "template", "diffeo_trained", 3, progress=False)
    b = run_template(tiny, "template", "diffeo_trained", 3, progress=False)
    assert a["metrics"] == b["metrics"] and a["final_loss"] == b["final_loss"]


def test_run_template_rejects_bad_names(tiny):
    with pytest.raises(ValueError, match="is not a study of kind 'template'"):
        run_template(tiny, "ssl3d", "unet", 0)
    with pytest.raises(ValueError, match="model 'nope' is not in study 'template'"):
        run_template(tiny, "template", "nope", 0)


def test_run_stn_writes_metrics_and_table(tiny):
    p = tiny
    recs = {m: run_stn(p, "stn", m, 0, progress=False) for m in p.studies["stn"].models}
    for m, rec in recs.items():
        saved = json.loads(paths.method_metrics("stn", "rotated_digits", m, 0).read_text())
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
