"""The pretext table: did each pre-training method learn its own task on held-out volumes?

One row per ssl study x pre-trained method, from the ``pretext.json`` files the
pre-training stage writes (:mod:`medssl.train.pretext`): the score at step 0
and after the last step, mean ± sample std over the held-out cases (or
ordered pairs of cases), the change, and two paired tests across those cases
(:func:`medssl.report.stats.paired_p`): end against step 0, and end against
the task's baseline (damaged input, unwarped labels; chance has no per-case
values, so no test). Methods without a pretext task (scratch) have no row.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from medssl import paths
from medssl.io import write_text
from medssl.report import stats
from medssl.report.inputs import read_json

COLUMNS = ["study", "method", "metric", "unit", "over", "n", "held_out", "start_mean", "start_std", "end_mean",
           "end_std", "delta", "p_end_vs_start", "baseline", "baseline_mean", "p_end_vs_baseline", "steps"]


def _series(values: Sequence | None) -> pd.Series:
    return pd.Series([math.nan if v is None else float(v) for v in (values or [])], dtype=float)


def _std(s: pd.Series) -> float:
    s = s.dropna()
    return float(s.std(ddof=1)) if len(s) > 1 else math.nan


def collect(files: Sequence[Path]) -> pd.DataFrame:
    """One row (:data:`COLUMNS`) per pretext.json with a scored pretext, in file order.

    Raises:
        ValueError: naming a missing or invalid file.
    """
    rows = []
    for path in files:
        rec = read_json(path, ("study", "method", "start", "end", "held_out", "steps"))
        end, start = rec["end"], rec["start"]
        if end is None:
            continue
        e, s = _series(end.get("values")), _series((start or {}).get("values"))
        b = _series(end.get("baseline_values")) if end.get("baseline_values") is not None else None
        held = rec["held_out"] or {}
        n_cases = len(held.get("cases", []))
        rows.append({
            "study": rec["study"], "method": rec["method"], "metric": end["metric"], "unit": end.get("unit", ""),
            "over": end.get("over", "cases"), "n": int(e.notna().sum()),
            "held_out": f"{n_cases} {held.get('dataset', '?')} {held.get('split', '')} cases".strip(),
            "start_mean": float(s.mean()) if len(s) else math.nan, "start_std": _std(s),
            "end_mean": float(e.mean()), "end_std": _std(e),
            "delta": float((e - s).mean()) if len(s) == len(e) and len(s) else math.nan,
            "p_end_vs_start": stats.paired_p(e, s) if len(s) else math.nan,
            "baseline": end.get("baseline", ""), "baseline_mean": float(b.mean()) if b is not None else math.nan,
            "p_end_vs_baseline": stats.paired_p(e, b) if b is not None else math.nan,
            "steps": int(rec["steps"])})
    return pd.DataFrame(rows, columns=COLUMNS)


def _pm(m: float, s: float, d: int) -> str:
    if math.isnan(m):
        return "–"
    return f"{m:.{d}f}" if math.isnan(s) else f"{m:.{d}f} ± {s:.{d}f}"


def _p(p: float) -> str:
    return "–" if math.isnan(p) else f"{p:.3g}{stats.stars(p)}"


def to_markdown(df: pd.DataFrame) -> str:
    """The table as Markdown with its legend (test, n, what the baseline is)."""
    rows = []
    for r in df.itertuples(index=False):
        d = 2 if r.unit == "dB" else 3
        unit = f" ({r.unit})" if r.unit else ""
        baseline = r.baseline if math.isnan(r.baseline_mean) else f"{r.baseline} {r.baseline_mean:.{d}f}"
        rows.append({"study": r.study, "method": r.method, "pretext": f"{r.metric}{unit} ↑",
                     "held out": f"{r.n} {r.over} of {r.held_out}", "step 0": _pm(r.start_mean, r.start_std, d),
                     "end": _pm(r.end_mean, r.end_std, d) + f" ({r.steps} steps)",
                     "Δ": "–" if math.isnan(r.delta) else f"{r.delta:+.{d}f}", "p (end vs 0)": _p(r.p_end_vs_start),
                     "baseline": baseline, "p (end vs baseline)": _p(r.p_end_vs_baseline)})
    if not rows:
        return "No pre-trained method has a pretext score.\n"
    body = pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)
    legend = ("Each method's own task on held-out volumes it never trained on, with the same random draws "
              "at step 0 and at the end: mean ± sample std over the n held-out cases (GVSL: ordered pairs "
              f"of cases, which share cases and so are not independent). p: {stats.TEST_NAME.replace('seeds', 'cases')}; "
              "† p < 0.05, ‡ p < 0.01; no correction for multiple comparisons. Baselines: genesis — the "
              "damaged input's PSNR; gvsl — the Dice of the unwarped labels; s2dc — chance, 1 / patches per view "
              "(a constant, not tested).")
    return f"{body}\n\n{legend}\n"


def write_pretext_table(files: Sequence[Path], base: Path | None = None) -> dict[str, Path]:
    """Write ``results/pretext.{md,csv}`` (atomically) from the given pretext.json files."""
    df = collect(files)
    out = {"md": paths.pretext_table("md", base), "csv": paths.pretext_table("csv", base)}
    write_text(out["md"], to_markdown(df))
    write_text(out["csv"], df.to_csv(index=False, lineterminator="\n"))
    return out


def study_pretext_files(params, base: Path | None = None) -> list[Path]:
    """The pretext.json of every method of every ssl study of the default target."""
    targets = set(params.target_studies())
    return [paths.pretext(s, m, base) for s in params.studies_of_kind("ssl") if s in targets
            for m in params.studies[s].methods]


__all__ = ["COLUMNS", "collect", "study_pretext_files", "to_markdown", "write_pretext_table"]
