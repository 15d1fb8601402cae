"""An intensity-based lung mask of a CT scan, and the crop to it (``recipe.crop: lung``).

This is a threshold + connected-components heuristic, not the learned lung
segmentation some papers use (GVSL crops STOIC to the lungs with a trained
model); it needs no model weights and runs offline. The steps:

1. voxels below ``threshold`` HU (default -320: air and lung parenchyma, not
   soft tissue) are candidates;
2. per axial slice, candidate regions that touch the slice's border are removed
   (the air around the body, and the table's air gaps); the axial axis is the
   voxel axis closest to the patient's superior direction;
3. of the 3-D connected components left, the largest is kept, and the second
   largest too when it is at least ``min_ratio`` of the largest (the two lungs
   apart; joined through the trachea they are one component, and the second is
   then bowel gas, far smaller); each must be at least ``min_fraction`` of the
   body (every voxel but the outside air: lungs are some 20-30 % of a chest
   scan's body, bowel gas about 1 %) and hold ``min_volume_ml`` millilitres;
4. holes are filled per axial slice (vessels and nodules inside the lungs) and
   gaps of one voxel closed.

It assumes Hounsfield units and a body that does not touch the in-plane border
of the field of view. For a crop, a mask that is a little off costs nothing as
long as its bounding box (plus the margin) holds the lungs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from medssl.data.layouts import PreprocessError

THRESHOLD_HU = -320.0


def axial_axis(image: sitk.Image) -> int:
    """The voxel axis (0, 1, 2 = i, j, k) whose direction is closest to superior (LPS z)."""
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    return int(np.argmax(np.abs(direction[2])))


def lung_mask(image: sitk.Image | np.ndarray, *, spacing: Sequence[float] | None = None,
              axial: int | None = None, threshold: float = THRESHOLD_HU, min_fraction: float = 0.02,
              min_volume_ml: float = 0.5, min_ratio: float = 0.1,
              source: str | Path | None = None) -> sitk.Image | np.ndarray:
    """Lung mask of a CT volume by thresholding and connected components (no model).

    A heuristic, not a learned segmentation: see the module docstring for the steps.

    Args:
        image: CT in Hounsfield units: a 3D SimpleITK image, or an array in
            voxel order (i, j, k) (NIfTI order).
        spacing: voxel size (mm) per array axis; an image's own spacing is used
            for a SimpleITK image (default 1 mm for an array).
        axial: the axial voxel axis; default from the image's direction (an
            array: axis 2).
        threshold: HU below which a voxel is air or lung.
        min_fraction: smallest share of the body's volume of a kept component.
        min_volume_ml: smallest volume of a kept component.
        min_ratio: the second largest component is kept when at least this
            share of the largest.
        source: the image file, named in the error.

    Returns:
        A uint8 SimpleITK image on the input's grid (for an image input), or a
        boolean array of the input's shape.

    Raises:
        PreprocessError: naming ``source`` when no component is large enough.
        ValueError: when ``image`` is not 3D.
    """
    if isinstance(image, sitk.Image):
        if image.GetDimension() != 3:
            raise ValueError(f"lung_mask needs a 3D image, got {image.GetDimension()}D")
        array = sitk.GetArrayViewFromImage(image).transpose(2, 1, 0)
        spacing = image.GetSpacing() if spacing is None else spacing
        axial = axial_axis(image) if axial is None else axial
    else:
        array = np.asarray(image)
        if array.ndim != 3:
            raise ValueError(f"lung_mask needs a 3D array, got shape {array.shape}")
        spacing = (1.0, 1.0, 1.0) if spacing is None else spacing
        axial = 2 if axial is None else axial
    mask = _lung_array(array, tuple(float(s) for s in spacing), axial, threshold, min_fraction,
                       min_volume_ml, min_ratio, source)
    if not isinstance(image, sitk.Image):
        return mask
    out = sitk.GetImageFromArray(mask.transpose(2, 1, 0).astype(np.uint8))
    out.CopyInformation(image)
    return out


def _in_plane(axial: int, two_d: np.ndarray) -> np.ndarray:
    """A 3x3x3 structure that is ``two_d`` (3x3) in the plane normal to ``axial``, nothing across."""
    s = np.zeros((3, 3, 3), dtype=bool)
    index: list[slice | int] = [slice(None)] * 3
    index[axial] = 1
    s[tuple(index)] = two_d
    return s


def _lung_array(a: np.ndarray, spacing: tuple[float, float, float], axial: int, threshold: float,
                min_fraction: float, min_volume_ml: float, min_ratio: float,
                source: str | Path | None) -> np.ndarray:
    where = str(source) if source is not None else "image"
    cross = ndimage.generate_binary_structure(2, 1)
    low = a < threshold
    # 2. per axial slice, drop the candidate regions that touch the slice's border
    regions, n = ndimage.label(low, structure=_in_plane(axial, cross))
    border = np.zeros(n + 1, dtype=bool)
    for ax in range(3):
        if ax == axial:
            continue
        for end in (0, -1):
            border[np.take(regions, end, axis=ax)] = True
    border[0] = True
    outside = border[regions]
    outside[~low] = False
    inside = low & ~outside
    # 3. the largest 3-D components
    comps, n = ndimage.label(inside)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    body_ml = float(a.size - np.count_nonzero(outside)) * voxel_ml
    least = max(min_volume_ml, min_fraction * body_ml)
    if n:
        sizes = np.bincount(comps.ravel())[1:] * voxel_ml
        order = np.argsort(sizes)[::-1]
        keep = [order[0]] if sizes[order[0]] >= least else []
        if keep and n > 1 and sizes[order[1]] >= max(least, min_ratio * sizes[order[0]]):
            keep.append(order[1])
    else:
        keep, sizes = [], np.zeros(0)
    if not keep:
        largest = f"{sizes.max():.1f} mL" if sizes.size else "none"
        raise PreprocessError(f"{where}: no lung found: no air-like region (< {threshold:g} HU) inside the "
                              f"body of at least {least:.1f} mL ({min_fraction:g} of the body's {body_ml:.0f} mL, "
                              f"at least {min_volume_ml:g} mL; largest: {largest}); is it a chest CT in "
                              f"Hounsfield units?")
    mask = np.isin(comps, np.asarray(keep) + 1)
    # 4. fill holes per axial slice, close one-voxel gaps (padded so that the border does not erode)
    mask = ndimage.binary_fill_holes(mask, structure=_in_plane(axial, cross))
    padded = np.pad(mask, 1)
    closed = ndimage.binary_closing(padded, structure=ndimage.generate_binary_structure(3, 1))[1:-1, 1:-1, 1:-1]
    return closed | mask


def mask_bbox(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``(lo, hi)`` voxel bounds (hi exclusive) of the non-zero voxels, or None when empty."""
    idx = np.nonzero(mask)
    if idx[0].size == 0:
        return None
    return np.array([i.min() for i in idx]), np.array([i.max() + 1 for i in idx])


def crop_to_mask(image: sitk.Image, mask: sitk.Image | np.ndarray, margin_mm: float = 10.0,
                 label: sitk.Image | None = None, source: str | Path | None = None
                 ) -> tuple[sitk.Image, sitk.Image | None]:
    """Crop ``image`` (and ``label``, on its grid) to the bounding box of ``mask`` plus a margin.

    The margin is ``ceil(margin_mm / spacing)`` voxels per axis, clipped to the
    image. The crop keeps the geometry: the origin moves to the first kept voxel,
    spacing and direction are unchanged (no resampling).

    Args:
        image: the 3D image.
        mask: a mask on ``image``'s grid: a SimpleITK image, or an array in voxel
            order (i, j, k).
        margin_mm: margin around the bounding box, in mm.
        label: an optional label on ``image``'s grid, cropped alike.
        source: the image file, named in the error.

    Returns:
        ``(image, label)`` cropped (``label`` None when not given).

    Raises:
        PreprocessError: naming ``source`` when the mask is empty.
        ValueError: when the mask's shape differs from the image's.
    """
    m = sitk.GetArrayViewFromImage(mask).transpose(2, 1, 0) if isinstance(mask, sitk.Image) else np.asarray(mask)
    if m.shape != image.GetSize():
        raise ValueError(f"mask shape {m.shape} differs from the image size {image.GetSize()}")
    box = mask_bbox(m)
    if box is None:
        raise PreprocessError(f"{source if source is not None else 'image'}: the crop mask is empty")
    pad = [int(math.ceil(margin_mm / s - 1e-9)) for s in image.GetSpacing()]
    lo = [max(0, int(v) - p) for v, p in zip(box[0], pad)]
    hi = [min(n, int(v) + p) for v, p, n in zip(box[1], pad, image.GetSize())]
    size = [h - lo_ for lo_, h in zip(lo, hi)]
    out = sitk.RegionOfInterest(image, size, lo)
    return out, (sitk.RegionOfInterest(label, size, lo) if label is not None else None)


def lung_crop(image: sitk.Image, label: sitk.Image | None, margin_mm: float,
              source: str | Path | None = None) -> tuple[sitk.Image, sitk.Image | None]:
    """:func:`lung_mask` then :func:`crop_to_mask`: the preprocessing step ``crop: lung``.

    Raises:
        PreprocessError: naming ``source`` when no lung is found.
    """
    return crop_to_mask(image, lung_mask(image, source=source), margin_mm, label, source)
