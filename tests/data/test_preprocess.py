"""Tests of medssl.data.preprocess and medssl.data.intensity (tiny volumes)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from monai.data import load_decathlon_datalist
from scipy import ndimage

from medssl.config import DatasetSpec, Intensity, Recipe
from medssl.data.intensity import apply_intensity, crop_or_pad
from medssl.data.preprocess import PreprocessError, preprocess_case, preprocess_dataset, ras_affine, to_ras
from medssl.io import save_nifti

SHAPE = (20, 16, 10)
# LPS-like affine as the phantoms write it: i -> L, j -> P, k -> S, anisotropic.
LPS = np.array([[-1.5, 0, 0, 30.0], [0, -2.0, 0, 40.0], [0, 0, 3.0, -10.0], [0, 0, 0, 1]])
# A permuted one: i -> S, j -> L, k -> A.
PERMUTED = np.array([[0, -2.0, 0, 12.0], [0, 0, 1.5, -7.0], [3.0, 0, 0, 5.0], [0, 0, 0, 1]])


def blob_image() -> np.ndarray:
    """Zeros with a bright asymmetric block near one corner (away from the border)."""
    a = np.zeros(SHAPE, dtype=np.float32)
    a[2:5, 3:6, 2:4] = 100.0
    a[2, 3, 2] = 200.0
    return a


def smooth_image(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.normal(size=SHAPE), 1.5).astype(np.float32) * 100


def world_centroid(array: np.ndarray, affine: np.ndarray) -> np.ndarray:
    w = np.clip(array, 0, None).astype(np.float64)
    idx = np.indices(array.shape).reshape(3, -1)
    c = (idx * w.reshape(-1)).sum(1) / w.sum()
    return affine[:3, :3] @ c + affine[:3, 3]


def write(path: Path, array: np.ndarray, affine: np.ndarray = LPS) -> Path:
    save_nifti(path, array, affine)
    return path


# ------------------------------------------------------------------ geometry
def test_itk_orientation_convention():
    """DICOMOrient('RAS') gives LPS-world direction diag(-1,-1,1), which nibabel reads as RAS."""
    img = sitk.GetImageFromArray(np.zeros((2, 3, 4), np.float32))
    out = to_ras(img)  # identity direction (ITK "LPS" axes) -> flipped x, y
    np.testing.assert_allclose(np.reshape(out.GetDirection(), (3, 3)), np.diag([-1.0, -1.0, 1.0]))
    assert nib.aff2axcodes(ras_affine(out)) == ("R", "A", "S")

def test_ras_affine_matches_nibabel(tmp_path):
    f = write(tmp_path / "x.nii.gz", blob_image(), PERMUTED)
    np.testing.assert_allclose(ras_affine(sitk.ReadImage(str(f))), nib.load(f).affine, atol=1e-5)


@pytest.mark.parametrize("affine", [LPS, PERMUTED], ids=["lps", "permuted"])
def test_orientation_spacing_and_blob_position(tmp_path, affine):
    a = blob_image()
    f = write(tmp_path / "x.nii.gz", a, affine)
    img, lab, out_aff = preprocess_case(f, None, Recipe(spacing=(2.0, 2.0, 2.0)), None)
    assert lab is None and img.dtype == np.float32
    g = write(tmp_path / "out.nii.gz", img, out_aff)
    written = nib.load(g)
    assert nib.aff2axcodes(written.affine) == ("R", "A", "S")
    np.testing.assert_allclose(written.header.get_zooms(), (2.0, 2.0, 2.0), atol=1e-6)
    # same physical extent: round(n * s / 2) voxels per axis
    extent = np.abs(affine[:3, :3]).sum(0) * SHAPE  # per voxel axis of the input
    expected_shape = sorted(np.floor(extent / 2.0 + 0.5).astype(int))
    assert sorted(img.shape) == expected_shape
    np.testing.assert_allclose(world_centroid(img, out_aff), world_centroid(a, affine), atol=1.0)


@pytest.mark.parametrize("affine", [LPS, PERMUTED], ids=["lps", "permuted"])
@pytest.mark.parametrize("spacing", [(2.0, 2.0, 2.0), (1.0, 2.5, 1.25)])
def test_resampling_matches_nibabel_scipy(tmp_path, affine, spacing):
    """Independent path: nibabel canonical reorientation + scipy linear interpolation."""
    a = smooth_image()
    f = write(tmp_path / "x.nii.gz", a, affine)
    img, _, out_aff = preprocess_case(f, None, Recipe(spacing=spacing), None)
    canon = nib.as_closest_canonical(nib.load(f))
    data, zooms = np.asarray(canon.dataobj, dtype=np.float64), np.asarray(canon.header.get_zooms())
    expected_aff = canon.affine.copy()
    expected_aff[:3, :3] = np.diag(spacing)
    np.testing.assert_allclose(out_aff, expected_aff, atol=1e-5)
    size = np.floor(np.array(data.shape) * zooms / spacing + 0.5).astype(int)
    assert img.shape == tuple(size)
    coords = np.indices(size).reshape(3, -1) * (np.asarray(spacing) / zooms)[:, None]
    ref = ndimage.map_coordinates(data, coords, order=1, mode="nearest").reshape(size)
    np.testing.assert_allclose(img, ref, atol=1e-3)


def test_labels_nearest_neighbour_keep_values(tmp_path):
    a = smooth_image(1)
    lab = np.zeros(SHAPE, dtype=np.uint8)
    lab[a > 20] = 2
    lab[a > 60] = 5
    lab[a < -40] = 3
    fi, fl = write(tmp_path / "i.nii.gz", a), write(tmp_path / "l.nii.gz", lab)
    for spacing in [(1.0, 1.0, 1.0), (3.0, 3.0, 2.0), (1.1, 2.9, 4.3)]:
        img, out, aff = preprocess_case(fi, fl, Recipe(spacing=spacing), n_classes=6)
        assert out.dtype == np.uint8 and out.shape == img.shape
        assert set(np.unique(out)) <= {0, 2, 3, 5}
    # upsampling by 2 along each axis: every even output voxel is an input voxel centre
    img, out, aff = preprocess_case(fi, fl, Recipe(spacing=(0.75, 1.0, 1.5)), n_classes=6)
    canon = np.asarray(nib.as_closest_canonical(nib.load(fl)).dataobj)
    assert out.shape == (40, 32, 20)
    np.testing.assert_array_equal(out[::2, ::2, ::2], canon)


# ----------------------------------------------------------------- intensity
INTENSITY_CASES = [
    (Intensity(kind="ct", clip=(-100, 100)), [-200, -100, 0, 50, 100, 300], [0, 0, 0.5, 0.75, 1, 1]),
    (Intensity(kind="ct", clip=(0, 2048)), [-5, 512, 1024, 4096], [0, 0.25, 0.5, 1]),
    (Intensity(kind="minmax"), [2, 4, 6, 10], [0, 0.25, 0.5, 1]),
    (Intensity(kind="minmax"), [7, 7, 7], [0, 0, 0]),
    (Intensity(kind="percentile", percentiles=(0, 100)), [2, 4, 6, 10], [0, 0.25, 0.5, 1]),
    (Intensity(kind="percentile", percentiles=(25, 75)), [0, 1, 2, 3, 4], [0, 0, 0.5, 1, 1]),
    (Intensity(kind="percentile", percentiles=(10, 90)), [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100],
     [0, 0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1, 1]),
    (Intensity(kind="none"), [-3.5, 0, 1e4], [-3.5, 0, 1e4]),
]


@pytest.mark.parametrize(("intensity", "x", "expected"), INTENSITY_CASES)
def test_intensity_recipes(intensity, x, expected):
    y = apply_intensity(np.asarray(x, dtype=np.int16 if intensity.kind == "ct" else np.float64), intensity)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, expected, atol=1e-6)


# ------------------------------------------------------------ crop and pad
CROP_CASES = [  # (n, m) -> kept input indices (-1: padding) and start
    (6, 3, [1, 2, 3], 1),
    (5, 2, [1, 2], 1),
    (5, 4, [0, 1, 2, 3], 0),
    (4, 4, [0, 1, 2, 3], 0),
    (3, 6, [-1, 0, 1, 2, -1, -1], -1),
    (2, 5, [-1, 0, 1, -1, -1], -1),
    (1, 4, [-1, 0, -1, -1], -1),
]


@pytest.mark.parametrize(("n", "m", "kept", "start"), CROP_CASES)
def test_crop_or_pad_1d(n, m, kept, start):
    out, s = crop_or_pad(np.arange(n), (m,), pad_value=-1)
    np.testing.assert_array_equal(out, kept)
    assert s.tolist() == [start]


def test_crop_or_pad_3d_mixed():
    a = np.arange(6 * 3 * 4).reshape(6, 3, 4)
    out, start = crop_or_pad(a, (3, 6, 4), pad_value=-7)
    assert out.shape == (3, 6, 4) and start.tolist() == [1, -1, 0]
    np.testing.assert_array_equal(out[:, 1:4, :], a[1:4])
    assert (out[:, [0, 4, 5], :] == -7).all()
    with pytest.raises(ValueError, match="roi"):
        crop_or_pad(a, (3, 6), 0)


def test_case_roi_shape_position_and_pad_value(tmp_path):
    a = blob_image() - 50.0  # background -50 -> 0.25 under ct clip (-100, 100)
    lab = (a > 0).astype(np.uint8)
    fi, fl = write(tmp_path / "i.nii.gz", a), write(tmp_path / "l.nii.gz", lab)
    recipe = Recipe(spacing=(2.0, 2.0, 2.0), intensity=Intensity(kind="ct", clip=(-100, 100)), roi=(12, 20, 24))
    img, out, aff = preprocess_case(fi, fl, recipe, n_classes=2)
    assert img.shape == out.shape == (12, 20, 24)  # resampled (15, 16, 15): crop x, pad y and z
    np.testing.assert_allclose(world_centroid(out.astype(float), aff), world_centroid(lab.astype(float), LPS),
                               atol=1.0)
    assert img[0, 0, 0] == pytest.approx(0.25) and img.min() == pytest.approx(0.25)
    assert out[:, 0, :].max() == 0 and img[:, 0, :].max() == pytest.approx(0.25)  # padded rows
    nocrop, _, aff0 = preprocess_case(fi, None, recipe.model_copy(update={"roi": None}), None)
    np.testing.assert_allclose(img[:, 2:18, 4:19], nocrop[1:13], atol=1e-6)
    np.testing.assert_allclose(aff[:3, 3], aff0[:3, :3] @ [1, -2, -4] + aff0[:3, 3])


# ---------------------------------------------------------------- bad input
def test_bad_case_inputs(tmp_path):
    a, lab = blob_image(), (blob_image() > 0).astype(np.uint8)
    good, goodl = write(tmp_path / "i.nii.gz", a), write(tmp_path / "l.nii.gz", lab)
    blob = good.read_bytes()
    (tmp_path / "trunc.nii.gz").write_bytes(blob[: len(blob) // 2])
    (tmp_path / "short.nii.gz").write_bytes(gzip.compress(gzip.decompress(blob)[:2000]))
    (tmp_path / "junk.nii.gz").write_bytes(b"not an image" * 40)
    write(tmp_path / "shape.nii.gz", lab[:, :, :9])
    moved = LPS.copy()
    moved[0, 3] += 5.0
    write(tmp_path / "grid.nii.gz", lab, moved)
    bad = lab.copy()
    bad[0, 0, 0], bad[1, 0, 0] = 3, 7
    write(tmp_path / "values.nii.gz", bad)
    write(tmp_path / "frac.nii.gz", lab * 0.5)
    write(tmp_path / "four.nii.gz", np.zeros((4, 4, 4, 2), np.float32), np.eye(4))
    write(tmp_path / "two.nii.gz", np.zeros((4, 4), np.float32), np.eye(4))
    r = Recipe(spacing=(2.0, 2.0, 2.0))
    cases = [
        ("trunc.nii.gz", None, "corrupt"), ("short.nii.gz", None, "truncated"),
        ("junk.nii.gz", None, "not a gzip file"), ("four.nii.gz", None, "3D"), ("two.nii.gz", None, "3D"),
        ("missing.nii.gz", None, "not found"), ("i.nii.gz", "shape.nii.gz", "size"),
        ("i.nii.gz", "grid.nii.gz", "grid"), ("i.nii.gz", "values.nii.gz", "outside 0..1: 3, 7"),
        ("i.nii.gz", "frac.nii.gz", "outside 0..1: 0.5"), ("i.nii.gz", "trunc.nii.gz", "corrupt"),
    ]
    for image, label, msg in cases:
        culprit = tmp_path / (label or image)
        with pytest.raises(PreprocessError, match=msg) as err:
            preprocess_case(tmp_path / image, tmp_path / label if label else None, r, 2)
        assert str(culprit) in str(err.value)
    preprocess_case(good, goodl, r, 2)  # the good pair passes


# ------------------------------------------------------------------ dataset
def make_raw(root: Path, task: str, n: int = 4) -> Path:
    training = []
    for k in range(n):
        a = blob_image() + k
        item = {"image": f"./imagesTr/c{k}.nii.gz"}
        write(root / "imagesTr" / f"c{k}.nii.gz", a)
        if task == "segmentation":
            write(root / "labelsTr" / f"c{k}.nii.gz", (a > 50).astype(np.uint8))
            item["label"] = f"./labelsTr/c{k}.nii.gz"
        elif task == "classification":
            item["label"] = k % 2
        training.append(item)
    (root / "dataset.json").write_text(json.dumps({"name": "t", "training": training}))
    return root


def spec(task: str, **kw) -> DatasetSpec:
    return DatasetSpec(task=task, classes=[] if task == "pretrain" else ["a", "b"],
                       source={"kind": "synthetic", "n_cases": 4},
                       recipe=Recipe(spacing=(3.0, 3.0, 3.0), intensity=Intensity(kind="minmax"), roi=(8, 8, 8)),
                       splits={"validation": 1, "test": 0.25, "seed": 0}, **kw)


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("task", ["segmentation", "classification", "pretrain"])
def test_preprocess_dataset(tmp_path, task):
    raw, out = make_raw(tmp_path / "raw", task), tmp_path / "proc" / "ds"
    assert preprocess_dataset("ds", spec(task), raw, out, progress=False) == out
    doc = json.loads((out / "datalist.json").read_text())
    assert [len(doc[s]) for s in ("training", "validation", "test")] == [2, 1, 1]
    assert doc["recipe"]["roi"] == [8, 8, 8] and doc["task"] == task
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"c{k}.nii.gz" for k in range(4)]
    assert (out / "labels").is_dir() == (task == "segmentation")
    items = load_decathlon_datalist(out / "datalist.json", is_segmentation=task == "segmentation",
                                    data_list_key="training", base_dir=out)
    for item in items:
        img = nib.load(item["image"])
        assert img.shape == (8, 8, 8) and nib.aff2axcodes(img.affine) == ("R", "A", "S")
        if task == "segmentation":
            assert nib.load(item["label"]).get_data_dtype() == np.uint8
        elif task == "classification":
            assert item["label"] == int(item["case"][1:]) % 2
        else:
            assert "label" not in item
    assert leftovers(out.parent) == []
    first = {p.name: p.read_bytes() for p in (out / "images").iterdir()}
    preprocess_dataset("ds", spec(task), raw, out, progress=False)  # rerun: same bytes
    assert first == {p.name: p.read_bytes() for p in (out / "images").iterdir()}


def test_failed_rerun_keeps_complete_output(tmp_path):
    raw, out = make_raw(tmp_path / "raw", "segmentation"), tmp_path / "proc" / "ds"
    preprocess_dataset("ds", spec("segmentation"), raw, out, progress=False)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    bad = raw / "labelsTr" / "c3.nii.gz"
    write(bad, np.full(SHAPE, 4, np.uint8))
    with pytest.raises(PreprocessError, match="outside 0..1: 4") as err:
        preprocess_dataset("ds", spec("segmentation"), raw, out, progress=False)
    assert str(bad) in str(err.value)
    assert before == {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert leftovers(out.parent) == []


@pytest.mark.parametrize("fault", ["no_index", "no_image", "no_label", "bad_class", "corrupt"])
def test_missing_or_bad_raw_leaves_nothing(tmp_path, fault):
    task = "classification" if fault == "bad_class" else "segmentation"
    raw, out = make_raw(tmp_path / "raw", task), tmp_path / "proc" / "ds"
    culprit = {"no_index": raw / "dataset.json", "no_image": raw / "imagesTr" / "c2.nii.gz",
               "no_label": raw / "labelsTr" / "c1.nii.gz", "bad_class": raw / "dataset.json",
               "corrupt": raw / "imagesTr" / "c3.nii.gz"}[fault]
    if fault == "bad_class":
        doc = json.loads(culprit.read_text())
        doc["training"][1]["label"] = 2
        culprit.write_text(json.dumps(doc))
    elif fault == "corrupt":
        culprit.write_bytes(culprit.read_bytes()[:-20])
    else:
        culprit.unlink()
    with pytest.raises(PreprocessError) as err:
        preprocess_dataset("ds", spec(task), raw, out, progress=False)
    assert str(culprit) in str(err.value)
    if fault.startswith("no_"):
        assert "medssl fetch ds" in str(err.value)
    assert not out.exists()
    assert not out.parent.exists() or leftovers(out.parent) == []


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_intensities_are_refused_naming_file_and_count(tmp_path, value):
    a = blob_image()
    a[0, 0, :3] = value
    a[1, 1, 1] = np.nan
    f = write(tmp_path / "nonfinite.nii.gz", a)
    n_nan = 1 + (3 if np.isnan(value) else 0)
    with pytest.raises(PreprocessError, match=rf"{f}: 4 of {a.size} voxels are not finite \({n_nan} NaN, "
                                              rf"{4 - n_nan} infinite\)"):
        preprocess_case(f, None, Recipe(spacing=(2.0, 2.0, 2.0)), None)


def test_all_background_label_is_warned_and_marked(tmp_path, caplog):
    raw, out = make_raw(tmp_path / "raw", "segmentation"), tmp_path / "proc" / "ds"
    write(raw / "labelsTr" / "c2.nii.gz", np.zeros(SHAPE, np.uint8))
    with caplog.at_level("WARNING", logger="medssl"):
        preprocess_dataset("ds", spec("segmentation"), raw, out, progress=False)
    assert "case c2 has an all-background label" in caplog.text and str(raw / "labelsTr" / "c2.nii.gz") in caplog.text
    doc = json.loads((out / "datalist.json").read_text())
    marked = {e["case"]: e.get("empty_label", False) for s in ("training", "validation", "test") for e in doc[s]}
    assert marked == {"c0": False, "c1": False, "c2": True, "c3": False}


def test_non_finite_voxels_of_other_formats_are_refused(tmp_path):
    a = smooth_image()
    a[3, 3, 3] = np.nan
    f = tmp_path / "x.mha"
    sitk.WriteImage(sitk.GetImageFromArray(a), str(f))
    with pytest.raises(PreprocessError, match=rf"{f}: 1 of {a.size} voxels are not finite \(1 NaN, 0 infinite\)"):
        preprocess_case(f, None, Recipe(spacing=(2.0, 2.0, 2.0)), None)


@pytest.mark.parametrize("where", ["image", "label", "absolute"])
def test_paths_leaving_the_dataset_folder_are_refused(tmp_path, where):
    raw, out = make_raw(tmp_path / "raw", "segmentation"), tmp_path / "proc" / "ds"
    outside = write(tmp_path / "outside" / "x.nii.gz", blob_image())  # a valid file: it must not be read
    doc = json.loads((raw / "dataset.json").read_text())
    rel = str(outside) if where == "absolute" else "../outside/x.nii.gz"
    doc["training"][1]["label" if where == "label" else "image"] = rel
    (raw / "dataset.json").write_text(json.dumps(doc))
    with pytest.raises(PreprocessError, match=rf"{raw / 'dataset.json'}: path '{rel}' leaves the dataset folder"):
        preprocess_dataset("ds", spec("segmentation"), raw, out, progress=False)
    assert not out.exists()


def test_a_symlink_placed_inside_the_folder_is_followed(tmp_path):
    raw, out = make_raw(tmp_path / "raw", "segmentation"), tmp_path / "proc" / "ds"
    elsewhere = tmp_path / "disk2" / "c0.nii.gz"
    elsewhere.parent.mkdir()
    (raw / "imagesTr" / "c0.nii.gz").rename(elsewhere)
    (raw / "imagesTr" / "c0.nii.gz").symlink_to(elsewhere)
    preprocess_dataset("ds", spec("segmentation"), raw, out, progress=False)
    assert (out / "images" / "c0.nii.gz").is_file()


def test_an_uncompressed_nifti_short_by_less_than_its_header_is_refused(tmp_path):
    """The check took the data offset from a loaded image's header, where nibabel resets it to 0, so
    a .nii file missing fewer than 352 bytes of voxels passed (and ITK filled them in silently)."""
    from medssl.data.preprocess import read_image

    path = tmp_path / "short.nii"
    nib.save(nib.Nifti1Image(np.arange(8 * 8 * 8, dtype=np.float32).reshape(8, 8, 8), np.eye(4)), path)
    full = path.stat().st_size
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(PreprocessError, match=rf"short\.nii: truncated NIfTI: {full - 100} bytes, its header "
                                              rf"needs {full}"):
        read_image(path)
