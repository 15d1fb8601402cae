"""Tests of medssl.data.datalist: splits, the decathlon-style file, subsampling."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest
from monai.data import load_decathlon_datalist

from medssl.config import DatasetSpec, Recipe, Splits
from medssl.data.datalist import make_splits, read_datalist, subsample, write_datalist

CASES = [f"case_{k:03d}" for k in range(20)]


# -------------------------------------------------------------------- splits
@pytest.mark.parametrize(("n", "validation", "test", "counts"), [
    (10, 0.2, 0.3, (5, 2, 3)),
    (5, 0.3, 0.1, (2, 2, 1)),      # 1.5 -> 2 and 0.5 -> 1: half rounds up
    (12, 0.25, 0.25, (6, 3, 3)),
    (8, 0.0, 0.0, (8, 0, 0)),
    (10, 3, 1, (6, 3, 1)),         # ints are counts
    (10, 0.15, 2, (6, 2, 2)),
    (2, 1, 0, (1, 1, 0)),
])
def test_split_counts(n, validation, test, counts):
    s = make_splits(CASES[:n], Splits(validation=validation, test=test, seed=3))
    assert tuple(len(s[k]) for k in ("training", "validation", "test")) == counts
    together = s["training"] + s["validation"] + s["test"]
    assert sorted(together) == CASES[:n] and len(set(together)) == n  # disjoint, covering
    assert all(v == sorted(v) for v in s.values())


def test_splits_deterministic_and_order_independent():
    spec = Splits(validation=0.2, test=0.2, seed=7)
    first = make_splits(CASES, spec)
    shuffled = CASES[:]
    random.Random(1).shuffle(shuffled)
    assert make_splits(shuffled, spec) == first == make_splits(list(reversed(CASES)), spec)
    assert make_splits(CASES, Splits(validation=0.2, test=0.2, seed=8)) != first
    # pinned: the order is sha256("<seed>:<case>") (checked with coreutils' sha256sum:
    # c4 < c3 < c5 < c2 < c0 < c1), so it cannot drift between versions
    assert make_splits([f"c{k}" for k in range(6)], Splits(validation=1, test=1, seed=0)) == {
        "training": ["c0", "c1", "c2", "c5"], "validation": ["c3"], "test": ["c4"]}


@pytest.mark.parametrize(("cases", "splits", "match"), [
    ([], Splits(), "empty"),
    (["a", "b", "a"], Splits(), "duplicate.*'a'"),
    (CASES[:5], Splits(validation=3, test=2), "3 validation \\+ 2 test cases out of 5"),
    (CASES[:2], Splits(validation=0.5, test=0.5), "at least 1 training"),
    (CASES[:5], Splits(validation=-1, test=0), "count must be >= 0, got -1"),
    (CASES[:5], Splits(validation=1.0, test=0), "share must be in \\[0, 1\\), got 1.0"),
])
def test_split_errors(cases, splits, match):
    with pytest.raises(ValueError, match=match):
        make_splits(cases, splits)


# ----------------------------------------------------------------- datalist
def spec(task: str) -> DatasetSpec:
    return DatasetSpec(task=task, classes=["a", "b"] if task != "pretrain" else [],
                       source={"kind": "synthetic", "n_cases": 5}, recipe=Recipe(spacing=(2.0, 2.0, 2.0)),
                       splits={"validation": 1, "test": 1, "seed": 0})


def cases_for(task: str) -> dict[str, dict]:
    out = {}
    for k in range(5):
        c = f"x{k}"
        item = {"image": f"images/{c}.nii.gz"}
        if task == "segmentation":
            item["label"] = f"labels/{c}.nii.gz"
        elif task == "classification":
            item["label"] = k % 2
        out[c] = item
    return out


@pytest.mark.parametrize("task", ["segmentation", "classification", "pretrain"])
def test_write_datalist_loads_with_monai(tmp_path, task):
    path = tmp_path / "ds" / "datalist.json"
    doc = write_datalist(path, "ds", spec(task), cases_for(task))
    on_disk = json.loads(path.read_text())
    assert on_disk == doc
    assert on_disk["recipe"] == {"spacing": [2.0, 2.0, 2.0],
                                 "intensity": {"kind": "none", "clip": None, "percentiles": [0.5, 99.5]},
                                 "roi": None, "crop": None, "crop_margin": 10.0}
    assert on_disk["splits"] == {"validation": 1, "test": 1, "seed": 0, "group_by": None}
    assert (on_disk["name"], on_disk["task"], on_disk["modality"]) == ("ds", task, "CT")
    seg = task == "segmentation"
    for section in ("training", "validation", "test"):
        items = load_decathlon_datalist(path, is_segmentation=seg, data_list_key=section, base_dir=path.parent)
        mine = read_datalist(path, section)
        assert len(items) == len(mine) == {"training": 3, "validation": 1, "test": 1}[section]
        for a, b in zip(items, mine):
            assert a["image"] == b["image"] == str((path.parent / "images" / f"{a['case']}.nii.gz").resolve())
            if seg:
                assert a["label"] == b["label"] == str(path.parent.resolve() / "labels" / f"{a['case']}.nii.gz")
            elif task == "classification":
                assert a["label"] == b["label"] == int(a["case"][1:]) % 2
            else:
                assert "label" not in a and "label" not in b


def test_write_datalist_rejects_incomplete_splits(tmp_path):
    with pytest.raises(ValueError, match="missing \\['x4'\\]"):
        write_datalist(tmp_path / "d.json", "ds", spec("pretrain"), cases_for("pretrain"),
                       {"training": ["x0", "x1", "x2", "x3"], "validation": [], "test": []})
    assert not (tmp_path / "d.json").exists()


def test_read_datalist_errors(tmp_path):
    missing = tmp_path / "nope" / "datalist.json"
    with pytest.raises(ValueError, match=str(missing)):
        read_datalist(missing, "training")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=str(bad)):
        read_datalist(bad, "training")
    bad.write_text(json.dumps({"training": [{"label": 1}]}))
    with pytest.raises(ValueError, match=str(bad)):
        read_datalist(bad, "training")
    with pytest.raises(ValueError, match=str(bad)):
        read_datalist(bad, "validation")
    with pytest.raises(ValueError, match="'train'"):
        read_datalist(bad, "train")
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"training": [], "validation": [], "test": []}))
    assert read_datalist(empty, "test") == []  # MONAI's loader fails on an empty test list


# ---------------------------------------------------------------- subsample
def entries(n: int, labels: list[int] | None = None) -> list[dict]:
    return [{"case": f"c{k:02d}", "image": f"/x/c{k:02d}.nii.gz",
             **({"label": labels[k]} if labels else {"label": f"/y/c{k:02d}.nii.gz"})} for k in range(n)]


@pytest.mark.parametrize(("n", "fraction", "kept"), [(10, 1.0, 10), (10, 0.5, 5), (10, 0.25, 3),
                                                     (10, 0.01, 1), (7, 0.1, 1), (3, 0.5, 2)])
def test_subsample_counts(n, fraction, kept):
    es = entries(n)
    out = subsample(es, fraction, seed=0)
    assert len(out) == kept
    assert [e for e in es if e in out] == out  # a subset, in input order
    assert subsample(list(reversed(es)), fraction, 0) == list(reversed(out))  # order-independent choice
    assert subsample(es, fraction, 0) == out


def test_subsample_seed_and_stratification():
    es = entries(20)
    assert subsample(es, 0.25, 0) != subsample(es, 0.25, 1)
    labels = [0] * 15 + [1] * 5
    cls = entries(20, labels)
    for fraction, expected in [(0.2, {0: 3, 1: 1}), (0.5, {0: 8, 1: 2}), (0.1, {0: 1, 1: 1}),
                               (0.05, {0: 1}), (1.0, {0: 15, 1: 5})]:
        out = subsample(cls, fraction, seed=2)
        assert Counter(e["label"] for e in out) == Counter(expected)


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5])
def test_subsample_errors(fraction):
    with pytest.raises(ValueError, match=f"fraction must be in \\(0, 1\\], got {fraction}"):
        subsample(entries(4), fraction, 0)
    with pytest.raises(ValueError, match="empty"):
        subsample([], 0.5, 0)


def test_stratified_splits_keep_class_shares():
    from medssl.config import Splits
    from medssl.data.datalist import make_splits

    cases = [f"c{i:02d}" for i in range(12)]
    strata = {c: int(i < 9) for i, c in enumerate(cases)}  # 9 positives, 3 negatives
    s = make_splits(cases, Splits(validation=3, test=3, seed=0), strata)
    for section in ("training", "validation", "test"):
        labels = {strata[c] for c in s[section]}
        assert labels == {0, 1}, (section, s[section])
    assert sorted(sum(s.values(), [])) == cases
    assert make_splits(list(reversed(cases)), Splits(validation=3, test=3, seed=0), strata) == s
    with pytest.raises(ValueError, match="no class given"):
        make_splits(cases, Splits(validation=3, test=3, seed=0), {"c00": 1})


# ------------------------------------------------------------ subject-level splits
def test_group_by_keeps_subjects_together():
    from medssl.config import Splits
    from medssl.data.datalist import make_splits, subject_of

    cases = [f"{s:03d}_S_{s:04d}_I{s * 10 + k}" for s in range(20) for k in range(s % 3 + 1)]
    sp = Splits(validation=0.1, test=0.2, seed=3, group_by=r"^(?P<group>\d+_S_\d+)_")
    out = make_splits(cases, sp)
    assert sorted(sum(out.values(), [])) == sorted(cases)
    where = {}
    for section, ids in out.items():
        for c in ids:
            subj = subject_of(c, sp.group_by)
            assert where.setdefault(subj, section) == section, f"subject {subj} split across sections"
    n = len(cases)
    assert len(out["test"]) >= round(0.2 * n) and len(out["validation"]) >= round(0.1 * n)
    assert out == make_splits(list(reversed(cases)), sp)  # order-independent


def test_group_by_errors():
    import pytest
    from medssl.config import Splits
    from medssl.data.datalist import make_splits

    with pytest.raises(ValueError, match="capture group"):
        Splits(group_by=r"^\d+")
    with pytest.raises(ValueError, match="does not match"):
        make_splits(["a", "b", "c"], Splits(validation=0, test=1, group_by=r"^(\d+)"))
