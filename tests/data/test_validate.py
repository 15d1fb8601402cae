"""``medssl validate``: every fault of a raw dataset in one run, and the files changed since fetch."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from miniatures import BUILDERS, n_cases, write_miniature  # noqa: E402

from medssl import cli  # noqa: E402
from medssl.data.catalog import catalog  # noqa: E402
from medssl.data.fetch import write_manifest  # noqa: E402
from medssl.data.validate import missing_declared, validate_dataset  # noqa: E402

PARAMS = str(Path(__file__).resolve().parents[2] / "params.yaml")


@pytest.fixture
def project(tmp_path, monkeypatch):
    """An empty project root (``data/raw/<dataset>`` under it)."""
    monkeypatch.setenv("MEDSSL_ROOT", str(tmp_path))
    return tmp_path


def _validate(capsys, *names: str, headers_only: bool = False) -> tuple[int, list[str]]:
    rc = cli.main(["validate", "--params", PARAMS, "--no-progress", *names] + (["--headers-only"] * headers_only))
    return rc, capsys.readouterr().out.splitlines()


def _cut(path: Path, n: int) -> None:
    path.write_bytes(path.read_bytes()[:-n])


def test_four_faults_are_reported_in_one_run(project, capsys):
    raw = write_miniature("msd_spleen", project / "data" / "raw" / "msd_spleen", 6)
    img = raw / "imagesTr"
    _cut(img / "spleen_1.nii.gz", 400)                                  # truncated NIfTI
    (img / "spleen_2.nii.gz").write_text("<html>403 Forbidden</html>")  # saved error page
    (raw / "labelsTr" / "spleen_3.nii.gz").unlink()                     # missing label
    (img / "spleen_4.nii.gz").write_bytes(b"")                          # zero-byte file
    rc, out = _validate(capsys, "msd_spleen")
    assert rc == 1
    assert len(out) == 5, out  # one line per fault, then the summary
    faults = dict(line.split(": ", 1) for line in out[:4])
    assert faults[str(img / "spleen_1.nii.gz")].startswith("corrupt or truncated gzip stream")
    assert faults[str(img / "spleen_2.nii.gz")].startswith("not a gzip file, though named spleen_2.nii.gz")
    assert faults[str(raw / "labelsTr" / "spleen_3.nii.gz")] == "listed in dataset.json, not found"
    assert faults[str(img / "spleen_4.nii.gz")] == "empty file (0 bytes)"
    assert out[4] == "msd_spleen: 6 cases, 11 files checked, 4 faults"


def test_a_clean_dataset_validates(project, capsys):
    write_miniature("msd_spleen", project / "data" / "raw" / "msd_spleen", 6)
    rc, out = _validate(capsys, "msd_spleen")
    assert rc == 0
    assert out == ["msd_spleen: 6 cases, 12 files checked, no fault (not fetched yet: no manifest.json to compare)"]


def test_headers_only_reads_no_voxel_data(project, capsys):
    raw = write_miniature("msd_spleen", project / "data" / "raw" / "msd_spleen", 4)
    victim = raw / "imagesTr" / "spleen_1.nii.gz"
    victim.write_bytes(gzip.compress(gzip.decompress(victim.read_bytes())[:-100]))  # a whole gzip of a cut NIfTI
    assert _validate(capsys, "msd_spleen", headers_only=True)[0] == 0  # the header alone looks fine
    rc, out = _validate(capsys, "msd_spleen")
    assert rc == 1 and out[0] == f"{victim}: truncated NIfTI: {6 * 12 * 12 * 4 + 252} bytes, its header needs " \
                                 f"{6 * 12 * 12 * 4 + 352}"


def test_a_case_added_after_fetch_is_reported(project, capsys, caplog):
    raw = write_miniature("mmwhs_ct", project / "data" / "raw" / "mmwhs_ct", 4)
    assert cli.main(["fetch", "--params", PARAMS, "--no-progress", "mmwhs_ct"]) == 0
    assert (raw / "manifest.json").is_file()
    capsys.readouterr()
    assert _validate(capsys, "mmwhs_ct") == (0, ["mmwhs_ct: 4 cases, 8 files checked, no fault"])

    new = raw / "ct_train" / "ct_train_1099_image.nii.gz"
    new.write_bytes((raw / "ct_train" / "ct_train_1001_image.nii.gz").read_bytes())
    new.with_name("ct_train_1099_label.nii.gz").write_bytes((raw / "ct_train" / "ct_train_1001_label.nii.gz")
                                                            .read_bytes())
    rc, out = _validate(capsys, "mmwhs_ct")
    assert rc == 1
    assert out[0].startswith(f"{new}: added since fetch (") and "not in manifest.json" in out[0]
    assert out[1].startswith(f"{new.with_name('ct_train_1099_label.nii.gz')}: added since fetch")
    assert out[2] == ("mmwhs_ct: 5 cases, 10 files checked, 2 files changed since fetch "
                      "(`medssl fetch --force mmwhs_ct` or re-preprocess, see `medssl fetch mmwhs_ct`)")

    assert cli.main(["fetch", "--params", PARAMS, "--no-progress", "mmwhs_ct"]) == 0  # warns, see test_fetch
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert f"{new}: added since fetch" in warning and "medssl fetch --force mmwhs_ct" in warning
    assert cli.main(["fetch", "--params", PARAMS, "--no-progress", "--force", "mmwhs_ct"]) == 0
    capsys.readouterr()
    assert _validate(capsys, "mmwhs_ct") == (0, ["mmwhs_ct: 5 cases, 10 files checked, no fault"])


def test_removed_and_resized_files_are_changes(tmp_path):
    raw = write_miniature("msd_spleen", tmp_path / "msd_spleen", 3)
    write_manifest(raw)
    (raw / "imagesTr" / "spleen_3.nii.gz").unlink()
    (raw / "notes.txt").write_text("x")
    (raw / ".hidden").mkdir()
    (raw / ".hidden" / "cache.bin").write_bytes(b"y")
    report = validate_dataset("msd_spleen", catalog()["msd_spleen"], raw)
    assert [str(f) for f in report.faults] == [f"{raw / 'imagesTr/spleen_3.nii.gz'}: listed in dataset.json, not found"]
    assert [(f.path.name, f.fault.split(" (")[0]) for f in report.changes] == [
        ("spleen_3.nii.gz", "removed since fetch"), ("notes.txt", "added since fetch")]
    assert not report.ok


def test_pattern_layout_faults_are_all_listed(tmp_path):
    """find_cases stops at the first case without a label; validate lists them all."""
    raw = write_miniature("mmwhs_ct", tmp_path / "mmwhs_ct", 5)
    for cid in (1001, 1003):
        (raw / f"ct_train/ct_train_{cid}_label.nii.gz").unlink()
    _cut(raw / "ct_train/ct_train_1004_label.nii.gz", 30)
    report = validate_dataset("mmwhs_ct", catalog()["mmwhs_ct"], raw)
    lines = [str(f) for f in report.faults]
    assert len(lines) == 3 and report.n_cases == 5
    for cid in (1001, 1003):
        assert f"{raw / f'ct_train/ct_train_{cid}_image.nii.gz'}: segmentation case without a label" in "\n".join(lines)
    assert lines[2].startswith(f"{raw / 'ct_train/ct_train_1004_label.nii.gz'}: corrupt or truncated gzip stream")


def test_label_table_cases_without_an_image(tmp_path):
    spec = catalog()["adni_pet"]
    raw = write_miniature("adni_pet", tmp_path / "adni_pet", 4)
    assert missing_declared(raw, "adni_pet", spec) is None
    with open(raw / "labels.csv", "a") as f:
        f.write("I399999,002_S_9999,AD\nI399998,002_S_9999,CN\n")
    declared = missing_declared(raw, "adni_pet", spec)
    assert (declared.what, declared.total, declared.missing) == ("cases", 6, ["I399998", "I399999"])
    report = validate_dataset("adni_pet", spec, raw)
    assert [str(f) for f in report.faults] == [
        f"{raw / 'labels.csv'}: case {i!r} is listed, but no image of it matches '{{subject}}/{{case}}.nii.gz'"
        for i in ("I399998", "I399999")]


def test_dicom_slices_that_gdcm_skips_are_faults(tmp_path):
    raw = write_miniature("hnscc", tmp_path / "hnscc", 2)
    slices = sorted(raw.rglob("*.dcm"))
    slices[0].write_bytes(b"")
    slices[1].write_bytes(b"not dicom")
    report = validate_dataset("hnscc", catalog()["hnscc"], raw)
    assert [(f.path, f.fault.split(" (")[0]) for f in report.faults] == [
        (slices[0], "empty file"), (slices[1], "not in any readable DICOM series")]


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_every_catalog_miniature_validates(tmp_path, name):
    """No false alarm on any published layout (NIfTI, MHA, MHD, NRRD, DICOM, PNG stacks, label tables)."""
    spec = catalog()[name]
    raw = write_miniature(name, tmp_path / name, n_cases(spec))
    report = validate_dataset(name, spec, raw)
    assert report.faults == [] and report.n_cases > 0 and report.n_files >= report.n_cases, report.lines()


def test_validate_help_and_missing_folder(project, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["validate", "--help"])
    assert info.value.code == 0 and "--headers-only" in capsys.readouterr().out
    rc, out = _validate(capsys, "msd_spleen")
    raw = project / "data" / "raw" / "msd_spleen"
    assert rc == 1
    assert out[0] == f"{raw}: raw folder of dataset 'msd_spleen' not found; run `medssl fetch msd_spleen` first"
