"""Image transforms: Models Genesis appearance damage (and spatial augmentation)."""

from __future__ import annotations

from medssl.transforms.genesis import (
    BezierIntensity,
    GenesisDamage,
    LocalPixelShuffle,
    Painting,
    bezier_curve,
    bezier_intensity_map,
)

__all__ = [
    "BezierIntensity",
    "GenesisDamage",
    "LocalPixelShuffle",
    "Painting",
    "bezier_curve",
    "bezier_intensity_map",
]
