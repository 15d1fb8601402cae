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
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

PathLike = str | os.PathLike


@contextlib.contextmanager
def atomic_path(path: PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    On an exception the temporary file is removed and ``path`` is untouched.
    ``suffix`` lets writers that infer the format from the name (``.nii.gz``)
    see the right extension.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
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


def write_json(path: PathLike, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


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
