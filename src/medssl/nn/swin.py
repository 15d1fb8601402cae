"""Swin UNETR backbone (MONAI) following the medssl backbone contract.

S2DC pre-trains Swin UNETR (Hatamizadeh et al., BrainLes 2021; MONAI
:class:`~monai.networks.nets.SwinUNETR`) at 96³. This wrapper *is* a MONAI
``SwinUNETR`` (so its state-dict keys match MONAI's and ``load_from`` still
accepts the official Swin weights) whose final 1x1x1 output convolution is
removed and whose ``forward`` returns the two feature maps of the contract:

* ``"global"``: the bottleneck, ``encoder10`` applied to the last Swin stage,
  (B, 16·feature_size, D/32, H/32, W/32);
* ``"local"``: the last decoder block ``decoder1`` at full resolution,
  (B, feature_size, D, H, W), i.e. what MONAI feeds to its output conv.

The forward re-uses MONAI's modules in MONAI 1.6's order (``swinViT`` ->
``encoder1..4``, ``encoder10`` -> ``decoder5..1``); MONAI 1.6 no longer takes an
``img_size`` argument, the input size is free within the constraints below.

Input constraints (checked with a ``ValueError`` naming the shape):

* every spatial size must be divisible by ``2**5 = 32`` (patch embedding of 2
  then four 2x downsamplings); e.g. 40³ is impossible, 32³, 64³, 96³ work;
* with ``norm_name="instance"`` (MONAI's default) the bottleneck must hold
  more than one voxel, i.e. the input must be larger than 32³ (64 in some
  dimension): instance norm of a single voxel is undefined and torch refuses
  it, in training *and* in eval mode (MONAI's instance norm keeps no running
  statistics). MONAI's docstring lists 32³ as valid; that holds only for
  other norms. Use a batch or group norm (e.g.
  ``norm_name=["group", {"num_groups": 4}]``) to run at 32³.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.networks.nets import SwinUNETR

__all__ = ["SwinUNETRBackbone"]

#: Every spatial input size must be a multiple of this (patch size 2, five halvings).
INPUT_MULTIPLE = 32


class SwinUNETRBackbone(SwinUNETR):
    """MONAI Swin UNETR returning ``{"global": bottleneck, "local": last decoder feature}``.

    Args:
        in_channels: image channels.
        feature_size: embedding size (multiple of 12; 48 is Swin UNETR's
            published size, MONAI's default is 24).
        use_v2: Swin UNETR v2 (a residual conv block at the start of each Swin
            stage; the published S2DC code uses it).
        depths, num_heads: Swin blocks and attention heads per stage.
        window_size: attention window (clipped by MONAI to the stage size).
        norm_name: norm of the conv blocks: a name (``"instance"``, ``"batch"``)
            or ``[name, {args}]`` (JSON lists are accepted for tuples).
        dropout_path_rate: stochastic depth rate.
        use_checkpoint: gradient checkpointing of the Swin blocks.

    Attributes:
        global_channels: ``16 * feature_size``.
        local_channels: ``feature_size``.
        input_multiple: 32, see the module docstring.
        config: JSON-serialisable constructor arguments
            (``SwinUNETRBackbone(**m.config)`` rebuilds the architecture).
    """

    input_multiple = INPUT_MULTIPLE

    def __init__(
        self,
        in_channels: int = 1,
        feature_size: int = 24,
        use_v2: bool = False,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        norm_name: str | Sequence[Any] = "instance",
        dropout_path_rate: float = 0.0,
        use_checkpoint: bool = False,
    ) -> None:
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive integer, got {in_channels!r}")
        if (isinstance(feature_size, bool) or not isinstance(feature_size, int) or feature_size < 12
                or feature_size % 12):
            raise ValueError(f"feature_size must be a positive multiple of 12, got {feature_size!r}")
        if len(depths) != 4 or len(num_heads) != 4:
            raise ValueError(f"depths and num_heads need 4 stages, got {tuple(depths)} and {tuple(num_heads)}")
        if isinstance(window_size, bool) or not isinstance(window_size, int) or window_size < 1:
            raise ValueError(f"window_size must be a positive integer, got {window_size!r}")
        norm = _norm(norm_name)
        super().__init__(
            in_channels=in_channels,
            out_channels=1,  # the output conv is deleted below
            feature_size=feature_size,
            use_v2=bool(use_v2),
            depths=tuple(int(d) for d in depths),
            num_heads=tuple(int(h) for h in num_heads),
            window_size=window_size,
            norm_name=norm,
            dropout_path_rate=float(dropout_path_rate),
            use_checkpoint=bool(use_checkpoint),
        )
        del self.out  # MONAI's final 1x1x1 conv: not part of the backbone
        self.config = {
            "in_channels": int(in_channels),
            "feature_size": int(feature_size),
            "use_v2": bool(use_v2),
            "depths": [int(d) for d in depths],
            "num_heads": [int(h) for h in num_heads],
            "window_size": int(window_size),
            "norm_name": norm if isinstance(norm, str) else [norm[0], dict(norm[1])],
            "dropout_path_rate": float(dropout_path_rate),
            "use_checkpoint": bool(use_checkpoint),
        }
        self.in_channels = int(in_channels)
        self.global_channels = 16 * feature_size
        self.local_channels = feature_size
        self._instance_norm = (norm if isinstance(norm, str) else norm[0]).lower() == "instance"

    def check_input_shape(self, spatial: Sequence[int]) -> None:
        """Raise a ``ValueError`` naming ``spatial`` if this network cannot take it (see the module docstring)."""
        spatial = tuple(int(s) for s in spatial)
        if len(spatial) != 3 or any(s % INPUT_MULTIPLE or s < INPUT_MULTIPLE for s in spatial):
            raise ValueError(f"SwinUNETR needs every spatial size to be a positive multiple of {INPUT_MULTIPLE}, "
                             f"got {spatial}")
        if self._instance_norm and all(s == INPUT_MULTIPLE for s in spatial):
            raise ValueError(f"SwinUNETR with instance norm cannot take {spatial}: its bottleneck is one voxel; "
                             f"use an input of 64 in some dimension or norm_name 'batch' / ['group', {{...}}]")

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"global": (B, 16F, D/32, H/32, W/32), "local": (B, F, D, H, W)}`` for ``x`` (B, C, D, H, W)."""
        if x.ndim != 5:
            raise ValueError(f"input must be (B, C, D, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"input has {x.shape[1]} channels, the network expects {self.in_channels}")
        self.check_input_shape(x.shape[2:])
        hidden = self.swinViT(x, self.normalize)
        enc0 = self.encoder1(x)
        enc1 = self.encoder2(hidden[0])
        enc2 = self.encoder3(hidden[1])
        enc3 = self.encoder4(hidden[2])
        dec4 = self.encoder10(hidden[4])
        dec3 = self.decoder5(dec4, hidden[3])
        dec2 = self.decoder4(dec3, enc3)
        dec1 = self.decoder3(dec2, enc2)
        dec0 = self.decoder2(dec1, enc1)
        return {"global": dec4, "local": self.decoder1(dec0, enc0)}


def _norm(norm_name: str | Sequence[Any]) -> str | tuple[str, dict]:
    if isinstance(norm_name, str):
        return norm_name
    if (isinstance(norm_name, Sequence) and len(norm_name) == 2 and isinstance(norm_name[0], str)
            and isinstance(norm_name[1], dict)):
        return (norm_name[0], dict(norm_name[1]))
    raise ValueError(f"norm_name must be a name or [name, {{args}}], got {norm_name!r}")
