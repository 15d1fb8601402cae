"""Significance in the results tables: paired tests across seeds, and marks that respect them.

A study runs every row with the same seeds, and a seed fixes the label subset,
the initialisation and the batch order of every row alike, so two rows of one
column are compared *paired by seed*: the two-sided paired t-test of
:func:`scipy.stats.ttest_rel` on the seeds both rows have. With the three seeds
of the default study the test has 2 degrees of freedom; the Wilcoxon
signed-rank test cannot reach p < 0.25 with three pairs, so it is not used.
No correction for multiple comparisons is applied (the caption says so).

* :func:`paired_p` — p-value of one pair of rows.
* :func:`rank_marks` — ``best`` / ``second`` / ``tie`` per row of one column:
  the top row is marked best only when it differs significantly from the
  runner-up, the runner-up second only when it differs from the third; when
  the top two do not differ both are marked ``tie`` (and no second is given).
* :func:`stars` — the marker shown after a cell whose row differs from the
  reference row.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

#: significance level of the marks and of the first marker
ALPHA = 0.05
#: (threshold, marker) from the strictest; a cell gets the first whose threshold its p is below
MARKERS = ((0.01, "‡"), (0.05, "†"))
TEST_NAME = "two-sided paired t-test across seeds (scipy.stats.ttest_rel)"


def paired_p(a: pd.Series, b: pd.Series) -> float:
    """Two-sided paired t-test p-value of two rows, paired on their common index (the seeds).

    Args:
        a, b: values indexed by seed; NaN values (an undefined metric) are dropped
            pairwise.

    Returns:
        the p-value; NaN with fewer than two complete pairs; 1.0 when every
        difference is zero (identical rows cannot be told apart); 0.0 when the
        differences are equal and non-zero (no spread at all).
    """
    pairs = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner").dropna()
    if len(pairs) < 2:
        return math.nan
    diff = (pairs["a"] - pairs["b"]).to_numpy(dtype=float)
    if np.all(diff == 0):
        return 1.0
    if np.all(diff == diff[0]):
        return 0.0
    from scipy import stats  # here, not at the top: the Snakefile imports this module (via claims) at parse time,
    # and scipy.stats takes ~3 s to import, which a rerun with nothing to do would pay (issue 14: rerun <= 2 s)

    return float(stats.ttest_rel(pairs["a"], pairs["b"]).pvalue)


def rank_marks(means: pd.Series, values: Mapping[str, pd.Series], lower: bool,
               alpha: float = ALPHA) -> list[str]:
    """Marks of one column: ``best``, ``second``, ``tie`` or ``""`` per row of ``means``.

    Args:
        means: the mean per row (index: row names); NaN rows are never marked.
        values: per row, its values indexed by seed (for :func:`paired_p`).
        lower: whether lower is better.
        alpha: significance level.
    """
    filled = [(row, m) for row, m in means.items() if not math.isnan(m)]
    marks = {row: "" for row in means.index}
    if len(filled) < 2:
        return [marks[r] for r in means.index]
    ranked = [row for row, _ in sorted(filled, key=lambda x: x[1], reverse=not lower)]

    def differ(x: str, y: str) -> bool:
        if means[x] == means[y]:
            return False
        p = paired_p(values[x], values[y])
        return not math.isnan(p) and p < alpha

    if differ(ranked[0], ranked[1]):
        marks[ranked[0]] = "best"
        if len(ranked) > 2 and differ(ranked[1], ranked[2]):
            marks[ranked[1]] = "second"
    else:
        marks[ranked[0]] = marks[ranked[1]] = "tie"
    return [marks[r] for r in means.index]


def stars(p: float) -> str:
    """The marker of a p-value against the reference row: ``‡`` (p < 0.01), ``†`` (p < 0.05), else ``""``."""
    if math.isnan(p):
        return ""
    for threshold, marker in MARKERS:
        if p < threshold:
            return marker
    return ""


def p_against(reference: str | None, rows: Sequence[str], values: Mapping[str, pd.Series]) -> list[float]:
    """:func:`paired_p` of every row against ``reference`` (NaN for the reference itself or without one)."""
    if reference is None or reference not in values:
        return [math.nan] * len(rows)
    return [math.nan if r == reference or r not in values else paired_p(values[r], values[reference])
            for r in rows]
