"""Connected components of thresholded outputs (Diffeomorphic Template Transformers, Sec. 5.3).

The paper counts the connected components of the thresholded output
(``p > 0.5``), which a diffeomorphic warp of a one-component prior keeps at 1
up to approximation errors (Tables 2-3). Labelling is ``scipy.ndimage.label``.

Inputs are numpy arrays or torch tensors; the last ``spatial_dims`` axes are
spatial and any leading axes are batch axes (e.g. ``(B, 1, D, H, W)``), each
sample labelled on its own. Connectivity follows scipy's rank convention: 1
= neighbours sharing a face (6 in 3D), 2 = + edges (18), 3 = + corners (26);
the default ``None`` is full connectivity (``spatial_dims``), as in
``skimage.measure.label`` and MONAI's ``get_largest_connected_component_mask``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage


def _to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _structure(spatial_dims: int, connectivity: int | None) -> np.ndarray:
    if isinstance(spatial_dims, bool) or not isinstance(spatial_dims, int) or spatial_dims < 1:
        raise ValueError(f"spatial_dims must be a positive int, got {spatial_dims!r}")
    rank = spatial_dims if connectivity is None else connectivity
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= spatial_dims:
        raise ValueError(f"connectivity must be None or an int in [1, {spatial_dims}], got {connectivity!r}")
    return ndimage.generate_binary_structure(spatial_dims, rank)


def connected_components(mask, connectivity: int | None = None,
                         spatial_dims: int = 3) -> tuple[np.ndarray, int | np.ndarray]:
    """Label the connected components of a binary mask (paper Sec. 5.3 metric).

    Args:
        mask: boolean or numeric array/tensor (non-zero = foreground); the last
            ``spatial_dims`` axes are spatial, leading axes are batch axes.
        connectivity: scipy rank connectivity in ``[1, spatial_dims]``; ``None`` = full.
        spatial_dims: number of trailing spatial axes (3 for volumes, 2 for images).

    Returns:
        ``(labels, n)``: ``int32`` labels of ``mask``'s shape (0 = background,
        ``1..n`` per sample) and the count: an ``int`` without batch axes,
        else an ``int64`` array of the batch shape.

    Raises:
        ValueError: ``mask`` has fewer than ``spatial_dims`` axes, or bad ``connectivity``/``spatial_dims``.
    """
    structure = _structure(spatial_dims, connectivity)
    arr = _to_numpy(mask)
    if arr.ndim < spatial_dims:
        raise ValueError(f"mask must have at least spatial_dims={spatial_dims} axes, got shape {arr.shape}")
    fg = arr != 0
    batch_shape = fg.shape[: fg.ndim - spatial_dims]
    flat = fg.reshape((math.prod(batch_shape),) + fg.shape[fg.ndim - spatial_dims:])
    labels = np.zeros(flat.shape, dtype=np.int32)
    counts = np.zeros(flat.shape[0], dtype=np.int64)
    for i, sample in enumerate(flat):
        counts[i] = ndimage.label(sample, structure=structure, output=labels[i])
    labels = labels.reshape(fg.shape)
    if not batch_shape:
        return labels, int(counts[0])
    return labels, counts.reshape(batch_shape)


def count_components(prob_or_mask, threshold: float = 0.5, connectivity: int | None = None,
                     spatial_dims: int = 3) -> int | np.ndarray:
    """Number of connected components of ``prob > threshold`` (paper Sec. 5.3, Tables 2-3).

    Boolean inputs are used as they are; numeric inputs are thresholded
    strictly (``p > threshold``, the paper's ``p > 0.5``), so a ``{0, 1}``
    mask works with the default threshold.

    Args:
        prob_or_mask: probabilities or a mask, numpy or torch; trailing
            ``spatial_dims`` axes spatial, leading axes batch.
        threshold: finite decision threshold.
        connectivity: scipy rank connectivity; ``None`` = full (see the module docstring).
        spatial_dims: number of trailing spatial axes.

    Returns:
        ``int`` without batch axes, else an ``int64`` array of the batch shape.

    Raises:
        ValueError: ``threshold`` is not finite, or see :func:`connected_components`.
    """
    if not math.isfinite(float(threshold)):
        raise ValueError(f"threshold must be finite, got {threshold!r}")
    arr = _to_numpy(prob_or_mask)
    mask = arr if arr.dtype == bool else arr > threshold
    return connected_components(mask, connectivity=connectivity, spatial_dims=spatial_dims)[1]
