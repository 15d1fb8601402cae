from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

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


def _strict(text: str):
    """json.loads that rejects the NaN / Infinity tokens (as strict JSON readers do)."""
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")
    return json.loads(text, parse_constant=refuse)


def test_write_json_writes_null_for_non_finite_floats_and_says_where(tmp_path):
    path = tmp_path / "m.json"
    obj = {"metrics": {"auc": float("nan"), "dice": np.float32(0.5), "hd95": np.float64(np.inf), "n": np.int64(3)},
           "per_case": [{"d": np.array([1.0, -np.inf])}], "ok": True, "flag": np.bool_(False),
           "undefined": {"metrics.auc": "one class only"}}
    written = io.write_json(path, obj)
    got = _strict(path.read_text())
    assert got == written
    assert got["metrics"] == {"auc": None, "dice": 0.5, "hd95": None, "n": 3}
    assert got["per_case"] == [{"d": [1.0, None]}] and got["ok"] is True and got["flag"] is False
    assert got["undefined"]["metrics.auc"] == "one class only"  # the producer's reason is kept
    assert set(got["undefined"]) == {"metrics.auc", "metrics.hd95", "per_case.0.d.1"}
    assert "inf" in got["undefined"]["metrics.hd95"] and "null" in got["undefined"]["per_case.0.d.1"]
    assert obj["metrics"]["auc"] != obj["metrics"]["auc"]  # the caller's object is not modified


def test_write_json_leaves_finite_records_alone(tmp_path):
    path = tmp_path / "m.json"
    rec = {"b": [1, 2.5, "x", None], "a": {"p": Path("/x")}}
    assert io.write_json(path, rec) == {"b": [1, 2.5, "x", None], "a": {"p": "/x"}}
    assert path.read_text() == json.dumps({"a": {"p": "/x"}, "b": [1, 2.5, "x", None]}, indent=2) + "\n"
    with pytest.raises(TypeError, match="not JSON serialisable: object"):
        io.write_json(path, {"x": object()})


@pytest.mark.parametrize("umask", [0o002, 0o022, 0o077])
def test_written_files_get_the_mode_open_gives_them_under_the_umask(tmp_path, umask):
    """Issue 16 item 14: mkstemp's 0600 made every output private whatever the umask. Each writer
    (JSON, NIfTI, torch state, safetensors checkpoint) must give the mode a plain open() gives."""
    code = f"""
import os, stat, sys
os.umask({umask:#o})
from pathlib import Path
import numpy as np, torch
from medssl.io import write_json, save_nifti
from medssl.train.resume import save_state
d = Path(sys.argv[1])
open(d / "plain.txt", "w").close()
write_json(d / "m.json", {{"a": 1}})
save_nifti(d / "x.nii.gz", np.zeros((2, 2, 2), np.float32), np.eye(4))
save_state(d / "state.pt", {{"w": torch.zeros(2)}})
for name in ("plain.txt", "m.json", "x.nii.gz", "state.pt"):
    print(name, oct(stat.S_IMODE((d / name).stat().st_mode)))
"""
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True)
    modes = dict(line.split() for line in out.stdout.splitlines())
    assert modes["plain.txt"] == oct(0o666 & ~umask)
    assert modes == {k: modes["plain.txt"] for k in modes}, modes
