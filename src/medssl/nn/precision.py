"""Mixed precision (bf16 autocast for the networks, fp32 islands for the maths that needs it) and plain tensors.

``amp: true`` (pre-training and downstream) runs the forward pass under
``torch.autocast(dtype=torch.bfloat16)`` on CUDA and on the CPU alike (on CPUs
with AMX or AVX-512-BF16 the convolutions run ~2x faster). bf16 keeps 8 bits
of mantissa (relative precision 2**-8 = 0.4 %): enough for convolutions whose
errors average out, not for sums of many products whose result is a small
difference of large terms. Those run in fp32 inside :func:`fp32`, on fp32
copies of their inputs:

* similarity losses: GVSL's Gaussian pre-smoothing and local NCC (a windowed
  variance ``E[x^2] - E[x]^2``; under bf16 autocast MONAI's NCC loss reaches
  ~ -8e8, issue 15), its smoothness and MSE terms, and the warp that feeds them;
* S2DC's cost matrix and Sinkhorn iterations (log-domain sums over patches);
* every method's final loss reduction, and the downstream Dice/CE loss.

Reference: PyTorch automatic mixed precision,
https://pytorch.org/docs/stable/amp.html (CPU ops eligible for bf16 autocast).
"""

from __future__ import annotations

import contextlib

import torch


def autocast(amp: bool, device: torch.device | str):
    """bf16 autocast on ``device`` (CUDA or CPU) when ``amp`` is set; a no-op context otherwise.

    Raises:
        ValueError: for a device type autocast does not support in bf16 (e.g. ``mps`` on old torch).
    """
    dev = torch.device(device)
    if not amp:
        return contextlib.nullcontext()
    if dev.type not in ("cuda", "cpu"):
        raise ValueError(f"amp: bf16 autocast runs on cuda and cpu, not on {dev.type!r}")
    return torch.autocast(device_type=dev.type, dtype=torch.bfloat16)


@contextlib.contextmanager
def fp32(*tensors: torch.Tensor):
    """A region without autocast; yields fp32 copies of ``tensors`` (the tensors themselves when already fp32).

    Usage: ``with fp32(moved, fixed) as (m, f): loss = ncc(m, f)``. Gradients
    flow back through the casts into the bf16 part of the graph.
    """
    kinds = {t.device.type for t in tensors} | {"cpu"}
    with contextlib.ExitStack() as stack:
        for kind in kinds:
            if kind in ("cuda", "cpu"):
                stack.enter_context(torch.autocast(device_type=kind, enabled=False))
        yield tuple(t.float() if t.is_floating_point() else t for t in tensors)


def plain(x: torch.Tensor) -> torch.Tensor:
    """``x`` as a plain ``torch.Tensor``: a MONAI ``MetaTensor``'s data without its metadata tracking.

    Inside a training step the metadata (affine, applied operations) is never
    read, and every op on a MetaTensor pays for propagating it (issue 15:
    about 10 ms of a 184 ms downstream step). Shares the memory; no copy.
    """
    as_tensor = getattr(x, "as_tensor", None)
    return as_tensor() if callable(as_tensor) else x
