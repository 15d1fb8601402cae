"""Readers of raw images that are not one file SimpleITK opens directly: DICOM series
(one folder per case, the series chosen by description or size) and 2-D slice stacks
(PNG / JPEG / TIFF in natural file-name order), plus the checked single-file read.

Every fault raises :class:`medssl.data.layouts.PreprocessError` naming the file or folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medssl.data.dicom import SeriesGeometry, check_series_geometry, explain_files, explain_folder
from medssl.data.layouts import PreprocessError, RawCase


def check_scalar_3d(img: sitk.Image, where: Path) -> sitk.Image:
    """``img`` when it is a 3-D scalar image; else a PreprocessError naming ``where``."""
    if img.GetDimension() != 3:
        raise PreprocessError(f"{where}: expected a 3D image, got {img.GetDimension()}D of size {img.GetSize()}")
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise PreprocessError(f"{where}: expected a scalar image, got "
                              f"{img.GetNumberOfComponentsPerPixel()} components per voxel")
    return img


def dicom_series(folder: str | Path) -> list[tuple[str, str, list[str]]]:
    """The DICOM series in ``folder`` (not its sub-folders): ``(uid, description, files)``.

    The description is the SeriesDescription tag (0008|103e), stripped, or ``""``.

    Raises:
        PreprocessError: naming ``folder`` when it is missing or holds no DICOM series.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise PreprocessError(f"{folder}: DICOM folder not found")
    warn = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # GDCM warns on stderr when it finds nothing
    try:
        uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
        out = []
        for uid in uids:
            files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
            reader = sitk.ImageFileReader()
            reader.SetFileName(files[0])
            try:
                reader.ReadImageInformation()
                desc = reader.GetMetaData("0008|103e").strip() if reader.HasMetaDataKey("0008|103e") else ""
            except RuntimeError:
                desc = ""
            out.append((uid, desc, files))
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warn)
    if not out:
        raise PreprocessError(f"{folder}: no readable DICOM series in this folder ({explain_folder(folder)})")
    return out


def dicom_geometry(folder: str | Path, description: str | None = None) -> SeriesGeometry:
    """The checked geometry of the series of ``folder`` that :func:`read_dicom_series` reads.

    The series is chosen as there, then checked from its headers by
    :func:`medssl.data.dicom.check_series_geometry` (one SeriesInstanceUID, at least
    3 slices, one orientation and pixel spacing, uniform slice spacing: DICOM PS3.3
    C.7.6.2 Image Plane Module). A refused series' message also gives the reasons
    of the folder's files that are in no series (a truncated slice that GDCM left
    out leaves a gap).

    Raises:
        PreprocessError: naming ``folder``, the series UID and the fault.
    """
    folder = Path(folder)
    series = found_series = dicom_series(folder)
    if description is not None:
        chosen = [s for s in series if description.lower() in s[1].lower()]
        if not chosen:
            found = "; ".join(f"{d!r} ({len(f)} files)" for _, d, f in series)
            raise PreprocessError(f"{folder}: no DICOM series whose description contains "
                                  f"{description!r}; series there: {found}")
        series = chosen
    uid, _, files = max(series, key=lambda s: (len(s[2]), s[0]))
    try:
        return check_series_geometry(folder, uid, files)
    except PreprocessError as exc:
        listed = {str(Path(f)) for _, _, fs in found_series for f in fs}
        left = [p for p in sorted(folder.iterdir()) if p.is_file() and str(p) not in listed
                and not p.name.startswith(".")]
        why = explain_files(left) if left else ""
        if not why:
            raise
        raise PreprocessError(f"{exc}; files of the folder in no series: {why}") from exc


_last_read: dict = {}  # the geometry of the last series read, for dicom_record (one entry)


def _stamp(folder: Path, description: str | None, files=()) -> tuple:
    """Identity of a read: folder, description and the (mtime, size) of the folder and its series' files."""
    stats = [os.stat(f) for f in (folder, *files)]
    return str(folder), description, tuple((f, s.st_mtime_ns, s.st_size) for f, s in zip((folder, *files), stats))


def dicom_record(rc: RawCase) -> dict:
    """``{"dicom": {"series_uid", "slices", "slice_spacing_mm"}}`` for a case whose image is a
    DICOM series (its datalist fields; the spacing is the median gap along the slice
    normal), else ``{}``. The series just read by :func:`read_dicom_series` is not
    checked again unless its folder or files changed since."""
    if rc.image_kind != "dicom":
        return {}
    folder = Path(rc.image)
    geo = _last_read.get("geometry")
    try:
        fresh = geo is not None and _last_read.get("stamp") == _stamp(folder, rc.series_description, geo.files)
    except OSError:  # a file gone: check again, which names the fault
        fresh = False
    if not fresh:
        geo = dicom_geometry(folder, rc.series_description)
    return {"dicom": geo.record()}


def read_dicom_series(folder: str | Path, description: str | None = None) -> sitk.Image:
    """Read one DICOM series of ``folder`` as a 3D image (SimpleITK / GDCM).

    The series read is the one whose SeriesDescription contains ``description``
    (case-insensitive; the largest of several such), or, when ``description`` is
    ``None``, the series with the most files. A description that no series has is
    an error (rather than silently reading another series). Its geometry is
    checked before it is read (:func:`dicom_geometry`); the files are read in
    their order along the slice normal.

    Raises:
        PreprocessError: naming ``folder`` when it holds no DICOM series (saying per
            reason which files are unreadable: not DICOM, truncated, no pixel data,
            ...), no series matches ``description`` (listing those there), the
            series' geometry is refused, or the series is unreadable or not a
            scalar 3D image.
    """
    folder = Path(folder)
    geometry = dicom_geometry(folder, description)
    _last_read.update(geometry=geometry, stamp=_stamp(folder, description, geometry.files))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(geometry.files))
    try:
        img = reader.Execute()
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
        why = explain_files([Path(f) for f in geometry.files])
        raise PreprocessError(f"{folder}: unreadable DICOM series {geometry.uid} ({first})"
                              + (f"; {why}" if why else "")) from exc
    return check_scalar_3d(img, folder)


def natural_key(name: str) -> list[tuple[int, int | str]]:
    """Sort key that orders the digit runs of ``name`` by value: ``2.png < 10.png``."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", name) if part]


_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as Pillow's "L" mode


def read_sitk(path: Path, what: str = "image") -> sitk.Image:
    """``sitk.ReadImage`` whose failure is a PreprocessError naming ``path`` and ITK's reason.

    ``what`` names the thing in the message ("slice", "image: corrupt or truncated").
    """
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
        raise PreprocessError(f"{path}: unreadable {what} ({first})") from exc


def _slice_array(path: Path, label: bool) -> np.ndarray:
    img = read_sitk(path, "slice")
    if img.GetDimension() != 2:
        raise PreprocessError(f"{path}: expected a 2-D slice, got {img.GetDimension()}D of size {img.GetSize()}")
    a = sitk.GetArrayFromImage(img)  # (rows, columns[, components])
    if a.ndim == 3:
        n = a.shape[2]
        if label:
            if not all(np.array_equal(a[..., 0], a[..., c]) for c in range(1, min(n, 3))):
                raise PreprocessError(f"{path}: a label slice must be grayscale, got {n} differing channels")
            a = a[..., 0]
        elif n in (3, 4):  # RGB(A): luminance, alpha dropped
            a = np.tensordot(a[..., :3].astype(np.float32), np.asarray(_LUMA, np.float32), axes=([2], [0]))
        elif n == 2:  # gray + alpha
            a = a[..., 0]
        else:
            raise PreprocessError(f"{path}: unsupported slice with {n} channels")
    return a


def read_png_stack(folder: str | Path, slices: str = "*.png",
                   spacing: tuple[float, float, float] = (1.0, 1.0, 1.0), label: bool = False) -> sitk.Image:
    """Stack the 2-D slices ``folder/slices`` (PNG / JPEG / TIFF) into a 3D image.

    Slices are sorted in natural file-name order (``2.png`` before ``10.png``) and
    become voxel axis k; a slice's columns are axis i and its rows axis j. The
    files carry no geometry, so the image gets ``spacing`` (i, j, k), origin 0 and
    the identity ITK direction: columns point to the patient's left, rows to
    posterior, slices to superior (the radiological display of axial slices;
    RAS reorientation then flips i and j). RGB(A) slices become luminance
    ``0.299 R + 0.587 G + 0.114 B`` (alpha dropped); label slices must be
    grayscale (equal channels).

    Raises:
        PreprocessError: naming the folder when no slice matches, or the file
            that is unreadable, not 2-D, or differs in size from the first slice.
    """
    folder = Path(folder)
    files = sorted((p for p in folder.glob(slices) if p.is_file() and not p.name.startswith(".")),
                   key=lambda p: natural_key(p.name))
    if not files:
        raise PreprocessError(f"{folder}: no slice files match {slices!r}")
    arrays = []
    for f in files:
        a = _slice_array(f, label)
        if arrays and a.shape != arrays[0].shape:
            raise PreprocessError(f"{f}: slice of {a.shape[1]}x{a.shape[0]} pixels differs from "
                                  f"{arrays[0].shape[1]}x{arrays[0].shape[0]} of {files[0]}")
        arrays.append(a)
    img = sitk.GetImageFromArray(np.stack(arrays))  # (k, rows, columns) -> size (columns, rows, k)
    img.SetSpacing(tuple(float(s) for s in spacing))
    return img
