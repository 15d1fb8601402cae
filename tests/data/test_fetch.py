"""``medssl fetch``: url (HTTP and file://), manual and synthetic sources, and the manifest."""

from __future__ import annotations

import hashlib
import json
import sys
import types
from pathlib import Path

import pytest
import yaml

from medssl.config import DatasetSpec
from medssl.data.fetch import FetchError, fetch, is_fetched, write_manifest

PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _spleen_spec(url: str, md5: str, **source) -> DatasetSpec:
    """params.yaml's msd_spleen entry with the URL and md5 replaced."""
    entry = yaml.safe_load(PARAMS.read_text(encoding="utf-8"))["datasets"]["msd_spleen"]
    entry["source"].update(url=url, md5=md5, **source)
    return DatasetSpec.model_validate(entry)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ---------------------------------------------------------------------- url
def test_url_over_http_end_to_end(http_server, msd_tree, msd_archive, tmp_path):
    (http_server.folder / msd_archive.name).write_bytes(msd_archive.read_bytes())
    spec = _spleen_spec(http_server.url(msd_archive.name), _md5(msd_archive))
    raw, cache = tmp_path / "data" / "raw" / "msd_spleen", tmp_path / "dl"

    assert fetch("msd_spleen", spec, raw, progress=False, cache_dir=cache) == raw
    assert len(http_server.requests) == 1
    expected = _tree(msd_tree / "Task09_Spleen")
    got = _tree(raw)
    manifest_bytes = got.pop("manifest.json")
    assert got == expected  # the subdir became raw_dir, byte for byte
    assert (raw / "imagesTs").is_dir()
    manifest = json.loads(manifest_bytes)
    assert [e["path"] for e in manifest["files"]] == sorted(expected)
    for entry in manifest["files"]:
        assert entry["size"] == len(expected[entry["path"]])
        assert entry["md5"] == hashlib.md5(expected[entry["path"]]).hexdigest()
    assert is_fetched(raw)
    assert _siblings(raw.parent) == ["msd_spleen"]  # no temporary folder left
    assert _siblings(cache) == [msd_archive.name]
    assert _md5(cache / msd_archive.name) == _md5(msd_archive)

    # idempotent: manifest in place -> no request, nothing touched
    (raw / "stray.txt").write_text("user edit")
    fetch("msd_spleen", spec, raw, progress=False, cache_dir=cache)
    assert len(http_server.requests) == 1
    assert (raw / "stray.txt").exists()

    # force: rebuilt from the verified cached archive (no request), same manifest bytes
    (raw / "imagesTr" / "spleen_1.nii.gz").write_bytes(b"damaged")
    fetch("msd_spleen", spec, raw, force=True, progress=False, cache_dir=cache)
    assert len(http_server.requests) == 1
    assert not (raw / "stray.txt").exists()
    assert (raw / "manifest.json").read_bytes() == manifest_bytes
    assert _tree(raw) == {**expected, "manifest.json": manifest_bytes}

    # force without the cache (or with a damaged cache): downloads again
    (cache / msd_archive.name).write_bytes(b"truncated")
    fetch("msd_spleen", spec, raw, force=True, progress=False, cache_dir=cache)
    assert len(http_server.requests) == 2
    assert (raw / "manifest.json").read_bytes() == manifest_bytes
    assert _siblings(raw.parent) == ["msd_spleen"] and _siblings(cache) == [msd_archive.name]


def test_url_file_scheme_and_default_paths(msd_archive, monkeypatch, tmp_path):
    monkeypatch.setenv("MEDSSL_ROOT", str(tmp_path))
    spec = _spleen_spec(msd_archive.as_uri(), _md5(msd_archive))
    raw = fetch("msd_spleen", spec, progress=False)
    assert raw == tmp_path / "data" / "raw" / "msd_spleen"
    assert (raw / "dataset.json").is_file() and (raw / "imagesTr" / "spleen_1.nii.gz").is_file()
    assert is_fetched(raw)
    assert (tmp_path / "data" / "downloads" / msd_archive.name).is_file()


def test_sha256_and_zip(msd_tree, pack_archive, tmp_path):
    archive = pack_archive(msd_tree, tmp_path / "src" / "Task09_Spleen.zip")
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    spec = _spleen_spec(archive.as_uri(), None, sha256=sha)
    raw = fetch("msd_spleen", spec, tmp_path / "raw", progress=False, cache_dir=tmp_path / "dl")
    assert _tree(raw).keys() - {"manifest.json"} == _tree(msd_tree / "Task09_Spleen").keys()


def test_checksum_mismatch_leaves_nothing(http_server, msd_archive, tmp_path):
    (http_server.folder / msd_archive.name).write_bytes(msd_archive.read_bytes())
    url = http_server.url(msd_archive.name)
    spec = _spleen_spec(url, "0" * 32)
    raw, cache = tmp_path / "raw" / "msd_spleen", tmp_path / "dl"
    with pytest.raises(FetchError) as err:
        fetch("msd_spleen", spec, raw, progress=False, cache_dir=cache)
    msg = str(err.value)
    assert "msd_spleen" in msg and url in msg and "0" * 32 in msg and _md5(msd_archive) in msg
    assert not raw.exists() and _siblings(raw.parent) == []
    assert _siblings(cache) == []  # the download and its temporary name are gone


def test_http_error_names_url(http_server, tmp_path):
    spec = _spleen_spec(http_server.url("Missing.tar"), "0" * 32)
    with pytest.raises(FetchError, match=r"msd_spleen.*Missing\.tar.*404"):
        fetch("msd_spleen", spec, tmp_path / "raw", progress=False, cache_dir=tmp_path / "dl")
    assert _siblings(tmp_path / "dl") == [] and not (tmp_path / "raw").exists()


def test_wrong_subdir_or_layout_is_explained(tmp_path, msd_archive, pack_archive):
    raw, cache = tmp_path / "raw" / "ds", tmp_path / "dl"
    spec = _spleen_spec(msd_archive.as_uri(), _md5(msd_archive), subdir="Task04_Hippocampus")
    with pytest.raises(FetchError, match=r"no folder 'Task04_Hippocampus'.*Task09_Spleen/"):
        fetch("ds", spec, raw, progress=False, cache_dir=cache)
    assert _siblings(raw.parent) == []

    flat = tmp_path / "flat"
    (flat / "Task09_Spleen" / "labelsTr").mkdir(parents=True)
    (flat / "Task09_Spleen" / "labelsTr" / "a.nii.gz").write_bytes(b"x")
    archive = pack_archive(flat, tmp_path / "src" / "Task09_Spleen.tgz")
    spec = _spleen_spec(archive.as_uri(), _md5(archive))
    with pytest.raises(FetchError) as err:
        fetch("ds", spec, raw, progress=False, cache_dir=cache)
    msg = str(err.value)
    assert "not in the MSD layout" in msg and "dataset.json, imagesTr/" in msg and "labelsTr/" in msg
    assert _siblings(raw.parent) == []


def test_unsafe_archive_is_refused(tmp_path, tar_member):
    import tarfile

    archive = tmp_path / "src" / "Task09_Spleen.tar"
    archive.parent.mkdir()
    with tarfile.open(archive, "w") as tar:
        tar_member(tar, "Task09_Spleen/dataset.json", b"{}")
        tar_member(tar, "Task09_Spleen/../../escape.txt")
    spec = _spleen_spec(archive.as_uri(), _md5(archive))
    raw = tmp_path / "raw" / "ds"
    with pytest.raises(FetchError, match=r"'ds'.*Task09_Spleen/\.\./\.\./escape\.txt"):
        fetch("ds", spec, raw, progress=False, cache_dir=tmp_path / "dl")
    assert _siblings(raw.parent) == [] and not (tmp_path / "escape.txt").exists()


# ------------------------------------------------------------------- manual
def _manual_spec() -> DatasetSpec:
    return DatasetSpec.model_validate({
        "task": "segmentation", "classes": ["background", "heart"],
        "source": {"kind": "manual", "homepage": "https://example.org/register",
                   "instructions": "Accept the licence, then unpack the training set.",
                   "expected": ["dataset.json", "imagesTr/*.nii.gz", "labelsTr/*.nii.gz"]},
        "recipe": {"spacing": [1.0, 1.0, 1.0]},
    })


def test_manual_missing_files_say_where_to_put_them(tmp_path):
    raw = tmp_path / "raw" / "mmwhs"
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "imagesTr" / "ct_1.nii.gz").write_bytes(b"x")
    with pytest.raises(FetchError) as err:
        fetch("mmwhs", _manual_spec(), raw, progress=False)
    msg = str(err.value)
    assert "- dataset.json" in msg and "- labelsTr/*.nii.gz" in msg and "imagesTr/*.nii.gz" not in msg
    assert "https://example.org/register" in msg and "Accept the licence" in msg
    assert str(raw.resolve()) in msg and "medssl fetch mmwhs" in msg
    assert not is_fetched(raw)

    with pytest.raises(FetchError, match="does not exist yet"):
        fetch("other", _manual_spec(), tmp_path / "raw" / "other", progress=False)


def _write_manual_msd(raw: Path, cases: tuple[str, ...] = ("ct_1",)) -> Path:
    """A real MSD-layout folder (fetch of a manual source opens every image)."""
    import numpy as np

    from medssl.io import save_nifti

    training, rng = [], np.random.default_rng(0)
    for cid in cases:
        save_nifti(raw / f"imagesTr/{cid}.nii.gz", rng.integers(0, 999, (8, 8, 4)).astype(np.int16), np.eye(4))
        save_nifti(raw / f"labelsTr/{cid}.nii.gz", np.zeros((8, 8, 4), np.uint8), np.eye(4))
        training.append({"image": f"./imagesTr/{cid}.nii.gz", "label": f"./labelsTr/{cid}.nii.gz"})
    (raw / "dataset.json").write_text(json.dumps({"name": "heart", "training": training}))
    return raw


def test_manual_present_files_get_a_manifest(tmp_path):
    raw = _write_manual_msd(tmp_path / "raw" / "mmwhs")
    assert fetch("mmwhs", _manual_spec(), raw, progress=False) == raw
    manifest = json.loads((raw / "manifest.json").read_text())
    assert [e["path"] for e in manifest["files"]] == ["dataset.json", "imagesTr/ct_1.nii.gz", "labelsTr/ct_1.nii.gz"]
    assert manifest["files"][0]["md5"] == _md5(raw / "dataset.json")


def test_manual_fetch_lists_every_fault_and_writes_no_manifest(tmp_path):
    raw = _write_manual_msd(tmp_path / "raw" / "mmwhs", ("ct_1", "ct_2", "ct_3"))
    image = raw / "imagesTr/ct_1.nii.gz"
    image.write_bytes(image.read_bytes()[:-12])  # cut inside the gzip stream: names still fine
    (raw / "labelsTr/ct_2.nii.gz").unlink()
    with pytest.raises(FetchError) as err:
        fetch("mmwhs", _manual_spec(), raw, progress=False)
    msg = str(err.value)
    assert "'mmwhs': 2 faults" in msg and "no manifest.json was written" in msg
    assert f"{image}: corrupt or truncated gzip stream" in msg
    assert f"{raw / 'labelsTr/ct_2.nii.gz'}: listed in dataset.json, not found" in msg
    assert "ct_3" not in msg and "medssl validate mmwhs" in msg
    assert not is_fetched(raw)


def test_a_failed_forced_manual_fetch_unmarks_the_folder(tmp_path):
    """`fetch --force` of a manual folder that has gone bad since: its old manifest goes, so later
    commands do not say "already fetched" about a folder with faults."""
    raw = _write_manual_msd(tmp_path / "raw" / "mmwhs", ("ct_1", "ct_2"))
    fetch("mmwhs", _manual_spec(), raw, progress=False)
    assert is_fetched(raw)
    (raw / "labelsTr/ct_2.nii.gz").unlink()
    with pytest.raises(FetchError, match="listed in dataset.json, not found"):
        fetch("mmwhs", _manual_spec(), raw, force=True, progress=False)
    assert not is_fetched(raw)


# ---------------------------------------------------------------- synthetic
def _synthetic_spec() -> DatasetSpec:
    return DatasetSpec.model_validate({
        "task": "pretrain",
        "source": {"kind": "synthetic", "n_cases": 2, "seed": 3, "shape": [8, 8, 4]},
        "recipe": {"spacing": [4.0, 4.0, 8.0]},
    })


@pytest.fixture
def fake_writer(monkeypatch):
    """Replace medssl.data.synthetic with a tiny writer that records its calls."""
    calls: list[dict] = []
    state = {"fail": False, "raw": None}

    def write_dataset(out_dir, source, progress=True, name="phantom"):
        raw_state = sorted(_tree(state["raw"])) if state["raw"] and state["raw"].exists() else None
        calls.append({"out_dir": Path(out_dir), "n_cases": source.n_cases, "name": name,
                      "progress": progress, "raw_during_write": raw_state})
        (out_dir / "imagesTr").mkdir(parents=True)
        for i in range(source.n_cases):
            (out_dir / "imagesTr" / f"{name}_{i}.nii.gz").write_bytes(bytes([i]) * 10)
        if state["fail"]:
            raise RuntimeError("generator exploded")
        (out_dir / "dataset.json").write_text(json.dumps({"name": name, "training": []}))
        return sorted((out_dir / "imagesTr").iterdir())

    module = types.ModuleType("medssl.data.synthetic")
    module.write_dataset = write_dataset
    monkeypatch.setitem(sys.modules, "medssl.data.synthetic", module)
    return calls, state


def test_synthetic_appears_atomically(fake_writer, tmp_path):
    calls, state = fake_writer
    raw = tmp_path / "raw" / "phantom_corpus"
    state["raw"] = raw
    raw.mkdir(parents=True)  # an incomplete earlier attempt: replaced
    (raw / "partial.nii.gz").write_bytes(b"half")
    assert fetch("phantom_corpus", _synthetic_spec(), raw, progress=False) == raw
    assert len(calls) == 1 and calls[0]["name"] == "phantom_corpus" and calls[0]["n_cases"] == 2
    assert calls[0]["progress"] is False
    assert calls[0]["raw_during_write"] == ["partial.nii.gz"]  # new data not visible while written
    assert calls[0]["out_dir"].parent.parent == raw.parent  # built beside raw_dir
    assert sorted(_tree(raw)) == ["dataset.json", "imagesTr/phantom_corpus_0.nii.gz",
                                  "imagesTr/phantom_corpus_1.nii.gz", "manifest.json"]
    assert _siblings(raw.parent) == ["phantom_corpus"]

    fetch("phantom_corpus", _synthetic_spec(), raw, progress=False)
    assert len(calls) == 1  # idempotent
    fetch("phantom_corpus", _synthetic_spec(), raw, force=True, progress=False)
    assert len(calls) == 2 and _siblings(raw.parent) == ["phantom_corpus"]
    assert "manifest.json" in calls[1]["raw_during_write"]  # the old data stays until the new is complete
    assert is_fetched(raw)


def test_synthetic_failure_leaves_nothing(fake_writer, tmp_path):
    _, state = fake_writer
    state["fail"] = True
    raw = tmp_path / "raw" / "phantom_corpus"
    with pytest.raises(FetchError, match=r"'phantom_corpus'.*generator exploded"):
        fetch("phantom_corpus", _synthetic_spec(), raw, progress=False)
    assert not raw.exists() and _siblings(raw.parent) == []


# ----------------------------------------------------------------- manifest
def test_manifest_is_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    files = {"z.txt": b"zz", "sub/b.bin": b"\x00\x01", "sub/a.txt": b"", "A.txt": b"upper"}
    for root, order in ((a, sorted(files)), (b, sorted(files, reverse=True))):
        for rel in order:  # different creation order, same content
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(files[rel])
    first = write_manifest(a).read_bytes()
    assert write_manifest(a).read_bytes() == first  # rerun: the old manifest is not listed
    assert write_manifest(b).read_bytes() == first
    manifest = json.loads(first)
    assert [e["path"] for e in manifest["files"]] == ["A.txt", "sub/a.txt", "sub/b.bin", "z.txt"]
    assert manifest["total_bytes"] == 9 and manifest["n_files"] == 4
    assert manifest["files"][2] == {"path": "sub/b.bin", "size": 2, "md5": hashlib.md5(b"\x00\x01").hexdigest()}
    (b / "z.txt").write_bytes(b"zZ")
    assert write_manifest(b).read_bytes() != first


def test_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="not an existing folder"):
        write_manifest(tmp_path / "nope")
    with pytest.raises(ValueError, match="name"):
        fetch("", _synthetic_spec(), tmp_path / "raw")


# ------------------------------------------------------ non-MSD layouts
def _files_spec(source: dict) -> DatasetSpec:
    """An MM-WHS-like files layout (images and labels in one flat folder)."""
    return DatasetSpec.model_validate({
        "task": "segmentation", "classes": ["background", "heart"], "source": source,
        "layout": {"kind": "files", "image": "ct_train/ct_train_{case}_image.nii.gz",
                   "label": "ct_train/ct_train_{case}_label.nii.gz"},
        "recipe": {"spacing": [1.0, 1.0, 1.0]},
    })


def _write_files_tree(root: Path, label: bool = True) -> Path:
    import numpy as np

    from medssl.io import save_nifti

    for cid in (1001, 1002):
        save_nifti(root / f"ct_train/ct_train_{cid}_image.nii.gz", np.zeros((4, 4, 2), np.int16), np.eye(4))
        if label or cid == 1001:
            save_nifti(root / f"ct_train/ct_train_{cid}_label.nii.gz", np.zeros((4, 4, 2), np.uint8), np.eye(4))
    return root


def test_url_with_a_files_layout_is_checked_by_its_cases(pack_archive, tmp_path):
    good = pack_archive(_write_files_tree(tmp_path / "good" / "MMWHS").parent, tmp_path / "src" / "mmwhs.tar.gz")
    spec = _files_spec({"kind": "url", "url": good.as_uri(), "md5": _md5(good), "subdir": "MMWHS"})
    raw = fetch("mmwhs", spec, tmp_path / "raw" / "mmwhs", progress=False, cache_dir=tmp_path / "dl")
    assert is_fetched(raw) and not (raw / "dataset.json").exists()  # no MSD check for a files layout
    assert sorted(_tree(raw)) == ["ct_train/ct_train_1001_image.nii.gz", "ct_train/ct_train_1001_label.nii.gz",
                                  "ct_train/ct_train_1002_image.nii.gz", "ct_train/ct_train_1002_label.nii.gz",
                                  "manifest.json"]

    bad = pack_archive(_write_files_tree(tmp_path / "bad" / "MMWHS", label=False).parent,
                       tmp_path / "src" / "bad.tar.gz")
    spec = _files_spec({"kind": "url", "url": bad.as_uri(), "md5": _md5(bad), "subdir": "MMWHS"})
    raw = tmp_path / "raw" / "bad"
    with pytest.raises(FetchError) as err:
        fetch("bad", spec, raw, progress=False, cache_dir=tmp_path / "dl")
    msg = str(err.value)
    assert "'bad'" in msg and "files layout" in msg and "ct_train_1002_image.nii.gz" in msg and "without a label" in msg
    assert _siblings(raw.parent) == ["mmwhs"]  # nothing half-built beside the good one


def test_manual_with_a_files_layout_needs_a_case(tmp_path):
    source = {"kind": "manual", "homepage": "https://example.org", "expected": ["ct_train/*.nii.gz"]}
    raw = tmp_path / "raw" / "mmwhs"
    (raw / "ct_train").mkdir(parents=True)
    (raw / "ct_train" / "ct_train_1001.nii.gz").write_bytes(b"x")  # present, but not in the layout
    with pytest.raises(FetchError) as err:
        fetch("mmwhs", _files_spec(source), raw, progress=False)
    msg = str(err.value)
    assert "no case found" in msg and "'ct_train/ct_train_{case}_image.nii.gz'" in msg
    assert "ct_train/ct_train_1001.nii.gz" in msg and not is_fetched(raw)
    _write_files_tree(raw)
    assert fetch("mmwhs", _files_spec(source), raw, progress=False) == raw and is_fetched(raw)


# ------------------------------------------- truncated archives, changes since fetch
def _msd_tar(root: Path, archive: Path, n_cases: int = 3, keep: int | None = None) -> Path:
    """An MSD Task09 tar whose dataset.json lists ``n_cases`` cases, of which the first ``keep``
    are packed (dataset.json first, then each case's image and label, as a download streams)."""
    import tarfile

    task = _write_manual_msd(root / "Task09_Spleen", tuple(f"spleen_{i}" for i in range(1, n_cases + 1)))
    names = ["dataset.json"] + [f"{d}/spleen_{i}.nii.gz" for i in range(1, (keep or n_cases) + 1)
                                for d in ("imagesTr", "labelsTr")]
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w") as tar:
        for rel in names:
            tar.add(task / rel, f"Task09_Spleen/{rel}")
    return archive


def test_archive_cut_at_a_member_boundary_with_its_checksum_fails(tmp_path):
    import tarfile

    archive = _msd_tar(tmp_path / "tree", tmp_path / "src" / "Task09_Spleen.tar")
    with tarfile.open(archive) as tar:
        boundary = tar.getmembers()[3].offset  # after dataset.json and case 1: a third of the files
    archive.write_bytes(archive.read_bytes()[:boundary])
    spec = _spleen_spec(archive.as_uri(), _md5(archive))  # the checksum was taken of the cut file
    raw, cache = tmp_path / "raw" / "msd_spleen", tmp_path / "dl"
    with pytest.raises(FetchError) as err:
        fetch("msd_spleen", spec, raw, progress=False, cache_dir=cache)
    msg = str(err.value)
    assert "dataset 'msd_spleen'" in msg and "Task09_Spleen.tar" in msg and "truncated at a member boundary" in msg
    assert "after member 'Task09_Spleen/labelsTr/spleen_1.nii.gz' (3 members read)" in msg
    assert "md5 matches the dataset's source" in msg and f"kept at {cache / archive.name}" in msg
    assert not raw.exists() and _siblings(raw.parent) == []  # no manifest, no final folder, no temporary one
    assert _siblings(cache) == [archive.name]


def test_archive_without_the_files_its_index_declares_fails(tmp_path, msd_archive):
    raw, cache = tmp_path / "raw" / "msd_spleen", tmp_path / "dl"
    fetch("msd_spleen", _spleen_spec(msd_archive.as_uri(), _md5(msd_archive)), raw, progress=False, cache_dir=cache)
    before = (raw / "manifest.json").read_bytes()
    # a well-formed tar (end marker and all) that lacks cases 2 and 3 of its dataset.json
    archive = _msd_tar(tmp_path / "tree", tmp_path / "src" / "Partial.tar", n_cases=3, keep=1)
    spec = _spleen_spec(archive.as_uri(), _md5(archive))
    with pytest.raises(FetchError) as err:
        fetch("msd_spleen", spec, raw, force=True, progress=False, cache_dir=cache)
    msg = str(err.value)
    assert msg.startswith("dataset 'msd_spleen': archive ") and "folder 'Task09_Spleen'" in msg
    assert ("4 of the 6 files that dataset.json declares are missing: imagesTr/spleen_2.nii.gz, "
            "labelsTr/spleen_2.nii.gz, imagesTr/spleen_3.nii.gz, labelsTr/spleen_3.nii.gz") in msg
    assert "the archive may be truncated" in msg and "raw folder was left as it was" in msg
    assert (raw / "manifest.json").read_bytes() == before and not (raw / "imagesTr" / "spleen_2.nii.gz").exists()
    assert _siblings(raw.parent) == ["msd_spleen"]


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


def test_changes_since_fetch_are_reported_instead_of_already_fetched(tmp_path, msd_archive, caplog):
    raw, cache = tmp_path / "raw" / "msd_spleen", tmp_path / "dl"
    spec = _spleen_spec(msd_archive.as_uri(), _md5(msd_archive))
    fetch("msd_spleen", spec, raw, progress=False, cache_dir=cache)
    caplog.set_level("INFO", logger="medssl")
    fetch("msd_spleen", spec, raw, progress=False, cache_dir=cache)
    assert _warnings(caplog) == [] and "already fetched" in caplog.text

    caplog.clear()
    (raw / "imagesTr" / "spleen_9.nii.gz").write_bytes((raw / "imagesTr" / "spleen_1.nii.gz").read_bytes())
    (raw / "labelsTr" / "spleen_1.nii.gz").write_bytes(b"shorter")
    (raw / ".DS_Store").write_bytes(b"finder")  # hidden: never a case, not reported
    assert fetch("msd_spleen", spec, raw, progress=False, cache_dir=cache) == raw  # a warning, not an error
    (warning,) = _warnings(caplog)
    assert "already fetched" not in caplog.text
    assert f"'msd_spleen': {raw} changed since `medssl fetch` wrote its manifest.json (2 files)" in warning
    assert f"{raw / 'imagesTr/spleen_9.nii.gz'}: added since fetch" in warning
    assert f"{raw / 'labelsTr/spleen_1.nii.gz'}: changed since fetch" in warning and ".DS_Store" not in warning
    assert "`medssl fetch --force msd_spleen` restores the fetched files and deletes any others" in warning
    assert "`manual` source" in warning
    assert (raw / "imagesTr" / "spleen_9.nii.gz").exists()  # nothing touched


def test_a_case_added_to_a_manual_dataset_is_noticed_and_recorded_by_force(tmp_path, caplog):
    raw = _write_manual_msd(tmp_path / "raw" / "mmwhs")
    fetch("mmwhs", _manual_spec(), raw, progress=False)
    _write_manual_msd(raw, ("ct_1", "ct_2"))  # the researcher adds a case (and lists it in dataset.json)
    caplog.set_level("INFO", logger="medssl")
    fetch("mmwhs", _manual_spec(), raw, progress=False)
    (warning,) = _warnings(caplog)
    assert "(3 files)" in warning and "imagesTr/ct_2.nii.gz: added since fetch" in warning
    assert "labelsTr/ct_2.nii.gz: added since fetch" in warning and "dataset.json: changed since fetch" in warning
    assert "Run `medssl fetch --force mmwhs` to check the folder again" in warning
    assert "ct_2" not in (raw / "manifest.json").read_text()
    caplog.clear()
    fetch("mmwhs", _manual_spec(), raw, force=True, progress=False)
    assert "imagesTr/ct_2.nii.gz" in (raw / "manifest.json").read_text()
    fetch("mmwhs", _manual_spec(), raw, progress=False)
    assert _warnings(caplog) == [] and "already fetched" in caplog.text
