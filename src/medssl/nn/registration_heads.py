"""GVSL's geometric-matching heads (He et al., CVPR 2023, supplement Fig. 4 b, c).

Architecture as the published code builds it (github.com/YutingHe-list/GVSL,
``PyTorch/models/gvsl.py``, commit 77c89ba: ``GVSL.Affine`` / ``GVSL.Spatial``):

- :class:`AffineHead`: the two global maps concatenated along channels
  (moving first, as ``torch.cat([m, f])``), a double conv (two conv groups,
  ``DoubleConv(1024, 256)`` there), global average pooling, then four linear
  layers -> rotation, scale, shear, translation, assembled into the 4x4 matrix
  of Eq. 8. The convolutions see both maps at every position, so the head can
  compare where things are in A and in B (a head that pools each map to its
  channel means first cannot see a shift between them).
- :class:`DeformableHead`: two conv groups (``DoubleConv(64, 16)``) and a 3x3x3
  convolution on the concatenated local features -> a displacement field in
  voxels. :class:`medssl.methods.gvsl.GVSL` feeds it the moving image's local
  features *after the affine warp*, i.e. both inputs in the fixed image's frame,
  as the published ``forward`` does (``Spatial(atn(fB_l, aff_mat), fA_l)``).

Kept from medssl, on purpose: the parameters are squashed by tanh to the
published ranges (the published code clamps rotation, scale and shear, which
gives zero gradient past the bound, and leaves translation unbounded; medssl
bounds it to ±``max_translation`` of the half-extent); the last layers start
with tiny weights (as voxelmorph's flow layer), so early training sees an almost
unwarped pair while gradients still reach every layer; GroupNorm uses groups of
8 channels as the published ``GroupNorm(out_channels // 8, out_channels)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from medssl.geometry.affine import affine_matrix
from medssl.nn.unet3d import conv_group

#: affine parameter groups and their sizes, in the order of the 15 outputs
AFFINE_PARTS = (("rotation", 3), ("scale", 3), ("shear", 6), ("translation", 3))


def _double_conv(in_channels: int, out_channels: int, negative_slope: float) -> nn.Sequential:
    """The published ``DoubleConv``: two (conv 3³ -> GroupNorm(out // 8) -> LeakyReLU) groups."""
    groups = max(1, out_channels // 8)
    return nn.Sequential(conv_group(in_channels, out_channels, groups, negative_slope),
                         conv_group(out_channels, out_channels, groups, negative_slope))


class AffineHead(nn.Module):
    """Affine parameters from the pair's global feature maps (GVSL Fig. 4 b, Eq. 8).

    Outputs 15 numbers squashed by tanh: 3 rotation angles in ±``max_rotation``
    (π/9), 3 scales in 1 ± ``max_scale`` (0.25), 6 shear coefficients
    tan(±``max_shear``) (π/18) and 3 translations in ±``max_translation`` of
    the half-extent of each axis.

    Args:
        in_channels: channels of f^g (per image; the head sees both).
        hidden: channels of the double conv and input width of the four linear
            layers (256 in the published code).
    """

    def __init__(self, in_channels: int, hidden: int = 64, max_rotation: float = math.pi / 9,
                 max_scale: float = 0.25, max_shear: float = math.pi / 18, max_translation: float = 0.25,
                 negative_slope: float = 0.2) -> None:
        super().__init__()
        if in_channels < 1 or hidden < 1:
            raise ValueError(f"in_channels and hidden must be positive, got {in_channels}, {hidden}")
        self.config = {"in_channels": in_channels, "hidden": hidden, "max_rotation": max_rotation,
                       "max_scale": max_scale, "max_shear": max_shear, "max_translation": max_translation}
        self.conv = _double_conv(2 * in_channels, hidden, negative_slope)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.ModuleDict({name: nn.Linear(hidden, n) for name, n in AFFINE_PARTS})
        for layer in self.fc.values():
            nn.init.normal_(layer.weight, std=1e-3)
            nn.init.zeros_(layer.bias)

    def parameters_of(self, g_a: torch.Tensor, g_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """Bounded affine parameters from the moving (``g_a``) and fixed (``g_b``) maps ``(B, C, d, h, w)``.

        Raises:
            ValueError: if the two maps differ in shape.
        """
        if g_a.shape != g_b.shape:
            raise ValueError(f"global maps differ in shape: {tuple(g_a.shape)} and {tuple(g_b.shape)}")
        x = self.pool(self.conv(torch.cat([g_a, g_b], 1))).flatten(1)
        raw = {name: torch.tanh(layer(x)) for name, layer in self.fc.items()}
        c = self.config
        return {"angles": raw["rotation"] * c["max_rotation"], "scales": 1 + raw["scale"] * c["max_scale"],
                "shears": torch.tan(raw["shear"] * c["max_shear"]), "translations": raw["translation"]}

    def forward(self, g_a: torch.Tensor, g_b: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
        """The ``(B, 4, 4)`` matrix of Eq. 8 for images of spatial ``shape`` (translations in voxels)."""
        p = self.parameters_of(g_a, g_b)
        half = torch.tensor(shape, dtype=p["translations"].dtype, device=p["translations"].device) / 2
        trans = p["translations"] * self.config["max_translation"] * half
        return affine_matrix(p["angles"], p["scales"], p["shears"], trans)


class DeformableHead(nn.Module):
    """Displacement field from the pair's local features (GVSL Fig. 4 c).

    Args:
        in_channels: channels of f^l (per image; the head sees both, concatenated).
        hidden: channels of the two conv groups (16 in the published code).
    """

    def __init__(self, in_channels: int, hidden: int = 16, negative_slope: float = 0.2) -> None:
        super().__init__()
        if in_channels < 1 or hidden < 1:
            raise ValueError(f"in_channels and hidden must be positive, got {in_channels}, {hidden}")
        self.config = {"in_channels": in_channels, "hidden": hidden}
        self.body = _double_conv(2 * in_channels, hidden, negative_slope)
        self.out = nn.Conv3d(hidden, 3, kernel_size=3, padding=1)
        nn.init.normal_(self.out.weight, std=1e-5)
        nn.init.zeros_(self.out.bias)

    def forward(self, l_a: torch.Tensor, l_b: torch.Tensor) -> torch.Tensor:
        """``(B, 3, D, H, W)`` displacement (voxels) from the (affinely warped) moving and the fixed features."""
        return self.out(self.body(torch.cat([l_a, l_b], 1)))
