"""Intensity recipes and centre crop / pad of preprocessed volumes.

The recipes of :class:`medssl.config.Intensity`:

* ``ct``: clip to ``[lo, hi]`` then map linearly to [0, 1],
  ``y = (clip(x, lo, hi) - lo) / (hi - lo)``. GVSL's window is
  ``clip: [-1024, 1024]``: the published loader's ``clip(HU + 1024, 0, 2048) / 2048``
  (github.com/YutingHe-list/GVSL, PyTorch/Downstream/utils/dataloader_heart_whs.py)
  gives the same numbers; the supplement's "[0, 2048]" is that shifted grayscale;
* ``minmax``: ``y = (x - min x) / (max x - min x)`` per image;
* ``percentile``: clip to the image's ``percentiles`` ``(p_lo, p_hi)``
  then min-max to [0, 1];
* ``none``: unchanged.

A constant image (``max == min``) maps to zeros under ``minmax`` and
``percentile``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medssl.config import Intensity


def apply_intensity(array: np.ndarray, intensity: Intensity) -> np.ndarray:
    """Apply an intensity recipe to an image.

    Args:
        array: image values (any shape, any real dtype).
        intensity: the recipe.

    Returns:
        A new float32 array; in [0, 1] for every recipe except ``none``.

    Raises:
        ValueError: naming the recipe kind if it is unknown or the image is empty.
    """
    x = np.asarray(array, dtype=np.float32)  # float32 halves the memory of a large CT
    if x.size == 0:
        raise ValueError(f"cannot apply intensity recipe {intensity.kind!r} to an empty image")
    kind = intensity.kind
    if kind == "none":
        return x.astype(np.float32)
    if kind == "ct":
        lo, hi = (float(v) for v in intensity.clip)  # validated by the config: lo < hi
        return ((np.clip(x, lo, hi) - lo) / (hi - lo)).astype(np.float32)
    if kind == "minmax":
        return _minmax(x)
    if kind == "percentile":
        lo, hi = (float(v) for v in np.percentile(x, intensity.percentiles))
        return _minmax(np.clip(x, lo, hi))
    raise ValueError(f"unknown intensity recipe kind {kind!r}")


def _minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        return np.zeros(x.shape, dtype=np.float32)
    return ((x - lo) / (hi - lo)).astype(np.float32)


def crop_or_pad(array: np.ndarray, roi: Sequence[int | None], pad_value: float = 0.0
                ) -> tuple[np.ndarray, np.ndarray]:
    """Centre-crop and/or pad a volume to the shape ``roi``, axis by axis.

    Along an axis of size ``n`` and target ``m``, cropping drops ``(n - m) // 2``
    voxels before and the rest after; padding adds ``(m - n) // 2`` voxels of
    ``pad_value`` before and the rest after (as MONAI's ``SpatialPad``). So an
    odd difference always puts the extra voxel after. A ``None`` target keeps
    that axis as it is. Output voxel 0 is input voxel ``start`` (negative when
    padding), which is what the affine needs: the new origin is the old affine
    applied to ``start``.

    Args:
        array: volume of ``len(roi)`` dimensions.
        roi: target shape (positive ints, or ``None`` to keep an axis's size).
        pad_value: value of the added voxels.

    Returns:
        ``(out, start)``: the volume of shape ``roi`` (with the kept sizes) and
        the integer index (in the input) of output voxel 0.

    Raises:
        ValueError: naming ``roi`` when its length or values are invalid.
    """
    roi = tuple(None if r is None else int(r) for r in roi)
    if len(roi) != array.ndim or any(r is not None and r < 1 for r in roi):
        raise ValueError(f"roi must be {array.ndim} positive ints (or None), got {roi}")
    roi = tuple(n if r is None else r for n, r in zip(array.shape, roi))
    start = np.array([(n - m) // 2 if n >= m else -((m - n) // 2)
                      for n, m in zip(array.shape, roi)], dtype=np.int64)
    out = np.full(roi, pad_value, dtype=array.dtype)
    src, dst = [], []
    for s, n, m in zip(start, array.shape, roi):
        lo, hi = max(s, 0), min(s + m, n)  # input range that lands in the output
        src.append(slice(lo, hi))
        dst.append(slice(lo - s, hi - s))
    out[tuple(dst)] = array[tuple(src)]
    return out, start
