"""Raw-data layouts (medssl.data.layouts) on miniature copies of published layouts.

Each test writes a tiny copy of a dataset's published file layout (MM-WHS, BraTS 2021,
MS-CMRSeg, STOIC, ASOCA, a PROMISE12-like MHD folder, DICOM series, CC-CCII slice
stacks), finds its cases, and preprocesses it: label values mapped, the voxel
spacing and RAS orientation right (a bright voxel lands at the world position
the input's geometry gives it). Bad input fails with an error naming the file,
and leaves no output folder behind.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medssl.config import DatasetSpec
from medssl.data.layouts import class_index, compile_pattern, find_cases, map_label_values, placeholders
from medssl.data.readers import natural_key, read_dicom_series, read_png_stack
from medssl.data.preprocess import PreprocessError, RawCase, preprocess_dataset
from medssl.io import save_nifti

SHAPE = (8, 8, 4)
# a RAS affine with permuted, flipped axes: i -> S, j -> L (flipped R), k -> A
PERMUTED = np.array([[0, -1.25, 0, 12.0], [0, 0, 1.5, -7.0], [2.0, 0, 0, 5.0], [0, 0, 0, 1]])
ROTATED = (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)  # an ITK (LPS) direction: i -> P, j -> R... rotated 90°
BRIGHT = (5, 2, 1)
MMWHS = [0, 205, 420, 500, 550, 600, 820, 850]


# ------------------------------------------------------------------ helpers
def volume(seed: int = 0, shape=SHAPE, bright=BRIGHT, base: float = 0.0) -> np.ndarray:
    """Noise in voxel order (i, j, k) with one bright voxel at ``bright``."""
    a = np.random.default_rng(seed).uniform(-50, 50, shape).astype(np.float32) + base
    a[bright] = base + 1000.0
    return a


def labels(values: list[int], seed: int = 0, shape=SHAPE) -> np.ndarray:
    """A label volume (i, j, k) holding every value of ``values`` in small blocks."""
    lab = np.zeros(shape, dtype=np.int16)
    flat = lab.reshape(-1)
    idx = np.random.default_rng(seed).permutation(flat.size)
    for k, v in enumerate(values):
        flat[idx[3 * k:3 * k + 3]] = v
    return lab


def itk_image(a: np.ndarray, spacing=(1.5, 1.25, 2.0), origin=(10.0, -20.0, 30.0), direction=ROTATED) -> sitk.Image:
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(a).transpose(2, 1, 0)))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(direction)
    return img


def write_itk(path: Path, a: np.ndarray, **geometry) -> sitk.Image:
    """Write ``a`` (i, j, k) in the format named by the file name (.mha, .nrrd, .mhd, .nii.gz)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = itk_image(a, **geometry)
    sitk.WriteImage(img, str(path))
    return img


def ras_of(img: sitk.Image, idx) -> np.ndarray:
    """World (RAS, mm) position of voxel ``idx`` of an ITK image (LPS world, flipped)."""
    return np.array(img.TransformIndexToPhysicalPoint(tuple(int(i) for i in idx))) * [-1, -1, 1]


def brightest(path: Path) -> np.ndarray:
    """World (RAS) position of the brightest voxel of a NIfTI file, read with nibabel."""
    img = nib.load(path)
    a = np.asarray(img.dataobj)
    idx = np.unravel_index(int(np.argmax(a)), a.shape)
    return (img.affine @ [*idx, 1])[:3]


def make_spec(layout: dict, task: str = "segmentation", classes: list[str] | None = None,
              label_values: dict | None = None, spacing=(None, None, None), **recipe) -> DatasetSpec:
    if classes is None:
        classes = [] if task == "pretrain" else ["a", "b"]
    return DatasetSpec.model_validate({
        "task": task, "classes": classes, "label_values": label_values,
        "source": {"kind": "manual", "homepage": "https://example.org", "expected": ["*"]},
        "layout": layout, "recipe": {"spacing": list(spacing), **recipe},
        "splits": {"validation": 0, "test": 0, "seed": 0},
    })


def preprocess(name: str, spec: DatasetSpec, raw: Path, tmp_path: Path) -> tuple[Path, dict]:
    out = preprocess_dataset(name, spec, raw, tmp_path / "data" / "processed" / name, progress=False)
    return out, json.loads((out / "datalist.json").read_text())


def entries(doc: dict) -> dict[str, dict]:
    return {e["case"]: e for s in ("training", "validation", "test") for e in doc[s]}


def fails_cleanly(name: str, spec: DatasetSpec, raw: Path, tmp_path: Path, *culprits: str) -> str:
    """Preprocess must fail naming every string of ``culprits``, leaving no temporary folder, and
    no output folder, or an older one unchanged."""
    out = tmp_path / "data" / "processed" / name
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} if out.exists() else None
    with pytest.raises(PreprocessError) as err:
        preprocess_dataset(name, spec, raw, out, progress=False)
    msg = str(err.value)
    for c in culprits:
        assert c in msg, (c, msg)
    if before is None:
        assert not out.exists()
        assert not out.parent.exists() or list(out.parent.iterdir()) == []
    else:
        assert before == {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
        assert [p.name for p in out.parent.iterdir()] == [name]
    return msg


# ----------------------------------------------------------------- patterns
def test_pattern_language():
    rx = compile_pattern("**/{case}_{sequence}.nii.gz", {"sequence": "t1ce"})
    assert rx.fullmatch("a/b/BraTS_1_t1ce.nii.gz").group("case") == "BraTS_1"
    assert rx.fullmatch("BraTS_1_t1ce.nii.gz").group("case") == "BraTS_1"  # ** is zero folders too
    assert not rx.fullmatch("BraTS_1_t1.nii.gz")
    rx = compile_pattern("{case}/{case}_seg.nii.gz")  # a placeholder used twice matches the same text
    assert rx.fullmatch("P1/P1_seg.nii.gz") and not rx.fullmatch("P1/P2_seg.nii.gz")
    rx = compile_pattern("img?/*/{case}.mha")
    assert rx.fullmatch("img1/x/7.mha").group("case") == "7"
    assert not rx.fullmatch("img12/x/7.mha") and not rx.fullmatch("img1/x/y/7.mha")  # * stays in one folder
    assert not compile_pattern("{case}.nii.gz").fullmatch("a/b.nii.gz")  # a placeholder is one component
    assert compile_pattern("a+b/{case}.(1).nii").fullmatch("a+b/x.(1).nii")  # regex characters are literal
    assert placeholders("{label}/{case}/{scan}/{case}") == ["label", "case", "scan"]
    for bad in ("/abs/{case}", "a/../{case}", "a//{case}", "{case}/**", "a\\{case}", ""):
        with pytest.raises(ValueError, match="pattern"):
            compile_pattern(bad)


def test_natural_order_and_class_values():
    names = ["10.png", "2.png", "1.png", "a10b2.png", "a2b10.png", "a10b1.png"]
    assert sorted(names, key=natural_key) == ["1.png", "2.png", "10.png", "a2b10.png", "a10b1.png", "a10b2.png"]
    spec = make_spec({"kind": "files", "image": "{label}/{case}.nii.gz"}, "classification", ["n", "p", "x"],
                     {"NCP": 2, "1": 1})
    assert class_index("NCP", spec, "f") == 2 and class_index("1.0", spec, "f") == 1
    with pytest.raises(PreprocessError, match=r"^f: class value 'CP' is not in label_values"):
        class_index("CP", spec, "f")
    plain = make_spec({"kind": "files", "image": "{label}/{case}.nii.gz"}, "classification")
    assert class_index("1", plain, "f") == 1 and class_index("0.0", plain, "f") == 0
    for bad in ("2", "0.5", "yes", "-1"):
        with pytest.raises(PreprocessError, match="not a class index in 0..1"):
            class_index(bad, plain, "f")


@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.float32, np.int64])
def test_map_label_values(dtype):
    mapping = {str(v): i for i, v in enumerate(MMWHS) if v}
    a = np.array(MMWHS * 3, dtype=dtype).reshape(4, 3, 2)
    out = map_label_values(a, mapping, "lab.nii.gz")
    assert out.dtype == np.uint8 and out.shape == a.shape
    np.testing.assert_array_equal(out, np.array(list(range(8)) * 3).reshape(4, 3, 2))
    bad = a.copy()
    bad[0, 0, 0], bad[1, 1, 1] = 300, 7
    with pytest.raises(PreprocessError, match=r"^lab\.nii\.gz: label values not in label_values: 7, 300"):
        map_label_values(bad, mapping, "lab.nii.gz")
    # 0 -> 0 is implied, but may be given
    np.testing.assert_array_equal(map_label_values(np.array([0, 4], dtype), {"4": 3}, "x"), [0, 3])
    np.testing.assert_array_equal(map_label_values(np.array([0, 4], dtype), {"0": 1, "4": 0}, "x"), [1, 0])


# ------------------------------------------------------- NIfTI, flat (MM-WHS)
def write_mmwhs(raw: Path, ids=(1001, 1002)) -> None:
    for n, cid in enumerate(ids):
        save_nifti(raw / f"ct_train/ct_train_{cid}_image.nii.gz", volume(n).astype(np.int16), PERMUTED)
        save_nifti(raw / f"ct_train/ct_train_{cid}_label.nii.gz", labels(MMWHS, n), PERMUTED)
    (raw / "ct_train" / "readme.txt").write_text("not a case")


MMWHS_LAYOUT = {"kind": "files", "image": "ct_train/ct_train_{case}_image.nii.gz",
                "label": "ct_train/ct_train_{case}_label.nii.gz"}
MMWHS_VALUES = {str(v): i for i, v in enumerate(MMWHS) if v}


def test_nifti_flat_mmwhs(tmp_path):
    raw = tmp_path / "raw"
    write_mmwhs(raw)
    spec = make_spec(MMWHS_LAYOUT, classes=[f"c{i}" for i in range(8)], label_values=MMWHS_VALUES)
    cases = find_cases(raw, "mmwhs", spec)
    assert cases == [RawCase(str(c), raw / f"ct_train/ct_train_{c}_image.nii.gz",
                             raw / f"ct_train/ct_train_{c}_label.nii.gz") for c in (1001, 1002)]
    out, doc = preprocess("mmwhs", spec, raw, tmp_path)
    for n, (case, e) in enumerate(sorted(entries(doc).items())):
        img, lab = nib.load(out / e["image"]), nib.load(out / e["label"])
        assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
        np.testing.assert_allclose(sorted(img.header.get_zooms()), [1.25, 1.5, 2.0], atol=1e-6)
        np.testing.assert_allclose(brightest(out / e["image"]), (PERMUTED @ [*BRIGHT, 1])[:3], atol=1e-4)
        # labels: nibabel's own canonical reorientation of the input, mapped 0, 205, ... 850 -> 0..7
        canon = np.asarray(nib.as_closest_canonical(nib.load(raw / f"ct_train/ct_train_{case}_label.nii.gz")).dataobj)
        lut = np.zeros(851, np.uint8)
        lut[MMWHS] = np.arange(8)
        np.testing.assert_array_equal(np.asarray(lab.dataobj), lut[canon])
        np.testing.assert_allclose(lab.affine, img.affine)


def test_nifti_flat_resampled_and_roi(tmp_path):
    raw = tmp_path / "raw"
    write_mmwhs(raw, ids=(1001,))
    spec = make_spec(MMWHS_LAYOUT, classes=[f"c{i}" for i in range(8)], label_values=MMWHS_VALUES,
                     spacing=(1.0, None, 4.0), roi=[None, 5, 9])
    out, doc = preprocess("mmwhs", spec, raw, tmp_path)
    img = nib.load(out / "images/1001.nii.gz")
    # RAS axes of the input: R <- j (8 x 1.25 mm), A <- k (4 x 1.5 mm), S <- i (8 x 2 mm); so
    # R: 10 mm / 1 mm = 10 voxels, kept (roi None); A: native 1.5 mm, 4 voxels padded to 5;
    # S: 16 mm / 4 mm = 4 voxels padded to 9 (2 before, 3 after)
    assert img.shape == (10, 5, 9)
    np.testing.assert_allclose(img.header.get_zooms(), (1.0, 1.5, 4.0), atol=1e-6)
    a = np.asarray(img.dataobj)
    for pad in (a[:, 4, :], a[:, :, :2], a[:, :, 6:]):
        assert (pad == a.min()).all()
    assert (a[:, :4, 2:6] > a.min()).mean() > 0.8
    lab = np.asarray(nib.load(out / "labels/1001.nii.gz").dataobj)
    assert lab.shape == img.shape and set(np.unique(lab)) <= set(range(8))


def test_label_file_missing_or_ambiguous(tmp_path):
    raw = tmp_path / "raw"
    write_mmwhs(raw)
    spec = make_spec(MMWHS_LAYOUT, classes=[f"c{i}" for i in range(8)], label_values=MMWHS_VALUES)
    (raw / "ct_train/ct_train_1002_label.nii.gz").unlink()
    fails_cleanly("mmwhs", spec, raw, tmp_path, str(raw / "ct_train/ct_train_1002_image.nii.gz"),
                  "without a label", "'ct_train/ct_train_1002_label.nii.gz'")
    write_mmwhs(raw)
    (raw / "ct_train/ct_train_1002_label.nii").write_bytes(b"")
    wild = make_spec({**MMWHS_LAYOUT, "label": "ct_train/ct_train_{case}_label.*"},
                     classes=[f"c{i}" for i in range(8)], label_values=MMWHS_VALUES)
    fails_cleanly("mmwhs", wild, raw, tmp_path, str(raw / "ct_train/ct_train_1002_image.nii.gz"),
                  "matches 2 files", "ct_train/ct_train_1002_label.nii, ct_train/ct_train_1002_label.nii.gz")


def test_no_case_and_duplicate_ids(tmp_path):
    raw = tmp_path / "raw"
    write_mmwhs(raw)
    spec = make_spec({"kind": "files", "image": "ct_test/ct_test_{case}_image.nii.gz"}, "pretrain")
    msg = fails_cleanly("mmwhs", spec, raw, tmp_path, str(raw), "no case found", "'ct_test/ct_test_{case}_image.nii.gz'",
                        "ct_train/ct_train_1001_image.nii.gz")
    assert "readme.txt" in msg
    save_nifti(raw / "more/ct_train_1001_image.nii.gz", volume(), PERMUTED)
    dup = make_spec({"kind": "files", "image": "**/ct_train_{case}_image.nii.gz"}, "pretrain")
    fails_cleanly("mmwhs", dup, raw, tmp_path, "case id '1001'", str(raw / "ct_train/ct_train_1001_image.nii.gz"),
                  str(raw / "more/ct_train_1001_image.nii.gz"))
    with pytest.raises(PreprocessError, match=r"raw folder of dataset 'x' not found; run `medssl fetch x`"):
        find_cases(tmp_path / "nowhere", "x", spec)


def test_layout_configuration_errors(tmp_path):
    raw = tmp_path / "raw"
    write_mmwhs(raw)
    bad = [
        ({"kind": "files", "image": "ct_train/x_image.nii.gz"}, "pretrain", "needs a {case} placeholder"),
        ({"kind": "files", "image": "{case}_{sequence}.nii.gz"}, "pretrain", "names no `sequence`"),
        ({"kind": "files", "image": "{case}.nii.gz", "sequence": "t1"}, "pretrain", "no {sequence} placeholder"),
        ({"kind": "files", "image": "{case}.nii.gz", "label": "{case}/{visit}.nii.gz"}, "segmentation",
         "placeholders ['visit']"),
        ({"kind": "files", "image": "{case}.nii.gz"}, "segmentation", "needs a label pattern"),
        ({"kind": "files", "image": "{case}.nii.gz"}, "classification", "got neither"),
        ({"kind": "files", "image": "{label}/{case}.nii.gz",
          "labels_csv": {"path": "x.csv", "id_column": "a", "label_column": "b"}}, "classification", "got both"),
    ]
    for layout, task, msg in bad:
        with pytest.raises(PreprocessError, match=msg.replace("[", r"\[").replace("{", r"\{")):
            find_cases(raw, "ds", make_spec(layout, task))


# ------------------------------------------ NIfTI per-case folders, multi-sequence
SEQUENCES = {"t1": 100.0, "t1ce": 200.0, "t2": 300.0, "flair": 400.0}


def write_brats(raw: Path, n: int = 3) -> None:
    for i in range(n):
        case = f"BraTS2021_{i:05d}"
        for seq, base in SEQUENCES.items():
            save_nifti(raw / case / f"{case}_{seq}.nii.gz", volume(i, base=base), PERMUTED)
        save_nifti(raw / case / f"{case}_seg.nii.gz", labels([0, 1, 2, 4], i).astype(np.uint8), PERMUTED)


BRATS = {"kind": "files", "image": "{case}/{case}_{sequence}.nii.gz", "label": "{case}/{case}_seg.nii.gz",
         "sequence": "t1ce"}


def brats_spec(**kw) -> DatasetSpec:
    return make_spec(BRATS, classes=["bg", "ncr", "ed", "et"], label_values={1: 1, 2: 2, 4: 3}, **kw)


def test_multi_sequence_brats(tmp_path):
    raw = tmp_path / "raw"
    write_brats(raw)
    spec = brats_spec(spacing=(2.0, 2.0, 2.0))
    cases = find_cases(raw, "brats", spec)
    assert [c.case for c in cases] == ["BraTS2021_00000", "BraTS2021_00001", "BraTS2021_00002"]
    assert all(c.image.name.endswith("_t1ce.nii.gz") and c.label.name.endswith("_seg.nii.gz") for c in cases)
    out, doc = preprocess("brats", spec, raw, tmp_path)
    for e in entries(doc).values():
        img = nib.load(out / e["image"])
        np.testing.assert_allclose(img.header.get_zooms(), (2.0, 2.0, 2.0))
        assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
        assert 190 < np.median(np.asarray(img.dataobj)) < 210  # the t1ce volume (base 200)
        assert set(np.unique(np.asarray(nib.load(out / e["label"]).dataobj))) <= {0, 1, 2, 3}
    seen = set().union(*(np.unique(np.asarray(nib.load(out / e["label"]).dataobj)).tolist()
                         for e in entries(doc).values()))
    assert 3 in seen and 4 not in seen  # 4 (enhancing tumour) became class 3


def test_missing_sequence_keeps_older_output(tmp_path):
    raw = tmp_path / "raw"
    write_brats(raw)
    out, _ = preprocess("brats", brats_spec(), raw, tmp_path)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    (raw / "BraTS2021_00001/BraTS2021_00001_t1ce.nii.gz").unlink()
    with pytest.raises(PreprocessError) as err:
        preprocess_dataset("brats", brats_spec(), raw, out, progress=False)
    msg = str(err.value)
    assert str(raw / "BraTS2021_00001") in msg and "'BraTS2021_00001'" in msg and "'t1ce'" in msg
    assert "BraTS2021_00001/BraTS2021_00001_t1ce.nii.gz" in msg and "sequences found: flair, seg, t1, t2" in msg
    assert before == {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert sorted(p.name for p in out.parent.iterdir()) == ["brats"]


def write_mscmrseg(raw: Path, n: int = 2) -> None:
    for i in range(1, n + 1):
        for seq in ("C0", "DE", "T2"):
            write_itk(raw / f"patient{i}_{seq}.nii.gz", volume(i), spacing=(1.25, 1.25, 10.0),
                      direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
        write_itk(raw / f"patient{i}_C0_manual.nii.gz", labels([0, 200, 500, 600], i), spacing=(1.25, 1.25, 10.0),
                  direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))


MSCMR = {"kind": "files", "image": "{case}_{sequence}.nii.gz", "label": "{case}_{sequence}_manual.nii.gz",
         "sequence": "C0"}
MSCMR_VALUES = {500: 1, 200: 2, 600: 3}


def test_multi_sequence_mscmrseg_in_plane_resampling(tmp_path):
    raw = tmp_path / "raw"
    write_mscmrseg(raw)
    spec = make_spec(MSCMR, classes=["bg", "LV", "myo", "RV"], label_values=MSCMR_VALUES, spacing=(1.0, 1.0, None))
    cases = find_cases(raw, "mscmr", spec)
    assert [(c.case, c.image.name, c.label.name) for c in cases] == [
        ("patient1", "patient1_C0.nii.gz", "patient1_C0_manual.nii.gz"),
        ("patient2", "patient2_C0.nii.gz", "patient2_C0_manual.nii.gz")]
    out, doc = preprocess("mscmr", spec, raw, tmp_path)
    img = nib.load(out / "images/patient1.nii.gz")
    np.testing.assert_allclose(img.header.get_zooms(), (1.0, 1.0, 10.0))  # slices keep their 10 mm
    assert img.shape == (10, 10, 4)
    lab = np.asarray(nib.load(out / "labels/patient1.nii.gz").dataobj)
    assert set(np.unique(lab)) == {0, 1, 2, 3}


def test_label_value_not_in_mapping(tmp_path):
    raw = tmp_path / "raw"
    write_mscmrseg(raw)
    bad = labels([0, 200, 500, 600, 300], 2)
    write_itk(raw / "patient2_C0_manual.nii.gz", bad, spacing=(1.25, 1.25, 10.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
    spec = make_spec(MSCMR, classes=["bg", "LV", "myo", "RV"], label_values=MSCMR_VALUES)
    fails_cleanly("mscmr", spec, raw, tmp_path, str(raw / "patient2_C0_manual.nii.gz"),
                  "label values not in label_values: 300")


def test_image_without_label(tmp_path):
    """MS-CMRSeg LGE: the DE images have no manual labels in this copy."""
    raw = tmp_path / "raw"
    write_mscmrseg(raw)
    spec = make_spec({**MSCMR, "sequence": "DE"}, classes=["bg", "LV", "myo", "RV"], label_values=MSCMR_VALUES)
    fails_cleanly("mscmr", spec, raw, tmp_path, str(raw / "patient1_DE.nii.gz"), "without a label",
                  "'patient1_DE_manual.nii.gz'")
    pretrain = make_spec({"kind": "files", "image": "{case}_{sequence}.nii.gz", "sequence": "DE"}, "pretrain")
    assert [c.case for c in find_cases(raw, "mscmr", pretrain)] == ["patient1", "patient2"]


# ------------------------------------------------------------- MHA + CSV (STOIC)
STOIC_IDS = [0, 3, 10, 12]


def write_stoic(raw: Path) -> dict[str, sitk.Image]:
    images = {}
    for n, pid in enumerate(STOIC_IDS):
        images[str(pid)] = write_itk(raw / f"data/mha/{pid}.mha", volume(n).astype(np.int16))
    rows = ["PatientID,probCOVID,probSevere"] + [f"{p},{int(p % 2 == 0)},{int(p == 10)}" for p in STOIC_IDS + [99]]
    (raw / "metadata").mkdir(parents=True)
    (raw / "metadata/reference.csv").write_text("\n".join(rows) + "\n")
    return images


STOIC = {"kind": "files", "image": "data/mha/{case}.mha",
         "labels_csv": {"path": "metadata/reference.csv", "id_column": "PatientID", "label_column": "probCOVID"}}


def test_mha_with_csv_stoic(tmp_path):
    raw = tmp_path / "raw"
    images = write_stoic(raw)
    spec = make_spec(STOIC, "classification", ["negative", "covid"])
    cases = find_cases(raw, "stoic", spec)
    assert [(c.case, c.label) for c in cases] == [("0", 1), ("10", 1), ("12", 1), ("3", 0)]
    out, doc = preprocess("stoic", spec, raw, tmp_path)
    for case, e in entries(doc).items():
        assert e["label"] == int(int(case) % 2 == 0)
        img = nib.load(out / e["image"])
        assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
        np.testing.assert_allclose(img.header.get_zooms(), (1.25, 1.5, 2.0), atol=1e-6)  # rotated in-plane
        np.testing.assert_allclose(brightest(out / e["image"]), ras_of(images[case], BRIGHT), atol=1e-4)


def test_csv_missing_a_case(tmp_path):
    raw = tmp_path / "raw"
    write_stoic(raw)
    csv = raw / "metadata/reference.csv"
    csv.write_text("\n".join(line for line in csv.read_text().splitlines() if not line.startswith("10,")) + "\n")
    spec = make_spec(STOIC, "classification", ["negative", "covid"])
    fails_cleanly("stoic", spec, raw, tmp_path, str(csv), "case '10'", "'PatientID'")
    csv.write_text(csv.read_text() + "10,,1\n,1,1\n")  # an empty class cell (and a row without id, skipped)
    fails_cleanly("stoic", spec, raw, tmp_path, str(csv), "case '10'", "empty 'probCOVID' cell")
    wrong = make_spec({**STOIC, "labels_csv": {**STOIC["labels_csv"], "label_column": "covid"}},
                      "classification", ["negative", "covid"])
    fails_cleanly("stoic", wrong, raw, tmp_path, str(csv), "no column 'covid'", "PatientID, probCOVID, probSevere")


# --------------------------------------------------------- NRRD (ASOCA), MHD
def test_nrrd_asoca(tmp_path):
    raw = tmp_path / "raw"
    images = {}
    for group in ("Normal", "Diseased"):
        for i in (1, 2):
            case = f"{group}_{i}"
            images[case] = write_itk(raw / f"{group}/CTCA/{case}.nrrd", volume(i))
            lab = np.zeros(SHAPE, np.uint8)
            lab[BRIGHT] = 1
            write_itk(raw / f"{group}/Annotations/{case}.nrrd", lab)
    spec = make_spec({"kind": "files", "image": "*/CTCA/{case}.nrrd", "label": "*/Annotations/{case}.nrrd"})
    cases = find_cases(raw, "asoca", spec)
    assert [c.case for c in cases] == ["Diseased_1", "Diseased_2", "Normal_1", "Normal_2"]
    assert cases[0].label == raw / "Diseased/Annotations/Diseased_1.nrrd"
    out, doc = preprocess("asoca", spec, raw, tmp_path)
    for case, e in entries(doc).items():
        want = ras_of(images[case], BRIGHT)
        np.testing.assert_allclose(brightest(out / e["image"]), want, atol=1e-4)
        np.testing.assert_allclose(brightest(out / e["label"]), want, atol=1e-4)
        assert np.asarray(nib.load(out / e["label"]).dataobj).sum() == 1


def test_mhd_flat_with_labels_beside_images(tmp_path):
    """PROMISE12-like: Case00.mhd + Case00_segmentation.mhd in one folder; labels are not cases."""
    raw = tmp_path / "raw"
    images = {}
    for i in range(2):
        images[f"Case{i:02d}"] = write_itk(raw / f"Case{i:02d}.mhd", volume(i), spacing=(0.6, 0.6, 3.6))
        write_itk(raw / f"Case{i:02d}_segmentation.mhd", (volume(i) > 500).astype(np.uint8), spacing=(0.6, 0.6, 3.6))
    assert (raw / "Case00.raw").is_file() or (raw / "Case00.zraw").is_file()
    spec = make_spec({"kind": "files", "image": "{case}.mhd", "label": "{case}_segmentation.mhd"},
                     spacing=(1.2, 1.2, None))
    assert [c.case for c in find_cases(raw, "promise", spec)] == ["Case00", "Case01"]
    out, doc = preprocess("promise", spec, raw, tmp_path)
    img = nib.load(out / "images/Case00.nii.gz")
    np.testing.assert_allclose(img.header.get_zooms(), (1.2, 1.2, 3.6), atol=1e-6)
    assert img.shape == (4, 4, 4)
    lab = np.asarray(nib.load(out / "labels/Case00.nii.gz").dataobj)
    assert lab.sum() == 1  # the bright voxel's label survives nearest-neighbour downsampling


# --------------------------------------------------------------------- DICOM
def write_dicom_series(folder: Path, a: np.ndarray, uid: str, description: str,
                       spacing=(0.7, 0.8, 2.5), origin=(-30.0, 12.0, 100.0)) -> sitk.Image:
    """Write ``a`` (i, j, k) as one DICOM file per slice, with the series tags GDCM reads."""
    folder.mkdir(parents=True, exist_ok=True)
    vol = itk_image(a.astype(np.int16), spacing=spacing, origin=origin, direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(vol.GetDepth()):
        sl = vol[:, :, k]
        for tag, value in (("0008|0060", "CT"), ("0008|103e", description), ("0020|000e", uid),
                           ("0020|000d", "1.2.826.0.1.3680043.2.1125.7"), ("0020|0013", str(k + 1)),
                           ("0020|0032", "\\".join(map(str, vol.TransformIndexToPhysicalPoint((0, 0, k))))),
                           ("0020|0037", "1\\0\\0\\0\\1\\0"), ("0018|0050", str(spacing[2])),
                           ("0008|0016", "1.2.840.10008.5.1.4.1.1.2"), ("0008|0018", f"{uid}.{k + 1}")):
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{uid[-3:]}-{k + 1:03d}.dcm"))
        writer.Execute(sl)
    return vol


def write_dicom_tree(raw: Path) -> dict[str, sitk.Image]:
    """P001 holds an axial series (4 slices) and a larger localizer (6 slices); P002 one series."""
    axial = write_dicom_series(raw / "P001", volume(0), "1.2.826.0.1.3680043.2.1125.101", "AXIAL 2.5mm")
    write_dicom_series(raw / "P001", volume(1, shape=(6, 5, 6), bright=(1, 1, 1)), "1.2.826.0.1.3680043.2.1125.102",
                       "LOCALIZER", spacing=(2.0, 2.0, 2.0))
    other = write_dicom_series(raw / "P002", volume(2), "1.2.826.0.1.3680043.2.1125.201", "Axial")
    return {"P001": axial, "P002": other}


def test_dicom_series_selection_and_geometry(tmp_path):
    raw = tmp_path / "raw"
    written = write_dicom_tree(raw)
    assert read_dicom_series(raw / "P001").GetSize() == (6, 5, 6)  # no description: the series with most files
    assert read_dicom_series(raw / "P001", "axial").GetSize() == SHAPE  # case-insensitive "contains"
    with pytest.raises(PreprocessError, match=r"P001: no DICOM series whose description contains 'CORONAL'; "
                                              r"series there: 'AXIAL 2.5mm' \(4 files\); 'LOCALIZER' \(6 files\)"):
        read_dicom_series(raw / "P001", "CORONAL")
    spec = make_spec({"kind": "dicom", "series": "{case}", "series_description": "axial"}, "pretrain")
    cases = find_cases(raw, "dcm", spec)
    assert [(c.case, c.image, c.image_kind, c.series_description) for c in cases] == [
        ("P001", raw / "P001", "dicom", "axial"), ("P002", raw / "P002", "dicom", "axial")]
    out, doc = preprocess("dcm", spec, raw, tmp_path)
    for case, e in entries(doc).items():
        img = nib.load(out / e["image"])
        assert img.shape == SHAPE and nib.aff2axcodes(img.affine) == ("R", "A", "S")
        np.testing.assert_allclose(img.header.get_zooms(), (0.7, 0.8, 2.5), atol=1e-5)
        np.testing.assert_allclose(brightest(out / e["image"]), ras_of(written[case], BRIGHT), atol=1e-3)


def test_unreadable_dicom_folder(tmp_path):
    raw = tmp_path / "raw"
    write_dicom_tree(raw)
    (raw / "P003").mkdir()
    (raw / "P003/IM-0001.dcm").write_bytes(b"not a dicom file" * 20)
    spec = make_spec({"kind": "dicom", "series": "{case}"}, "pretrain")
    fails_cleanly("dcm", spec, raw, tmp_path, str(raw / "P003"), "no readable DICOM series", "IM-0001.dcm")


# ------------------------------------------------------ PNG stacks (CC-CCII)
def write_stack(folder: Path, n: int, shape=(6, 5), bright=None, names=None, rgb: bool = False) -> None:
    """Slices ``k`` of value ``20 k + 10`` (rows x columns = shape), one bright pixel at (column, row, k)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = names or [f"{k + 1}.png" for k in range(n)]
    for k, name in enumerate(names):
        a = np.full(shape, 20 * k + 10, np.uint8)
        if bright is not None and bright[2] == k:
            a[bright[1], bright[0]] = 255
        rgb_a = np.stack([a, a // 2, a // 4], -1)  # luminance 0.299 a + 0.587 a // 2 + 0.114 a // 4
        img = sitk.GetImageFromArray(rgb_a, isVector=True) if rgb else sitk.GetImageFromArray(a)
        sitk.WriteImage(img, str(folder / name))


CCII_CLASSES = {"NCP": 2, "CP": 1, "Normal": 0}
CCII = {"kind": "png_stack", "stack": "{label}/{case}/{scan}", "slices": "*.png", "spacing": [0.8, 0.7, 5.0]}


def write_ccii(raw: Path) -> None:
    names = ["1.png", "2.png", "10.png"]  # natural order 1, 2, 10 (not 1, 10, 2)
    write_stack(raw / "NCP/p1/s1", 3, bright=(4, 1, 2), names=names)
    write_stack(raw / "CP/p2/s1", 3, names=names)
    write_stack(raw / "Normal/p3/s1", 3, names=names)
    write_stack(raw / "Normal/p3/s2", 3, names=names, rgb=True)


def test_png_stack_class_from_path(tmp_path):
    raw = tmp_path / "raw"
    write_ccii(raw)
    spec = make_spec(CCII, "classification", ["normal", "cp", "ncp"], CCII_CLASSES)
    cases = find_cases(raw, "ccii", spec)
    assert [(c.case, c.label) for c in cases] == [("p1_s1", 2), ("p2_s1", 1), ("p3_s1", 0), ("p3_s2", 0)]
    assert cases[0].image == raw / "NCP/p1/s1" and cases[0].image_kind == "png_stack"
    assert cases[0].spacing == (0.8, 0.7, 5.0)
    out, doc = preprocess("ccii", spec, raw, tmp_path)
    e = entries(doc)
    assert {c: x["label"] for c, x in e.items()} == {"p1_s1": 2, "p2_s1": 1, "p3_s1": 0, "p3_s2": 0}
    img = nib.load(out / e["p1_s1"]["image"])
    assert img.shape == (5, 6, 3) and nib.aff2axcodes(img.affine) == ("R", "A", "S")
    np.testing.assert_allclose(img.header.get_zooms(), (0.8, 0.7, 5.0))
    # identity ITK direction, origin 0: column c, row r, slice k lies at LPS (0.8 c, 0.7 r, 5 k)
    np.testing.assert_allclose(brightest(out / e["p1_s1"]["image"]), [-0.8 * 4, -0.7 * 1, 5.0 * 2], atol=1e-5)
    a = np.asarray(img.dataobj)
    np.testing.assert_allclose(np.median(a, axis=(0, 1)), [10, 30, 50])  # 1.png, 2.png, 10.png
    gray = np.asarray(nib.load(out / e["p3_s1"]["image"]).dataobj)
    rgb = np.asarray(nib.load(out / e["p3_s2"]["image"]).dataobj)  # RGB slices: luminance
    np.testing.assert_allclose(rgb, 0.299 * gray + 0.587 * (gray // 2) + 0.114 * (gray // 4), atol=1e-3)


def test_png_stack_class_from_csv(tmp_path):
    raw = tmp_path / "raw"
    for patient, scan in (("p1", "s1"), ("p1", "s2"), ("p2", "s1")):
        write_stack(raw / "scans" / patient / scan, 2)
    (raw / "labels.csv").write_text("patient,class\np1,NCP\np2, CP\n")
    layout = {"kind": "png_stack", "stack": "scans/{case}/{scan}", "spacing": [1.0, 1.0, 2.0],
              "labels_csv": {"path": "labels.csv", "id_column": "patient", "label_column": "class"}}
    spec = make_spec(layout, "classification", ["normal", "cp", "ncp"], CCII_CLASSES)
    assert [(c.case, c.label) for c in find_cases(raw, "ccii", spec)] == [("p1_s1", 2), ("p1_s2", 2), ("p2_s1", 1)]
    write_stack(raw / "scans/p3/s1", 2)
    fails_cleanly("ccii", spec, raw, tmp_path, str(raw / "labels.csv"), "case 'p3_s1'", "not in the 'patient' column")


def test_png_stack_segmentation_and_bad_slices(tmp_path):
    raw = tmp_path / "raw"
    write_stack(raw / "images/c1", 3)
    mask = raw / "masks/c1"
    mask.mkdir(parents=True)
    for k in range(3):
        m = np.zeros((6, 5), np.uint8)
        m[2, 3] = 255
        sitk.WriteImage(sitk.GetImageFromArray(m), str(mask / f"{k + 1}.png"))
    layout = {"kind": "png_stack", "stack": "images/{case}", "label_stack": "masks/{case}", "spacing": [1.0, 1.0, 3.0]}
    spec = make_spec(layout, label_values={255: 1})
    [case] = find_cases(raw, "stack", spec)
    assert case.label == mask and case.label_kind == "png_stack"
    out, _ = preprocess("stack", spec, raw, tmp_path)
    lab = np.asarray(nib.load(out / "labels/c1.nii.gz").dataobj)
    assert lab.sum() == 3 and set(np.unique(lab)) == {0, 1}
    # a slice of another size
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((6, 4), np.uint8)), str(raw / "images/c1/3.png"))
    fails_cleanly("stack", spec, raw, tmp_path, str(raw / "images/c1/3.png"), "4x6 pixels differs from 5x6",
                  str(raw / "images/c1/1.png"))
    with pytest.raises(PreprocessError, match=r"c1: no slice files match '\*\.jpg'"):
        read_png_stack(raw / "images/c1", "*.jpg")
