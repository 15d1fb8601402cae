"""medssl.report.convergence: the last-quarter gain of a run's curve, on hand-computed curves."""

from __future__ import annotations

import math

import pytest

from medssl import paths
from medssl.io import write_json
from medssl.report import convergence, tables


def test_validation_gain_is_best_so_far_after_three_quarters():
    # epochs 2..8, cut at 0.75 * 8 = 6: best up to epoch 6 is 0.7, best overall 0.77 -> +10 %
    gain = convergence.last_quarter_gain([2, 4, 6, 8], [0.5, 0.6, 0.7, 0.77], higher_is_better=True)
    assert gain == pytest.approx((0.77 - 0.7) / 0.7)
    # a dip at the end does not count as a loss: the best epoch is kept
    assert convergence.last_quarter_gain([2, 4, 6, 8], [0.5, 0.8, 0.8, 0.6], True) == 0.0


def test_loss_gain_compares_the_last_two_quarters():
    # epochs 1..8: last quarter x > 6 -> (2 + 1) / 2 = 1.5; the quarter before 4 < x <= 6 -> (4 + 3) / 2 = 3.5
    gain = convergence.last_quarter_gain(range(1, 9), [8, 7, 6, 5, 4, 3, 2, 1], higher_is_better=False)
    assert gain == pytest.approx((3.5 - 1.5) / 3.5)
    flat = convergence.last_quarter_gain(range(1, 9), [5, 4, 3, 2, 1, 1, 1, 1], higher_is_better=False)
    assert flat == 0.0


def test_too_short_curves_are_not_judged():
    assert math.isnan(convergence.last_quarter_gain([10], [0.9], True))  # no point before the last quarter
    assert math.isnan(convergence.last_quarter_gain([], [], False))
    assert math.isnan(convergence.last_quarter_gain([1, 2], [0.0, 0.5], True))  # baseline 0


def test_curve_prefers_the_validation_metric():
    hist = [{"epoch": 1, "train_loss": 2.0}, {"epoch": 2, "train_loss": 1.0, "val_metric": 0.4}]
    name, x, y, higher = convergence.curve(hist)
    assert (name, list(x), list(y), higher) == ("validation", [2.0], [0.4], True)
    name, x, y, higher = convergence.curve([{"epoch": 1, "loss": 3.0}, {"epoch": 2, "loss": 2.0}])
    assert (name, list(y), higher) == ("train loss", [3.0, 2.0], False)
    name, x, y, higher = convergence.curve([3.0, 2.0, 1.0])  # per-step losses
    assert (name, list(x), higher) == ("train loss", [1.0, 2.0, 3.0], False)
    assert convergence.curve([])[0] == ""


def _run(base, method, seed, vals):
    path = paths.downstream_metrics("s", "organs", "finetune", method, 1.0, seed, base)
    write_json(path, {"study": "s", "dataset": "organs", "protocol": "finetune", "method": method,
                      "fraction": 1.0, "seed": seed, "task": "segmentation", "metrics": {"dice": vals[-1]},
                      "per_case": [], "best_epoch": 4,
                      "history": [{"epoch": e, "train_loss": 1.0, "val_metric": v}
                                  for e, v in zip((1, 2, 3, 4), vals, strict=True)]})
    return path


def test_table_markdown_reports_runs_at_plateau(tmp_path):
    files = [_run(tmp_path, "scratch", 0, [0.5, 0.8, 0.9, 0.905]),   # +0.56 % after epoch 3: plateau
             _run(tmp_path, "scratch", 1, [0.5, 0.6, 0.7, 0.84]),    # +20 %: still rising
             _run(tmp_path, "gvsl", 0, [0.5, 0.6, 0.8, 0.8]),
             _run(tmp_path, "gvsl", 1, [0.5, 0.6, 0.8, 0.8])]
    df = convergence.runs_convergence(files)
    assert df.set_index(["method", "seed"])["plateau"].to_dict() == {
        ("scratch", 0): True, ("scratch", 1): False, ("gvsl", 0): True, ("gvsl", 1): True}
    md = tables.write_tables("s", files, ["scratch", "gvsl"], tmp_path, reference="scratch")["md"].read_text()
    section = md[md.index("## Convergence"):]
    assert "| **scratch** | organs | finetune | 100% | validation | 1/2 | +10.3% (+20.0%) |" in section
    assert "| gvsl | organs | finetune | 100% | validation | 2/2 | +0.0% (+0.0%) |" in section
