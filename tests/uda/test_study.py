"""The uda study stage through the Python API: target labels unused, metrics.json, table."""

from __future__ import annotations

import copy
import json
import os

import pytest

from medssl import config, paths
from medssl.data.datalist import read_datalist
from medssl.report.tables import write_study_tables
from medssl.uda.study import run_uda


@pytest.fixture(scope="module")
def tiny(tiny_root):
    return tiny_root("phantom_cmr_bssfp", "phantom_cmr_lge")


def test_run_uda_writes_metrics_and_table(tiny):
    st = tiny.studies["uda2d"]
    recs = {}
    for d in st.directions:
        for m in st.models:
            recs[d.label, m] = run_uda(tiny, "uda2d", m, d.label, 0, progress=False)
    for (direction, m), rec in recs.items():
        saved = json.loads(paths.method_metrics("uda2d", direction, m, 0).read_text())
        assert saved["metrics"] == rec["metrics"] and saved["task"] == "uda" and saved["protocol"] == "uda"
        assert set(rec["metrics"]) >= {"dice", "dice_LV", "dice_myocardium", "dice_RV", "assd"}
        assert 0.0 <= rec["metrics"]["dice"] <= 1.0
        assert rec["n_cases"] == 2  # the target's test subjects, scored in 3D
        assert len(rec["history"]) == st.direction(direction).epochs
    assert recs["bssfp_to_lge", "source_only"]["history"][0]["recon"] == 0.0  # no reconstructor
    assert recs["bssfp_to_lge", "cmevae"]["history"][-1]["contrast"] > 0.0
    md = write_study_tables(tiny, "uda2d")["md"].read_text()
    for col in ("dice_LV", "dice_myocardium", "dice_RV", "assd", "bssfp_to_lge", "lge_to_bssfp", "cmevae"):
        assert col in md


def test_target_labels_are_never_read(tiny):
    """Removing the target's training labels from disk changes nothing: they are not used."""
    before = run_uda(tiny, "uda2d", "cmevae", "bssfp_to_lge", 5, progress=False)
    entries = read_datalist(paths.datalist("phantom_cmr_lge"), "training")
    hidden = []
    for e in entries:
        moved = f"{e['label']}.hidden"
        os.replace(e["label"], moved)
        hidden.append((moved, e["label"]))
    try:
        after = run_uda(tiny, "uda2d", "cmevae", "bssfp_to_lge", 5, progress=False)
    finally:
        for moved, label in hidden:
            os.replace(moved, label)
    assert after["metrics"] == before["metrics"]


def test_bad_names_and_directions(tiny):
    with pytest.raises(ValueError, match="is not a study of kind 'uda'"):
        run_uda(tiny, "template", "cmevae", "bssfp_to_lge", 0)
    with pytest.raises(ValueError, match="method 'nope' is not in study 'uda2d'"):
        run_uda(tiny, "uda2d", "nope", "bssfp_to_lge", 0)
    with pytest.raises(ValueError, match="direction 'x_to_y' is not in the study"):
        run_uda(tiny, "uda2d", "cmevae", "x_to_y", 0)


def test_config_rejects_mismatched_classes(tiny_params):
    raw = tiny_params()
    bad = copy.deepcopy(raw)
    bad["studies"]["uda2d"]["directions"][0]["target"] = "phantom_organs"
    with pytest.raises(config.ConfigError, match="differ from target classes"):
        config.parse(bad)
    bad = copy.deepcopy(raw)
    bad["studies"]["uda2d"]["directions"][1]["name"] = "bssfp_to_lge"
    with pytest.raises(config.ConfigError, match="direction names repeat"):
        config.parse(bad)
    bad = copy.deepcopy(raw)
    bad["studies"]["uda2d"]["directions"][0]["source"] = "phantom_lesion"
    with pytest.raises(config.ConfigError, match="must be a segmentation task"):
        config.parse(bad)
