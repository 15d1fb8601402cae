"""The per-study summary JSON: mean, std and n of every headline cell of the table (the DVC metrics file).

``results/<study>/summary.json`` holds the numbers of ``table.csv`` as nested
objects, row -> setting -> metric -> ``{"mean", "std", "n"}``, in the table's
row and column order, so that ``dvc metrics show`` lists them and
``dvc metrics diff`` compares two revisions of a study cell by cell
(DVC flattens the nesting with dots: ``scratch.organs/linear/17%.dice.mean``;
https://dvc.org/doc/command-reference/metrics/show). The setting is
``<dataset>/<protocol>/<fraction>`` for ssl studies and the dataset (or uda
direction) otherwise; a dot inside it (a fraction such as 12.5 %) becomes
``_`` so that the flattened key stays unambiguous. ``std`` is the sample
standard deviation over seeds and is left out below two seeds, and a cell
without values is left out, so every leaf is a finite number (DVC shows
strings and nulls as such, and strict JSON has no NaN).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from medssl import paths
from medssl.io import write_text
from medssl.report.build import TableData
from medssl.report.render import fraction_label

__all__ = ["setting_key", "summary", "summary_path", "write_summary"]


def summary_path(study: str, base: Path | None = None) -> Path:
    """``results/<study>/summary.json``: the study's headline cells (the DVC metrics file)."""
    return paths.study_results(study, base) / "summary.json"


def setting_key(dataset: str, protocol: str, fraction: float, settings: bool) -> str:
    """``"organs/linear/17%"`` (ssl) or ``"organs"``; dots become ``_`` (``12_5%``)."""
    key = f"{dataset}/{protocol}/{fraction_label(fraction)}" if settings else str(dataset)
    return key.replace(".", "_")


def summary(table: TableData) -> dict:
    """The nested summary of ``table`` (module docstring)."""
    out: dict = {}
    for method in table.methods:
        row: dict = {}
        for col in table.columns:
            dataset, protocol, fraction, metric = col
            n = int(table.n.at[method, col])
            mean = float(table.mean.at[method, col])
            if n == 0 or not math.isfinite(mean):
                continue
            cell = {"mean": round(mean, 6), "n": n}
            std = float(table.std.at[method, col])
            if n > 1 and math.isfinite(std):
                cell["std"] = round(std, 6)
            row.setdefault(setting_key(dataset, protocol, fraction, table.settings), {})[metric] = cell
        if row:
            out[method] = row
    return out


def write_summary(study: str, table: TableData, base: Path | None = None) -> Path:
    """Write ``results/<study>/summary.json`` atomically (indented, in table order)."""
    out = summary_path(study, base)
    write_text(out, json.dumps(summary(table), indent=2, allow_nan=False) + "\n")
    return out
