"""Miniature copies of the published layouts of the catalog's real datasets.

Each writer puts tiny images (and labels, CSVs) at the file names the data are
published under (hand-written from the datasets' documentation, not derived
from the catalog's patterns), so a test can check that the catalog entry finds
the cases, maps the published label values and preprocesses them. Label
volumes use the published values (MM-WHS 205..850, BraTS 0/1/2/4, ...).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import SimpleITK as sitk

SHAPE = (12, 12, 6)  # x, y, z voxels of a miniature volume


# ------------------------------------------------------------------ writers
def _volume(rng: np.random.Generator, shape=SHAPE, lo=-200.0, hi=400.0) -> np.ndarray:
    """A float volume in (z, y, x) order (SimpleITK's array order)."""
    return rng.uniform(lo, hi, size=shape[::-1]).astype(np.float32)


def _image(arr: np.ndarray, spacing=(0.8, 0.8, 2.5)) -> sitk.Image:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin((-10.0, 20.0, 5.0))
    return img


def write(path: Path, arr: np.ndarray, spacing=(0.8, 0.8, 2.5)) -> None:
    """Write a volume in the format named by the file name (.nii.gz, .mha, .nrrd, .mhd)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(_image(arr, spacing), str(path))


def label_volume(values: list[int], rng: np.random.Generator, shape=SHAPE) -> np.ndarray:
    """A label volume (z, y, x) holding every value of ``values`` (background 0 first)."""
    lab = np.zeros(shape[::-1], dtype=np.int16)
    flat = lab.reshape(-1)
    idx = rng.permutation(flat.size)
    for k, v in enumerate(values):
        flat[idx[k * 4:(k + 1) * 4]] = v  # four voxels of each value
    return lab


def chest(rng: np.random.Generator, shape=(24, 24, 8)) -> np.ndarray:
    """A tiny chest CT (HU, z, y, x): air, a body ellipse, two dark lungs."""
    z, y, x = np.meshgrid(*[np.arange(n) for n in shape[::-1]], indexing="ij")
    cx, cy = (shape[0] - 1) / 2, (shape[1] - 1) / 2
    arr = np.full(shape[::-1], -1000.0, dtype=np.float32)
    body = ((x - cx) / (0.45 * shape[0])) ** 2 + ((y - cy) / (0.4 * shape[1])) ** 2 <= 1
    arr[body] = 40.0
    for side in (-1, 1):
        lung = (((x - cx - side * 0.2 * shape[0]) / (0.15 * shape[0])) ** 2
                + ((y - cy) / (0.25 * shape[1])) ** 2 + ((z - (shape[2] - 1) / 2) / (0.4 * shape[2])) ** 2) <= 1
        arr[lung] = -850.0
    return arr + rng.normal(0, 10, arr.shape).astype(np.float32)


def write_dicom_series(folder: Path, arr: np.ndarray, uid: str, description: str, modality: str = "CT") -> None:
    """Write ``arr`` (z, y, x) as a DICOM series of one file per slice (SimpleITK/GDCM)."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    vol = _image(arr.astype(np.int16), spacing=(0.8, 0.8, 2.5))
    for k in range(arr.shape[0]):
        sl = vol[:, :, k]
        pos = vol.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, value in (("0008|0060", modality), ("0008|103e", description), ("0020|000e", uid),
                           ("0020|000d", uid + ".1"), ("0020|0013", str(k + 1)),
                           ("0020|0032", "\\".join(f"{p:.4f}" for p in pos)),
                           ("0020|0037", "1\\0\\0\\0\\1\\0"), ("0028|0030", "0.8\\0.8"),
                           ("0018|0050", "2.5"), ("0008|0016", "1.2.840.10008.5.1.4.1.1.2"),
                           ("0008|0018", f"{uid}.{k + 1}")):
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"1-{k + 1:03d}.dcm"))
        writer.Execute(sl)


def write_png_stack(folder: Path, arr: np.ndarray) -> None:
    """Write ``arr`` (z, y, x) as 8-bit PNG slices named 0000.png, 0001.png, ..."""
    folder.mkdir(parents=True, exist_ok=True)
    a = arr - arr.min()
    a = (255 * a / max(float(a.max()), 1e-6)).astype(np.uint8)
    for k in range(a.shape[0]):
        sitk.WriteImage(sitk.GetImageFromArray(a[k]), str(folder / f"{k:04d}.png"))


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([",".join(header)] + [",".join(str(v) for v in r) for r in rows]) + "\n")


# ----------------------------------------------------------- per dataset
def _seg_files(image: Callable[[int], str], label: Callable[[int], str], values: list[int]):
    def build(root: Path, n: int, rng: np.random.Generator) -> None:
        for i in range(n):
            write(root / image(i), _volume(rng))
            write(root / label(i), label_volume(values, rng))
    return build


def _images(image: Callable[[int], str], chest_ct: bool = False):
    def build(root: Path, n: int, rng: np.random.Generator) -> None:
        for i in range(n):
            write(root / image(i), chest(rng) if chest_ct else _volume(rng))
    return build


def _multi_sequence(image: Callable[[int, str], str], label: Callable[[int], str], sequences: list[str],
                    values: list[int], label_per_sequence: bool = False):
    def build(root: Path, n: int, rng: np.random.Generator) -> None:
        for i in range(n):
            for s in sequences:
                write(root / image(i, s), _volume(rng))
                if label_per_sequence:
                    write(root / label(i, s), label_volume(values, rng))
            if not label_per_sequence:
                write(root / label(i), label_volume(values, rng))
    return build


def _msd(task: str, prefix: str, values: list[int]):
    def build(root: Path, n: int, rng: np.random.Generator) -> None:
        training = []
        for i in range(n):
            img, lab = f"imagesTr/{prefix}_{i + 1}.nii.gz", f"labelsTr/{prefix}_{i + 1}.nii.gz"
            write(root / img, _volume(rng))
            write(root / lab, label_volume(values, rng))
            training.append({"image": f"./{img}", "label": f"./{lab}"})
        (root / "dataset.json").write_text(json.dumps({"name": task, "training": training}))
    return build


def _stoic(with_labels: bool):
    def build(root: Path, n: int, rng: np.random.Generator) -> None:
        rows = []
        for i in range(n):
            pid = 1000 + 7 * i
            write(root / f"data/mha/{pid}.mha", chest(rng), spacing=(1.2, 1.2, 3.0))
            rows.append([pid, i % 2, int(i % 4 == 0)])
        if with_labels:
            _write_csv(root / "metadata/reference.csv", ["PatientID", "probCOVID", "probSevere"], rows)
    return build


def _asoca(root: Path, n: int, rng: np.random.Generator) -> None:
    for i in range(n):
        group = "Normal" if i % 2 == 0 else "Diseased"
        case = f"{group}_{i // 2 + 1}"
        write(root / f"{group}/CTCA/{case}.nrrd", _volume(rng))
        write(root / f"{group}/Annotations/{case}.nrrd", label_volume([0, 1], rng))


def _candi(root: Path, n: int, rng: np.random.Generator) -> None:
    groups = [("BPDwithPsy", "BPDwPsy"), ("HC", "HC"), ("SS", "SS")]
    values = [0, 2, 3, 4, 5, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17, 18, 24, 26, 28, 41, 42, 43, 44, 46, 47,
              49, 50, 51, 52, 53, 54, 58, 60]
    for i in range(n):
        folder, prefix = groups[i % 3]
        case = f"{prefix}_{i + 1:03d}"
        write(root / f"SchizBull_2008/{folder}/{case}/{case}_procimg.nii.gz", _volume(rng, (16, 16, 8)))
        write(root / f"SchizBull_2008/{folder}/{case}/{case}_seg.nii.gz", label_volume(values, rng, (16, 16, 8)))


def _autopet(root: Path, n: int, rng: np.random.Generator) -> None:
    for i in range(n):
        study = f"0{i % 9 + 1}-12-2005-NA-PET-CT Ganzkoerper  primaer mit KM-{10445 + i}"
        folder = root / f"FDG-PET-CT-Lesions/PETCT_{i:04x}a1f3e/{study}"
        for name in ("SUV", "CTres", "PET", "CT"):
            write(folder / f"{name}.nii.gz", _volume(rng, lo=0.0, hi=15.0))
        write(folder / "SEG.nii.gz", label_volume([0, 1], rng))


def _cc_ccii(root: Path, n: int, rng: np.random.Generator) -> None:
    for i in range(n):
        cls = ("NCP", "CP", "Normal")[i % 3]
        write_png_stack(root / f"{cls}/{100 + i}/{2000 + i}", _volume(rng, (16, 16, 5)))


def _adni(root: Path, n: int, rng: np.random.Generator) -> None:
    rows = []
    for i in range(n):
        subject = f"{(i // 2) * 3 + 2:03d}_S_{4000 + i // 2}"  # two images per subject
        image_id = f"I{300000 + i}"
        write(root / f"{subject}/{image_id}.nii.gz", _volume(rng, lo=0.0, hi=3.0))
        rows.append([image_id, subject, ("CN", "MCI", "AD")[(i // 2) % 3]])
    _write_csv(root / "labels.csv", ["Image Data ID", "Subject", "Group"], rows)


def _dicom(prefix: str, study_name: str):
    def build(root: Path, n: int, rng: np.random.Generator) -> None:
        for i in range(n):
            case = f"{prefix}-{i + 1:04d}"
            study = f"01-01-2000-NA-{study_name}-{30170 + i}"
            uid = f"1.2.826.0.1.3680043.8.498.{1000 + i}"
            write_dicom_series(root / f"{case}/{study}/3.000000-{study_name}-{40000 + i}", _volume(rng) + 1000.0,
                               uid, study_name)
    return build


def _luna16(root: Path, n: int, rng: np.random.Generator) -> None:
    for i in range(n):
        write(root / f"subset{i % 3}/1.3.6.1.4.1.14519.5.2.1.6279.6001.{105756658031515062000744821 + i}.mhd",
              _volume(rng))


def _oasis3(root: Path, n: int, rng: np.random.Generator) -> None:
    for i in range(n):
        sub, ses = f"sub-OAS3{i + 1:04d}", f"ses-d{(i * 37) % 3000:04d}"
        for scan in ("T1w", "T2w"):
            write(root / f"{sub}/{ses}/anat/{sub}_{ses}_{scan}.nii.gz", _volume(rng, lo=0.0, hi=900.0))


CARDIAC_2D = (16, 16, 3)


def _cmr(image, label, sequences, values, label_per_sequence):
    def build(root: Path, n: int, rng: np.random.Generator) -> None:
        for i in range(n):
            for s in sequences:
                write(root / image(i, s), _volume(rng, CARDIAC_2D, 0.0, 800.0), spacing=(1.25, 1.25, 10.0))
                if label_per_sequence:
                    write(root / label(i, s), label_volume(values, rng, CARDIAC_2D), spacing=(1.25, 1.25, 10.0))
            if not label_per_sequence:
                write(root / label(i), label_volume(values, rng, CARDIAC_2D), spacing=(1.25, 1.25, 10.0))
    return build


MMWHS = [0, 205, 420, 500, 550, 600, 820, 850]
BUILDERS: dict[str, Callable[[Path, int, np.random.Generator], None]] = {
    "gvsl_cardiac_ct": _images(lambda i: f"images/cta_{i:03d}.nii.gz"),
    "mmwhs_ct": _seg_files(lambda i: f"ct_train/ct_train_{1001 + i}_image.nii.gz",
                           lambda i: f"ct_train/ct_train_{1001 + i}_label.nii.gz", MMWHS),
    "asoca": _asoca,
    "candi": _candi,
    "stoic2021": _stoic(with_labels=True),
    "stoic2021_ct": _stoic(with_labels=False),
    "btcv": _seg_files(lambda i: f"RawData/Training/img/img{i + 1:04d}.nii.gz",
                       lambda i: f"RawData/Training/label/label{i + 1:04d}.nii.gz", list(range(14))),
    "msd_liver": _msd("Task03_Liver", "liver", [0, 1, 2]),
    "msd_lung": _msd("Task06_Lung", "lung", [0, 1]),
    "msd_spleen": _msd("Task09_Spleen", "spleen", [0, 1]),
    "brats2021": _multi_sequence(lambda i, s: f"BraTS2021_{i:05d}/BraTS2021_{i:05d}_{s}.nii.gz",
                                 lambda i: f"BraTS2021_{i:05d}/BraTS2021_{i:05d}_seg.nii.gz",
                                 ["t1", "t1ce", "t2", "flair"], [0, 1, 2, 4]),
    "brats2023": _multi_sequence(lambda i, s: f"BraTS-GLI-{i:05d}-000/BraTS-GLI-{i:05d}-000-{s}.nii.gz",
                                 lambda i: f"BraTS-GLI-{i:05d}-000/BraTS-GLI-{i:05d}-000-seg.nii.gz",
                                 ["t1n", "t1c", "t2w", "t2f"], [0, 1, 2, 3]),
    "autopet": _autopet,
    "cc_ccii": _cc_ccii,
    "adni_pet": _adni,
    "udpet": _images(lambda i: f"Anonymous_ANO_{20220101 + i}_{i:03d}/full_dose.nii.gz"),
    "tcia_covid19": _images(lambda i: f"volume-covid19-A-{i + 1:04d}.nii.gz"),
    "flare23": _images(lambda i: (f"imagesTr2200/FLARE23_{i + 1:04d}_0000.nii.gz" if i % 2 == 0
                                  else f"unlabeledTr1800/FLARE23Ts_{i + 1:04d}_0000.nii.gz")),
    "hnscc": lambda root, n, rng: _dicom("HNSCC-01", "CT HEAD NECK")(root / "HNSCC", n, rng),
    "lidc_idri": lambda root, n, rng: _dicom("LIDC-IDRI", "NA")(root / "LIDC-IDRI", n, rng),
    "luna16": _luna16,
    "totalsegmentator": _images(lambda i: f"s{i:04d}/ct.nii.gz"),
    "oasis3": _oasis3,
    "mscmrseg_bssfp": _cmr(lambda i, s: f"images/patient{i + 1}_{s}.nii.gz",
                           lambda i, s: f"labels/patient{i + 1}_{s}_manual.nii.gz",
                           ["C0", "DE", "T2"], [0, 200, 500, 600], label_per_sequence=True),
    "myops2020_bssfp": _cmr(lambda i, s: f"train25/myops_training_{101 + i}_{s}.nii.gz",
                            lambda i: f"train25_myops_gd/myops_training_{101 + i}_gd.nii.gz",
                            ["C0", "DE", "T2"], [0, 200, 500, 600, 1220, 2221], label_per_sequence=False),
    "ctmr2d_ct": _cmr(lambda i, s: f"{s}/{1001 + i}_image.nii.gz", lambda i, s: f"{s}/{1001 + i}_label.nii.gz",
                      ["CT", "MR"], [0, 1, 2, 3], label_per_sequence=True),
}
# datasets that share the raw files of another (several sequences / modalities of one release)
BUILDERS["mscmrseg_lge"] = BUILDERS["mscmrseg_t2"] = BUILDERS["mscmrseg_bssfp"]
BUILDERS["myops2020_lge"] = BUILDERS["myops2020_bssfp"]
BUILDERS["ctmr2d_mr"] = BUILDERS["ctmr2d_ct"]


def n_cases(spec) -> int:
    """Enough cases for the entry's splits (counts), or 8 when the splits are shares."""
    sp = spec.splits
    if isinstance(sp.validation, int) and isinstance(sp.test, int):
        return max(sp.validation + sp.test + 2, 4)
    return 8


def write_miniature(name: str, root: Path, n: int, seed: int = 0) -> Path:
    """Write the miniature of catalog dataset ``name`` into ``root`` (its raw folder)."""
    if name not in BUILDERS:
        raise KeyError(f"no miniature for dataset {name!r}")
    root.mkdir(parents=True, exist_ok=True)
    BUILDERS[name](root, n, np.random.default_rng(seed))
    return root
