"""Warping by a dense displacement field (GVSL supplement, Eq. 7)."""

from __future__ import annotations

import functools
import warnings

import torch


@functools.lru_cache(maxsize=8)
def _warper(mode: str, padding_mode: str):
    from monai.networks.blocks import Warp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "using PyTorch native grid_sample"
        return Warp(mode=mode, padding_mode=padding_mode)


def warp(image: torch.Tensor, ddf: torch.Tensor, mode: str = "bilinear", padding_mode: str = "border") -> torch.Tensor:
    """Sample ``image`` at ``p + ddf(p)`` for every voxel ``p``.

    GVSL Eq. 7: trilinear interpolation of the eight neighbours of the
    displaced position (``mode="bilinear"`` is trilinear in 3D); ``"nearest"``
    for label maps.

    Args:
        image: ``(B, C, D, H, W)`` (or 2-D ``(B, C, H, W)``).
        ddf: ``(B, 3, D, H, W)`` displacement in voxels, channel k along axis k
            (or 2-D ``(B, 2, H, W)``).
        mode: ``"bilinear"`` or ``"nearest"``.
        padding_mode: how positions outside the volume are filled (``"border"``, ``"zeros"``).
    """
    if image.ndim not in (4, 5) or ddf.ndim != image.ndim or ddf.shape[1] != image.ndim - 2:
        raise ValueError(f"expected image (B, C, D, H, W) and ddf (B, 3, D, H, W) (or their 2-D forms "
                         f"(B, C, H, W), (B, 2, H, W)), got {tuple(image.shape)} and {tuple(ddf.shape)}")
    if image.shape[0] != ddf.shape[0] or image.shape[2:] != ddf.shape[2:]:
        raise ValueError(f"image {tuple(image.shape)} and ddf {tuple(ddf.shape)} differ in batch or spatial size")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        out = _warper(mode, padding_mode)(image.float() if mode == "nearest" else image, ddf)
    return out.to(image.dtype) if mode == "nearest" else out


def identity_grid(shape: tuple[int, ...], centred: bool = True, device=None) -> torch.Tensor:
    """Voxel coordinates ``(n, *shape)``; with ``centred`` relative to the volume centre."""
    axes = [torch.arange(n, dtype=torch.float32, device=device) - ((n - 1) / 2 if centred else 0.0) for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))
