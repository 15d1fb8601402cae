"""Interface shared by every pre-training method."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class PretrainMethod(nn.Module):
    """A pre-training method: owns the backbone and its heads and returns a loss.

    Subclasses set :attr:`trains` (False for a method without pre-training) and
    implement :meth:`loss`. Everything trainable must be a sub-module so that
    ``self.parameters()`` reaches it; only ``self.backbone`` is exported to
    the downstream protocols.

    Args:
        backbone: a backbone built from the registry (returns ``{"global", "local"}``).
        seed: seeds the method's own randomness (augmentations, damage).
        **args: the method's ``args`` from params.yaml.
    """

    trains: bool = True

    def __init__(self, backbone: nn.Module, seed: int = 0, **args: Any) -> None:
        super().__init__()
        self.backbone = backbone
        self.seed = seed
        if args:
            raise ValueError(f"{type(self).__name__}: unknown arguments {sorted(args)}")

    def loss(self, batch: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of one batch ``(B, C, D, H, W)`` and a dict of scalar parts to log."""
        raise NotImplementedError(f"{type(self).__name__} does not train")
