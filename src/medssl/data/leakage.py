"""Test-set leakage: pre-training must never see a downstream validation or test case.

A pre-training study (``kind: ssl``) pre-trains on the *training* split of each
of its corpora (:func:`pretrain_entries`) and evaluates on the validation and
test splits of its downstream datasets. A case leaks when the pre-training set
holds it, decided by **case identity**, not by dataset name:

* the same raw image: the SHA-256 of the raw file (or of a DICOM / slice
  folder's files) that preprocessing records as ``source`` in each datalist
  entry (:func:`raw_fingerprint`). This catches two dataset entries that read
  one release (a symlinked raw folder, a phantom generated twice with the same
  seed, a collection that contains another, e.g. TCIA COVID-19 and CC-CCII);
* the same case id of the same dataset;
* the same subject of the same dataset, when its splits are by subject
  (``splits.group_by``): another scan of a test subject leaks too.

The check reads the datalists that exist. :func:`check_study` is called by the
pretrain and downstream stages (whose datalists are inputs, so every pair is
checked before any training); ``medssl check`` and the Snakemake validation
call :func:`find_leaks` on what is already preprocessed, so a leaking
configuration is rejected before a DAG is built.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medssl import paths
from medssl.config import Params, StudySpec
from medssl.data.datalist import read_datalist, subject_of

HELD_OUT = ("validation", "test")


class LeakageError(ValueError):
    """A configuration whose pre-training sees downstream validation or test cases."""


@dataclass
class Leak:
    """Cases of a downstream dataset's held-out splits that a study's pre-training sees."""

    study: str
    dataset: str
    corpora: list[str]
    cases: list[str]
    by: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        ex = ", ".join(self.cases[:3]) + (", ..." if len(self.cases) > 3 else "")
        return (f"study {self.study!r}: pre-training corpus {' + '.join(map(repr, self.corpora))} holds "
                f"{len(self.cases)} case(s) of the validation/test splits of downstream dataset {self.dataset!r} "
                f"(same {' / '.join(self.by)}; e.g. {ex})")


def raw_fingerprint(path: Path) -> str:
    """SHA-256 of a raw image: the file's bytes, or for a folder (DICOM series, slice stack)
    the names and bytes of every file below it, in sorted order."""
    path = Path(path)
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        if f is not path:
            h.update(str(f.relative_to(path)).encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def pretrain_entries(params: Params, study: str) -> list[dict[str, Any]]:
    """The cases a study pre-trains on: the ``training`` split of each corpus (pooled).

    S2DC supplement Sec. B: pre-training corpora use training cases only
    (e.g. BTCV's 24 training scans), https://arxiv.org/abs/2507.02581 (S2DC).
    """
    st = params.studies[study]
    out = []
    for name in st.pretrain_datasets:
        out += [{**e, "dataset": name} for e in read_datalist(paths.datalist(name), "training")]
    return out


def _keys(dataset: str, entry: dict[str, Any], group_by: str | None) -> dict[tuple, str]:
    """The identity keys of one datalist entry, each with what it identifies by."""
    keys = {("case", dataset, entry["case"]): "case id"}
    if entry.get("source"):
        keys[("source", entry["source"])] = "raw file"
    if group_by:
        keys[("subject", dataset, subject_of(entry["case"], group_by))] = "subject"
    return keys


def _group_by(params: Params, name: str) -> str | None:
    spec = params.datasets.get(name)
    return spec.splits.group_by if spec is not None else None


def study_leaks(params: Params, study: str, datasets: list[str] | None = None,
                require: bool = True) -> tuple[list[Leak], list[str]]:
    """Leaks of one ssl study (optionally only of some downstream ``datasets``).

    Args:
        require: a missing datalist is an error (the stages); False skips it
            and returns its name among the unchecked ones (``medssl check``).

    Returns:
        ``(leaks, unchecked datasets)``.
    """
    st = params.studies[study]
    if not isinstance(st, StudySpec):
        return [], []
    unchecked = [n for n in {*st.pretrain_datasets, *(datasets or st.datasets)}
                 if not paths.datalist(n).is_file()]
    if unchecked and require:
        raise ValueError(f"study {study!r}: no datalist for {sorted(unchecked)} (run `medssl preprocess`)")
    if any(n in unchecked for n in st.pretrain_datasets):
        return [], sorted(unchecked)
    seen: dict[tuple, str] = {}
    for e in pretrain_entries(params, study):
        for k in _keys(e["dataset"], e, _group_by(params, e["dataset"])):
            seen.setdefault(k, e["dataset"])
    leaks = []
    for name in datasets or st.datasets:
        if name in unchecked:
            continue
        hit_cases, corpora, by = [], set(), set()
        for sec in HELD_OUT:
            for e in read_datalist(paths.datalist(name), sec):
                hits = {k: why for k, why in _keys(name, e, _group_by(params, name)).items() if k in seen}
                if hits:
                    hit_cases.append(e["case"])
                    corpora |= {seen[k] for k in hits}
                    by |= set(hits.values())
        if hit_cases:
            leaks.append(Leak(study, name, sorted(corpora), sorted(hit_cases), sorted(by)))
    return leaks, sorted(unchecked)


def find_leaks(params: Params, studies: list[str] | None = None) -> tuple[list[Leak], list[str]]:
    """Leaks of every ssl study (or of ``studies``) over the datalists that exist.

    Returns:
        ``(leaks, datasets not yet preprocessed and so not checked)``.
    """
    leaks, unchecked = [], set()
    for name in studies or params.studies_of_kind("ssl"):
        found, missing = study_leaks(params, name, require=False)
        leaks += found
        unchecked |= set(missing)
    return leaks, sorted(unchecked)


def check_study(params: Params, study: str, datasets: list[str] | None = None, require: bool = True) -> list[str]:
    """Raise :class:`LeakageError` naming every leak of ``study``.

    Args:
        datasets: only these downstream datasets (default: all of the study's).
        require: every datalist must exist (the downstream stage); False checks
            those that exist (the pretrain stage called outside the workflow,
            whose ``pretrain`` rule makes the downstream datalists first).

    Returns:
        the datasets not checked (not preprocessed yet).
    """
    leaks, unchecked = study_leaks(params, study, datasets, require=require)
    if leaks:
        raise LeakageError("test-set leakage: " + "; ".join(map(str, leaks))
                           + ". Pre-training must never see a downstream validation or test case: "
                           "pre-train on a corpus without these cases (a dataset's own training split is "
                           "always safe)")
    return unchecked


__all__ = ["HELD_OUT", "Leak", "LeakageError", "check_study", "find_leaks", "pretrain_entries",
           "raw_fingerprint", "study_leaks"]
