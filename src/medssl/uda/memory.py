"""The contrastive prototype memory bank of CMEVAE (CPMC; Qiao et al., supplement Sec. III-B).

The supplement: "For the memory bank in CPMC, we stored 50 samples and a
prototype for each point class at three scales and used all the stored
samples in each contrast round, and selected the point with the lowest
similarity to the prototype to update the memory bank."

Read as the rule implemented by :meth:`PrototypeMemory.push`, for one class
``c`` at one scale ``s`` and one new (L2-normalised) pixel embedding ``f``:

1. while the bank holds fewer than ``size`` (50) samples, ``f`` fills the next
   free slot;
2. when it is full, the stored sample least similar to the *current*
   prototype (lowest cosine similarity; the first such slot on ties) is
   replaced by ``f``, whatever ``f``'s own similarity;
3. after every insertion the prototype is recomputed as the L2-normalised
   mean of the stored samples.

Several new samples are inserted one after the other in the order given.
The bank is a set of buffers (it moves with ``.to()`` and is saved in the
``state_dict``); it never carries gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PrototypeMemory"]


class PrototypeMemory(nn.Module):
    """Per class and per scale: ``size`` stored pixel embeddings and their prototype.

    Args:
        n_classes: number of classes (background included: it is a class of the bank too).
        dim: embedding size.
        n_scales: number of scales (the supplement: three).
        size: samples per class and scale (the supplement: 50).
    """

    def __init__(self, n_classes: int, dim: int, n_scales: int = 3, size: int = 50) -> None:
        super().__init__()
        for name, v, lo in (("n_classes", n_classes, 1), ("dim", dim, 1), ("n_scales", n_scales, 1), ("size", size, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
        self.n_classes, self.dim, self.n_scales, self.size = n_classes, dim, n_scales, size
        self.register_buffer("samples", torch.zeros(n_scales, n_classes, size, dim))
        self.register_buffer("count", torch.zeros(n_scales, n_classes, dtype=torch.long))
        self.register_buffer("prototypes", torch.zeros(n_scales, n_classes, dim))

    def _check(self, scale: int, cls: int) -> None:
        if not 0 <= scale < self.n_scales:
            raise ValueError(f"scale must be in 0..{self.n_scales - 1}, got {scale!r}")
        if not 0 <= cls < self.n_classes:
            raise ValueError(f"cls must be in 0..{self.n_classes - 1}, got {cls!r}")

    @torch.no_grad()
    def push(self, scale: int, cls: int, feats: torch.Tensor) -> list[int]:
        """Insert new embeddings of class ``cls`` at ``scale`` by the CPMC rule (module docstring).

        Args:
            scale: scale index.
            cls: class index.
            feats: ``(k, dim)`` new embeddings (normalised here; detached).

        Returns:
            The slot written by each new embedding, in order.
        """
        self._check(scale, cls)
        if feats.ndim != 2 or feats.shape[1] != self.dim:
            raise ValueError(f"feats must be (k, {self.dim}), got {tuple(feats.shape)}")
        bank, proto = self.samples[scale, cls], self.prototypes[scale, cls]
        slots = []
        for f in F.normalize(feats.detach().to(bank), dim=1):
            n = int(self.count[scale, cls])
            if n < self.size:
                slot = n
                self.count[scale, cls] = n + 1
            else:
                slot = int(torch.argmin(bank @ proto))
            bank[slot] = f
            proto.copy_(F.normalize(bank[: int(self.count[scale, cls])].mean(0), dim=0))
            slots.append(slot)
        return slots

    def stored(self, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
        """All stored samples at ``scale`` and their classes: ``(M, dim)``, ``(M,)`` (used in every contrast round)."""
        self._check(scale, 0)
        feats, labels = [], []
        for c in range(self.n_classes):
            n = int(self.count[scale, c])
            feats.append(self.samples[scale, c, :n])
            labels.append(torch.full((n,), c, dtype=torch.long, device=self.samples.device))
        return torch.cat(feats), torch.cat(labels)

    def prototype(self, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Prototypes ``(n_classes, dim)`` at ``scale`` and whether each class has any sample ``(n_classes,)``."""
        self._check(scale, 0)
        return self.prototypes[scale], self.count[scale] > 0
