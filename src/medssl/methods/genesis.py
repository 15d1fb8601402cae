"""``genesis``: Models Genesis restoration pre-training.

Zhou et al., "Models Genesis", MedIA 2021: the image is damaged by a
non-linear Bézier intensity map, local pixel shuffling and in-/out-painting,
and the network restores the original; loss = MSE(restored, original).

Pretext score (:meth:`Genesis.pretext_scores`): the PSNR of the restoration of
held-out damaged volumes, against the PSNR of the damaged input itself.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medssl.methods.base import PretrainMethod
from medssl.methods.pretext import Pretext, restoration_psnr
from medssl.nn.heads import RestorationHead
from medssl.nn.precision import fp32
from medssl.transforms.genesis import GenesisDamage


class Genesis(PretrainMethod):
    """Restoration of Genesis-damaged inputs from the backbone's local feature.

    Args:
        backbone: registry backbone.
        seed: seeds the damage transforms.
        nonlinear_prob, local_shuffle_prob, paint_prob, inpaint_rate: the
            published Models Genesis probabilities (0.9, 0.5, 0.9, 0.2).
    """

    def __init__(self, backbone: nn.Module, seed: int = 0, nonlinear_prob: float = 0.9,
                 local_shuffle_prob: float = 0.5, paint_prob: float = 0.9, inpaint_rate: float = 0.2,
                 **args: Any) -> None:
        super().__init__(backbone, seed, **args)
        self.head = RestorationHead(backbone.local_channels, out_channels=1)
        self.damage = GenesisDamage(nonlinear_prob=nonlinear_prob, local_shuffle_prob=local_shuffle_prob,
                                    paint_prob=paint_prob, inpaint_rate=inpaint_rate)
        self.damage.set_random_state(seed)

    def loss(self, batch: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """MSE between the restoration of the damaged batch and the batch.

        Under data parallelism the whole global batch is damaged (one random
        stream, identical on every rank) and this rank restores its slice.
        """
        damaged = self.local(self.damage.batch(batch))
        batch = self.local(batch)
        logits = self.head(self.backbone(damaged)["local"])
        with fp32(logits, batch) as (logits, batch):  # the loss in fp32 under bf16 autocast (nn.precision)
            loss = F.mse_loss(torch.sigmoid(logits), batch)
        return loss, {"mse": float(loss.detach())}

    def pretext_scores(self, images: torch.Tensor, labels: torch.Tensor | None, n_classes: int) -> Pretext:
        """:func:`medssl.methods.pretext.restoration_psnr`: the restoration this method trains."""
        return restoration_psnr(self.backbone, self.head, self.damage, images)
