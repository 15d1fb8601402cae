"""2D slices of short-axis volumes for the uda2d study (CMEVAE trains and predicts per slice).

* :func:`load_slices` reads preprocessed NIfTI volumes ``(H, W, S)`` of a
  datalist (nibabel) and returns their slices with the per-case grouping
  needed to score each subject in 3D (``labels=False`` reads the images
  only, for the unlabelled target domain).
* :func:`phantom_slices` does the same for in-memory cardiac phantoms
  (:func:`medssl.data.cardiac.generate_cardiac`), for tests and benchmarks.

Both scale each volume's intensities robustly to [0, 1] (1st and 99th
percentile to 0 and 1, clipped) unless ``normalize=False``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

__all__ = ["Slices", "load_slices", "phantom_slices", "robust_scale", "stack_volumes"]


class Slices(NamedTuple):
    """Slices of several volumes.

    Attributes:
        x: ``(N, 1, H, W)`` float32 images.
        y: ``(N, H, W)`` long labels, or None for images read without labels (an unlabelled target).
        groups: ``(case, start, stop)`` per volume: its slices are ``x[start:stop]``, in order.
        spacing: ``(sx, sy, sz)`` mm, shared by all volumes (``spacing[:2]`` is the in-plane spacing).
    """

    x: torch.Tensor
    y: torch.Tensor | None
    groups: list[tuple[str, int, int]]
    spacing: tuple[float, float, float]


def robust_scale(image: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Map the ``low`` / ``high`` percentiles of ``image`` to 0 / 1 and clip (float32)."""
    lo, hi = np.percentile(image, [low, high])
    if not hi > lo:
        return np.zeros_like(image, dtype=np.float32)
    return np.clip((image - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def stack_volumes(volumes: Iterable[tuple[str, np.ndarray, np.ndarray | None]], spacing: Sequence[float],
                  normalize: bool = True) -> Slices:
    """Slices of ``(case, image (H, W, S), label (H, W, S))`` volumes, all of one in-plane size.

    Labels are all arrays or all None (then ``Slices.y`` is None).

    Raises:
        ValueError: an image and its label differ in shape, a volume is not 3D, or the in-plane
            size differs from the first volume's (naming the case).
    """
    xs, ys, groups, start, hw, with_labels = [], [], [], 0, None, None
    for case, image, label in volumes:
        if with_labels is None:
            with_labels = label is not None
        elif with_labels != (label is not None):
            raise ValueError(f"case {case!r}: either every volume has a label or none has")
        image = np.asarray(image)
        label = np.asarray(label) if with_labels else np.zeros(image.shape, np.int64)
        if image.ndim != 3 or image.shape != label.shape:
            raise ValueError(f"case {case!r}: image {image.shape} and label {label.shape} must be the same (H, W, S)")
        if hw is None:
            hw = image.shape[:2]
        elif image.shape[:2] != hw:
            raise ValueError(f"case {case!r}: in-plane size {image.shape[:2]} differs from {hw} of the first case")
        if not np.issubdtype(label.dtype, np.integer):
            if not np.array_equal(label, np.round(label)):
                raise ValueError(f"case {case!r}: label has non-integer values")
        img = robust_scale(image) if normalize else image.astype(np.float32)
        xs.append(np.moveaxis(img, -1, 0)[:, None])
        ys.append(np.moveaxis(label.astype(np.int64), -1, 0))
        groups.append((str(case), start, start + image.shape[2]))
        start += image.shape[2]
    if not xs:
        raise ValueError("no volumes given")
    sp = tuple(float(s) for s in spacing)
    if len(sp) != 3:
        raise ValueError(f"spacing must be (sx, sy, sz), got {spacing!r}")
    y = torch.from_numpy(np.concatenate(ys)) if with_labels else None
    return Slices(torch.from_numpy(np.concatenate(xs)), y, groups, sp)


def load_slices(entries: Sequence[Mapping[str, str]], normalize: bool = True, atol: float = 1e-3,
                labels: bool = True) -> Slices:
    """Read datalist entries ``{"case", "image", "label"}`` (absolute NIfTI paths) into 2D slices.

    Volumes are ``(H, W, S)`` with the slices along the last axis (preprocessed data), all
    with the same in-plane size and voxel spacing (from the NIfTI header).

    Args:
        entries: datalist entries; ``case`` defaults to the image file name.
        normalize: scale each volume to [0, 1] (:func:`robust_scale`).
        atol: tolerance (mm) on spacings agreeing between volumes.
        labels: read the labels (False: images only, ``"label"`` not needed and never opened,
            ``Slices.y`` is None — for the unlabelled target domain).

    Returns:
        :class:`Slices` (``x``, ``y``, ``groups``, ``spacing``).

    Raises:
        ValueError: an unreadable file, a missing key, a shape mismatch between an image and its
            label or between volumes, or a differing spacing (each naming the file).
    """
    import nibabel as nib

    vols, spacing = [], None
    keys = ("image", "label") if labels else ("image",)
    for e in entries:
        for key in keys:
            if key not in e:
                raise ValueError(f"datalist entry {dict(e)!r} has no {key!r}")
        arrays = []
        for key in keys:
            path = Path(e[key])
            try:
                img = nib.load(str(path))
                arr = np.asarray(img.dataobj)
            except Exception as err:  # noqa: BLE001 - any reading failure is reported with the file
                raise ValueError(f"cannot read {key} {path}: {err}") from err
            if arr.ndim == 4 and arr.shape[-1] == 1:
                arr = arr[..., 0]
            if arr.ndim != 3:
                raise ValueError(f"{key} {path} must be a 3D (H, W, S) volume, got shape {arr.shape}")
            zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
            if key == "image":
                if spacing is None:
                    spacing = zooms
                elif not np.allclose(zooms, spacing, atol=atol):
                    raise ValueError(f"image {path} has spacing {zooms}, the first volume {spacing}")
            arrays.append(arr)
        if labels and arrays[0].shape != arrays[1].shape:
            raise ValueError(f"label {e['label']} has shape {arrays[1].shape}, "
                             f"its image {e['image']} {arrays[0].shape}")
        if vols and arrays[0].shape[:2] != vols[0][1].shape[:2]:
            raise ValueError(f"image {e['image']} is {arrays[0].shape[:2]} in-plane, the first volume "
                             f"{vols[0][1].shape[:2]}")
        vols.append((str(e.get("case", Path(e["image"]).name)), arrays[0].astype(np.float32),
                     arrays[1] if labels else None))
    if not vols:
        raise ValueError("entries is empty")
    return stack_volumes(vols, spacing, normalize)


def phantom_slices(contrast: str, n: int, shape: tuple[int, int, int] = (96, 96, 6),
                   spacing: tuple[float, float, float] = (1.5, 1.5, 10.0), seed: int = 0, start: int = 0,
                   normalize: bool = True) -> Slices:
    """Slices of ``n`` cardiac phantoms ``start .. start + n - 1`` of one sequence (no files)."""
    from medssl.data.cardiac import generate_cardiac

    vols = []
    for i in range(start, start + n):
        image, label, _ = generate_cardiac(shape, spacing, seed, i, contrast)
        vols.append((f"{contrast}_{i:03d}", image, label))
    return stack_volumes(vols, spacing, normalize)
