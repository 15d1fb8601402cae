"""Optimiser and learning-rate schedule of a pre-training run, chosen by :class:`medssl.config.PretrainSpec`.

Two optimisers and two schedules, all from torch / MONAI:

* ``optimizer: adam`` (:class:`torch.optim.Adam`, the default of every
  method; GVSL and Models Genesis train with Adam) or ``adamw``
  (:class:`torch.optim.AdamW`, decoupled weight decay; S2DC supplement Sec. C
  "AdamW optimizer with the momentum set to 0.9", i.e. β1 = 0.9).
* ``schedule: constant`` (the default: the learning rate never changes) or
  ``warmup_cosine``: :class:`monai.optimizers.WarmupCosineSchedule`, a linear
  warm-up from 0 over ``W = round(warmup_fraction * T)`` optimiser steps, then
  half a cosine down to 0 at the last step. The published S2DC code
  (https://github.com/Ashespt/S2DC, ``Pretrain/main.py`` and ``train.sh``)
  uses exactly this schedule with AdamW, lr 3e-4, weight decay 0.1,
  500 warm-up steps of 100 000 (``warmup_fraction: 0.005``).

The schedule is stepped once per optimiser step (after ``opt.step()``), so
``lr(t)`` is the learning rate of step ``t`` (0-based):

    lr(t) = lr * t / W                                  for t < W
    lr(t) = lr * 0.5 * (1 + cos(pi * (t - W) / (T - W)))  for W <= t <= T

with ``T = epochs * steps_per_epoch``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from monai.optimizers import WarmupCosineSchedule
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

if TYPE_CHECKING:
    from medssl.config import PretrainSpec

OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "warmup_cosine")

__all__ = ["OPTIMIZERS", "SCHEDULES", "build_optimizer", "build_schedule", "total_steps", "warmup_steps"]


def total_steps(cfg: PretrainSpec) -> int:
    """The number of optimiser steps of a run: ``epochs * steps_per_epoch``."""
    return int(cfg.epochs) * int(cfg.steps_per_epoch)


def warmup_steps(cfg: PretrainSpec) -> int:
    """The warm-up length in optimiser steps: ``round(warmup_fraction * epochs * steps_per_epoch)``.

    Raises:
        ValueError: if ``warmup_fraction`` is outside [0, 1).
    """
    if not 0.0 <= cfg.warmup_fraction < 1.0:
        raise ValueError(f"warmup_fraction must be in [0, 1), got {cfg.warmup_fraction!r}")
    return int(round(cfg.warmup_fraction * total_steps(cfg)))


def build_optimizer(parameters: Iterable[torch.nn.Parameter], cfg: PretrainSpec) -> torch.optim.Optimizer:
    """The optimiser named by ``cfg.optimizer`` with ``cfg.lr`` and ``cfg.weight_decay``.

    ``adam`` adds ``weight_decay`` to the gradient (L2, torch's Adam); ``adamw``
    decays the weights directly (Loshchilov & Hutter, ICLR 2019,
    https://arxiv.org/abs/1711.05101, Alg. 2), as in S2DC (supplement Sec. C).
    Both keep torch's betas (0.9, 0.999): "momentum set to 0.9".
    Parameters with ``requires_grad=False`` (e.g. an EMA teacher) are left out.

    Raises:
        ValueError: on an unknown optimiser name or a negative weight decay.
    """
    if cfg.optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {cfg.optimizer!r}")
    if not cfg.weight_decay >= 0:
        raise ValueError(f"weight_decay must be >= 0, got {cfg.weight_decay!r}")
    params = [p for p in parameters if p.requires_grad]
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_schedule(opt: torch.optim.Optimizer, cfg: PretrainSpec) -> LRScheduler:
    """The learning-rate schedule named by ``cfg.schedule``, stepped once per optimiser step.

    ``warmup_cosine`` is MONAI's :class:`~monai.optimizers.WarmupCosineSchedule`
    (linear warm-up from 0 over :func:`warmup_steps`, then a half cosine to 0 at
    ``epochs * steps_per_epoch``), the schedule of the published S2DC code
    (https://github.com/Ashespt/S2DC, ``Pretrain/main.py``; S2DC supplement
    Sec. C names AdamW). ``constant`` is a :class:`~torch.optim.lr_scheduler.LambdaLR`
    with factor 1, so that every run has a scheduler state to save and restore.

    Raises:
        ValueError: on an unknown schedule or a warm-up fraction outside [0, 1).
    """
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {cfg.schedule!r}")
    if cfg.schedule == "constant":
        return LambdaLR(opt, _one)
    return WarmupCosineSchedule(opt, warmup_steps=warmup_steps(cfg), t_total=max(total_steps(cfg), 1))


def _one(step: int) -> float:
    return 1.0
