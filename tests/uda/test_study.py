"""The uda study stage through the Python API: target labels unused, metrics.json, table."""

from __future__ import annotations

import copy
import json
import math
import os

import numpy as np
import pandas as pd
import pytest
from scipy.ndimage import binary_erosion, distance_transform_edt

from medssl import config, paths
from medssl.data.datalist import read_datalist
from medssl.report.tables import write_study_tables
from medssl.uda.study import run_uda


@pytest.fixture(scope="module")
def tiny(tiny_root):
    return tiny_root("phantom_cmr_bssfp", "phantom_cmr_lge")


def _strict_json(path):
    """The file through a strict reader: bare NaN / Infinity tokens are refused."""
    def refuse(token):
        raise AssertionError(f"{path}: non-standard JSON token {token}")
    return json.loads(path.read_text(), parse_constant=refuse)


def _dice_assd_reference(p: np.ndarray, t: np.ndarray, spacing) -> tuple[float, float]:
    """Dice and ASSD of two binary volumes (scipy EDT), with the empty rule written out by hand."""
    if not p.any() and not t.any():
        return math.nan, math.nan
    if not p.any() or not t.any():
        return 0.0, math.sqrt(sum(((n - 1) * s) ** 2 for n, s in zip(p.shape, spacing)))
    ep, et = p & ~binary_erosion(p), t & ~binary_erosion(t)
    dp = distance_transform_edt(~et, sampling=spacing)[ep]
    dt = distance_transform_edt(~ep, sampling=spacing)[et]
    return 2 * (p & t).sum() / (p.sum() + t.sum()), float((dp.sum() + dt.sum()) / (dp.size + dt.size))


def test_run_uda_writes_metrics_and_table(tiny, monkeypatch):
    import medssl.uda.study as study

    st = tiny.studies["uda2d"]
    seen = {}
    real = study.evaluate

    def spy(model, x, y, classes, spacing, groups=None):  # keep the trained model to recompute its metrics
        seen["last"] = (model, x, y, spacing, groups)
        return real(model, x, y, classes, spacing, groups=groups)

    monkeypatch.setattr(study, "evaluate", spy)
    recs, evals = {}, {}
    for d in st.directions:
        for m in st.models:
            recs[d.label, m] = run_uda(tiny, "uda2d", m, d.label, 0, progress=False)
            evals[d.label, m] = seen["last"]
    classes = tiny.datasets[st.directions[0].target].classes
    for (direction, m), rec in recs.items():
        saved = _strict_json(paths.method_metrics("uda2d", direction, m, 0))
        assert saved == rec and saved["task"] == "uda" and saved["protocol"] == "uda"
        assert rec["n_cases"] == 2  # the target's test subjects, scored in 3D
        assert len(rec["history"]) == st.direction(direction).epochs
        # recompute Dice / ASSD per subject and class from the trained model's predictions (scipy)
        model, x, y, spacing, groups = evals[direction, m]
        pred = model.predict(x).numpy()
        misses = 0
        for ci, name in enumerate(classes[1:], start=1):
            per = [_dice_assd_reference(np.moveaxis(pred[a:b], 0, -1) == ci, np.moveaxis(y[a:b].numpy(), 0, -1) == ci,
                                        spacing) for _, a, b in groups]
            misses += sum((pred[a:b] == ci).any() != (y[a:b].numpy() == ci).any() for _, a, b in groups)
            for k, j in (("dice", 0), ("assd", 1)):
                vals = [v[j] for v in per if not math.isnan(v[j])]
                got = rec["metrics"][f"{k}_{name}"]
                assert (got is None and not vals) or got == pytest.approx(np.mean(vals), rel=1e-5), (m, k, name)
        assert rec["metrics"]["misses"] == misses
        assert rec["metrics"]["dice"] == pytest.approx(np.mean([rec["metrics"][f"dice_{c}"] for c in classes[1:]]))
    assert recs["bssfp_to_lge", "source_only"]["history"][0]["recon"] == 0.0  # no reconstructor
    assert recs["bssfp_to_lge", "cmevae"]["history"][-1]["contrast"] > 0.0
    written = write_study_tables(tiny, "uda2d")
    # the table: rows = the study's methods in order, columns = directions x (Dice per class, dice, assd,
    # misses), each cell the metrics.json value of the one seed
    csv = pd.read_csv(written["csv"])
    assert list(dict.fromkeys(csv["method"])) == list(st.models)
    assert list(dict.fromkeys(csv["dataset"])) == [d.label for d in st.directions]
    assert list(dict.fromkeys(csv["metric"])) == [*(f"dice_{c}" for c in classes[1:]), "dice", "assd", "misses"]
    for r in csv.itertuples():
        value = recs[r.dataset, r.method]["metrics"][r.metric]
        assert (math.isnan(r.mean) and value is None) or r.mean == pytest.approx(value), (r.method, r.metric)
    assert "misses ↓" in written["md"].read_text()


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
    with pytest.raises(ValueError, match="direction 'x_to_y' is not in the study; its directions: .*bssfp_to_lge"):
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
