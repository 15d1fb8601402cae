"""Interface shared by every pre-training method."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medssl.methods.pretext import Pretext

class PretrainMethod(nn.Module):
    """A pre-training method: owns the backbone and its heads and returns a loss.

    Subclasses set :attr:`trains` (False for a method without pre-training) and
    implement :meth:`loss`. Everything trainable must be a sub-module so that
    ``self.parameters()`` reaches it; only ``self.backbone`` is exported to
    the downstream protocols.

    Random streams: every ``torch.Generator`` attribute of the method and every
    MONAI random transform held as a plain attribute (e.g. a
    :class:`~medssl.transforms.genesis.GenesisDamage`) is part of
    ``state_dict()`` (key ``_extra_state``, :meth:`get_extra_state`), so a
    resumed run draws what the uninterrupted run would have drawn.

    Data parallelism (:mod:`medssl.train.distributed`): under DDP every rank
    calls :meth:`loss` with the same *global* batch. A method draws its random
    augmentation for the whole global batch from its own generator (identical
    on every rank), then trains on its rank's slice (:meth:`local`), so the
    averaged gradient is the single-process gradient of the global batch.
    With one process (the default) :meth:`local` returns its input.

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
        self.rank, self.world_size = 0, 1
        if args:
            raise ValueError(f"{type(self).__name__}: unknown arguments {sorted(args)}")

    def loss(self, batch: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of one batch ``(B, C, D, H, W)`` and a dict of scalar parts to log."""
        raise NotImplementedError(f"{type(self).__name__} does not train")

    def pretext_scores(self, images: torch.Tensor, labels: torch.Tensor | None, n_classes: int) -> Pretext | None:
        """The method's own task on held-out volumes, deterministic; None: no pretext (:mod:`medssl.methods.pretext`).

        Args:
            images: (N, 1, D, H, W) held-out volumes, intensities in [0, 1].
            labels: (N, D, H, W) integer label maps, or None when the held-out set has none.
            n_classes: number of label classes, background included.

        The pre-training stage calls it at step 0 and after the last step
        (:mod:`medssl.train.pretext`), in eval mode and without gradients; it
        must not draw from the method's training random streams.
        """
        return None

    def forward(self, batch: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """:meth:`loss`; the training loop calls the module so that DDP's forward hooks run."""
        return self.loss(batch)

    # ------------------------------------------------------------ data parallel
    def set_data_parallel(self, rank: int, world_size: int) -> None:
        """Train on slice ``rank`` of ``world_size`` equal slices of every global batch.

        Raises:
            ValueError: if ``rank`` is not in ``[0, world_size)``.
        """
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        self.rank, self.world_size = int(rank), int(world_size)

    def local(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's slice (along dim 0) of a global-batch tensor; ``x`` itself with one process.

        Raises:
            ValueError: if the batch does not split into equal slices.
        """
        if self.world_size == 1:
            return x
        n = x.shape[0]
        if n % self.world_size:
            raise ValueError(f"global batch of {n} does not split over {self.world_size} processes")
        b = n // self.world_size
        return x[self.rank * b:(self.rank + 1) * b]

    @torch.no_grad()
    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """All ranks' ``x`` concatenated along dim 0 in rank order (no gradient); ``x`` with one process."""
        if self.world_size == 1:
            return x
        import torch.distributed as dist

        parts = [torch.empty_like(x) for _ in range(self.world_size)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    # ------------------------------------------------------------ random streams
    def _random_streams(self) -> dict[str, Any]:
        """Plain (non-module) attributes that hold randomness: generators and MONAI random transforms."""
        from monai.transforms import Randomizable, Transform

        return {name: v for name, v in vars(self).items()
                if isinstance(v, (torch.Generator, Randomizable, Transform))}

    def get_extra_state(self) -> dict[str, Any]:
        """The state of the method's own random streams (saved in ``state_dict()['_extra_state']``)."""
        from medssl.train.resume import randomizable_states

        out: dict[str, Any] = {}
        for name, v in self._random_streams().items():
            out[name] = v.get_state() if isinstance(v, torch.Generator) else randomizable_states(v)
        return out

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`get_extra_state` saved.

        Raises:
            ValueError: if the saved streams are not the method's streams.
        """
        from medssl.train.resume import set_randomizable_states

        streams = self._random_streams()
        if set(state) != set(streams):
            raise ValueError(f"{type(self).__name__}: saved random streams {sorted(state)}, "
                             f"the method has {sorted(streams)}")
        for name, v in streams.items():
            if isinstance(v, torch.Generator):
                v.set_state(state[name])
            else:
                set_randomizable_states(v, state[name])
