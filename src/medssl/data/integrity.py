"""Checks of single raw files and of a raw folder against its manifest (``medssl validate``).

Each check returns what it found instead of raising, so that a caller can
report every fault of a dataset in one run:

* :func:`check_image_file`: an image file opens and holds all its voxels. NIfTI
  (``.nii``, ``.nii.gz``) is read with nibabel: the header is parsed and the
  voxel bytes it announces are counted (a ``.nii``'s size; a ``.nii.gz`` is
  decompressed as a stream, without keeping it, which also catches a cut or
  corrupt gzip stream). ITK's NIfTI reader fills a truncated file silently,
  hence nibabel. Other formats (MHA, MHD, NRRD, ...): SimpleITK's
  ``ReadImageInformation``, then a full read, since ITK's header read does not
  notice missing voxel data.
* :func:`check_dicom_folder`: the DICOM series of a case folder
  (:func:`medssl.data.readers.dicom_series`), the chosen series, then a full read.
* :func:`check_slice_stack`: every slice of a PNG / JPEG / TIFF stack.
* :func:`manifest_changes`: the files added, removed or changed in size since
  ``medssl fetch`` wrote ``manifest.json``.

With ``full=False`` only headers are read (and a ``.nii``'s size is compared
with its header): fast, but a truncated compressed file goes unnoticed.
"""

from __future__ import annotations

import gzip
import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medssl.data.layouts import PreprocessError

_CHUNK = 1 << 22
_NIFTI = (".nii", ".nii.gz")


@dataclass
class Checked:
    """What a check found: files looked at, the grid size (x, y, z) read, and ``(path, fault)`` pairs."""

    n_files: int = 0
    size: tuple[int, ...] | None = None
    faults: list[tuple[Path, str]] = field(default_factory=list)


def _reason(exc: Exception, path: Path) -> str:
    """The message of ``exc`` without a leading ``"<path>: "`` (the report names the path)."""
    text = str(exc)
    prefix = f"{path}: "
    return text[len(prefix):] if text.startswith(prefix) else text


def _itk_reason(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1].strip() if text else type(exc).__name__


def _empty_or_missing(path: Path) -> str | None:
    if not path.is_file():
        return "not found" if not path.exists() else "not a file"
    if path.stat().st_size == 0:
        return "empty file (0 bytes)"
    return None


# ------------------------------------------------------------------ files
def check_image_file(path: Path, full: bool = True) -> Checked:
    """Check one image file (see the module docstring); ``size`` is its grid size when readable."""
    path = Path(path)
    out = Checked(n_files=1)
    fault = _empty_or_missing(path)
    if fault is None:
        if path.name.lower().endswith(_NIFTI):
            out.size, fault = _nifti(path, full)
        else:
            out.size, fault = _itk(path, full)
    if fault:
        out.faults.append((path, fault))
    return out


def nifti_fault(path: Path) -> str | None:
    """Why the NIfTI file ``path`` is unreadable or shorter than its header says, or None.

    ITK's NIfTI reader fills a truncated file (or gzip stream) silently; the data
    length is counted by streaming the file once (no full copy in memory).
    """
    return _nifti(Path(path), True)[1]


def _nifti(path: Path, full: bool) -> tuple[tuple[int, ...] | None, str | None]:
    import nibabel as nib

    gz = path.name.lower().endswith(".gz")
    have = path.stat().st_size
    if gz and full:  # first: a cut stream can also hide the header from nibabel
        have = 0
        try:
            with gzip.open(path, "rb") as fh:
                while chunk := fh.read(_CHUNK):
                    have += len(chunk)
        except gzip.BadGzipFile as exc:
            return None, f"not a gzip file, though named {path.name} ({exc})"
        except (OSError, EOFError, zlib.error) as exc:
            return None, f"corrupt or truncated gzip stream ({type(exc).__name__}: {exc})"
    try:
        proxy = nib.load(str(path)).dataobj  # its offset is the file's (img.header's is reset to 0)
        shape = tuple(int(s) for s in proxy.shape)
        need = int(proxy.offset) + int(np.prod(shape, dtype=np.int64)) * np.dtype(proxy.dtype).itemsize
    except Exception as exc:  # nibabel and gzip raise many types on a file that is not NIfTI
        return None, f"not a readable NIfTI image ({type(exc).__name__}: {exc})"
    if gz and not full:
        return shape, None
    if have < need:
        return shape, f"truncated NIfTI: {have} bytes, its header needs {need}"
    return shape, None


def _itk(path: Path, full: bool) -> tuple[tuple[int, ...] | None, str | None]:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        return None, f"unreadable image header ({_itk_reason(exc)})"
    size = tuple(int(s) for s in reader.GetSize())
    if full:
        try:
            reader.Execute()
        except RuntimeError as exc:
            return size, f"corrupt or truncated image data ({_itk_reason(exc)})"
    return size, None


# ----------------------------------------------------------------- folders
def check_dicom_folder(folder: Path, description: str | None = None, full: bool = True) -> Checked:
    """Check the DICOM series of a case folder: readable headers, no empty file, the series
    ``description`` names present, and (``full``) the chosen series read whole."""
    from medssl.data.readers import dicom_series, read_dicom_series

    folder = Path(folder)
    out = Checked()
    try:
        series = dicom_series(folder)
    except PreprocessError as exc:
        out.faults.append((folder, _reason(exc, folder)))
        return out
    listed = {str(Path(f)) for _, _, fs in series for f in fs}
    # GDCM leaves out a file it cannot parse (empty, cut short): the series then lacks a slice quietly
    for f in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        out.n_files += 1
        if f.stat().st_size == 0:
            out.faults.append((f, "empty file (0 bytes)"))
        elif str(f) not in listed and f.suffix.lower() in (".dcm", ""):
            out.faults.append((f, "not in any readable DICOM series (not DICOM, or corrupt or truncated)"))
    if description is not None and not any(description.lower() in d.lower() for _, d, _ in series):
        found = "; ".join(f"{d!r} ({len(f)} files)" for _, d, f in series)
        out.faults.append((folder, f"no DICOM series whose description contains {description!r}; "
                                   f"series there: {found}"))
    elif full and not out.faults:
        try:
            out.size = tuple(int(s) for s in read_dicom_series(folder, description).GetSize())
        except PreprocessError as exc:
            out.faults.append((folder, _reason(exc, folder)))
    return out


def check_slice_stack(folder: Path, slices: str = "*.png", full: bool = True) -> Checked:
    """Check every slice of a 2-D slice stack: present, readable, 2-D, all of one size."""
    from medssl.data.readers import natural_key

    folder = Path(folder)
    out = Checked()
    if not folder.is_dir():
        out.faults.append((folder, "slice folder not found"))
        return out
    files = sorted((p for p in folder.glob(slices) if p.is_file() and not p.name.startswith(".")),
                   key=lambda p: natural_key(p.name))
    if not files:
        out.faults.append((folder, f"no slice files match {slices!r}"))
        return out
    first: tuple[Path, tuple[int, ...]] | None = None
    for f in files:
        res = check_image_file(f, full)
        out.n_files += 1
        out.faults += res.faults
        if res.size is None or res.faults:
            continue
        if len(res.size) != 2:
            out.faults.append((f, f"expected a 2-D slice, got {len(res.size)}-D of size {res.size}"))
        elif first is None:
            first = (f, res.size)
        elif res.size != first[1]:
            out.faults.append((f, f"slice of {res.size[0]}x{res.size[1]} pixels differs from "
                                  f"{first[1][0]}x{first[1][1]} of {first[0]}"))
    if first is not None:
        out.size = (*first[1], len(files))
    return out


# ---------------------------------------------------------------- manifest
def _hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in rel.split("/"))


def manifest_changes(raw_dir: Path) -> list[tuple[str, str]] | None:
    """``(relative path, change)`` for every file added, removed or changed in size since
    ``raw_dir/manifest.json`` was written, sorted; ``None`` when there is no manifest.

    Hidden files and folders (``.DS_Store``, ``._x``: never a case of any layout)
    are left out. Sizes are compared, not md5 digests: a stat per file, no read.
    """
    from medssl.data.fetch import MANIFEST, listed_files

    raw_dir = Path(raw_dir)
    manifest = raw_dir / MANIFEST
    if not manifest.is_file():
        return None
    try:
        doc = json.loads(manifest.read_text(encoding="utf-8"))
        recorded = {str(e["path"]): int(e["size"]) for e in doc["files"]}
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        return [(MANIFEST, f"unreadable manifest ({type(exc).__name__}: {exc})")]
    current = {rel: p.stat().st_size for rel, p in listed_files(raw_dir) if not _hidden(rel)}
    out = []
    for rel in sorted(recorded.keys() | current.keys()):
        if _hidden(rel):
            continue
        if rel not in recorded:
            out.append((rel, f"added since fetch ({current[rel]} bytes, not in {MANIFEST})"))
        elif rel not in current:
            out.append((rel, f"removed since fetch (listed in {MANIFEST})"))
        elif recorded[rel] != current[rel]:
            out.append((rel, f"changed since fetch: {recorded[rel]} bytes in {MANIFEST}, {current[rel]} now"))
    return out
