"""The inputs of a study table: which ``metrics.json`` files, read and validated.

A table is built from exactly the runs its study defines in params.yaml (the
``table`` rule's inputs), never from whatever lies under ``results/<study>/runs``:
a run left over from an earlier configuration (another seed list, a removed
method or fraction) must not leak into the numbers.

* :func:`study_metrics` — the metrics.json paths of a study's grid.
* :func:`reference_row` — the row every other row is tested against.
* :func:`read_metrics`, :func:`collect` — read those files into one long frame.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from medssl import paths

if TYPE_CHECKING:
    from medssl.config import Params

LONG_COLUMNS = ["study", "dataset", "protocol", "method", "fraction", "seed", "task", "metric", "value"]
REQUIRED_KEYS = ("study", "dataset", "protocol", "method", "fraction", "seed", "task", "metrics")

#: the kind of a study's reference row, by study kind: the supervised baseline
#: each paper compares against (ssl: training from scratch under the same
#: protocol and label fraction; template: the plain U-Net; stn: the CNN without
#: a transformer; uda: the U-Net trained on the source only)
REFERENCE_KIND = {"ssl": "scratch", "template": "unet", "stn": "cnn", "uda": "source_only"}


def study_metrics(params: Params, study: str, base: Path | None = None) -> list[Path]:
    """Every metrics.json the study defines: its grid, in params.yaml order.

    ssl studies: dataset x protocol x method x fraction x seed
    (:func:`medssl.paths.downstream_metrics`); the other kinds: dataset (or
    direction) x model x seed (:func:`medssl.paths.method_metrics`).
    """
    st = params.studies[study]
    if st.kind == "ssl":
        return [paths.downstream_metrics(study, d, prot, m, f, s, base)
                for d in st.datasets for prot in st.protocols for m in st.methods
                for f in st.fractions for s in st.seeds]
    return [paths.method_metrics(study, d, m, s, base) for d in st.datasets for m in st.methods for s in st.seeds]


def reference_row(params: Params, study: str) -> str | None:
    """The first row of ``study`` whose kind is the study kind's :data:`REFERENCE_KIND`, or None."""
    st = params.studies[study]
    want = REFERENCE_KIND.get(st.kind)
    for name in st.methods:
        spec = params.methods.get(name) if st.kind == "ssl" else st.models.get(name)
        if spec is not None and spec.kind == want:
            return name
    return None


def read_json(path: Path, required: Sequence[str] = ()) -> dict:
    """Read a JSON object that must have the ``required`` keys.

    Raises:
        ValueError: naming ``path`` when it is missing, not JSON, not an object or lacks a key.
    """
    if not Path(path).is_file():
        raise ValueError(f"{path}: not found (run the stage that writes it first)")
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path}: top level must be a JSON object")
    missing = [k for k in required if k not in record]
    if missing:
        raise ValueError(f"{path}: missing key(s) {', '.join(missing)}")
    return record


def read_metrics(path: Path) -> dict:
    """Read and validate one ``metrics.json``.

    Raises:
        ValueError: naming ``path`` for invalid JSON, a missing key or a bad value.
    """
    record = read_json(path, REQUIRED_KEYS)
    if not isinstance(record["metrics"], dict):
        raise ValueError(f"{path}: 'metrics' must be an object, got {record['metrics']!r}")
    for name, value in record["metrics"].items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"{path}: metric {name!r} must be a number or null, got {value!r}")
    try:
        record["fraction"] = float(record["fraction"])
        record["seed"] = int(record["seed"])
    except (TypeError, ValueError):
        raise ValueError(f"{path}: fraction must be a number and seed an integer, "
                         f"got {record['fraction']!r} and {record['seed']!r}") from None
    return record


def collect(files: Sequence[Path]) -> pd.DataFrame:
    """The given ``metrics.json`` files as one long table.

    Args:
        files: the files to read (normally :func:`study_metrics`); each must exist.

    Returns:
        DataFrame with columns :data:`LONG_COLUMNS`, one row per entry of each
        file's ``"metrics"`` dict (null values become NaN), in file order.

    Raises:
        ValueError: when no file is given, naming the files that are missing, or
            the file that is invalid or repeats another file's
            dataset/protocol/method/fraction/seed.
    """
    files = [Path(f) for f in files]
    if not files:
        raise ValueError("no metrics.json given: the study defines no runs")
    absent = [str(f) for f in files if not f.is_file()]
    if absent:
        shown = ", ".join(absent[:5]) + (f" and {len(absent) - 5} more" if len(absent) > 5 else "")
        raise ValueError(f"{len(absent)} of {len(files)} metrics.json missing (run the study first): {shown}")
    rows, seen = [], {}
    for path in files:
        rec = read_metrics(path)
        key = (rec["dataset"], rec["protocol"], rec["method"], rec["fraction"], rec["seed"])
        if key in seen:
            raise ValueError(f"{path}: same dataset/protocol/method/fraction/seed {key} as {seen[key]}")
        seen[key] = path
        for metric, value in rec["metrics"].items():
            rows.append([rec["study"], rec["dataset"], rec["protocol"], rec["method"], rec["fraction"],
                         rec["seed"], rec["task"], metric, math.nan if value is None else float(value)])
    return pd.DataFrame(rows, columns=LONG_COLUMNS)
