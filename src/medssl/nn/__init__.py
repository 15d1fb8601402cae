"""Backbones, task heads and backbone checkpoints (GVSL Fig. 4)."""

from __future__ import annotations

from medssl.nn.checkpoint import load_backbone, read_backbone_config, save_backbone
from medssl.nn.heads import ClassificationHead, RestorationHead, SegmentationHead
from medssl.nn.unet3d import UNet3D, conv_group, group_count

__all__ = [
    "ClassificationHead",
    "RestorationHead",
    "SegmentationHead",
    "UNet3D",
    "conv_group",
    "group_count",
    "load_backbone",
    "read_backbone_config",
    "save_backbone",
]
