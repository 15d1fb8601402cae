"""Atomic, deterministic file writing shared by every stage.

Every output of the pipeline is written to a temporary name in the target
folder and renamed into place, so an interrupted job never leaves a file that
looks finished. NIfTI files are gzip-compressed with a zero timestamp and no
embedded file name, so the same array and affine always give the same bytes
(which is what lets ``data.dvc`` verify a fresh phantom fetch).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

PathLike = str | os.PathLike


def _process_umask() -> int:
    """The process's umask (read once: ``os.umask`` can only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp creates its file 0600 whatever the umask; outputs get the mode a plain open() would
# give them, so colleagues sharing a project (group-readable umask on a cluster) can read them.
FILE_MODE = 0o666 & ~_process_umask()


@contextlib.contextmanager
def atomic_path(path: PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    On an exception the temporary file is removed and ``path`` is untouched.
    The file gets :data:`FILE_MODE` (0666 less the umask), as ``open(path, "w")``
    would give it, not ``mkstemp``'s private 0600.
    ``suffix`` lets writers that infer the format from the name (``.nii.gz``)
    see the right extension.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, FILE_MODE)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: PathLike, obj: Any) -> Any:
    """Write ``obj`` as indented, key-sorted, strict JSON to ``path`` atomically.

    Strict JSON has no NaN or Infinity (Python's ``json`` would write the bare
    tokens ``NaN`` / ``Infinity``, which strict readers reject), so every
    non-finite float (Python, NumPy scalar or array element) is written as
    ``null``. When ``obj`` is a dict, its ``"undefined"`` entry then maps the
    dotted path of every such value (``"metrics.auc"``, ``"per_case.3.hd95"``)
    to why it is missing: the reason the producer already put there under
    that path (e.g. from :func:`medssl.metrics.undefined_reasons`), else
    ``"non-finite value (nan) written as null"``. Readers treat ``null`` as a
    missing value.

    Returns:
        the object as written (plain JSON types, ``None`` for the non-finite
        floats), so a caller can return exactly what is on disk.
    """
    nulled: dict[str, str] = {}
    clean = _finite(obj, "", nulled)
    if nulled and isinstance(clean, dict):
        given = clean.get("undefined") if isinstance(clean.get("undefined"), dict) else {}
        clean["undefined"] = {**{k: f"non-finite value ({v}) written as null" for k, v in nulled.items()}, **given}
    write_text(path, json.dumps(clean, indent=2, sort_keys=True, allow_nan=False) + "\n")
    return clean


def _finite(obj: Any, where: str, nulled: dict[str, str]) -> Any:
    """``obj`` as plain JSON types with non-finite floats replaced by None (their paths go to ``nulled``)."""
    if isinstance(obj, dict):
        return {k: _finite(v, f"{where}.{k}" if where else str(k), nulled) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v, f"{where}.{i}" if where else str(i), nulled) for i, v in enumerate(obj)]
    if isinstance(obj, (np.ndarray, np.generic)) and not isinstance(obj, (np.bool_, np.str_, np.bytes_)):
        return _finite(obj.tolist(), where, nulled)
    if isinstance(obj, float) and not math.isfinite(obj):
        nulled[where] = repr(obj)
        return None
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return _json_default(obj)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def nifti_bytes(array: np.ndarray, affine: np.ndarray, dtype: Any = None) -> bytes:
    """Serialise ``array`` with ``affine`` to deterministic ``.nii.gz`` bytes.

    Args:
        array: image data in voxel order (i, j, k[, ...]).
        affine: 4x4 voxel-to-world (RAS+ mm) matrix.
        dtype: on-disk data type; defaults to the array's.
    """
    import nibabel as nib

    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got shape {affine.shape}")
    arr = np.asarray(array) if dtype is None else np.asarray(array, dtype=dtype)
    img = nib.Nifti1Image(arr, affine)
    img.header.set_data_dtype(arr.dtype)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header["xyzt_units"] = 2 + 8  # mm, s
    return gzip.compress(img.to_bytes(), compresslevel=6, mtime=0)


def save_nifti(path: PathLike, array: np.ndarray, affine: np.ndarray, dtype: Any = None) -> None:
    """Write a deterministic ``.nii.gz`` atomically (see :func:`nifti_bytes`)."""
    write_bytes(path, nifti_bytes(array, affine, dtype))


def load_nifti(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI file fully, returning ``(array, affine)``.

    Raises:
        ValueError: naming the file when it is missing, truncated or not NIfTI.
    """
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: file not found")
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise ValueError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from exc
    return data, np.asarray(img.affine, dtype=np.float64)
