"""Slices from preprocessed NIfTI volumes and from in-memory phantoms."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from medssl.uda.data import load_slices, phantom_slices, robust_scale


def _save(path, array, spacing=(1.5, 1.5, 10.0)):
    nib.save(nib.Nifti1Image(array, np.diag([*spacing, 1.0])), str(path))
    return str(path)


@pytest.fixture
def volumes(tmp_path):
    g = np.random.default_rng(0)
    entries = []
    for case, s in (("p1", 3), ("p2", 2)):
        img = g.normal(100, 20, (16, 12, s)).astype(np.float32)
        lab = g.integers(0, 4, (16, 12, s)).astype(np.uint8)
        entries.append({"case": case, "image": _save(tmp_path / f"{case}_img.nii.gz", img),
                        "label": _save(tmp_path / f"{case}_lab.nii.gz", lab), "_img": img, "_lab": lab})
    return entries


def test_slices_groups_and_spacing(volumes):
    s = load_slices(volumes)
    assert s.x.shape == (5, 1, 16, 12) and s.x.dtype == torch.float32
    assert s.y.shape == (5, 16, 12) and s.y.dtype == torch.long
    assert s.groups == [("p1", 0, 3), ("p2", 3, 5)]
    assert s.spacing == pytest.approx((1.5, 1.5, 10.0))
    assert torch.allclose(s.x[4, 0], torch.from_numpy(robust_scale(volumes[1]["_img"])[..., 1]))
    assert torch.equal(s.y[1], torch.from_numpy(volumes[0]["_lab"][..., 1].astype(np.int64)))
    raw = load_slices(volumes, normalize=False)
    assert torch.equal(raw.x[0, 0], torch.from_numpy(volumes[0]["_img"][..., 0]))
    assert float(s.x.min()) == 0.0 and float(s.x.max()) == 1.0


def test_images_only_for_the_unlabelled_target(volumes, tmp_path):
    entries = [{"case": e["case"], "image": e["image"], "label": str(tmp_path / "absent.nii.gz")} for e in volumes]
    s = load_slices(entries, labels=False)  # the label paths are never opened
    assert s.y is None and s.x.shape == (5, 1, 16, 12) and s.groups == [("p1", 0, 3), ("p2", 3, 5)]
    assert torch.equal(s.x, load_slices(volumes).x)
    assert load_slices([{"image": volumes[0]["image"]}], labels=False).groups == [("p1_img.nii.gz", 0, 3)]
    with pytest.raises(ValueError, match="has no 'label'"):
        load_slices([{"image": volumes[0]["image"]}])


def test_errors_name_the_file(volumes, tmp_path):
    bad = dict(volumes[0], label=_save(tmp_path / "short.nii.gz", np.zeros((16, 12, 2), np.uint8)))
    with pytest.raises(ValueError, match="short.nii.gz"):
        load_slices([bad])
    junk = tmp_path / "junk.nii.gz"
    junk.write_text("not a nifti")
    with pytest.raises(ValueError, match="cannot read image .*junk.nii.gz"):
        load_slices([dict(volumes[0], image=str(junk))])
    other = _save(tmp_path / "wide.nii.gz", np.zeros((16, 14, 3), np.float32))
    other_lab = _save(tmp_path / "wide_lab.nii.gz", np.zeros((16, 14, 3), np.uint8))
    with pytest.raises(ValueError, match="wide.nii.gz is"):
        load_slices([volumes[0], {"case": "w", "image": other, "label": other_lab}])
    fine = _save(tmp_path / "fine.nii.gz", np.zeros((16, 12, 3), np.float32), (1.0, 1.0, 10.0))
    with pytest.raises(ValueError, match="fine.nii.gz has spacing"):
        load_slices([volumes[0], dict(volumes[0], image=fine)])
    with pytest.raises(ValueError, match="entries is empty"):
        load_slices([])


def test_phantom_slices():
    s = phantom_slices("lge", 2, shape=(64, 64, 3), spacing=(2.25, 2.25, 10.0), seed=1, start=5)
    assert s.x.shape == (6, 1, 64, 64) and s.y.shape == (6, 64, 64)
    assert s.groups == [("lge_005", 0, 3), ("lge_006", 3, 6)]
    assert set(s.y.unique().tolist()) == {0, 1, 2, 3}
