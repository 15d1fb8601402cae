"""``medssl preprocess``: raw data to resampled RAS volumes and a datalist.

The cases of the raw folder are found by the dataset's layout
(:func:`medssl.data.layouts.find_cases`: MSD, file patterns, DICOM series, slice
stacks). Each case is read (:func:`read_raw_case`), its label values mapped by
``label_values``, optionally cropped to the lungs (``crop: lung``,
:mod:`medssl.data.lung`), reoriented to RAS, resampled to the recipe's spacing
(linear for images, nearest neighbour for labels, same physical extent, origin
kept; a ``null`` spacing keeps that axis's own), mapped by the intensity recipe
and centre-cropped / padded to the recipe's ROI (a ``null`` keeps that axis's
size). The output of a dataset is built in a temporary folder beside
``data/processed/<dataset>`` and renamed into place at the end, ``datalist.json``
written last, so a failure leaves neither a partial output nor a damaged older
one.

Coordinates: ITK images live in LPS world coordinates; NIfTI affines in RAS.
The affine of an ITK image is ``diag(-1, -1, 1, 1) @ [[D diag(s), o], [0, 1]]``
with direction ``D``, spacing ``s`` and origin ``o``. Arrays returned here are
in NIfTI voxel order ``(i, j, k)`` (ITK's ``GetArrayFromImage`` is ``(k, j, i)``).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tqdm.auto import tqdm

from medssl import paths
from medssl.config import DatasetSpec, Recipe
from medssl.data.datalist import make_splits, write_datalist
from medssl.data.intensity import apply_intensity, crop_or_pad
from medssl.data.layouts import PreprocessError, RawCase, case_id, find_cases, map_label_values, read_msd_layout
from medssl.data.leakage import raw_fingerprint
from medssl.data.readers import check_scalar_3d, dicom_record, read_dicom_series, read_png_stack, read_sitk
from medssl.io import save_nifti

log = logging.getLogger("medssl")

__all__ = ["PreprocessError", "RawCase", "case_id", "read_msd_layout", "read_image", "read_raw_case",
           "ras_affine", "to_ras", "resample", "preprocess_case", "preprocess_raw_case", "preprocess_dataset"]

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
GRID_TOL = 1e-3  # relative tolerance when comparing image and label grids
_MAX_LISTED = 20  # bad label values listed in an error


# ------------------------------------------------------------------- geometry
def read_image(path: str | Path) -> sitk.Image:
    """Read a scalar 3D image with SimpleITK.

    Raises:
        PreprocessError: naming ``path`` when it is missing, unreadable,
            corrupt or truncated, not 3D, or not scalar.
    """
    path = Path(path)
    if not path.is_file():
        raise PreprocessError(f"{path}: file not found")
    _check_nifti_complete(path)
    return check_scalar_3d(read_sitk(path, "image: corrupt or truncated"), path)


def _check_nifti_complete(path: Path) -> None:
    """Raise unless a NIfTI file holds all the voxel bytes its header announces
    (:func:`medssl.data.integrity.nifti_fault`: ITK fills a truncated file silently)."""
    from medssl.data.integrity import nifti_fault

    if path.name.lower().endswith((".nii", ".nii.gz")) and (fault := nifti_fault(path)):
        raise PreprocessError(f"{path}: {fault}")


def ras_affine(img: sitk.Image) -> np.ndarray:
    """4x4 NIfTI (RAS) voxel-to-world matrix of a 3D SimpleITK (LPS) image."""
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction * np.asarray(img.GetSpacing(), dtype=np.float64)[None, :]
    lps[:3, 3] = img.GetOrigin()
    return LPS_TO_RAS @ lps


def to_ras(img: sitk.Image) -> sitk.Image:
    """Permute / flip the voxel axes so that they point to R, A, S (no resampling).

    SimpleITK's ``DICOMOrient`` names the directions the axes point *to* in
    this version (``"RAS"`` gives direction ``diag(-1, -1, 1)`` in LPS world);
    older ITK orientation codes used the opposite, "from" letters, so the
    result is checked against nibabel's reading of the affine.
    """
    import nibabel as nib

    out = sitk.DICOMOrient(img, "RAS")
    codes = nib.aff2axcodes(ras_affine(out))
    if codes != ("R", "A", "S"):  # pragma: no cover - guards a SimpleITK convention change
        raise RuntimeError(f"SimpleITK DICOMOrient('RAS') gave axes {codes}, not R, A, S")
    return out


def resample(img: sitk.Image, spacing: tuple[float, float, float], label: bool = False) -> sitk.Image:
    """Resample to ``spacing`` over the same physical extent, origin and direction kept.

    The new size along each axis is ``round(size * old_spacing / spacing)``
    (at least 1). Images use linear interpolation, labels nearest neighbour.
    The output grid may reach up to half an output voxel past the last input
    voxel centre; there an axis is clamped to its border voxel (the input is
    edge-padded by one voxel) while the others still interpolate.

    Raises:
        ValueError: naming ``spacing`` unless it is three positive numbers.
    """
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or not all(s > 0 for s in spacing):
        raise ValueError(f"spacing must be three positive numbers, got {spacing}")
    old = img.GetSpacing()
    size = [max(1, int(math.floor(n * s / t + 0.5))) for n, s, t in zip(img.GetSize(), old, spacing)]
    if tuple(size) == img.GetSize() and np.allclose(old, spacing, rtol=0, atol=1e-6):
        return img
    f = sitk.ResampleImageFilter()
    f.SetSize(size)
    f.SetOutputSpacing(spacing)
    f.SetOutputOrigin(img.GetOrigin())
    f.SetOutputDirection(img.GetDirection())
    f.SetOutputPixelType(img.GetPixelID())
    f.SetInterpolator(sitk.sitkNearestNeighbor if label else sitk.sitkLinear)
    f.SetUseNearestNeighborExtrapolator(True)
    if not label:  # replicate the border so that linear interpolation clamps per axis past the last centre
        img = sitk.ZeroFluxNeumannPad(img, [1, 1, 1], [1, 1, 1])
    return f.Execute(img)


def _check_same_grid(image: sitk.Image, label: sitk.Image, image_path: Path, label_path: Path) -> None:
    if image.GetSize() != label.GetSize():
        raise PreprocessError(f"{label_path}: label size {label.GetSize()} differs from "
                              f"image size {image.GetSize()} of {image_path}")
    sp_i, sp_l = np.asarray(image.GetSpacing()), np.asarray(label.GetSpacing())
    ok = (np.allclose(sp_i, sp_l, rtol=GRID_TOL, atol=0)
          and np.allclose(image.GetDirection(), label.GetDirection(), rtol=0, atol=GRID_TOL)
          and np.allclose(image.GetOrigin(), label.GetOrigin(), rtol=0, atol=GRID_TOL * sp_i.min()))
    if not ok:
        raise PreprocessError(
            f"{label_path}: label grid (origin {label.GetOrigin()}, spacing {label.GetSpacing()}, "
            f"direction {label.GetDirection()}) differs from the image grid of {image_path} "
            f"(origin {image.GetOrigin()}, spacing {image.GetSpacing()}, direction {image.GetDirection()})")


def _check_label_values(label: sitk.Image, n_classes: int | None, path: Path) -> None:
    values = np.unique(sitk.GetArrayViewFromImage(label))
    top = (n_classes if n_classes is not None else 256) - 1
    bad = values[(values != np.round(values)) | (values < 0) | (values > top)]
    if bad.size:
        shown = ", ".join(f"{v:g}" for v in bad[:_MAX_LISTED].tolist())
        more = f" (and {bad.size - _MAX_LISTED} more)" if bad.size > _MAX_LISTED else ""
        raise PreprocessError(f"{path}: label values outside 0..{top}: {shown}{more}")


def _check_finite(image: sitk.Image, path: Path) -> None:
    """Refuse an image with NaN or infinite voxels, naming the file and the counts.

    ITK's NIfTI reader (SimpleITK 2.5) returns NaN and ±Inf voxels as 0, which
    the intensity recipe then maps to a mid-range value; a NIfTI file's voxels
    are therefore read again with nibabel. Other formats keep them in the
    SimpleITK image.
    """
    if path.name.lower().endswith((".nii", ".nii.gz")):
        import nibabel as nib

        arr = np.asanyarray(nib.load(str(path)).dataobj)
    else:
        arr = sitk.GetArrayViewFromImage(image)
    if not np.issubdtype(arr.dtype, np.floating):
        return
    finite = np.isfinite(arr)
    if not finite.all():
        n_nan = int(np.isnan(arr).sum())
        bad = int(arr.size - finite.sum())
        raise PreprocessError(f"{path}: {bad} of {arr.size} voxels are not finite ({n_nan} NaN, {bad - n_nan} "
                              "infinite); replace or mask them in the raw image before preprocessing")


# ----------------------------------------------------------------------- case
def _read_kind(path: Path, kind: str, rc: RawCase, label: bool) -> sitk.Image:
    if kind == "dicom":
        return read_dicom_series(path, rc.series_description)
    if kind == "png_stack":
        return read_png_stack(path, rc.slices, rc.spacing or (1.0, 1.0, 1.0), label=label)
    return read_image(path)


def read_raw_case(rc: RawCase) -> tuple[sitk.Image, sitk.Image | None]:
    """Read a case's image (file, DICOM series or slice stack) and its label image, if any.

    Returns:
        ``(image, label)``; ``label`` is ``None`` unless ``rc.label`` is a path.
        The label is checked to lie on the image's grid.

    Raises:
        PreprocessError: naming the file or folder that is missing or unreadable,
            or the label whose grid differs from the image's.
    """
    image = _read_kind(Path(rc.image), rc.image_kind, rc, label=False)
    if not isinstance(rc.label, Path):
        return image, None
    label = _read_kind(rc.label, rc.label_kind, rc, label=True)
    _check_same_grid(image, label, Path(rc.image), rc.label)
    return image, label


def _target_spacing(img: sitk.Image, spacing: tuple[float | None, ...]) -> tuple[float, float, float]:
    """The recipe's spacing with each ``None`` replaced by the image's own spacing on that axis."""
    own = img.GetSpacing()
    return tuple(float(own[a]) if s is None else float(s) for a, s in enumerate(spacing))


def preprocess_raw_case(rc: RawCase, recipe: Recipe, n_classes: int | None,
                        label_values: Mapping[str, int] | None = None
                        ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Preprocess one case: read, map label values, lung crop, RAS, resample, intensity, ROI.

    Args:
        rc: the case (its image may be a file, a DICOM folder or a slice stack).
        recipe: target spacing (``None`` entries keep the axis's own spacing after
            RAS reorientation), intensity recipe, optional ROI (``None`` entries
            keep the axis's size) and optional lung crop.
        n_classes: label values must lie in ``0..n_classes-1`` (``None``: 0..255).
        label_values: published label value -> class index, applied to the label
            voxels before resampling (``0 -> 0`` implied).

    Returns:
        ``(image, label, affine)``: float32 image and uint8 label (or ``None``)
        in voxel order (i, j, k), and their 4x4 RAS affine.

    Raises:
        PreprocessError: naming the file on an unreadable / non-3D image, a label
            whose size or grid differs from the image's, a label value that
            ``label_values`` lacks or outside the classes, or no lung found.
        ValueError: naming ``n_classes`` when outside 1..256.
    """
    if n_classes is not None and not 1 <= n_classes <= 256:
        raise ValueError(f"n_classes must be in 1..256 (uint8 labels), got {n_classes}")
    image, label = read_raw_case(rc)
    _check_finite(image, Path(rc.image))
    if label is not None:
        label_path = Path(rc.label)
        if label_values is not None:
            mapped = map_label_values(sitk.GetArrayViewFromImage(label), label_values, str(label_path))
            label = sitk.GetImageFromArray(mapped)
        _check_label_values(label, n_classes, label_path)
        label = sitk.Cast(label, sitk.sitkUInt8)
        label.CopyInformation(image)  # equal within GRID_TOL: use one grid exactly
    if recipe.crop == "lung":
        from medssl.data.lung import lung_crop

        image, label = lung_crop(image, label, recipe.crop_margin, source=rc.image)
    image = to_ras(sitk.Cast(image, sitk.sitkFloat32))
    spacing = _target_spacing(image, recipe.spacing)
    image = resample(image, spacing)
    affine = ras_affine(image)
    img = apply_intensity(sitk.GetArrayViewFromImage(image).transpose(2, 1, 0), recipe.intensity)
    lab = None
    if label is not None:
        label = resample(to_ras(label), spacing, label=True)
        lab = np.ascontiguousarray(sitk.GetArrayFromImage(label).transpose(2, 1, 0), dtype=np.uint8)
    if recipe.roi is not None:
        img, start = crop_or_pad(img, recipe.roi, pad_value=float(img.min()))
        if lab is not None:
            lab, _ = crop_or_pad(lab, recipe.roi, pad_value=0)
        affine = affine.copy()
        affine[:3, 3] = affine[:3, :3] @ start + affine[:3, 3]
    return np.ascontiguousarray(img, dtype=np.float32), lab, affine


def preprocess_case(image_path: str | Path, label_path: str | Path | None, recipe: Recipe,
                    n_classes: int | None, label_values: Mapping[str, int] | None = None
                    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Preprocess one case given as an image file and an optional label file.

    :func:`preprocess_raw_case` of ``RawCase(image_path, label_path)``; see there.

    Args:
        image_path: 3D scalar image (any format SimpleITK reads).
        label_path: label map on the image's grid, or ``None``.
        recipe: target spacing, intensity recipe, optional ROI and lung crop.
        n_classes: label values must lie in ``0..n_classes-1`` (``None``: 0..255).
        label_values: optional mapping of the label file's values to class indices.

    Returns:
        ``(image, label, affine)``: float32 image and uint8 label (or ``None``)
        in voxel order (i, j, k), and their 4x4 RAS affine.

    Raises:
        PreprocessError: naming the file on an unreadable / non-3D image, a label
            whose size or grid differs from the image's, or bad label values.
        ValueError: naming ``n_classes`` when outside 1..256.
    """
    image_path = Path(image_path)
    label = Path(label_path) if label_path is not None else None
    return preprocess_raw_case(RawCase(case_id(image_path), image_path, label), recipe, n_classes, label_values)


# -------------------------------------------------------------------- dataset
def preprocess_dataset(name: str, spec: DatasetSpec, raw_dir: Path | None = None,
                       out_dir: Path | None = None, progress: bool = True) -> Path:
    """Preprocess every case of a raw dataset and write its datalist.

    The cases are found by ``spec.layout`` (:func:`medssl.data.layouts.find_cases`).
    Writes ``images/<case>.nii.gz``, ``labels/<case>.nii.gz`` (segmentation)
    and, last, ``datalist.json`` into a temporary folder beside ``out_dir``,
    then swaps it into place. On any error the temporary folder is removed
    and an existing ``out_dir`` is left as it was.

    Args:
        name: dataset name.
        spec: its spec from ``params.yaml``.
        raw_dir: raw folder (default ``paths.raw(name)``).
        out_dir: output folder (default ``paths.processed(name)``).
        progress: show a tqdm progress bar.

    Returns:
        ``out_dir``.

    Raises:
        PreprocessError: naming the file at fault (missing raw files suggest
            ``medssl fetch <name>``).
        ValueError: when the splits cannot be made.
    """
    raw_dir = Path(raw_dir) if raw_dir is not None else paths.raw(name)
    out_dir = Path(out_dir) if out_dir is not None else paths.processed(name)
    n_classes = len(spec.classes) if spec.task != "pretrain" else None
    cases = find_cases(raw_dir, name, spec)
    strata = {c.case: c.label for c in cases} if spec.task == "classification" else None
    splits = make_splits([c.case for c in cases], spec.splits, strata)  # fail before any work
    label_values = spec.label_values if spec.task == "segmentation" else None
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.{uuid.uuid4().hex[:12]}.tmp"
    tmp.mkdir()
    try:
        entries: dict[str, dict] = {}
        for rc in tqdm(cases, desc=f"preprocess {name}", unit="case", disable=not progress):
            img, lab, affine = preprocess_raw_case(rc, spec.recipe, n_classes, label_values)
            entry: dict = {"image": f"images/{rc.case}.nii.gz", "source": raw_fingerprint(rc.image),
                           **dicom_record(rc)}  # DICOM: the series UID, slice count and gap read
            save_nifti(tmp / entry["image"], img, affine, np.float32)
            if lab is not None:
                if not lab.any():
                    log.warning("preprocess %s: case %s has an all-background label (%s): its Dice is undefined "
                                "for every class", name, rc.case, rc.label)
                    entry["empty_label"] = True
                entry["label"] = f"labels/{rc.case}.nii.gz"
                save_nifti(tmp / entry["label"], lab, affine, np.uint8)
            elif isinstance(rc.label, int):
                entry["label"] = rc.label
            entries[rc.case] = entry
        write_datalist(tmp / "datalist.json", name, spec, entries, splits)
        _swap_into_place(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    """Rename ``tmp`` onto ``out_dir``, replacing (then deleting) an older one."""
    if not out_dir.exists():
        os.replace(tmp, out_dir)
        return
    old = out_dir.parent / f".{out_dir.name}.{uuid.uuid4().hex[:12]}.old"
    os.replace(out_dir, old)
    try:
        os.replace(tmp, out_dir)
    except BaseException:
        os.replace(old, out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)
