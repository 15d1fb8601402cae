"""Fixed seeded splits and the MONAI decathlon-style ``datalist.json``.

The file written by :func:`write_datalist` looks like::

    {"name": ..., "task": ..., "modality": ..., "classes": [...],
     "recipe": {...}, "splits": {"validation": ..., "test": ..., "seed": ...},
     "training": [{"case": "x", "image": "images/x.nii.gz", "label": ...}, ...],
     "validation": [...], "test": [...]}

with paths relative to the file's folder, so it loads with
``monai.data.load_decathlon_datalist(path, data_list_key="training")``
(MONAI cannot load an *empty* ``test`` list; :func:`read_datalist` can).

Splits and label-fraction subsets order the cases by a SHA-256 hash of
``"<seed>:<case>"``, which is stable across runs, platforms and library
versions and independent of the order the cases are given in.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from medssl.config import DatasetSpec, Splits
from medssl.io import write_json

SECTIONS = ("training", "validation", "test")


def _hash_order(items: list[str], seed: int) -> list[str]:
    """``items`` in a pseudo-random order fixed by ``seed`` (ties broken by name)."""
    return sorted(items, key=lambda c: (hashlib.sha256(f"{seed}:{c}".encode()).hexdigest(), c))


def _round_half_up(x: float) -> int:
    """``x`` rounded half up, tolerant of float error (``0.3 * 5`` -> 2)."""
    return int(math.floor(x + 0.5 + 1e-9))


def _count(value: float | int, n: int, what: str) -> int:
    """Number of cases of a split: a float is a share of ``n`` (rounded half up), an int a count."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a share (float) or a count (int), got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{what} count must be >= 0, got {value}")
        return value
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{what} share must be in [0, 1), got {value}")
    return _round_half_up(value * n)


def _stratified_order(ids: list[str], strata: dict[str, Any], seed: int) -> list[str]:
    """Hash order within each class, classes interleaved in proportion to their sizes.

    The i-th of the n_c cases of class c sits at position (i + 0.5) / n_c, so any
    prefix of the order holds each class in (nearly) its overall share.
    """
    missing = [c for c in ids if c not in strata]
    if missing:
        raise ValueError(f"no class given for cases {missing}")
    groups: dict[str, list[str]] = defaultdict(list)
    for c in ids:
        groups[str(strata[c])].append(c)
    keyed = []
    for cls, members in groups.items():
        ordered = _hash_order(members, seed)
        keyed += [((i + 0.5) / len(ordered), cls, c) for i, c in enumerate(ordered)]
    return [c for _, _, c in sorted(keyed)]


def make_splits(cases: list[str], splits: Splits,
                strata: dict[str, Any] | None = None) -> dict[str, list[str]]:
    """Split case ids into fixed, seeded training / validation / test sets.

    Args:
        cases: case ids (any order; they are sorted first).
        splits: shares (float) or counts (int) of validation and test, and the seed.
        strata: optional class of each case (classification): the splits then
            keep the class proportions as closely as their sizes allow, so a
            small validation or test set is not all one class.

    Returns:
        ``{"training": [...], "validation": [...], "test": [...]}``, each sorted;
        disjoint and covering ``cases``.

    Raises:
        ValueError: on no cases, duplicate ids, or when validation + test leave
            no training case (naming the counts).
    """
    ids = sorted(str(c) for c in cases)
    if not ids:
        raise ValueError("cannot split an empty list of cases")
    dupes = sorted(c for c, m in Counter(ids).items() if m > 1)
    if dupes:
        raise ValueError(f"duplicate case ids: {dupes}")
    n = len(ids)
    n_val = _count(splits.validation, n, "validation")
    n_test = _count(splits.test, n, "test")
    if n_val + n_test > n - 1:
        raise ValueError(
            f"splits ask for {n_val} validation + {n_test} test cases out of {n}; "
            "at least 1 training case is needed"
        )
    if splits.group_by is not None:
        return _grouped_splits(ids, splits, n_val, n_test)
    order = _hash_order(ids, splits.seed) if strata is None else _stratified_order(ids, strata, splits.seed)
    test, val, train = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
    return {"training": sorted(train), "validation": sorted(val), "test": sorted(test)}


def subject_of(case: str, pattern: str) -> str:
    """The subject of ``case`` by the ``group_by`` regex (group ``group`` or the first group).

    Raises:
        ValueError: naming the case and the pattern when it does not match.
    """
    m = re.search(pattern, case)
    if m is None:
        raise ValueError(f"case id {case!r} does not match splits.group_by {pattern!r}")
    return m.group("group") if "group" in m.re.groupindex else m.group(1)


def _grouped_splits(ids: list[str], splits: Splits, n_val: int, n_test: int) -> dict[str, list[str]]:
    """Subject-level splits: whole subjects, in hash order, fill test then validation
    until each holds at least its count of cases; the rest is training (S2DC's ADNI split)."""
    groups: dict[str, list[str]] = defaultdict(list)
    for c in ids:
        groups[subject_of(c, splits.group_by)].append(c)
    out: dict[str, list[str]] = {"test": [], "validation": [], "training": []}
    for g in _hash_order(list(groups), splits.seed):
        section = ("test" if len(out["test"]) < n_test
                   else "validation" if len(out["validation"]) < n_val else "training")
        out[section] += groups[g]
    if not out["training"]:
        raise ValueError(f"splits by subject ({len(groups)} subjects) leave no training case; "
                         "lower validation / test")
    return {k: sorted(v) for k, v in out.items()}


def write_datalist(path: Path, name: str, spec: DatasetSpec, cases: dict[str, dict[str, Any]],
                   splits: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Write a MONAI decathlon-style ``datalist.json`` atomically.

    Args:
        path: output file.
        name: dataset name.
        spec: the dataset's spec (task, modality, classes, recipe, splits).
        cases: ``{case: {"image": "images/x.nii.gz", "label": "labels/x.nii.gz" | int, "source": sha256}}``
            (no ``label`` for a pre-training corpus); paths relative to ``path``'s folder; ``source``
            (optional) identifies the raw image (:mod:`medssl.data.leakage`); ``empty_label: True`` marks
            a segmentation label without foreground; ``dicom`` (a DICOM case) holds the series read:
            ``{"series_uid": str, "slices": int, "slice_spacing_mm": float}`` (median gap along the normal).
        splits: precomputed splits; by default :func:`make_splits` of ``spec.splits``.

    Returns:
        The written mapping.

    Raises:
        ValueError: naming the case when an entry lacks ``image`` or the splits
            do not cover the cases exactly.
    """
    splits = make_splits(list(cases), spec.splits) if splits is None else splits
    listed = [c for s in SECTIONS for c in splits.get(s, [])]
    if sorted(listed) != sorted(cases):
        raise ValueError(f"splits do not cover the cases exactly: "
                         f"missing {sorted(set(cases) - set(listed))}, extra {sorted(set(listed) - set(cases))}")
    doc: dict[str, Any] = {
        "name": name,
        "task": spec.task,
        "modality": spec.modality,
        "classes": list(spec.classes),
        "recipe": spec.recipe.model_dump(mode="json"),
        "splits": spec.splits.model_dump(mode="json"),
    }
    for section in SECTIONS:
        entries = []
        for case in sorted(splits.get(section, [])):
            item = cases[case]
            if "image" not in item:
                raise ValueError(f"case {case!r} has no image")
            entry = {"case": case, "image": str(item["image"])}
            if item.get("source"):  # the raw image's SHA-256: its identity for the leakage check
                entry["source"] = str(item["source"])
            if item.get("label") is not None:
                label = item["label"]
                entry["label"] = label if isinstance(label, int) else str(label)
            if item.get("empty_label"):  # an all-background segmentation label (preprocess warned)
                entry["empty_label"] = True
            if item.get("dicom"):  # the DICOM series read: {"series_uid", "slices", "slice_spacing_mm"}
                entry["dicom"] = dict(item["dicom"])
            entries.append(entry)
        doc[section] = entries
    write_json(path, doc)
    return doc


def read_datalist(path: Path, section: str) -> list[dict[str, Any]]:
    """Entries of one section of a ``datalist.json``, with absolute paths.

    Args:
        path: the datalist file.
        section: ``training``, ``validation`` or ``test``.

    Returns:
        A list of ``{"case", "image"[, "label"]}`` with ``image`` (and a label
        file) as absolute paths; class labels stay ints.

    Raises:
        ValueError: naming the file when it is missing, not JSON, or lacks the section;
            naming ``section`` when it is unknown.
    """
    if section not in SECTIONS:
        raise ValueError(f"section must be one of {SECTIONS}, got {section!r}")
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: datalist not found (run `medssl preprocess`)")
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a valid datalist ({exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get(section), list):
        raise ValueError(f"{path}: not a valid datalist (no {section!r} list)")
    base = path.parent.resolve()
    out = []
    for item in doc[section]:
        if not isinstance(item, dict) or not isinstance(item.get("image"), str):
            raise ValueError(f"{path}: invalid {section} entry {item!r}")
        entry = dict(item)
        entry["image"] = str(base / item["image"])
        if isinstance(item.get("label"), str):
            entry["label"] = str(base / item["label"])
        out.append(entry)
    return out


def subsample(entries: list[dict[str, Any]], fraction: float, seed: int) -> list[dict[str, Any]]:
    """A deterministic label-fraction subset of datalist entries.

    Keeps ``max(1, round(fraction * n))`` entries, chosen by the seeded hash
    order of their ``case`` (or ``image``) id. When every entry has an int
    ``label`` (classification) the subset is stratified: each class gets its
    share by largest remainders, and at least one entry while the total allows.

    Args:
        entries: datalist entries.
        fraction: share to keep, in (0, 1].
        seed: selection seed.

    Returns:
        The kept entries, in their input order.

    Raises:
        ValueError: naming ``fraction`` when outside (0, 1], or on no entries.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if not entries:
        raise ValueError("cannot subsample an empty list of entries")
    n = len(entries)
    k = max(1, _round_half_up(fraction * n))
    ids = [str(e.get("case", e.get("image"))) for e in entries]
    if len(set(ids)) != n:
        raise ValueError("entries must have unique case ids")
    groups: dict[Any, list[str]] = defaultdict(list)
    stratify = all(isinstance(e.get("label"), int) and not isinstance(e.get("label"), bool) for e in entries)
    for e, i in zip(entries, ids):
        groups[e["label"] if stratify else None].append(i)
    quota = _largest_remainder({g: len(v) for g, v in groups.items()}, k)
    keep = {c for g, members in groups.items() for c in _hash_order(members, seed)[:quota[g]]}
    return [e for e, i in zip(entries, ids) if i in keep]


def _largest_remainder(sizes: dict[Any, int], k: int) -> dict[Any, int]:
    """Split ``k`` among groups proportionally to ``sizes`` (largest remainders, >= 1 each if possible)."""
    n = sum(sizes.values())
    keys = sorted(sizes, key=repr)
    exact = {g: k * sizes[g] / n for g in keys}
    quota = {g: int(math.floor(exact[g])) for g in keys}
    for g in sorted(keys, key=lambda g: -(exact[g] - quota[g]))[:k - sum(quota.values())]:
        quota[g] += 1
    if k >= len(keys):  # every class present at least once: take from the largest quota
        for g in keys:
            if quota[g] == 0:
                donor = max(keys, key=lambda h: quota[h])
                quota[donor] -= 1
                quota[g] += 1
    return quota
