"""Tests of medssl.report.stats against closed forms and scipy's distributions."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from medssl.report import stats

NAN = math.nan


def _s(values, seeds=None) -> pd.Series:
    return pd.Series(values, index=seeds if seeds is not None else range(len(values)), dtype=float)


def test_paired_p_three_pairs_closed_form():
    # differences 1, 2, 3: t = 2 / (1 / sqrt 3) = sqrt 12 with 2 degrees of freedom, whose
    # two-sided tail has the closed form p = 1 - t / sqrt(t^2 + 2)
    a, b = _s([1.0, 2.0, 3.0]), _s([0.0, 0.0, 0.0])
    t = math.sqrt(12.0)
    assert stats.paired_p(a, b) == pytest.approx(1 - t / math.sqrt(t * t + 2), rel=1e-12)
    assert stats.paired_p(b, a) == pytest.approx(stats.paired_p(a, b))  # two-sided


def test_paired_p_matches_the_t_statistic_by_hand():
    rng = np.random.default_rng(3)
    for n in (2, 3, 5, 10):
        a, b = rng.normal(size=n), rng.normal(size=n) + 0.3
        d = a - b
        t = d.mean() / (d.std(ddof=1) / math.sqrt(n))
        expected = 2 * sps.t.sf(abs(t), df=n - 1)
        assert stats.paired_p(_s(a), _s(b)) == pytest.approx(expected, rel=1e-9)


def test_paired_p_pairs_by_seed_and_drops_undefined_values():
    a = _s([0.5, 0.6, 0.9, 0.1], seeds=[0, 1, 2, 3])
    b = _s([0.4, 0.7, 0.2], seeds=[1, 2, 3])          # seed 0 has no partner
    expected = sps.ttest_rel([0.6, 0.9, 0.1], [0.4, 0.7, 0.2]).pvalue
    assert stats.paired_p(a, b) == pytest.approx(expected)
    a_nan = _s([NAN, 0.6, 0.9, 0.1], seeds=[1, 0, 2, 3])  # seed 1 undefined in a: pairs 2, 3 remain
    assert stats.paired_p(a_nan, b) == pytest.approx(sps.ttest_rel([0.9, 0.1], [0.7, 0.2]).pvalue)


@pytest.mark.parametrize("a, b, expected", [
    ([0.5], [0.4], NAN),                       # one pair: no test
    ([0.5, NAN], [0.4, 0.3], NAN),             # one complete pair
    ([0.5, 0.6, 0.7], [0.5, 0.6, 0.7], 1.0),   # identical rows
    ([0.5, 0.6, 0.7], [0.4, 0.5, 0.6], 0.0),   # the same non-zero difference every seed
])
def test_paired_p_degenerate(a, b, expected):
    got = stats.paired_p(_s(a), _s(b))
    assert (math.isnan(got) and math.isnan(expected)) or got == expected


def _rows(**rows) -> tuple[pd.Series, dict[str, pd.Series]]:
    values = {k: _s(v) for k, v in rows.items()}
    return pd.Series({k: v.mean() for k, v in values.items()}), values


def test_rank_marks_separated_rows_get_best_and_second():
    means, values = _rows(a=[0.70, 0.72, 0.71], b=[0.90, 0.91, 0.93], c=[0.80, 0.83, 0.81])
    assert stats.rank_marks(means, values, lower=False) == ["", "best", "second"]
    assert stats.rank_marks(means, values, lower=True) == ["best", "", "second"]


def test_rank_marks_within_noise_is_a_tie():
    # the top two differ by 0.01 on average with seed-to-seed differences of +-0.1
    means, values = _rows(a=[0.9, 0.7, 0.83], b=[0.8, 0.8, 0.80], c=[0.1, 0.12, 0.11])
    assert stats.rank_marks(means, values, lower=False) == ["tie", "tie", ""]


def test_rank_marks_best_without_second_when_second_and_third_do_not_differ():
    means, values = _rows(a=[0.90, 0.91, 0.92], b=[0.70, 0.72, 0.69], c=[0.72, 0.68, 0.70])
    assert stats.rank_marks(means, values, lower=False) == ["best", "", ""]


def test_rank_marks_empty_rows_never_win_and_one_row_gets_nothing():
    means, values = _rows(a=[0.1, 0.2, 0.15], b=[0.5, 0.52, 0.51])
    means["c"], values["c"] = NAN, _s([])
    assert stats.rank_marks(means, values, lower=False) == ["", "best", ""]
    assert stats.rank_marks(means[["a", "c"]], values, lower=False) == ["", ""]


def test_rank_marks_one_seed_cannot_be_significant():
    means, values = _rows(a=[0.9], b=[0.1])
    assert stats.rank_marks(means, values, lower=False) == ["tie", "tie"]


@pytest.mark.parametrize("p, marker", [(0.0, "‡"), (0.0099, "‡"), (0.01, "†"), (0.049, "†"),
                                       (0.05, ""), (0.7, ""), (NAN, "")])
def test_stars(p, marker):
    assert stats.stars(p) == marker


def test_p_against_reference():
    values = {"ref": _s([0.5, 0.6, 0.7]), "x": _s([0.6, 0.8, 0.75]), "y": _s([0.5, 0.6, 0.7])}
    got = stats.p_against("ref", ["ref", "x", "y", "absent"], values)
    assert math.isnan(got[0]) and math.isnan(got[3]) and got[2] == 1.0
    assert got[1] == pytest.approx(sps.ttest_rel([0.6, 0.8, 0.75], [0.5, 0.6, 0.7]).pvalue)
    assert all(math.isnan(p) for p in stats.p_against(None, ["ref", "x"], values))
