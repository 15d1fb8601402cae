"""The claims report (medssl.report.claims) on synthetic long frames."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from scipy import stats as sps

from medssl.report.claims import Claim, evaluate, to_markdown, verdict
from medssl.report.inputs import LONG_COLUMNS


def _frame(rows: dict[tuple[str, str, float], dict[str, list[float]]], metric: str = "dice") -> pd.DataFrame:
    out = []
    for (dataset, protocol, fraction), methods in rows.items():
        for m, vals in methods.items():
            out += [("s", dataset, protocol, m, fraction, seed, "segmentation", metric, v)
                    for seed, v in enumerate(vals)]
    return pd.DataFrame(out, columns=LONG_COLUMNS)


@pytest.mark.parametrize("diff, p, lower, expected", [
    (0.1, 0.01, False, "supported"), (-0.1, 0.01, False, "contradicted"), (-0.1, 0.01, True, "supported"),
    (0.1, 0.2, False, "not shown"), (0.1, math.nan, False, "untestable"), (0.0, 1.0, False, "not shown"),
])
def test_verdict(diff, p, lower, expected):
    assert verdict(diff, p, lower) == expected


def test_every_setting_is_tested_with_the_paired_test():
    a_small, b_small = [0.50, 0.55, 0.52], [0.40, 0.42, 0.41]
    a_full, b_full = [0.80, 0.70, 0.75], [0.78, 0.74, 0.73]
    df = _frame({("organs", "finetune", 0.25): {"x": a_small, "ref": b_small},
                 ("organs", "finetune", 1.0): {"x": a_full, "ref": b_full},
                 ("lesion", "finetune", 1.0): {"x": [0.1, 0.1], "ref": [0.2, 0.2]}})
    got = evaluate({"s": df}, [Claim("P", "s", "x", "ref", "dice", dataset="organs")])
    assert got["fraction"].tolist() == [0.25, 1.0]  # only the claimed dataset
    assert got["p"].tolist() == pytest.approx([sps.ttest_rel(a_small, b_small).pvalue,
                                               sps.ttest_rel(a_full, b_full).pvalue])
    assert got["verdict"].tolist() == ["supported", "not shown"]
    assert got["difference"].iloc[0] == pytest.approx(sum(a_small) / 3 - sum(b_small) / 3)
    md = to_markdown(got)
    assert "s · organs · finetune · 25%" in md and "supported" in md and "paired t-test" in md


def test_missing_study_row_or_metric_is_not_run_and_one_seed_untestable():
    df = _frame({("organs", "finetune", 1.0): {"x": [0.5], "ref": [0.4]}})
    claims = [Claim("P", "absent", "x", "ref", "dice"), Claim("P", "s", "x", "nobody", "dice"),
              Claim("P", "s", "x", "ref", "hd95", lower=True), Claim("P", "s", "x", "ref", "dice")]
    got = evaluate({"s": df}, claims)
    assert got["verdict"].tolist() == ["not run", "not run", "not run", "untestable"]
