"""S2DC's contrastive dictionary (supplement D.2): the FIFO queue of teacher keys and the InfoNCE over it.

S2DC supplement D.2 (ICCV 2025; published code https://github.com/Ashespt/S2DC,
``Pretrain/losses/loss.py`` and ``Pretrain/models/s2dc_head.py``): the query of sub-volume ``v_i`` is the
student's global embedding ``q_i = φ∘ϕ(v_i)``; its dictionary is

* the teacher (momentum) keys of the batch: ``q_i*' = φ*∘ϕ*(v_i')`` of the
  differently augmented copy ``v_i'`` of the same sub-volume (the positive)
  and ``q_j*`` of every other sub-volume ``v_j``, ``j ≠ i`` (negatives) —
  "both intra-subvolumes from the same volume and inter-subvolumes from
  different volumes";
* a queue of K earlier teacher keys (negatives), updated every iteration
  with randomly chosen keys of the batch.

medssl's :class:`~medssl.methods.s2dc.S2DC`, and where it departs from the paper and code:

* The teacher sees each view re-augmented (same crop, fresh intensity draws)
  as ``v_i'``, like the published code's ``crops_aug``. The negatives are the
  teacher keys of these copies too (the published code does the same; D.2
  writes ``φ*∘ϕ*(v_j)``), which saves a second teacher pass.
* Each volume gives two sub-volumes, translated crops of one patch that
  overlap (the patch-matching views), while the published code's 16
  sub-volumes per volume are disjoint. When the two coincide (same offset)
  the other is no negative and is left out (:func:`dictionary_exclusions`).
* Every sub-volume is a query (2B queries; the published code draws one per
  volume), and the other volumes' positives are negatives too (D.2; the
  published code leaves them out of ``l_neg``).
* Each step one randomly chosen key of each volume joins the queue (D.2:
  "randomly selected ... to update the queue"; the published code also
  enqueues one key per volume).

The loss is the InfoNCE of MoCo (He et al., CVPR 2020, Eq. 1,
https://arxiv.org/abs/1911.05722) at temperature τ:
``-log exp(q·k+/τ) / Σ_{k in dictionary} exp(q·k/τ)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["KeyQueue", "dictionary_exclusions", "info_nce"]


class KeyQueue(nn.Module):
    """FIFO queue of K teacher keys (S2DC supplement D.2, "the feature set from the queue {y_k*}").

    The keys live in buffers (``queue``, ``queue_ptr``, ``queue_count``), so
    they are part of the owner's ``state_dict`` and a resumed run continues
    the same queue.

    Args:
        size: K, the queue length; 0 disables the queue.
        dim: key width.
    """

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"queue_size must be an integer >= 0, got {size!r}")
        self.size = size
        self.register_buffer("queue", torch.zeros(size, dim))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("queue_count", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Push ``keys`` (n, dim) in order, dropping the oldest beyond K (the last K stay when n > K)."""
        k = self.size
        if k == 0:
            return
        keys = keys.detach().to(self.queue)[-k:]
        n = keys.shape[0]
        idx = (int(self.queue_ptr) + torch.arange(n)) % k
        self.queue[idx.to(self.queue.device)] = keys
        self.queue_ptr.fill_((int(self.queue_ptr) + n) % k)
        self.queue_count.fill_(min(k, int(self.queue_count) + n))

    def keys(self) -> torch.Tensor:
        """The queued keys, oldest first ((count, dim))."""
        count = int(self.queue_count)
        if count < self.size:
            return self.queue[:count]
        return torch.roll(self.queue, -int(self.queue_ptr), 0)


def dictionary_exclusions(rows: torch.Tensor, n: int, duplicate: torch.Tensor) -> torch.Tensor:
    """Keys of the batch that are *not* negatives of each query: the other sub-volume when it is the same one.

    medssl draws two sub-volumes (views A and B) of each of ``n`` volumes;
    keys ``0..n-1`` are the A views and ``n..2n-1`` the B views. The other
    sub-volume of the query's volume is an intra-volume negative (D.2)
    unless both were cropped at the same offset (``duplicate``): then it is
    the query's own sub-volume under another augmentation, not a negative,
    and it is left out of the dictionary.

    Args:
        rows: (R,) the key index of each query's own sub-volume.
        n: number of volumes of the (global) batch.
        duplicate: (n,) bool, whether the two sub-volumes of a volume coincide.

    Returns:
        (R, 2n) bool, True where a key is left out.
    """
    if duplicate.shape != (n,):
        raise ValueError(f"duplicate must have shape ({n},), got {tuple(duplicate.shape)}")
    rows = rows.long()
    out = torch.zeros(rows.shape[0], 2 * n, dtype=torch.bool, device=rows.device)
    partner = (rows + n) % (2 * n)
    out[torch.arange(rows.shape[0], device=rows.device), partner] = duplicate.to(rows.device)[rows % n]
    return out


def info_nce(q: torch.Tensor, keys: torch.Tensor, positive: torch.Tensor, queue: torch.Tensor,
             temperature: float, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Mean InfoNCE of the queries against the dictionary ``keys ∪ queue`` (MoCo Eq. 1; S2DC supplement D.2).

    ``L = -1/R Σ_r log( exp(q_r·k_{p_r}/τ) / (Σ_{j not excluded} exp(q_r·k_j/τ) + Σ_k exp(q_r·y_k/τ)) )``

    Args:
        q: (R, D) student embeddings (queries).
        keys: (M, D) teacher keys of the batch.
        positive: (R,) long, the index in ``keys`` of each query's positive.
        queue: (K', D) queued teacher keys (negatives of every query).
        temperature: τ > 0.
        exclude: (R, M) bool, keys left out of a query's dictionary (never its positive).

    Raises:
        ValueError: on a temperature <= 0, or an exclusion of a positive.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    positive = positive.long().to(q.device)
    logits = q @ keys.t()
    if exclude is not None:
        if bool(exclude[torch.arange(q.shape[0], device=q.device), positive].any()):
            raise ValueError("exclude must not leave out a query's positive key")
        logits = logits.masked_fill(exclude.to(q.device), float("-inf"))
    if queue.shape[0]:
        logits = torch.cat([logits, q @ queue.t()], 1)
    return F.cross_entropy(logits / temperature, positive)
