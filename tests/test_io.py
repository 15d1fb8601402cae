from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from medssl import io


def test_atomic_path_success_and_failure(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    io.write_text(target, "done")
    assert target.read_text() == "done"
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "done"  # untouched
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]  # no temp left


def test_nifti_bytes_deterministic_and_readable(tmp_path):
    arr = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    aff = np.diag([-0.8, -0.8, 2.5, 1.0])
    a, b = io.nifti_bytes(arr, aff), io.nifti_bytes(arr, aff)
    assert a == b
    assert gzip.decompress(a)[:4] == (348).to_bytes(4, "little")  # NIfTI-1 header size
    path = tmp_path / "x.nii.gz"
    io.save_nifti(path, arr, aff)
    img = nib.load(path)
    np.testing.assert_array_equal(np.asarray(img.dataobj), arr)
    np.testing.assert_allclose(img.affine, aff)
    assert nib.aff2axcodes(img.affine) == ("L", "P", "S")
    assert img.header.get_zooms() == pytest.approx((0.8, 0.8, 2.5))


def test_load_nifti_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="missing.nii.gz: file not found"):
        io.load_nifti(tmp_path / "missing.nii.gz")
    path = tmp_path / "cut.nii.gz"
    data = io.nifti_bytes(np.zeros((8, 8, 8), np.float32), np.eye(4))
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.nii.gz: not a readable NIfTI"):
        io.load_nifti(path)


def test_affine_shape_checked():
    with pytest.raises(ValueError, match="4x4"):
        io.nifti_bytes(np.zeros((2, 2, 2)), np.eye(3))
