"""GVSL's geometric-matching heads (He et al., CVPR 2023, supplement Fig. 4 b, c).

- :class:`AffineHead`: four linear layers on the pooled global features of the
  pair (f_A^g, f_B^g) -> rotation, scale, shear, translation, bounded by tanh to
  the published ranges, assembled into the 4x4 matrix of Eq. 8.
- :class:`DeformableHead`: two conv groups and a convolution on the local
  features of the pair (f_A^l, f_B^l) -> a displacement field in voxels.

Both start near the identity (last layer initialised with tiny weights, as
voxelmorph does for its flow layer), so early training sees an almost unwarped
pair instead of a random warp, while gradients still reach every layer.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from medssl.geometry.affine import affine_matrix
from medssl.nn.unet3d import conv_group


class AffineHead(nn.Module):
    """Affine parameters from the pair's global features (GVSL Fig. 4 b, Eq. 8).

    Outputs 15 numbers squashed by tanh: 3 rotation angles in ±``max_rotation``
    (π/9), 3 scales in 1 ± ``max_scale`` (0.25), 6 shear coefficients
    tan(±``max_shear``) (π/18) and 3 translations in ±``max_translation`` of
    the half-extent of each axis.

    Args:
        in_channels: channels of f^g (per image; the head sees both).
        hidden: width of the three hidden linear layers.
    """

    def __init__(self, in_channels: int, hidden: int = 64, max_rotation: float = math.pi / 9,
                 max_scale: float = 0.25, max_shear: float = math.pi / 18, max_translation: float = 0.25,
                 negative_slope: float = 0.2) -> None:
        super().__init__()
        if in_channels < 1 or hidden < 1:
            raise ValueError(f"in_channels and hidden must be positive, got {in_channels}, {hidden}")
        self.config = {"in_channels": in_channels, "hidden": hidden, "max_rotation": max_rotation,
                       "max_scale": max_scale, "max_shear": max_shear, "max_translation": max_translation}
        act = nn.LeakyReLU(negative_slope)
        self.mlp = nn.Sequential(nn.Linear(2 * in_channels, hidden), act, nn.Linear(hidden, hidden), act,
                                 nn.Linear(hidden, hidden), act, nn.Linear(hidden, 15))
        nn.init.normal_(self.mlp[-1].weight, std=1e-3)
        nn.init.zeros_(self.mlp[-1].bias)

    def parameters_of(self, g_a: torch.Tensor, g_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """Bounded affine parameters from the two global feature maps ``(B, C, d, h, w)``."""
        pooled = torch.cat([g_a.mean(dim=(2, 3, 4)), g_b.mean(dim=(2, 3, 4))], 1)
        raw = torch.tanh(self.mlp(pooled))
        c = self.config
        return {"angles": raw[:, 0:3] * c["max_rotation"], "scales": 1 + raw[:, 3:6] * c["max_scale"],
                "shears": torch.tan(raw[:, 6:12] * c["max_shear"]), "translations": raw[:, 12:15]}

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
        hidden: channels of the two conv groups.
    """

    def __init__(self, in_channels: int, hidden: int = 16, groups: int = 4, negative_slope: float = 0.2) -> None:
        super().__init__()
        self.config = {"in_channels": in_channels, "hidden": hidden, "groups": groups}
        self.body = nn.Sequential(conv_group(2 * in_channels, hidden, groups, negative_slope),
                                  conv_group(hidden, hidden, groups, negative_slope))
        self.out = nn.Conv3d(hidden, 3, kernel_size=3, padding=1)
        nn.init.normal_(self.out.weight, std=1e-5)
        nn.init.zeros_(self.out.bias)

    def forward(self, l_a: torch.Tensor, l_b: torch.Tensor) -> torch.Tensor:
        """``(B, 3, D, H, W)`` displacement (voxels) registering A to B."""
        return self.out(self.body(torch.cat([l_a, l_b], 1)))
