"""DICOM series checks made before a series is read, and the reasons a DICOM file is unreadable.

ITK's ``ImageSeriesReader`` stacks whatever files it is given: it takes the slice
spacing as ``|last position - first position| / (n - 1)`` and only *warns* on a
non-uniform one, so a series with a missing or stray slice, a localizer of
orthogonal slices or a single 2-D image comes out as a plausible-looking but wrong
volume. :func:`check_series_geometry` therefore checks the per-file headers first
(the Image Plane Module, DICOM PS3.3 C.7.6.2,
https://dicom.nema.org/medical/dicom/current/output/chtml/part03/sect_C.7.6.2.html:
ImagePositionPatient (0020,0032) is the position of the first transmitted voxel,
ImageOrientationPatient (0020,0037) the row and column direction cosines,
PixelSpacing (0028,0030) the in-plane spacing; the slice normal is row x column).
The rules, each a :class:`~medssl.data.layouts.PreprocessError` naming the folder,
the series UID and the numbers:

* one SeriesInstanceUID (0020,000E) across the files;
* at least :data:`MIN_SLICES` (3) slices: one file is a single slice or a 2-D
  projection image (DX / CR / MG radiograph), two leave a single gap whose
  uniformity cannot be checked; a multi-frame file is refused too (its per-frame
  geometry, in enhanced objects in functional groups, is not checked here);
* every slice has ImagePositionPatient and ImageOrientationPatient (a projection
  image has neither);
* one orientation: each of the six direction cosines within
  :data:`ORIENTATION_TOL` (1e-3, about 0.06 degrees) of the first slice's;
* one pixel spacing: within :data:`PIXEL_SPACING_RTOL` (0.1 %) of the first slice's;
* uniform slice spacing: the positions projected on the slice normal, sorted,
  give gaps each within ``max(SPACING_ATOL, SPACING_RTOL * median gap)``
  (``max(0.01 mm, 1 %)``) of the median gap, no gap of at most ``SPACING_ATOL``
  (two slices at one position: duplicates, or several echoes / phases in one
  series), and no slice farther than that tolerance from the uniform grid ITK
  builds from the first to the last slice (a slow drift).

The tolerances: ITK itself warns when a gap deviates from its computed spacing by
more than 1e-4 of it (``ImageSeriesReader::SpacingWarningRelThreshold``) but reads
on; that is too strict to *refuse* on, since positions are decimal strings (DS)
that some scanners write with two decimals, which moves a gap by up to 0.01 mm.
1 % of a gap (0.05 mm of a 5 mm gap) is far below a voxel, yet a missing slice
(100 %) or a spliced series is far above it.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medssl.data.layouts import _SHOWN, PreprocessError

MIN_SLICES = 3  # fewer: a 2-D image, or one gap whose uniformity cannot be checked
ORIENTATION_TOL = 1e-3  # max |difference| of a direction cosine (~0.06°; 0.25 mm at 250 mm from the axis)
PIXEL_SPACING_RTOL = 1e-3  # relative difference of PixelSpacing between slices
SPACING_ATOL = 0.01  # mm: the floor of the gap tolerance, and the largest gap taken as a duplicate
SPACING_RTOL = 0.01  # share of the median gap a gap may deviate by
_EXAMINED = 200  # files examined for the reasons they are unreadable


@dataclass(frozen=True)
class SeriesGeometry:
    """A checked series: its UID, files sorted along the slice normal, and median slice gap (mm)."""

    uid: str
    files: tuple[str, ...]
    spacing: float

    @property
    def slices(self) -> int:
        return len(self.files)

    def record(self) -> dict:
        """The datalist fields of the series (:func:`medssl.data.datalist.write_datalist`)."""
        return {"series_uid": self.uid, "slices": self.slices, "slice_spacing_mm": round(self.spacing, 6)}


def _numbers(reader: sitk.ImageFileReader, tag: str) -> np.ndarray | None:
    if not reader.HasMetaDataKey(tag):
        return None
    try:
        return np.asarray([float(v) for v in reader.GetMetaData(tag).strip().split("\\")], dtype=np.float64)
    except ValueError:
        return None


def _header(path: str) -> dict:
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        last = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
        raise PreprocessError(f"{path}: unreadable DICOM header ({last})") from exc

    def text(tag: str) -> str:
        return reader.GetMetaData(tag).strip() if reader.HasMetaDataKey(tag) else ""

    frames = text("0028|0008")
    return {"uid": text("0020|000e"), "modality": text("0008|0060"), "size": reader.GetSize(),
            "frames": int(frames) if frames.isdigit() else 1, "ipp": _numbers(reader, "0020|0032"),
            "iop": _numbers(reader, "0020|0037"), "pixel_spacing": _numbers(reader, "0028|0030")}


def _names(files: list[str], idx) -> str:
    idx = list(idx)
    shown = ", ".join(Path(files[i]).name for i in idx[:_SHOWN])
    return shown + (f" (and {len(idx) - _SHOWN} more)" if len(idx) > _SHOWN else "")


def _mm(x: float) -> str:
    return f"{x:.6g} mm"


def check_series_geometry(folder: str | Path, uid: str, files: list[str] | tuple[str, ...]) -> SeriesGeometry:
    """Check that ``files`` (one series of ``folder``) make one 3-D volume on a uniform grid.

    The rules and tolerances are those of this module's docstring (DICOM PS3.3
    C.7.6.2 Image Plane Module). Only headers are read.

    Returns:
        The series' :class:`SeriesGeometry`, files sorted by position along the slice normal.

    Raises:
        PreprocessError: ``"<folder>: DICOM series <uid>: <fault with numbers>"``.
    """
    files = sorted(str(f) for f in files)  # by name for the messages; by position once checked
    where = f"{folder}: DICOM series {uid}"
    heads = [_header(f) for f in files]
    by_uid: dict[str, list[int]] = defaultdict(list)
    for i, h in enumerate(heads):
        by_uid[h["uid"] or "(none)"].append(i)
    if len(by_uid) > 1:
        parts = "; ".join(f"{u} ({len(ix)} files: {_names(files, ix)})" for u, ix in sorted(by_uid.items()))
        raise PreprocessError(f"{where}: the files belong to {len(by_uid)} series (SeriesInstanceUID "
                              f"0020,000E): {parts}")
    h0 = heads[0]
    if len(files) == 1 and h0["frames"] > 1:
        raise PreprocessError(f"{where}: one multi-frame file ({h0['frames']} frames, {Path(files[0]).name}): "
                              "multi-frame DICOM is not read (its per-frame geometry is not checked); "
                              "convert it to one file per slice")
    if len(files) < MIN_SLICES:
        size = "x".join(str(s) for s in h0["size"][:2])
        what = (f"a single 2-D image ({size} pixels, modality {h0['modality'] or '?'}): a single slice or a "
                "2-D projection image, not a 3-D series" if len(files) == 1 else
                f"only {len(files)} slices ({_names(files, range(len(files)))}): a single gap whose "
                "uniformity cannot be checked")
        raise PreprocessError(f"{where}: {what}; at least {MIN_SLICES} slices are needed")
    lacking = [i for i, h in enumerate(heads) if h["ipp"] is None or len(h["ipp"]) != 3
               or h["iop"] is None or len(h["iop"]) != 6]
    if lacking:
        raise PreprocessError(f"{where}: {len(lacking)} of {len(files)} files lack ImagePositionPatient / "
                              f"ImageOrientationPatient (0020,0032 / 0020,0037), as a 2-D projection image "
                              f"(modality {h0['modality'] or '?'}) does: {_names(files, lacking)}")
    iop = np.stack([h["iop"] for h in heads])
    dev = np.abs(iop - iop[0]).max(axis=1)
    if dev.max() > ORIENTATION_TOL:
        groups: list[list[int]] = []  # slices of one orientation (within the tolerance of the group's first)
        for i in range(len(files)):
            g = next((g for g in groups if np.abs(iop[i] - iop[g[0]]).max() <= ORIENTATION_TOL), None)
            if g is None:
                groups.append([i])
            else:
                g.append(i)
        kinds = "; ".join("\\".join(f"{c:g}" for c in iop[g[0]]) + f" ({len(g)} slices: {_names(files, g)})"
                          for g in groups[:_SHOWN])
        raise PreprocessError(f"{where}: slices of {len(groups)} orientations, as in a localizer, differing by "
                              f"up to {dev.max():.3g} in a direction cosine (ImageOrientationPatient "
                              f"0020,0037; tolerance {ORIENTATION_TOL:g}): {kinds}")
    ps = [h["pixel_spacing"] for h in heads]
    if all(p is not None and len(p) == 2 for p in ps):
        rel = np.abs(np.stack(ps) - ps[0]).max(axis=1) / max(float(np.abs(ps[0]).max()), 1e-12)
        if rel.max() > PIXEL_SPACING_RTOL:
            odd = np.flatnonzero(rel > PIXEL_SPACING_RTOL)
            raise PreprocessError(f"{where}: PixelSpacing (0028,0030) differs between slices: "
                                  f"{'/'.join(f'{v:g}' for v in ps[0])} mm in {Path(files[0]).name}, but "
                                  f"{'/'.join(f'{v:g}' for v in ps[odd[0]])} mm in {_names(files, odd)} "
                                  f"(tolerance {PIXEL_SPACING_RTOL:.1%})")
    normal = np.cross(iop[0, :3], iop[0, 3:])
    normal /= max(float(np.linalg.norm(normal)), 1e-12)
    pos = np.stack([h["ipp"] for h in heads]) @ normal
    order = np.argsort(pos, kind="stable")
    files, pos = [files[i] for i in order], pos[order]
    return SeriesGeometry(uid, tuple(files), _check_spacing(where, files, pos))


def _check_spacing(where: str, files: list[str], pos: np.ndarray) -> float:
    """The median gap of the sorted positions ``pos``; a PreprocessError unless uniform (module docstring)."""
    gaps = np.diff(pos)
    dup = np.flatnonzero(gaps <= SPACING_ATOL)
    if dup.size:
        k = int(dup[0])
        raise PreprocessError(
            f"{where}: {dup.size} pair(s) of slices at the same position along the slice normal (gap at most "
            f"{_mm(SPACING_ATOL)}): slices {k + 1} and {k + 2} ({Path(files[k]).name}, {Path(files[k + 1]).name}) "
            f"at {_mm(pos[k])}: duplicate slices, or several acquisitions / echoes / phases in one series")
    median = float(np.median(gaps))
    tol = max(SPACING_ATOL, SPACING_RTOL * median)
    bad = np.flatnonzero(np.abs(gaps - median) > tol)
    rule = f"tolerance {_mm(tol)} = max({_mm(SPACING_ATOL)}, {SPACING_RTOL:.0%} of the median gap)"
    if bad.size:
        odd = ", ".join(f"{_mm(gaps[k])} between slices {k + 1} and {k + 2} ({Path(files[k + 1]).name})"
                        for k in bad[:_SHOWN])
        more = f" (and {bad.size - _SHOWN} more)" if bad.size > _SHOWN else ""
        raise PreprocessError(f"{where}: non-uniform slice spacing over {len(files)} slices: gaps "
                              f"{_mm(median)} (x{gaps.size - bad.size}) and {odd}{more}; {rule} "
                              "(a missing slice, or slices of another stack)")
    grid = pos[0] + np.arange(pos.size) * (pos[-1] - pos[0]) / (pos.size - 1)
    drift = np.abs(pos - grid)
    if drift.max() > tol:
        k = int(np.argmax(drift))
        raise PreprocessError(f"{where}: slice positions drift from a uniform grid: slice {k + 1} of {pos.size} "
                              f"({Path(files[k]).name}) lies {_mm(drift[k])} off the grid from the first to the "
                              f"last slice (gaps {_mm(gaps.min())} to {_mm(gaps.max())}); {rule}")
    return median


# ---------------------------------------------------------------- unreadable
def _pixel_bytes(ds) -> int | None:
    """Bytes of native (uncompressed) pixel data the header announces; ``None`` when encapsulated."""
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts is not None and getattr(ts, "is_compressed", False):
        return None
    try:
        n = int(ds.Rows) * int(ds.Columns) * int(getattr(ds, "SamplesPerPixel", 1) or 1)
        n *= int(getattr(ds, "NumberOfFrames", 1) or 1)
        bits = int(ds.BitsAllocated)
    except (AttributeError, TypeError, ValueError):
        return None
    return (n * bits + 7) // 8


def file_fault(path: Path) -> tuple[str, str]:
    """Why ``path`` is no readable DICOM image: ``(reason, detail)``, ``("", "")`` when none is found.

    Tells apart an empty file, one that is not DICOM (no ``DICM`` prefix at byte 128
    and no DICOM data elements), one without the DICOM meta header, one without pixel
    data (an SR, RTSTRUCT, ... object), one whose pixel data is cut short, and one
    without SeriesInstanceUID. Uses pydicom when installed (``dcmread`` without,
    then with ``force=True``); without it only the first two are told apart.
    """
    size = path.stat().st_size
    if size == 0:
        return "empty file (0 bytes)", ""
    with open(path, "rb") as fh:
        head = fh.read(132)
    has_prefix = len(head) == 132 and head[128:] == b"DICM"
    try:
        import pydicom
    except ImportError:  # pydicom is optional: only the prefix is checked
        return ("unreadable by GDCM (install pydicom to see why)" if has_prefix
                else "not DICOM (no 'DICM' prefix at byte 128)", "")
    try:
        ds = pydicom.dcmread(path, force=not has_prefix)
        elements = [e.tag for e in ds]
    except Exception as exc:  # pydicom raises many types on corrupt data
        return "corrupt or truncated DICOM", f"{type(exc).__name__}: {str(exc)[:80]}"
    if not has_prefix and not any(t.group in (0x0008, 0x0010, 0x0018, 0x0020, 0x0028) for t in elements):
        return "not DICOM (no 'DICM' prefix at byte 128, no DICOM data elements)", ""
    if not elements:
        return "truncated (nothing after the DICOM meta header)", f"{size} bytes"
    modality = str(getattr(ds, "Modality", "") or "?")
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        return "no pixel data (7FE0,0010): not an image (SR, RTSTRUCT, RTPLAN, ...)", modality
    need = _pixel_bytes(ds) if "PixelData" in ds else None
    if need is not None and len(ds.PixelData) < need:
        return "truncated pixel data", f"{len(ds.PixelData)} of {need} bytes"
    if not has_prefix:
        return "no DICOM meta header (no 'DICM' prefix at byte 128)", modality
    if "SeriesInstanceUID" not in ds:
        return "no SeriesInstanceUID (0020,000E)", modality
    return "", ""


def explain_files(paths: list[Path]) -> str:
    """``"<n> <reason>: a.dcm (detail), b.dcm; <m> <reason>: ..."`` for the faulty ``paths``, or ``""``.

    At most :data:`_EXAMINED` files are examined (said so when there are more).
    """
    groups: dict[str, list[str]] = defaultdict(list)
    for p in paths[:_EXAMINED]:
        with warnings.catch_warnings():  # pydicom warns on each odd element of a non-DICOM file
            warnings.simplefilter("ignore")
            reason, detail = file_fault(p)
        if reason:
            groups[reason].append(f"{p.name} ({detail})" if detail else p.name)
    parts = [f"{len(names)} {reason}: {', '.join(names[:_SHOWN])}" + (" ..." if len(names) > _SHOWN else "")
             for reason, names in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))]
    if parts and len(paths) > _EXAMINED:
        parts.append(f"(first {_EXAMINED} of {len(paths)} files examined)")
    return "; ".join(parts)


def explain_folder(folder: Path) -> str:
    """Why ``folder`` holds no readable DICOM series, per reason with counts and example names."""
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    files = [p for p in entries if p.is_file()]
    dirs = [p.name for p in entries if p.is_dir()]
    if not entries:
        return "the folder is empty"
    parts = []
    if files:
        why = explain_files(files)
        parts.append(f"of its {len(files)} files: {why}" if why else
                     f"its {len(files)} files ({', '.join(p.name for p in files[:_SHOWN])}) hold no series "
                     "GDCM reads, though pydicom finds no fault")
    if dirs:
        parts.append(f"{len(dirs)} sub-folders ({', '.join(dirs[:_SHOWN])}) are not searched: a case's "
                     "series must lie in its folder itself")
    return "; ".join(parts)
