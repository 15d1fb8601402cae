"""medssl.report.summary: the per-study summary JSON (the DVC metrics file), exact on a tiny table."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from medssl.report import summary, tables
from medssl.report.inputs import LONG_COLUMNS


def _long(rows) -> pd.DataFrame:
    return pd.DataFrame([["s", *r] for r in rows], columns=LONG_COLUMNS)


def test_summary_is_row_setting_metric_mean_std_n_in_table_order():
    df = _long([
        ("organs", "linear", "b", 0.125, 0, "segmentation", "dice", 0.5),
        ("organs", "linear", "b", 0.125, 1, "segmentation", "dice", 0.7),
        ("organs", "linear", "a", 0.125, 0, "segmentation", "dice", 0.25),
        ("organs", "linear", "a", 1.0, 0, "segmentation", "dice", 0.75),
        ("organs", "linear", "a", 1.0, 0, "segmentation", "hd95", float("nan")),  # no value: left out
    ])
    table = tables.build_table(df, {"segmentation": ["dice", "hd95"]}, ["b", "a", "c"])
    got = summary.summary(table)
    assert list(got) == ["b", "a"]  # row order; "c" has no values at all
    assert got["b"] == {"organs/linear/12_5%": {"dice": {"mean": 0.6, "n": 2, "std": pytest.approx(0.141421)}}}
    assert got["a"] == {"organs/linear/12_5%": {"dice": {"mean": 0.25, "n": 1}},  # one seed: no std
                        "organs/linear/100%": {"dice": {"mean": 0.75, "n": 1}}}
    assert summary.setting_key("d", "linear", 0.17, True) == "d/linear/17%"
    assert summary.setting_key("bssfp_to_lge", "uda", 1.0, False) == "bssfp_to_lge"


def test_write_study_tables_writes_the_summary_of_its_table(synthetic):
    params, base = synthetic
    out = tables.write_study_tables(params, "stn", base)
    assert out["summary"] == summary.summary_path("stn", base) == base / "results/stn/summary.json"
    got = json.loads(out["summary"].read_text())
    csv = pd.read_csv(out["csv"])
    assert list(got) == params.studies["stn"].methods
    for r in csv.itertuples():
        cell = got[r.method][r.dataset][r.metric]
        assert cell["mean"] == pytest.approx(r.mean, abs=1e-6) and cell["n"] == r.n
        assert ("std" in cell) == (r.n > 1)
    text = out["summary"].read_text()
    assert "NaN" not in text and "null" not in text
