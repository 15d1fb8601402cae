"""Device choice and data-parallel (DDP) set-up for the training loops.

One device is chosen per process, once (:func:`resolve_device`): ``--device``
or ``$MEDSSL_DEVICE`` when given, else ``cuda`` when available, else ``cpu``.

Data parallelism: launched by ``torchrun --nproc_per_node N`` (which sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``),
:func:`init` starts ``torch.distributed`` (``nccl`` on CUDA, ``gloo`` on the
CPU; ``$MEDSSL_DIST_BACKEND`` overrides) and each rank takes the GPU
``LOCAL_RANK``. The training loop then wraps the method in
``DistributedDataParallel``; every rank loads the same global batch and the
method trains on its slice (:meth:`medssl.methods.base.PretrainMethod.local`);
only rank 0 writes files and MLflow.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch

log = logging.getLogger("medssl")

DEVICE_ENV = "MEDSSL_DEVICE"
BACKEND_ENV = "MEDSSL_DIST_BACKEND"


@dataclass(frozen=True)
class Dist:
    """Where this process sits in a data-parallel job (rank 0 of 1 without one)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialised_here: bool = False  # this module called init_process_group (and tears it down)

    @property
    def enabled(self) -> bool:
        """True with more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only rank that writes files and logs to MLflow."""
        return self.rank == 0


def env_world() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun's environment variables (0, 1, 0 without them)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    return rank, world, local


def resolve_device(name: str | None = None, local_rank: int = 0) -> torch.device:
    """The device of this process: ``name``, else ``$MEDSSL_DEVICE``, else ``cuda`` if available, else ``cpu``.

    A bare ``cuda`` becomes ``cuda:<local_rank>`` (one GPU per DDP rank).

    Raises:
        ValueError: if CUDA is asked for and not available.
    """
    name = name or os.environ.get(DEVICE_ENV) or ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for, but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


def init(device: torch.device, backend: str | None = None) -> Dist:
    """Join the process group torchrun describes, if any; a no-op :class:`Dist` for one process.

    Args:
        device: this rank's device (picks the default backend).
        backend: ``nccl``, ``gloo`` ...; default ``$MEDSSL_DIST_BACKEND``, else
            ``nccl`` on CUDA and ``gloo`` otherwise.
    """
    import torch.distributed as dist

    rank, world, local = env_world()
    if world <= 1:
        return Dist()
    if dist.is_initialized():  # the caller set it up (e.g. a test harness)
        return Dist(dist.get_rank(), dist.get_world_size(), local, initialised_here=False)
    backend = backend or os.environ.get(BACKEND_ENV) or ("nccl" if device.type == "cuda" else "gloo")
    kwargs = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(backend=backend, rank=rank, world_size=world, **kwargs)
    log.info("distributed: rank %d of %d (local rank %d), backend %s, device %s", rank, world, local,
             backend, device)
    return Dist(rank, world, local, initialised_here=True)


def shutdown(d: Dist) -> None:
    """Tear down the process group if :func:`init` created it."""
    import torch.distributed as dist

    if d.initialised_here and dist.is_initialized():
        dist.destroy_process_group()


def barrier(d: Dist) -> None:
    """Wait for every rank (no-op with one process)."""
    if d.enabled:
        import torch.distributed as dist

        dist.barrier()


def reduce_step(d: Dist, loss: torch.Tensor, stop: bool) -> tuple[float, bool]:
    """This step's mean loss over the ranks and whether any rank was asked to stop.

    One all-reduce of ``[loss, stop]`` per step keeps the ranks in agreement on
    when to save and stop (a signal may reach the ranks at different steps).
    """
    if not d.enabled:
        return float(loss.detach()), stop
    import torch.distributed as dist

    t = torch.stack([loss.detach().float(), torch.tensor(float(stop), device=loss.device)])
    dist.all_reduce(t)
    return float(t[0]) / d.world_size, bool(t[1] > 0)


def wrap(model: torch.nn.Module, d: Dist, device: torch.device) -> torch.nn.Module:
    """``DistributedDataParallel(model)`` with more than one process, else ``model``."""
    if not d.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    return DDP(model, device_ids=ids)
