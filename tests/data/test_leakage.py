"""Pre-training never sees a downstream validation or test case (medssl.data.leakage).

The leaking configurations here read the same raw files under another dataset
name: a phantom corpus generated with the downstream dataset's generator and
seed. Identity is decided by the raw files' SHA-256 (recomputed here with
hashlib), by case id and by subject, never by the dataset name.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from medssl import config, paths
from medssl.data.datalist import read_datalist, write_datalist
from medssl.data.fetch import fetch
from medssl.data.leakage import LeakageError, check_study, find_leaks, pretrain_entries, raw_fingerprint
from medssl.data.preprocess import preprocess_dataset


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.ROOT_ENV, str(tmp_path))
    return tmp_path


def _prepare(p: config.Params, *names: str) -> None:
    for n in names:
        fetch(n, p.datasets[n], progress=False)
        preprocess_dataset(n, p.datasets[n], progress=False)


def test_raw_fingerprint_is_the_sha256_of_the_file_or_folder(tmp_path):
    f = tmp_path / "a.nii.gz"
    f.write_bytes(b"abc" * 1000)
    assert raw_fingerprint(f) == hashlib.sha256(b"abc" * 1000).hexdigest()
    d = tmp_path / "series"
    d.mkdir()
    (d / "2.dcm").write_bytes(b"two")
    (d / "1.dcm").write_bytes(b"one")
    first = raw_fingerprint(d)
    (d / "2.dcm").write_bytes(b"TWO")
    assert raw_fingerprint(d) != first


def test_datalist_records_each_raw_image_hash(root, tiny_params):
    p = config.parse(tiny_params())
    _prepare(p, "phantom_organs")
    doc = json.loads(paths.datalist("phantom_organs").read_text())
    raw = paths.raw("phantom_organs")
    for e in doc["training"] + doc["validation"] + doc["test"]:
        src = raw / "imagesTr" / f"{e['case']}.nii.gz"
        assert e["source"] == hashlib.sha256(src.read_bytes()).hexdigest()


def test_pretraining_uses_the_training_split_only(root, tiny_params):
    raw = tiny_params()
    raw["studies"]["ssl3d"]["pretrain_dataset"] = ["phantom_corpus", "phantom_organs"]
    p = config.parse(raw)
    _prepare(p, "phantom_corpus", "phantom_organs", "phantom_lesion")
    got = sorted((e["dataset"], e["case"]) for e in pretrain_entries(p, "ssl3d"))
    want = sorted([("phantom_corpus", e["case"]) for e in read_datalist(paths.datalist("phantom_corpus"), "training")]
                  + [("phantom_organs", e["case"])
                     for e in read_datalist(paths.datalist("phantom_organs"), "training")])
    assert got == want and len(want) == 4 + 3
    # the same dataset pre-trained on (training split) and evaluated (validation / test) does not leak
    assert find_leaks(p) == ([], [])
    check_study(p, "ssl3d")


def test_a_corpus_holding_the_test_cases_under_another_name_is_rejected(root, leaky_params):
    p = config.parse(leaky_params())
    _prepare(p, "phantom_corpus", "dup_corpus", "phantom_organs", "phantom_lesion")
    held_out = sorted(e["case"] for s in ("validation", "test")
                      for e in read_datalist(paths.datalist("phantom_organs"), s))
    leaks, unchecked = find_leaks(p)
    assert unchecked == [] and len(leaks) == 1
    leak = leaks[0]
    assert (leak.study, leak.dataset, leak.corpora, leak.cases) == ("ssl3d", "phantom_organs", ["dup_corpus"],
                                                                    held_out)
    assert leak.by == ["raw file"] and len(held_out) == 3
    with pytest.raises(LeakageError, match=r"'ssl3d'.*'dup_corpus'.*3 case\(s\).*'phantom_organs'"):
        check_study(p, "ssl3d")
    check_study(p, "ssl3d", ["phantom_lesion"])  # the other downstream dataset is clean

    from medssl.train.downstream import downstream
    from medssl.train.pretrain import pretrain

    with pytest.raises(LeakageError, match="dup_corpus"):
        pretrain(p, "ssl3d", "genesis", progress=False)
    assert not paths.train_state("ssl3d", "genesis").exists()
    with pytest.raises(LeakageError, match="phantom_organs"):
        downstream(p, "ssl3d", "phantom_organs", "linear", "scratch", 1.0, 0, progress=False)


def test_medssl_check_names_the_leak(root, leaky_params, tmp_path):
    import yaml

    raw = leaky_params()
    cfg = tmp_path / "params.yaml"
    cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
    cmd = [sys.executable, "-m", "medssl.cli", "check", "--params", str(cfg)]
    before = subprocess.run(cmd, capture_output=True, text=True, env=_env(root))
    assert before.returncode == 0, before.stderr  # nothing preprocessed yet: checked when training starts
    assert "dup_corpus" in before.stdout and "checked when pre-training starts" in before.stdout
    p = config.parse(raw)
    _prepare(p, "phantom_corpus", "dup_corpus", "phantom_organs", "phantom_lesion")
    after = subprocess.run(cmd, capture_output=True, text=True, env=_env(root))
    assert after.returncode == 1
    assert "test-set leakage" in after.stderr and "'dup_corpus'" in after.stderr and "3 case(s)" in after.stderr


def _env(root):
    import os

    return {**os.environ, paths.ROOT_ENV: str(root), "MEDSSL_TRACKING": "off"}


def test_subject_and_case_identity_catch_a_stale_split(root, tiny_params):
    """A datalist whose splits ignore the subjects (written before ``group_by`` was set): another scan
    of a test subject in the training split leaks by subject; the same case id in two splits by case."""
    raw = tiny_params()
    raw["datasets"]["phantom_organs"]["splits"] = {"validation": 1, "test": 2, "seed": 0,
                                                   "group_by": "^(?P<group>s\\d+)_"}
    raw["studies"]["ssl3d"]["pretrain_dataset"] = "phantom_organs"
    p = config.parse(raw)
    spec = p.datasets["phantom_organs"]
    cases = {c: {"image": f"images/{c}.nii.gz"} for c in ("s1_a", "s1_b", "s2_a", "s3_a", "s4_a", "s5_a")}
    stale = {"training": ["s1_a", "s2_a", "s4_a"], "validation": ["s5_a"], "test": ["s1_b", "s3_a"]}
    paths.datalist("phantom_organs").parent.mkdir(parents=True)
    write_datalist(paths.datalist("phantom_organs"), "phantom_organs", spec, cases, stale)
    (leak,) = study_leaks_of(p)
    assert leak.cases == ["s1_b"] and leak.by == ["subject"]


def study_leaks_of(p):
    from medssl.data.leakage import study_leaks

    leaks, _ = study_leaks(p, "ssl3d", ["phantom_organs"], require=False)
    return leaks
