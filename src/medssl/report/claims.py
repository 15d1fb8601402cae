"""The papers' claims, tested on this run's results: ``results/claims.{md,csv}``.

Each claim of :data:`CLAIMS` says that one row beats another on one metric
(e.g. GVSL fine-tuning beats training from scratch on organ Dice). It is
tested at every setting of the run where both rows have results (each
dataset, protocol and label fraction) with the paired test of the tables
(:func:`medssl.report.stats.paired_p`, across seeds), and gets a verdict:

* ``supported``: the difference has the claimed sign and p < 0.05;
* ``contradicted``: the opposite sign and p < 0.05;
* ``not shown``: p >= 0.05 (the run cannot tell the rows apart);
* ``untestable``: fewer than two paired seeds;
* ``not run``: the study, a row or the metric is not in the run.

No correction for multiple comparisons. The claims are those of the four
papers (see ``papers.md``); the phantoms are not the papers' data, so a
verdict says what this run shows, not whether the paper was right.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from medssl import paths
from medssl.io import write_text
from medssl.report import stats
from medssl.report.inputs import collect, study_metrics


@dataclass(frozen=True)
class Claim:
    """``row`` is better than ``other`` on ``metric`` (higher unless ``lower``) in study ``study``."""

    paper: str
    study: str
    row: str
    other: str
    metric: str
    lower: bool = False
    dataset: str | None = None  # None: every dataset / direction of the study


CLAIMS: tuple[Claim, ...] = (
    Claim("GVSL", "ssl3d", "gvsl", "scratch", "dice", dataset="phantom_organs"),
    Claim("GVSL", "ssl3d", "gvsl", "scratch", "auc", dataset="phantom_lesion"),
    Claim("GVSL", "ssl3d", "gvsl", "genesis", "dice", dataset="phantom_organs"),
    Claim("S2DC", "ssl3d", "s2dc", "scratch", "dice", dataset="phantom_organs"),
    Claim("S2DC", "ssl3d", "s2dc", "scratch", "auc", dataset="phantom_lesion"),
    Claim("S2DC", "ssl3d", "s2dc", "gvsl", "dice", dataset="phantom_organs"),
    Claim("Models Genesis", "ssl3d", "genesis", "scratch", "dice", dataset="phantom_organs"),
    # Table 2: integrating the field (diffeomorphic) folds less than the plain spatial template transformer
    Claim("Diffeomorphic Template Transformers", "template", "diffeo_fixed", "stt", "neg_jacobian_pct", lower=True),
    Claim("Diffeomorphic Template Transformers", "template", "diffeo_trained", "stt", "neg_jacobian_pct", lower=True),
    Claim("Diffeomorphic Template Transformers", "template", "diffeo_trained", "unet", "components", lower=True),
    Claim("Diffeomorphic Template Transformers", "template", "diffeo_trained", "unet", "dice"),
    Claim("Diffeomorphic Template Transformers", "template", "diffeo_trained", "diffeo_fixed", "dice"),
    Claim("Diffeomorphic Template Transformers", "stn", "stn_diffeo", "cnn", "accuracy"),
    # Table 1: the diffeomorphic STN folds less than the non-diffeomorphic one on the same lattice
    Claim("Diffeomorphic Template Transformers", "stn", "stn_diffeo", "stn_nondiffeo", "neg_jacobian_pct", lower=True),
    Claim("Diffeomorphic Template Transformers", "stn", "stn_diffeo", "stn_affine", "accuracy"),
    Claim("CMEVAE", "uda2d", "cmevae", "source_only", "dice"),
    Claim("CMEVAE", "uda2d", "cmevae", "vae", "dice"),
)

COLUMNS = ["paper", "claim", "study", "dataset", "protocol", "fraction", "n", "row_mean", "other_mean",
           "difference", "p", "verdict"]


def _text(c: Claim) -> str:
    return f"{c.row} {'<' if c.lower else '>'} {c.other} on {c.metric}"


def verdict(diff: float, p: float, lower: bool, alpha: float = stats.ALPHA) -> str:
    """The verdict of a mean difference (row − other) and its p-value (module docstring)."""
    if math.isnan(p):
        return "untestable"
    if p >= alpha:
        return "not shown"
    return "supported" if (diff < 0) == lower else "contradicted"


def evaluate(frames: dict[str, pd.DataFrame], claims: Sequence[Claim] = CLAIMS) -> pd.DataFrame:
    """One row (:data:`COLUMNS`) per claim and setting; ``frames``: long frame per study (:func:`collect`)."""
    rows = []
    for c in claims:
        base = {"paper": c.paper, "claim": _text(c), "study": c.study}
        df = frames.get(c.study)
        if df is None or not {c.row, c.other} <= set(df["method"]) or not (df["metric"] == c.metric).any():
            rows.append({**base, "verdict": "not run"})
            continue
        df = df[df["metric"] == c.metric]
        if c.dataset is not None:
            df = df[df["dataset"] == c.dataset]
        for (dataset, protocol, fraction), g in df.groupby(["dataset", "protocol", "fraction"], sort=False):
            a = g[g["method"] == c.row].set_index("seed")["value"]
            b = g[g["method"] == c.other].set_index("seed")["value"]
            pair = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner").dropna()
            diff = float((pair["a"] - pair["b"]).mean()) if len(pair) else math.nan
            p = stats.paired_p(a, b)
            rows.append({**base, "dataset": dataset, "protocol": protocol, "fraction": fraction, "n": len(pair),
                         "row_mean": float(a.mean()), "other_mean": float(b.mean()), "difference": diff, "p": p,
                         "verdict": verdict(diff, p, c.lower)})
        if df.empty:
            rows.append({**base, "verdict": "not run"})
    return pd.DataFrame(rows, columns=COLUMNS)


def to_markdown(df: pd.DataFrame) -> str:
    """The verdicts as Markdown, with the legend."""
    def num(x: float, d: int = 3) -> str:
        return "–" if pd.isna(x) else f"{x:.{d}f}"

    out = pd.DataFrame({
        "paper": df["paper"], "claim": df["claim"],
        "setting": [("–" if pd.isna(d) else f"{s} · {d}" + ("" if p in ("template", "stn", "uda") else
                                                           f" · {p} · {f * 100:g}%"))
                    for s, d, p, f in zip(df["study"], df["dataset"], df["protocol"], df["fraction"])],
        "n": ["–" if pd.isna(n) else str(int(n)) for n in df["n"]],
        "row − other": [num(x) if pd.isna(x) else f"{num(a)} − {num(b)} = {x:+.3f}"
                        for x, a, b in zip(df["difference"], df["row_mean"], df["other_mean"])],
        "p": ["–" if pd.isna(p) else f"{p:.3g}" for p in df["p"]],
        "verdict": df["verdict"]})
    legend = (f"n: paired seeds; p: {stats.TEST_NAME}; supported / contradicted: p < {stats.ALPHA:g} with the "
              "claimed / the opposite sign; not shown: p ≥ 0.05; no correction for multiple comparisons. On "
              "the synthetic phantoms a verdict says what this run shows, not whether the paper is right.")
    return out.to_markdown(index=False, disable_numparse=True) + f"\n\n{legend}\n"


def claim_files(params, base: Path | None = None) -> dict[str, list[Path]]:
    """The metrics.json of every target study that a claim names."""
    targets = set(params.target_studies())
    return {s: study_metrics(params, s, base) for s in dict.fromkeys(c.study for c in CLAIMS)
            if s in params.studies and s in targets}


def write_claims(params, base: Path | None = None) -> dict[str, Path]:
    """Write ``results/claims.{md,csv}`` (atomically) for the run of ``params``."""
    frames = {s: collect(files) for s, files in claim_files(params, base).items()}
    df = evaluate(frames)
    out = {ext: paths.claims(ext, base) for ext in ("md", "csv")}
    write_text(out["md"], to_markdown(df))
    write_text(out["csv"], df.to_csv(index=False, lineterminator="\n"))
    return out
