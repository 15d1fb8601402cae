"""Built-in synthetic CT torso phantoms, deterministic by seed.

Every phantom is the one template anatomy (:mod:`medssl.data.anatomy`: body,
fat, ribs, lungs with a branching vessel tree, trachea, heart with four
chambers and myocardium, aorta, liver, spleen, kidneys, vertebral bodies)
seen through a subject-specific random affine, smooth elastic field and
organ-size changes (:mod:`medssl.data.deform`). Structure ids are the template
evaluated at each voxel's template position, so labels are exact, and the
ground-truth map is kept: ``Phantom.displacement`` holds, for every voxel,
``template position - subject world position`` (mm), which lets registration
checks compose any two subjects through the template.

Intensities are CT-like (HU) per tissue with per-subject contrast, a
partial-volume blur (Gaussian, sigma half a voxel) and Gaussian noise. The
image is stored with an LPS-like affine ``diag(-sx, -sy, sz)`` (see
:class:`~medssl.data.deform.Geometry`), as DICOM-converted scans are, so
preprocessing has to reorient. A ``lesion_fraction`` share of subjects
(whatever the label set) carries one soft-tissue lesion in a lung.

Two MR generators share the layout: ``breast`` (:mod:`medssl.data.breast`,
one fibroglandular target for the template study) and ``cardiac``
(:mod:`medssl.data.cardiac`, short-axis bSSFP or LGE stacks labelled LV,
myocardium, RV for the uda2d study; ``contrast`` picks the sequence).

:func:`write_dataset` writes the Medical Segmentation Decathlon layout
(``imagesTr/``, ``labelsTr/``, ``dataset.json``) byte-for-byte
deterministically, so a fresh fetch matches ``data.dvc``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter
from tqdm import tqdm

from medssl.config import SyntheticSource
from medssl.data import anatomy, deform
from medssl.data.anatomy import STRUCTURES
from medssl.data.breast import STRUCTURES as BREAST_STRUCTURES
from medssl.data.breast import generate_breast
from medssl.data.cardiac import CLASSES as CARDIAC_CLASSES
from medssl.data.cardiac import generate_cardiac
from medssl.io import save_nifti, write_json

__all__ = ["CLASSES", "STRUCTURES", "Phantom", "generate", "has_lesion", "label_map", "write_dataset"]

#: Class names of each label set (index = label id); ``lesion`` is per-case classification.
CLASSES: dict[str, list[str]] = {
    "organs": ["background", "lungs", "heart", "aorta", "liver", "spleen", "kidneys", "spine"],
    "heart": ["background", "LV", "RV", "LA", "RA", "myocardium"],
    "vessels": ["background", "vessel"],
    "lesion": ["no_lesion", "lesion"],
    "none": [],
    "breast": ["background", "fibroglandular"],
    "cardiac": list(CARDIAC_CLASSES),
}
#: Generators whose label set is their own (and only theirs); the torso takes the others.
_OWN_LABELS = {"breast": "breast", "cardiac": "cardiac"}

# Fine-grained structures making up each class (unlisted structures are background).
_GROUPS: dict[str, dict[str, tuple[str, ...]]] = {
    "organs": {"lungs": ("lung_left", "lung_right", "lung_vessel", "lesion"),
               "heart": ("myocardium", "lv", "rv", "la", "ra"), "aorta": ("aorta",),
               "liver": ("liver",), "spleen": ("spleen",), "kidneys": ("kidney_left", "kidney_right"),
               "spine": ("vertebra",)},
    "heart": {"LV": ("lv",), "RV": ("rv",), "LA": ("la",), "RA": ("ra",), "myocardium": ("myocardium",)},
    "vessels": {"vessel": ("lung_vessel",)},
}


def _lut(labels: str) -> np.ndarray:
    lut = np.zeros(256, dtype=np.uint8)
    for cls, members in _GROUPS[labels].items():
        lut[[STRUCTURES[m] for m in members]] = CLASSES[labels].index(cls)
    return lut


_LUTS = {name: _lut(name) for name in _GROUPS}

# Mean HU per structure; per-subject jitter and contrast are added in _hu_table.
_HU = {"background": -1000.0, "fat": -100.0, "soft_tissue": 20.0, "lung_left": -850.0,
       "lung_right": -850.0, "trachea": -990.0, "lesion": 35.0, "liver": 58.0, "spleen": 46.0,
       "kidney_left": 32.0, "kidney_right": 32.0, "vertebra": 480.0, "rib": 650.0}


@dataclass
class Phantom:
    """One synthetic subject.

    Attributes:
        image: float32 HU, shape ``source.shape``, voxel order (i, j, k).
        structures: uint8 fine-grained structure ids (:data:`STRUCTURES`).
        affine: 4x4 float64 voxel -> world (RAS mm, NIfTI convention), LPS-like.
        displacement: float32 (i, j, k, 3): template position - subject world position (mm);
            empty for the cardiac generator, which keeps no template map.
        lesion: 1 when the subject has a lung lesion, else 0.
    """

    image: np.ndarray
    structures: np.ndarray
    affine: np.ndarray
    displacement: np.ndarray
    lesion: int


def _check(source: SyntheticSource, index: int) -> None:
    if not isinstance(source, SyntheticSource):
        raise ValueError(f"source must be a SyntheticSource, got {type(source).__name__}")
    if source.generator not in ("torso", *_OWN_LABELS):
        raise ValueError(f"unknown phantom generator {source.generator!r}; known: torso, {', '.join(_OWN_LABELS)}")
    for gen, labels in _OWN_LABELS.items():
        if (source.generator == gen) != (source.labels == labels):
            raise ValueError(f"labels {labels!r} go with generator {gen!r} (and only with it), got generator "
                             f"{source.generator!r} with labels {source.labels!r}")
    if source.seed < 0:
        raise ValueError(f"source.seed must be >= 0, got {source.seed}")
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"index must be an int >= 0, got {index!r}")


def geometry(source: SyntheticSource) -> deform.Geometry:
    """The raw voxel grid (shape, spacing, affine) of ``source``."""
    return deform.Geometry(tuple(int(n) for n in source.shape), tuple(float(s) for s in source.spacing))


def has_lesion(source: SyntheticSource, index: int) -> int:
    """Whether case ``index`` of ``source`` has a lung lesion (cheap: no phantom is built)."""
    _check(source, index)
    return int(deform.draw_lesion_flag(np.random.default_rng([source.seed, index]), source.lesion_fraction))


def _hu_table(rng: np.random.Generator) -> np.ndarray:
    """Per-structure HU of one subject: tissue means with jitter and a random contrast phase."""
    table = np.zeros(256, dtype=np.float32)
    for name, hu in _HU.items():
        table[STRUCTURES[name]] = hu + (rng.normal(0.0, 5.0) if -500 < hu < 300 else rng.normal(0.0, 15.0))
    arterial = rng.uniform(120.0, 200.0)
    venous = 0.6 * arterial + rng.uniform(0.0, 20.0)
    for name, hu in {"lv": arterial, "la": arterial, "aorta": arterial, "rv": venous, "ra": venous,
                     "lung_vessel": venous, "myocardium": rng.uniform(70.0, 100.0)}.items():
        table[STRUCTURES[name]] = hu
    table[STRUCTURES["background"]] = -1000.0
    return table


def _image(structures: np.ndarray, py: np.ndarray, subject: deform.Subject) -> np.ndarray:
    """CT-like HU image: tissue table, lung density gradient, partial-volume blur, noise."""
    rng = np.random.default_rng(subject.seeds[0])
    image = _hu_table(rng)[structures]
    lung = (structures == STRUCTURES["lung_left"]) | (structures == STRUCTURES["lung_right"])
    image[lung] -= 0.3 * py[lung]  # dependent (posterior, y < 0) lung is denser
    image = gaussian_filter(image, sigma=0.5, mode="nearest", truncate=3.0)
    sigma = rng.uniform(10.0, 25.0)
    noise = np.random.default_rng(subject.seeds[1]).standard_normal(image.shape, dtype=np.float32)
    image += np.float32(sigma) * noise
    return image


def generate(source: SyntheticSource, index: int) -> Phantom:
    """Build case ``index`` of ``source`` from ``np.random.default_rng([source.seed, index])``.

    Args:
        source: phantom source (shape, spacing, seed, lesion_fraction).
        index: case index (>= 0); cases do not depend on ``source.n_cases``.

    Returns:
        The :class:`Phantom`: image, fine-grained structures, affine, ground-truth
        displacement to the template and lesion flag.
    """
    _check(source, index)
    if source.generator == "breast":
        image, structures, affine, displacement = generate_breast(source.shape, source.spacing, source.seed, int(index))
        return Phantom(image, structures, affine, displacement, 0)
    if source.generator == "cardiac":  # structures are the labels; no ground-truth displacement
        image, label, affine = generate_cardiac(tuple(source.shape), tuple(source.spacing), source.seed, int(index),
                                                source.contrast)
        return Phantom(image, label, affine, np.zeros((0,), np.float32), 0)
    geom = geometry(source)
    subject = deform.sample_subject(geom, source.seed, int(index), source.lesion_fraction,
                                   tuple(source.lesion_mm))
    p = deform.template_coordinates(subject, geom)
    structures = anatomy.render(p[0], p[1], p[2], lesion=subject.lesion)
    image = _image(structures, p[1], subject)
    for axis, coord in enumerate(geom.axes()):
        shape = [1, 1, 1]
        shape[axis] = -1
        p[axis] -= coord.astype(np.float32).reshape(shape)
    displacement = np.ascontiguousarray(np.moveaxis(p, 0, -1))
    return Phantom(image, structures, geom.affine, displacement, int(subject.lesion is not None))


def label_map(phantom: Phantom, labels: str) -> np.ndarray | int:
    """Task labels of ``phantom``: a uint8 map (organs, heart, vessels) or the lesion class (int).

    Raises:
        ValueError: for ``none`` (unlabeled) or an unknown label set.
    """
    if labels == "lesion":
        return int(phantom.lesion)
    if labels == "breast":
        return (phantom.structures == BREAST_STRUCTURES["fibroglandular"]).astype(np.uint8)
    if labels == "cardiac":
        return phantom.structures.astype(np.uint8)
    if labels not in _LUTS:
        raise ValueError(f"label set {labels!r} has no labels; labelled sets: "
                         f"{', '.join([*_LUTS, 'lesion', *_OWN_LABELS])}")
    return _LUTS[labels][phantom.structures]


_KIND = {"torso": "CT torso", "breast": "MR breast", "cardiac": "short-axis cardiac MR"}


def write_dataset(out_dir: Path, source: SyntheticSource, progress: bool = True, name: str = "phantom") -> list[Path]:
    """Write ``source.n_cases`` phantoms in the Medical Segmentation Decathlon layout.

    Writes ``imagesTr/phantom_NNN.nii.gz`` (int16 HU), ``labelsTr/phantom_NNN.nii.gz``
    (uint8, segmentation label sets only) and ``dataset.json`` (last). For
    ``lesion`` each training entry's ``label`` is the int class; for ``none``
    entries have no ``label``. Output is byte-for-byte deterministic.

    Args:
        out_dir: folder to write into (created if missing).
        source: the phantom source.
        progress: show a tqdm progress bar.
        name: the ``name`` field of ``dataset.json`` (case names are always ``phantom_NNN``).

    Returns:
        The files written, ``dataset.json`` last.
    """
    _check(source, 0)
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    out_dir = Path(out_dir)
    width = max(3, len(str(source.n_cases - 1)))
    segmentation = source.labels in _LUTS or source.labels in _OWN_LABELS
    written: list[Path] = []
    training = []
    for index in tqdm(range(source.n_cases), desc=f"phantoms {name}", disable=not progress):
        case = f"phantom_{index:0{width}d}"
        phantom = generate(source, index)
        image = np.clip(np.rint(phantom.image), -1024, 3071).astype(np.int16)
        entry: dict[str, object] = {"image": f"./imagesTr/{case}.nii.gz"}
        save_nifti(out_dir / "imagesTr" / f"{case}.nii.gz", image, phantom.affine)
        written.append(out_dir / "imagesTr" / f"{case}.nii.gz")
        if segmentation:
            entry["label"] = f"./labelsTr/{case}.nii.gz"
            save_nifti(out_dir / "labelsTr" / f"{case}.nii.gz", label_map(phantom, source.labels),
                       phantom.affine, dtype=np.uint8)
            written.append(out_dir / "labelsTr" / f"{case}.nii.gz")
        elif source.labels == "lesion":
            entry["label"] = phantom.lesion
        training.append(entry)
    meta = {
        "name": name,
        "description": (f"medssl synthetic {_KIND[source.generator]} "
                        f"phantoms (labels: {source.labels}, seed {source.seed}, "
                        f"shape {list(source.shape)}, spacing {list(source.spacing)} mm)"),
        "reference": "medssl.data.synthetic",
        "licence": "CC0-1.0",
        "tensorImageSize": "3D",
        "modality": {"0": "CT" if source.generator == "torso" else "MR"},
        "labels": {str(i): c for i, c in enumerate(CLASSES[source.labels])},
        "numTraining": source.n_cases,
        "numTest": 0,
        "training": training,
        "test": [],
        "source": source.model_dump(mode="json"),
    }
    write_json(out_dir / "dataset.json", meta)
    written.append(out_dir / "dataset.json")
    return written
