"""The GVSL 3D U-Net backbone with GroupNorm.

GVSL (He et al., CVPR 2023, supplement Sec. E.1 and Fig. 4 a) pre-trains a
3D U-Net (Çiçek et al., MICCAI 2016) in which every BatchNorm is replaced by a
GroupNorm (Wu & He, ECCV 2018), because pre-training runs at batch size 2 and
transfer at batch size 1. The bottleneck gives the *global* feature map f^g and
the last decoder layer the *local* feature map f^l; the heads of
:mod:`medssl.nn.heads` read one of the two.

Every level is two conv groups (Conv3d 3x3x3 -> GroupNorm -> LeakyReLU 0.2,
built with :class:`monai.networks.blocks.Convolution`); the encoder halves the
resolution with a 2x max-pool, the decoder doubles it (trilinear up-sampling
or a transposed convolution, :class:`monai.networks.blocks.UpSample`),
concatenates the skip connection and applies two conv groups.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution, UpSample
from torch import nn

UPSAMPLE_MODES = ("trilinear", "deconv")


def group_count(channels: int, groups: int) -> int:
    """Number of GroupNorm groups for ``channels``: ``min(groups, channels)``.

    Raises:
        ValueError: if that number does not divide ``channels``.
    """
    n = min(groups, channels)
    if channels % n != 0:
        raise ValueError(f"groups={groups} does not divide channels={channels} (GroupNorm needs it)")
    return n


def conv_group(
    in_channels: int,
    out_channels: int,
    groups: int = 8,
    negative_slope: float = 0.2,
    dropout: float = 0.0,
) -> Convolution:
    """One GVSL conv group: Conv3d 3x3x3 -> GroupNorm -> (Dropout) -> LeakyReLU (Fig. 4)."""
    return Convolution(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=3,
        norm=("group", {"num_groups": group_count(out_channels, groups)}),
        act=("leakyrelu", {"negative_slope": negative_slope, "inplace": True}),
        dropout=dropout if dropout > 0 else None,
    )


def _double_conv(cin: int, cout: int, groups: int, slope: float, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        conv_group(cin, cout, groups, slope, dropout),
        conv_group(cout, cout, groups, slope, dropout),
    )


class UNet3D(nn.Module):
    """GVSL's 3D U-Net backbone returning the global and the local feature maps.

    Args:
        in_channels: image channels.
        features: channels of each level, finest first; at least two levels.
            The published GVSL network is ``(32, 64, 128, 256, 512)``.
        groups: GroupNorm groups (``min(groups, channels)`` per layer; it
            must divide every level's channels).
        negative_slope: LeakyReLU slope (0.2 in GVSL).
        dropout: dropout rate inside every conv group (0 disables it).
        upsample: ``"trilinear"`` (parameter-free) or ``"deconv"``
            (a 2x2x2 transposed convolution keeping the channel count).

    Inputs must have each spatial size divisible by ``2 ** (len(features) - 1)``.

    Attributes:
        global_channels: channels of f^g (``features[-1]``).
        local_channels: channels of f^l (``features[0]``).
        config: the constructor arguments as JSON-serialisable values, so that
            ``UNet3D(**model.config)`` rebuilds the same architecture.
    """

    def __init__(
        self,
        in_channels: int = 1,
        features: Sequence[int] = (32, 64, 128, 256, 512),
        groups: int = 8,
        negative_slope: float = 0.2,
        dropout: float = 0.0,
        upsample: str = "trilinear",
    ) -> None:
        super().__init__()
        _check_args(in_channels, features, groups, negative_slope, dropout, upsample)
        feats = [int(f) for f in features]
        self.config = {
            "in_channels": int(in_channels),
            "features": feats,
            "groups": int(groups),
            "negative_slope": float(negative_slope),
            "dropout": float(dropout),
            "upsample": upsample,
        }
        self.in_channels = int(in_channels)
        self.levels = len(feats)
        self.global_channels = feats[-1]
        self.local_channels = feats[0]
        args = (int(groups), float(negative_slope), float(dropout))

        self.encoder = nn.ModuleList()
        cin = self.in_channels
        for f in feats:
            self.encoder.append(_double_conv(cin, f, *args))
            cin = f
        self.pool = nn.MaxPool3d(kernel_size=2, stride=2)

        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for level in range(self.levels - 2, -1, -1):
            coarse, fine = feats[level + 1], feats[level]
            self.up.append(_upsample(coarse, upsample))
            self.decoder.append(_double_conv(coarse + fine, fine, *args))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Encode and decode ``x`` of shape (B, in_channels, D, H, W).

        Returns:
            ``{"global": f^g, "local": f^l}``: the bottleneck map of shape
            (B, features[-1], D/2^(L-1), H/2^(L-1), W/2^(L-1)) and the last
            decoder map of shape (B, features[0], D, H, W) (GVSL Fig. 4 a).

        Raises:
            ValueError: on a wrong rank or channel count, or a spatial size not
                divisible by ``2 ** (levels - 1)``.
        """
        self._check_input(x)
        skips = []
        h = x
        for i, block in enumerate(self.encoder):
            if i > 0:
                h = self.pool(h)
            h = block(h)
            skips.append(h)
        bottleneck = h
        for up, block, skip in zip(self.up, self.decoder, reversed(skips[:-1])):
            h = block(torch.cat([up(h), skip], dim=1))
        return {"global": bottleneck, "local": h}

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 5:
            raise ValueError(f"input must be (B, C, D, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"input has {x.shape[1]} channels, the network expects {self.in_channels}")
        factor = 2 ** (self.levels - 1)
        if any(s % factor for s in x.shape[2:]):
            raise ValueError(
                f"spatial size {tuple(x.shape[2:])} is not divisible by {factor} "
                f"(2 ** (levels - 1) for {self.levels} levels)"
            )


def _upsample(channels: int, mode: str) -> nn.Module:
    if mode == "deconv":
        return UpSample(3, channels, channels, scale_factor=2, mode="deconv")
    return UpSample(
        3, channels, channels, scale_factor=2, mode="nontrainable", interp_mode="trilinear", align_corners=False
    )


def _check_args(
    in_channels: int, features: Sequence[int], groups: int, negative_slope: float, dropout: float, upsample: str
) -> None:
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive integer, got {in_channels!r}")
    if isinstance(features, (str, bytes)) or not isinstance(features, Sequence) or len(features) < 2:
        raise ValueError(f"features must be a sequence of at least two channel counts, got {features!r}")
    if any(isinstance(f, bool) or not isinstance(f, int) or f < 1 for f in features):
        raise ValueError(f"features must be positive integers, got {features!r}")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups must be a positive integer, got {groups!r}")
    for f in features:
        group_count(int(f), groups)
    if not negative_slope >= 0:
        raise ValueError(f"negative_slope must be >= 0, got {negative_slope!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    if upsample not in UPSAMPLE_MODES:
        raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}")
