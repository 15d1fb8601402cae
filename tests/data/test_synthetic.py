"""Tests of the synthetic CT torso phantoms (medssl.data.synthetic)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from scipy.ndimage import map_coordinates

from medssl.config import SyntheticSource
from medssl.data import anatomy, deform
from medssl.data.synthetic import CLASSES, STRUCTURES, generate, has_lesion, label_map, write_dataset

SMALL = {"shape": (48, 48, 24), "spacing": (6.6, 5.4, 13.4)}   # the full torso, coarse
FULL = {"shape": (96, 96, 48), "spacing": (3.3, 2.7, 6.7)}     # the full torso, finer


def source(**kw) -> SyntheticSource:
    args = {"kind": "synthetic", "n_cases": 3, "seed": 5, **SMALL}
    args.update(kw)
    return SyntheticSource(**args)


def voxel_world(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    vox = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    return vox @ affine[:3, :3].T + affine[:3, 3]


def mean_dice(a: np.ndarray, b: np.ndarray, n: int) -> float:
    return float(np.mean([2 * ((a == c) & (b == c)).sum() / max((a == c).sum() + (b == c).sum(), 1)
                          for c in range(1, n)]))


@pytest.fixture(scope="module")
def full_phantom():
    return generate(source(lesion_fraction=1.0, **FULL), 0)


# ------------------------------------------------------------ determinism
def test_same_source_same_arrays_different_seed_differs():
    a, b = generate(source(), 1), generate(source(n_cases=9), 1)  # n_cases does not matter
    for field in ("image", "structures", "affine", "displacement"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert a.lesion == b.lesion
    c = generate(source(seed=6), 1)
    assert not np.array_equal(a.structures, c.structures)
    assert not np.array_equal(a.image, c.image)
    d = generate(source(), 2)
    assert not np.array_equal(a.displacement, d.displacement)


def test_write_dataset_is_byte_deterministic(tmp_path):
    src = source(labels="organs", n_cases=2, shape=(24, 24, 12), spacing=(13.2, 10.8, 26.8))
    first = write_dataset(tmp_path / "a", src, progress=False, name="phantom_organs")
    second = write_dataset(tmp_path / "b", src, progress=False, name="phantom_organs")
    rel = [p.relative_to(tmp_path / "a").as_posix() for p in first]
    assert rel == [p.relative_to(tmp_path / "b").as_posix() for p in second]
    assert rel == ["imagesTr/phantom_000.nii.gz", "labelsTr/phantom_000.nii.gz",
                   "imagesTr/phantom_001.nii.gz", "labelsTr/phantom_001.nii.gz", "dataset.json"]
    for p, q in zip(first, second):
        assert p.read_bytes() == q.read_bytes(), p
    other = write_dataset(tmp_path / "c", source(labels="organs", n_cases=2, seed=6, shape=(24, 24, 12),
                                                 spacing=(13.2, 10.8, 26.8)), progress=False)
    assert other[0].read_bytes() != first[0].read_bytes()


# ------------------------------------------------------------- structures
def test_every_structure_present_in_full_size_phantom(full_phantom):
    present = set(np.unique(full_phantom.structures).tolist())
    missing = {name for name, i in STRUCTURES.items() if i not in present}
    assert not missing, missing
    assert full_phantom.lesion == 1


@pytest.mark.parametrize("labels", ["organs", "heart", "vessels"])
def test_label_maps_use_every_contiguous_id(full_phantom, labels):
    lab = label_map(full_phantom, labels)
    assert lab.dtype == np.uint8 and lab.shape == full_phantom.image.shape
    assert set(np.unique(lab).tolist()) == set(range(len(CLASSES[labels])))


def test_label_sets_and_structure_mapping(full_phantom):
    assert CLASSES["organs"] == ["background", "lungs", "heart", "aorta", "liver", "spleen", "kidneys", "spine"]
    assert CLASSES["heart"] == ["background", "LV", "RV", "LA", "RA", "myocardium"]
    assert sorted(STRUCTURES.values()) == list(range(len(STRUCTURES)))
    st = full_phantom.structures
    organs, heart = label_map(full_phantom, "organs"), label_map(full_phantom, "heart")
    assert np.all(organs[st == STRUCTURES["kidney_left"]] == 6) and np.all(organs[st == STRUCTURES["lv"]] == 2)
    assert np.all(organs[st == STRUCTURES["rib"]] == 0) and np.all(organs[st == STRUCTURES["vertebra"]] == 7)
    assert np.all(heart[st == STRUCTURES["myocardium"]] == 5) and np.all(heart[organs != 2] == 0)
    assert label_map(full_phantom, "lesion") == 1
    with pytest.raises(ValueError, match="'none'"):
        label_map(full_phantom, "none")


def test_anatomy_sits_where_the_affine_says(full_phantom):
    """World positions (RAS) of organ centroids match the anatomy: liver right, heart left, spine back."""
    world = voxel_world(full_phantom.affine, full_phantom.image.shape)
    organs = label_map(full_phantom, "organs").ravel()
    centre = {c: world[organs == i].mean(0) for i, c in enumerate(CLASSES["organs"]) if i}
    assert centre["liver"][0] > 20 and centre["spleen"][0] < -20 and centre["heart"][0] < 0  # x: +right
    assert centre["spine"][1] < -40 and centre["heart"][1] > 10                               # y: +anterior
    assert centre["lungs"][2] > centre["liver"][2] > centre["kidneys"][2]                     # z: +superior


# ------------------------------------------------------------------ lesion
def test_lesion_share_follows_lesion_fraction():
    src = source(lesion_fraction=0.3)
    share = np.mean([has_lesion(src, i) for i in range(400)])
    assert abs(share - 0.3) < 0.07
    assert sum(has_lesion(source(lesion_fraction=0.0), i) for i in range(50)) == 0
    assert sum(has_lesion(source(lesion_fraction=1.0), i) for i in range(50)) == 50


def test_lesion_voxels_exist_exactly_when_labelled():
    src = source(lesion_fraction=0.5, shape=(40, 40, 20), spacing=(8.0, 8.0, 16.0))
    flags = []
    for i in range(10):
        ph = generate(src, i)
        n = int((ph.structures == STRUCTURES["lesion"]).sum())
        assert ph.lesion == has_lesion(src, i)
        assert (n > 0) == (ph.lesion == 1), (i, ph.lesion, n)
        flags.append(ph.lesion)
    assert 0 < sum(flags) < 10


# ------------------------------------------------------------------ geometry
def test_affine_is_lps_and_nifti_round_trip(tmp_path):
    src = source(labels="lesion", n_cases=2, shape=(20, 18, 10), spacing=(12.0, 11.0, 25.0))
    files = write_dataset(tmp_path, src, progress=False)
    img = nib.load(str(files[0]))
    assert nib.aff2axcodes(img.affine) == ("L", "P", "S")
    np.testing.assert_allclose(img.header.get_zooms(), src.spacing, rtol=1e-6)
    assert img.shape == src.shape and img.get_data_dtype() == np.int16
    ph = generate(src, 0)
    np.testing.assert_allclose(img.affine, ph.affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(img.dataobj), np.clip(np.rint(ph.image), -1024, 3071))
    assert np.diag(ph.affine)[:3].tolist() == [-12.0, -11.0, 25.0]
    corners = voxel_world(ph.affine, src.shape)
    np.testing.assert_allclose((corners.min(0) + corners.max(0)) / 2, 0.0, atol=1e-9)  # FOV centred
    assert not (tmp_path / "labelsTr").exists()


def test_template_is_scaled_to_fill_the_field_of_view():
    """The same subject at half the extent is the same anatomy at half the size."""
    big = generate(source(**FULL), 0)
    small = generate(source(shape=(96, 96, 48), spacing=(1.65, 1.35, 3.35)), 0)
    assert deform.Geometry((96, 96, 48), (1.65, 1.35, 3.35)).scale == pytest.approx(0.5 * deform.Geometry(
        (96, 96, 48), (3.3, 2.7, 6.7)).scale)
    assert (big.structures == small.structures).mean() > 0.999
    p_big = big.displacement + voxel_world(big.affine, FULL["shape"]).reshape(big.displacement.shape)
    p_small = small.displacement + voxel_world(small.affine, FULL["shape"]).reshape(big.displacement.shape)
    np.testing.assert_allclose(p_big, p_small, atol=1e-2)  # the same template positions


# --------------------------------------------------------- ground truth map
def test_template_evaluated_at_displaced_positions_gives_the_structures():
    src = source(lesion_fraction=1.0)
    ph = generate(src, 0)
    subject = deform.sample_subject(deform.Geometry(src.shape, src.spacing), src.seed, 0, src.lesion_fraction)
    p = voxel_world(ph.affine, src.shape) + ph.displacement.reshape(-1, 3)
    st = anatomy.render(p[:, 0], p[:, 1], p[:, 2], lesion=subject.lesion).reshape(src.shape)
    assert (st == ph.structures).mean() > 0.999
    assert ph.displacement.dtype == np.float32 and ph.displacement.shape == (*src.shape, 3)


def test_warping_through_the_template_aligns_two_subjects():
    src = source(lesion_fraction=0.0)
    a, b = generate(src, 0), generate(src, 1)
    la, lb = label_map(a, "organs"), label_map(b, "organs")
    shape, n = la.shape, len(CLASSES["organs"])
    before = mean_dice(la, lb, n)
    world = voxel_world(a.affine, shape)                      # same grid for both subjects
    pa, pb = world + a.displacement.reshape(-1, 3), world + b.displacement.reshape(-1, 3)
    # Invert a's map at b's template positions: Newton steps with the affine fit of a's map.
    fit, *_ = np.linalg.lstsq(np.c_[world, np.ones(len(world))], pa, rcond=None)
    lin_inv = np.linalg.inv(fit[:3].T)
    to_vox = np.linalg.inv(a.affine)
    x = (pb - fit[3]) @ lin_inv.T
    for _ in range(10):
        v = (x @ to_vox[:3, :3].T + to_vox[:3, 3]).T
        d = np.stack([map_coordinates(a.displacement[..., c], v, order=1, mode="nearest") for c in range(3)], -1)
        x -= (x + d - pb) @ lin_inv.T
    v = (x @ to_vox[:3, :3].T + to_vox[:3, 3]).T
    warped = map_coordinates(la, v, order=0, mode="constant", cval=0).reshape(shape)
    after = mean_dice(warped, lb, n)
    assert before < 0.8, before          # subjects really differ
    assert after > 0.85 and after > before + 0.2, (before, after)


# -------------------------------------------------------------- intensities
def test_tissue_intensities_are_ct_like(full_phantom):
    img, st = full_phantom.image, full_phantom.structures
    assert img.dtype == np.float32 and img.shape == st.shape

    def median(*names):
        return float(np.median(img[np.isin(st, [STRUCTURES[n] for n in names])]))

    assert median("background") < -900
    assert median("lung_left", "lung_right") < -500
    assert median("vertebra", "rib") > 200
    assert 0 <= median("liver") <= 150
    assert -200 < median("fat") < -30
    assert median("lv") > median("myocardium") + 20  # contrast-enhanced blood
    assert median("liver") > median("kidney_left", "kidney_right")
    assert 5 < np.std(img[st == STRUCTURES["background"]]) < 60  # noise


# ---------------------------------------------------------- dataset layout
def test_dataset_json_follows_msd_layout(tmp_path):
    write_dataset(tmp_path / "seg", source(labels="heart", n_cases=2, shape=(16, 16, 8), spacing=(20, 16, 40)),
                  progress=False, name="phantom_heart")
    meta = json.loads((tmp_path / "seg" / "dataset.json").read_text())
    assert {"name", "description", "modality", "labels", "numTraining", "training"} <= set(meta)
    assert meta["name"] == "phantom_heart" and meta["modality"] == {"0": "CT"} and meta["numTraining"] == 2
    assert meta["labels"] == {"0": "background", "1": "LV", "2": "RV", "3": "LA", "4": "RA", "5": "myocardium"}
    assert meta["training"][1] == {"image": "./imagesTr/phantom_001.nii.gz", "label": "./labelsTr/phantom_001.nii.gz"}
    assert nib.load(str(tmp_path / "seg" / "labelsTr" / "phantom_001.nii.gz")).get_data_dtype() == np.uint8

    src = source(labels="lesion", n_cases=3, shape=(16, 16, 8), spacing=(20, 16, 40))
    write_dataset(tmp_path / "cls", src, progress=False)
    meta = json.loads((tmp_path / "cls" / "dataset.json").read_text())
    assert meta["labels"] == {"0": "no_lesion", "1": "lesion"}
    assert [e["label"] for e in meta["training"]] == [has_lesion(src, i) for i in range(3)]

    write_dataset(tmp_path / "none", source(n_cases=1, shape=(16, 16, 8), spacing=(20, 16, 40)), progress=False)
    meta = json.loads((tmp_path / "none" / "dataset.json").read_text())
    assert meta["training"] == [{"image": "./imagesTr/phantom_000.nii.gz"}]
    assert not (tmp_path / "none" / "labelsTr").exists()


def test_bad_arguments_raise_value_error(tmp_path):
    with pytest.raises(ValueError, match="-1"):
        generate(source(), -1)
    with pytest.raises(ValueError, match="seed"):
        generate(source(seed=-3), 0)
    with pytest.raises(ValueError, match="shape"):
        generate(source(shape=(1, 8, 8)), 0)
    with pytest.raises(ValueError, match="spacing"):
        generate(source(spacing=(1.0, 0.0, 1.0)), 0)
    with pytest.raises(ValueError, match="name"):
        write_dataset(tmp_path, source(), progress=False, name="")


# ----------------------------------------------------------- lesion size
def test_lesion_radius_range_sets_the_lesion_size():
    """``lesion_mm`` is the radius range of the lung lesion: the rendered lesion's volume follows
    (4/3) pi r^3 of the drawn radius, and the same case keeps its flag whatever the range."""
    small, large = source(lesion_fraction=1.0), source(lesion_fraction=1.0, lesion_mm=(24.0, 24.0))
    for i in range(3):
        a, b = generate(small, i), generate(large, i)
        assert a.lesion == b.lesion == 1
        voxel = float(np.prod(large.spacing)) * float(deform.Geometry(large.shape, large.spacing).scale) ** -3
        expected = 4 / 3 * np.pi * 24.0**3 / voxel  # voxels of a 24 mm sphere on this grid (template mm)
        got = int((b.structures == anatomy.S["lesion"]).sum())
        assert got == pytest.approx(expected, rel=0.35)
        assert got > 2 * int((a.structures == anatomy.S["lesion"]).sum())
    with pytest.raises(ValueError, match="lesion_mm"):
        source(lesion_mm=(20.0, 10.0))
