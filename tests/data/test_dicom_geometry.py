"""DICOM series geometry checks (medssl.data.dicom) and the reasons a DICOM folder is unreadable.

Series are written slice by slice with SimpleITK (GDCM) with chosen ImagePositionPatient /
ImageOrientationPatient tags; faulty files are made by cutting a written file short (in its
pixel data, or just before its pixel data element). The reasons need pydicom; the tests that
use it skip without it, and one test checks the messages given without it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medssl.config import DatasetSpec
from medssl.data import dicom
from medssl.data.dicom import MIN_SLICES, check_series_geometry, explain_files
from medssl.data.layouts import PreprocessError, RawCase
from medssl.data.preprocess import preprocess_dataset
from medssl.data.readers import dicom_geometry, dicom_record, dicom_series, read_dicom_series

UID = "1.2.826.0.1.3680043.2.1125.9001"
AXIAL = "1\\0\\0\\0\\1\\0"
SAGITTAL = "0\\1\\0\\0\\0\\-1"
CORONAL = "1\\0\\0\\0\\0\\-1"
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation: no Image Plane Module


def write_slices(folder: Path, z: list[float], uid: str = UID, iop: list[str] | None = None,
                 pixel_spacing: list[str] | None = None, modality: str = "CT", prefix: str = "s",
                 plane: bool = True) -> list[Path]:
    """One 6x5 int16 slice per position ``z`` (mm along the normal of an axial slice); slice k is
    named ``{prefix}{k:03d}.dcm`` and holds the value 10 k. ``plane=False`` writes no Image Plane tags."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    out = []
    for k, zk in enumerate(z):
        sl = sitk.GetImageFromArray(np.full((5, 6), 10 * k, np.int16))
        rows, columns = (float(v) for v in (pixel_spacing[k] if pixel_spacing else "0.7\\0.8").split("\\"))
        sl.SetSpacing((columns, rows))  # GDCM writes PixelSpacing (0028,0030) "row\\column" from it
        tags = [("0008|0060", modality), ("0020|000e", uid), ("0020|000d", "1.2.826.0.1.3680043.2.1125.7"),
                ("0020|0013", str(k + 1)), ("0008|0016", DX_STORAGE if modality == "DX" else CT_STORAGE),
                ("0008|0018", f"{uid}.{k + 1}"),
                ("0008|103e", "AXIAL")]
        if plane:
            tags += [("0020|0032", f"-10\\20\\{zk}"), ("0020|0037", iop[k] if iop else AXIAL)]
        for tag, value in tags:
            sl.SetMetaData(tag, value)
        out.append(folder / f"{prefix}{k:03d}.dcm")
        writer.SetFileName(str(out[-1]))
        writer.Execute(sl)
    return out


def refused(folder: Path, *parts: str) -> str:
    """``read_dicom_series(folder)`` raises a PreprocessError naming the folder and every string of ``parts``."""
    with pytest.raises(PreprocessError) as err:
        read_dicom_series(folder)
    msg = str(err.value)
    assert msg.startswith(f"{folder}: "), msg
    for p in parts:
        assert p in msg, (p, msg)
    return msg


def make_spec(layout: dict) -> DatasetSpec:
    return DatasetSpec.model_validate({
        "task": "pretrain", "classes": [], "source": {"kind": "manual", "homepage": "https://example.org",
                                                      "expected": ["*"]},
        "layout": layout, "recipe": {"spacing": [None, None, None]},
        "splits": {"validation": 0, "test": 0, "seed": 0}})


# ------------------------------------------------------------ uniform series
def test_uniform_series_is_read_in_position_order_and_recorded(tmp_path):
    # file names in the reverse order of the positions: the volume must still run along +z
    folder = tmp_path / "raw/P001"
    files = write_slices(folder, [110.0, 107.5, 105.0, 102.5, 100.0])
    geo = dicom_geometry(folder)
    assert geo.uid == UID and geo.slices == 5 and geo.spacing == pytest.approx(2.5)
    assert [Path(f).name for f in geo.files] == [f.name for f in files[::-1]]
    assert geo.record() == {"series_uid": UID, "slices": 5, "slice_spacing_mm": 2.5}
    img = read_dicom_series(folder)
    assert img.GetSize() == (6, 5, 5)
    np.testing.assert_allclose(img.GetSpacing(), (0.8, 0.7, 2.5), atol=1e-6)  # (column, row, slice)
    np.testing.assert_allclose(img.GetOrigin(), (-10.0, 20.0, 100.0), atol=1e-6)
    # slice k of the volume (z = 100 + 2.5 k) is the file written (4 - k)-th, of value 10 (4 - k)
    assert [int(sitk.GetArrayViewFromImage(img)[k, 0, 0]) for k in range(5)] == [40, 30, 20, 10, 0]
    assert dicom_record(RawCase("P001", folder, None, "dicom")) == {"dicom": geo.record()}
    assert dicom_record(RawCase("P001", folder / "x.nii.gz", None, "file")) == {}


def test_uniform_series_datalist_entry(tmp_path):
    raw = tmp_path / "raw"
    write_slices(raw / "P001", [0.0, 1.25, 2.5, 3.75])
    write_slices(raw / "P002", [5.0, 8.0, 11.0], uid=UID + ".2")
    out = preprocess_dataset("dcm", make_spec({"kind": "dicom", "series": "{case}"}), raw,
                             tmp_path / "processed/dcm", progress=False)
    doc = json.loads((out / "datalist.json").read_text())
    got = {e["case"]: e["dicom"] for e in doc["training"]}
    assert got == {"P001": {"series_uid": UID, "slices": 4, "slice_spacing_mm": 1.25},
                   "P002": {"series_uid": UID + ".2", "slices": 3, "slice_spacing_mm": 3.0}}
    assert nib.load(out / "images/P002.nii.gz").header.get_zooms()[2] == pytest.approx(3.0)


def test_spacing_within_tolerance_passes(tmp_path):
    # gaps 2.5, 2.51, 2.49: at most 0.01 mm off the median 2.5 mm, under max(0.01 mm, 1 %) = 0.025 mm
    geo = dicom_geometry(write_slices(tmp_path / "ok", [0.0, 2.5, 5.01, 7.5])[0].parent)
    assert geo.spacing == pytest.approx(2.5)


# ------------------------------------------------------------- spacing faults
def test_non_uniform_gap_is_refused_with_the_numbers(tmp_path):
    folder = tmp_path / "P001"
    write_slices(folder, [0.0, 1.25, 2.5, 200.0])
    refused(folder, f"DICOM series {UID}: non-uniform slice spacing over 4 slices",
            "gaps 1.25 mm (x2) and 197.5 mm between slices 3 and 4 (s003.dcm)",
            "tolerance 0.0125 mm = max(0.01 mm, 1% of the median gap)")


def test_gap_just_over_tolerance_is_refused(tmp_path):
    folder = tmp_path / "P001"
    write_slices(folder, [0.0, 2.5, 5.0, 7.5, 10.04])  # 2.54 mm: 0.04 mm off, over 0.025 mm
    refused(folder, "gaps 2.5 mm (x3) and 2.54 mm between slices 4 and 5", "tolerance 0.025 mm")


def test_missing_slice_is_refused(tmp_path):
    folder = tmp_path / "P001"
    write_slices(folder, [0.0, 2.0, 4.0, 8.0, 10.0, 12.0])
    refused(folder, "gaps 2 mm (x4) and 4 mm between slices 3 and 4 (s003.dcm)")


def test_slow_drift_is_refused(tmp_path):
    # each gap within 0.009 mm of the median 1 mm (tolerance 0.01 mm), yet the middle slice is 0.045 mm
    # off the uniform grid that ITK lays from the first to the last slice
    z = np.concatenate([[0.0], np.cumsum([1.009] * 5 + [0.991] * 5)]).round(6).tolist()
    folder = tmp_path / "P001"
    write_slices(folder, z)
    refused(folder, "slice positions drift from a uniform grid: slice 6 of 11 (s005.dcm) lies 0.045 mm off",
            "tolerance 0.01 mm")


def test_duplicate_position_is_refused(tmp_path):
    folder = tmp_path / "P001"
    write_slices(folder, [0.0, 2.5, 2.5, 5.0])
    refused(folder, "1 pair(s) of slices at the same position along the slice normal",
            "slices 2 and 3 (s001.dcm, s002.dcm) at 2.5 mm", "echoes / phases")


# ------------------------------------------------------------ other faults
def test_orthogonal_localizer_is_refused(tmp_path):
    folder = tmp_path / "P001"
    write_slices(folder, [0.0, 5.0, 10.0] * 3, iop=[AXIAL] * 3 + [SAGITTAL] * 3 + [CORONAL] * 3)
    refused(folder, f"DICOM series {UID}: slices of 3 orientations, as in a localizer, differing by up to 1 "
                    "in a direction cosine (ImageOrientationPatient 0020,0037; tolerance 0.001)",
            "1\\0\\0\\0\\1\\0 (3 slices: s000.dcm, s001.dcm, s002.dcm)",
            "0\\1\\0\\0\\0\\-1 (3 slices: s003.dcm, s004.dcm, s005.dcm)",
            "1\\0\\0\\0\\0\\-1 (3 slices: s006.dcm, s007.dcm, s008.dcm)")


def test_orientation_within_tolerance_passes(tmp_path):
    iop = [AXIAL, "1\\0\\0\\0\\0.9999995\\0.0005", AXIAL]
    assert dicom_geometry(write_slices(tmp_path / "P001", [0.0, 1.0, 2.0], iop=iop)[0].parent).slices == 3


def test_two_series_uids_forced_together_are_refused(tmp_path):
    a = write_slices(tmp_path / "P001", [0.0, 1.0, 2.0])
    b = write_slices(tmp_path / "P001", [3.0, 4.0], uid=UID + ".7", prefix="t")
    with pytest.raises(PreprocessError) as err:
        check_series_geometry(tmp_path / "P001", UID, [str(f) for f in a + b])
    assert str(err.value) == (f"{tmp_path / 'P001'}: DICOM series {UID}: the files belong to 2 series "
                              f"(SeriesInstanceUID 0020,000E): {UID} (3 files: s000.dcm, s001.dcm, s002.dcm); "
                              f"{UID}.7 (2 files: t000.dcm, t001.dcm)")
    assert len(dicom_series(tmp_path / "P001")) == 2  # GDCM itself keeps them apart


def test_single_slice_is_refused_as_2d(tmp_path):
    folder = tmp_path / "P001"
    write_slices(folder, [0.0])
    refused(folder, f"DICOM series {UID}: a single 2-D image (6x5 pixels, modality CT): a single slice or a 2-D "
                    f"projection image, not a 3-D series; at least {MIN_SLICES} slices are needed")


def test_projection_radiograph_is_refused(tmp_path):
    one = tmp_path / "DX1"
    write_slices(one, [0.0], modality="DX", plane=False)
    refused(one, "a single 2-D image (6x5 pixels, modality DX)", "projection image")
    three = tmp_path / "DX3"  # several views in one series: no Image Plane Module at all
    write_slices(three, [0.0, 0.0, 0.0], modality="DX", plane=False)
    refused(three, "3 of 3 files lack ImagePositionPatient / ImageOrientationPatient",
            "2-D projection image (modality DX)", "s000.dcm, s001.dcm, s002.dcm")


def test_two_slices_are_refused(tmp_path):
    folder = tmp_path / "P001"
    write_slices(folder, [0.0, 2.0])
    refused(folder, "only 2 slices (s000.dcm, s001.dcm)", "at least 3 slices are needed")


def test_multiframe_file_is_refused(tmp_path):
    folder = tmp_path / "P001"
    folder.mkdir()
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5, 6), np.uint8)), str(folder / "mf.dcm"))
    refused(folder, "one multi-frame file (4 frames, mf.dcm): multi-frame DICOM is not read")


def test_pixel_spacing_change_is_refused(tmp_path):
    folder = tmp_path / "P001"
    write_slices(folder, [0.0, 1.0, 2.0], pixel_spacing=["0.7\\0.8", "0.7\\0.8", "0.9\\0.9"])
    refused(folder, "PixelSpacing (0028,0030) differs between slices: 0.7/0.8 mm in s000.dcm, "
                    "but 0.9/0.9 mm in s002.dcm")


# ------------------------------------------------------- unreadable files
def cut(src: Path, dst: Path, before_pixels: bool = False, keep_pixel_bytes: int = 20) -> Path:
    """A copy of ``src`` cut just before its pixel data element, or ``keep_pixel_bytes`` into its value."""
    data = src.read_bytes()
    at = data.rfind(b"\xe0\x7f\x10\x00")  # (7FE0,0010) PixelData
    assert at > 0
    header = 12 if data[at + 4:at + 6] in (b"OW", b"OB") else 8  # explicit / implicit VR element header
    dst.write_bytes(data[:at] if before_pixels else data[:at + header + keep_pixel_bytes])
    return dst


def test_unreadable_folder_says_why_per_reason(tmp_path):
    pytest.importorskip("pydicom")
    good = write_slices(tmp_path / "src", [0.0])[0]  # a 6x5 int16 slice: 60 bytes of pixel data
    folder = tmp_path / "P001"
    folder.mkdir()
    for name in ("a.txt", "b.txt"):
        (folder / name).write_bytes(b"not a dicom file\n" * 20)
    cut(good, folder / "short.dcm", keep_pixel_bytes=20)
    cut(good, folder / "nopix.dcm", before_pixels=True)
    (folder / "empty.dcm").write_bytes(b"")
    (folder / "sub").mkdir()
    msg = refused(folder, "no readable DICOM series in this folder (of its 5 files: ",
                  "2 not DICOM (no 'DICM' prefix at byte 128, no DICOM data elements): a.txt, b.txt",
                  "1 truncated pixel data: short.dcm (20 of 60 bytes)",
                  "1 no pixel data (7FE0,0010): not an image (SR, RTSTRUCT, RTPLAN, ...): nopix.dcm (CT)",
                  "1 empty file (0 bytes): empty.dcm",
                  "1 sub-folders (sub) are not searched")
    assert msg.index("2 not DICOM") < msg.index("1 empty file")  # the most frequent reason first


def test_pydicom_test_files_give_their_reason(tmp_path):
    data = pytest.importorskip("pydicom.data")
    got = {name: dicom.file_fault(Path(data.get_testdata_file(name)))
           for name in ("MR_truncated.dcm", "rtstruct.dcm", "CT_small.dcm")}
    assert got["MR_truncated.dcm"] == ("truncated pixel data", "8130 of 8192 bytes")
    assert got["rtstruct.dcm"][0].startswith("no pixel data") and got["rtstruct.dcm"][1] == "RTSTRUCT"
    assert got["CT_small.dcm"] == ("", "")  # a sound file
    folder = tmp_path / "P001"
    folder.mkdir()
    (folder / "CT_small.dcm").write_bytes(Path(data.get_testdata_file("CT_small.dcm")).read_bytes())
    refused(folder, "a single 2-D image (128x128 pixels, modality CT)")  # a real single-slice CT file


def test_truncated_slice_left_out_of_a_series_is_named(tmp_path):
    pytest.importorskip("pydicom")
    folder = tmp_path / "P001"
    files = write_slices(folder, [0.0, 2.0, 4.0, 6.0, 8.0])
    cut(files[2], files[2])  # GDCM leaves the cut file out: the series has a 4 mm gap
    assert len(dicom_series(folder)[0][2]) == 4
    refused(folder, "gaps 2 mm (x2) and 4 mm between slices 2 and 3 (s003.dcm)",
            "files of the folder in no series: 1 truncated pixel data: s002.dcm (20 of 60 bytes)")


def test_reasons_without_pydicom(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pydicom", None)  # `import pydicom` raises ImportError
    good = write_slices(tmp_path / "src", [0.0])[0]
    (tmp_path / "x.txt").write_text("hello")
    bad = cut(good, tmp_path / "short.dcm")
    assert explain_files([tmp_path / "x.txt", bad]) == (
        "1 not DICOM (no 'DICM' prefix at byte 128): x.txt; "
        "1 unreadable by GDCM (install pydicom to see why): short.dcm")


def test_empty_folder_is_named(tmp_path):
    (tmp_path / "P001").mkdir()
    refused(tmp_path / "P001", "no readable DICOM series in this folder (the folder is empty)")


def test_record_of_the_series_just_read_is_not_checked_again(tmp_path, monkeypatch):
    from medssl.data import readers

    folder = tmp_path / "P001"
    files = write_slices(folder, [0.0, 1.0, 2.0])
    rc = RawCase("P001", folder, None, "dicom")
    read_dicom_series(folder)
    calls = []
    monkeypatch.setattr(readers, "dicom_geometry", lambda *a: calls.append(a) or dicom_geometry(*a))
    assert dicom_record(rc)["dicom"]["slices"] == 3 and calls == []
    write_slices(folder, [3.0], prefix="u")  # the folder changed since the read: checked again
    (folder / "u000.dcm").rename(folder / "s003.dcm")
    assert dicom_record(rc)["dicom"]["slices"] == 4 and len(calls) == 1
    files[1].unlink()  # a file of the last read is gone: checked again, and refused as non-uniform
    with pytest.raises(PreprocessError, match="non-uniform slice spacing over 3 slices"):
        dicom_record(rc)
