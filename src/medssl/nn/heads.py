"""Task heads on the GVSL backbone's feature maps.

GVSL (He et al., CVPR 2023, supplement Sec. E.3 and Fig. 4 d) evaluates a
pre-trained backbone with a convolution on the local features f^l for
segmentation and a linear layer on the global features f^g for classification,
and pre-trains with a restoration head of one conv group and a convolution on
f^l. Every head takes either the feature tensor itself or the backbone's output
dict (``{"global": f^g, "local": f^l}``) and returns logits (no softmax /
sigmoid: the losses apply them).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from medssl.nn.unet3d import conv_group


def _positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _pick(features: torch.Tensor | Mapping[str, torch.Tensor], key: str, channels: int) -> torch.Tensor:
    x = features[key] if isinstance(features, Mapping) else features
    if x.ndim != 5 or x.shape[1] != channels:
        raise ValueError(f"expected a (B, {channels}, D, H, W) feature map, got shape {tuple(x.shape)}")
    return x


class SegmentationHead(nn.Module):
    """1x1x1 convolution on f^l giving per-voxel class logits (GVSL Sec. E.3.1).

    Args:
        in_channels: channels of f^l (``backbone.local_channels``).
        n_classes: number of classes, background included.
    """

    def __init__(self, in_channels: int, n_classes: int) -> None:
        super().__init__()
        self.config = {
            "in_channels": _positive("in_channels", in_channels),
            "n_classes": _positive("n_classes", n_classes),
        }
        self.conv = nn.Conv3d(in_channels, n_classes, kernel_size=1)

    def forward(self, features: torch.Tensor | Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Logits (B, n_classes, D, H, W) from f^l (or the backbone's dict)."""
        return self.conv(_pick(features, "local", self.config["in_channels"]))


class ClassificationHead(nn.Module):
    """Global average pooling of f^g followed by a linear layer (GVSL Sec. E.3.1).

    Args:
        in_channels: channels of f^g (``backbone.global_channels``).
        n_classes: number of outputs (1 for a binary task scored with a sigmoid).
    """

    def __init__(self, in_channels: int, n_classes: int) -> None:
        super().__init__()
        self.config = {
            "in_channels": _positive("in_channels", in_channels),
            "n_classes": _positive("n_classes", n_classes),
        }
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.linear = nn.Linear(in_channels, n_classes)

    def forward(self, features: torch.Tensor | Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Logits (B, n_classes) from f^g (or the backbone's dict)."""
        x = _pick(features, "global", self.config["in_channels"])
        return self.linear(torch.flatten(self.pool(x), 1))


class RestorationHead(nn.Module):
    """One conv group followed by a 1x1x1 convolution on f^l (GVSL Fig. 4 d).

    Restores the undamaged image from the features of its Models Genesis
    damaged copy (Alg. 1 line 7, trained with the MSE of line 11).

    Args:
        in_channels: channels of f^l (``backbone.local_channels``).
        out_channels: image channels to restore.
        groups: GroupNorm groups of the conv group.
        negative_slope: LeakyReLU slope of the conv group.
    """

    def __init__(self, in_channels: int, out_channels: int = 1, groups: int = 8, negative_slope: float = 0.2) -> None:
        super().__init__()
        self.config = {
            "in_channels": _positive("in_channels", in_channels),
            "out_channels": _positive("out_channels", out_channels),
            "groups": _positive("groups", groups),
            "negative_slope": float(negative_slope),
        }
        self.block = conv_group(in_channels, in_channels, groups, negative_slope)
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size=1)

    def forward(self, features: torch.Tensor | Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Restored image (B, out_channels, D, H, W) from f^l (or the backbone's dict)."""
        return self.conv(self.block(_pick(features, "local", self.config["in_channels"])))
