"""Results tables of a study: its metrics.json files -> Markdown, LaTeX and CSV.

A table has one row per method and one column per dataset x protocol x label
fraction x metric (ssl studies) or per dataset x metric (template, stn, uda:
one protocol and fraction, so those header parts are left out). Conventions:

* The files are exactly the runs the study defines
  (:func:`medssl.report.inputs.study_metrics`); :func:`collect` keeps *every*
  entry of each file's ``"metrics"`` dict (long format) and
  :func:`build_table` picks the columns, by default the headline metrics of
  the dataset's task (:data:`HEADLINE`).
* A cell is the mean over seeds ± the sample standard deviation (``ddof=1``).
  With one seed the standard deviation is undefined: the cell shows the mean
  alone and the CSV leaves ``std`` empty. When a cell has fewer seeds than the
  best-covered cell of the table, ``(n=k)`` follows it. A cell without values
  shows ``–`` (``--`` in LaTeX). The caption gives n.
* Numbers get 3 decimals for a metric whose values all lie in [0, 1] (Dice,
  AUC, accuracy) and 2 decimals otherwise (HD95 in mm), per metric over the
  whole table; a count (:data:`COUNTS`) gets 1. Headers carry the unit
  (:data:`UNITS`).
* ``misses`` follows the distance column of its setting: the number of test
  case x class pairs of one seed (mean over seeds) whose prediction or
  reference of the class was empty, which score Dice 0 and the volume
  diagonal as their distance (the rule of :mod:`medssl.metrics`). It is a
  diagnostic: never marked nor tested, and shown only where the metrics.json
  files have it.
* Significance (:mod:`medssl.report.stats`): every row is compared with the
  study's reference row (:func:`medssl.report.inputs.reference_row`) by a
  paired test across seeds; ``†`` follows a cell with p < 0.05, ``‡`` one with
  p < 0.01. Per column the best mean is bold only when it differs
  significantly from the runner-up, and the runner-up is underlined only when
  it differs from the third; two top rows that do not differ are both marked
  *tie*. Metrics whose name starts with ``hd``, ``assd``, ``hausdorff``,
  ``neg_jacobian`` or ``components``, or contains ``error``, are
  lower-is-better (↓), the others higher-is-better (↑). Empty cells never win.
* Below the Markdown table a *Convergence* section says, per row and setting,
  how many runs had reached their plateau (:mod:`medssl.report.convergence`),
  and a *Figures* section links the study's figures with a one-line caption
  each (:mod:`medssl.report.figures`; :func:`write_study_tables` only).
* Beside the tables, ``summary.json`` holds the same cells (mean, std, n) as
  nested JSON: the DVC metrics file of the study (:mod:`medssl.report.summary`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from medssl import paths
from medssl.io import write_text
from medssl.report.convergence import runs_convergence, summary_markdown
from medssl.report.figures import figures_markdown
from medssl.report.build import (COUNTS, EMPTY, HEADLINE, TableData, build_table, lower_is_better, metric_label,
                                 unit)
from medssl.report.inputs import LONG_COLUMNS, collect, read_metrics, reference_row, study_metrics
from medssl.report.render import fraction_label, tex_escape, to_csv, to_latex, to_markdown
from medssl.report.summary import write_summary

if TYPE_CHECKING:
    from medssl.config import Params

__all__ = ["COUNTS", "EMPTY", "HEADLINE", "LONG_COLUMNS", "TableData", "build_table", "collect", "fraction_label",
           "lower_is_better", "metric_label", "read_metrics", "reference_row", "study_metrics", "tex_escape",
           "to_csv", "to_latex", "to_markdown", "unit", "write_study_tables", "write_tables", "write_summary"]


def write_tables(study: str, files: Sequence[Path], methods_order: Sequence[str] | None = None,
                 base: Path | None = None, *, metrics: Mapping[str, list[str]] | None = None,
                 datasets_order: Sequence[str] | None = None,
                 protocols_order: Sequence[str] | None = None,
                 reference: str | None = None, settings: bool = True,
                 figures_md: str = "") -> dict[str, Path]:
    """Collect ``files``; write ``results/<study>/table.{md,tex,csv}`` and ``summary.json`` atomically.

    Args:
        study: study name.
        files: the metrics.json files of the table (:func:`study_metrics`).
        methods_order: row order, normally the study's ``methods`` in params.yaml.
        base: project root holding ``results/`` (default :func:`medssl.paths.root`).
        metrics, datasets_order, protocols_order, reference, settings: as in :func:`build_table`.
        figures_md: a Markdown section appended to table.md (the study's figure links).

    Returns:
        ``{"md": path, "tex": path, "csv": path, "summary": path}``.

    Raises:
        ValueError: naming the missing files, or the bad file.
    """
    df = collect(files)
    table = build_table(df, metrics, methods_order, datasets_order, protocols_order, reference, settings)
    # below the Markdown table: whether each row's runs had reached their plateau (medssl.report.convergence)
    conv = summary_markdown(runs_convergence(files), methods_order, reference, settings)
    out = {}
    for ext, render in (("md", to_markdown), ("tex", to_latex), ("csv", to_csv)):
        out[ext] = paths.table(study, ext, base)
        text = render(table)
        if ext == "md":
            text += "".join("\n" + part for part in (conv, figures_md) if part)
        write_text(out[ext], text)
    out["summary"] = write_summary(study, table, base)
    return out


def write_study_tables(params: Params, study: str, base: Path | None = None) -> dict[str, Path]:
    """:func:`write_tables` of exactly the runs of ``params.studies[study]``, in its order, against its reference row.

    Args:
        params: a validated :class:`medssl.config.Params`.
        study: a study defined in ``params``.

    Raises:
        ValueError: naming ``study`` when params does not define it, or the
            missing / bad metrics.json files.
    """
    if study not in params.studies:
        defined = ", ".join(sorted(params.studies)) or "none"
        raise ValueError(f"study {study!r} is not defined; defined: {defined}")
    spec = params.studies[study]
    metrics = None
    if spec.kind == "uda":  # Dice per class and mean, then ASSD mean (CMEVAE Tables 1-2)
        fg = params.datasets[spec.directions[0].target].classes[1:]
        metrics = {"uda": [*(f"dice_{c}" for c in fg), "dice", "assd", "misses"]}
    return write_tables(study, study_metrics(params, study, base), spec.methods, base, metrics=metrics,
                        datasets_order=spec.datasets, protocols_order=getattr(spec, "protocols", None),
                        reference=reference_row(params, study), settings=spec.kind == "ssl",
                        figures_md=figures_markdown(spec.kind))

