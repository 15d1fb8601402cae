"""Helpers shared by the training loops: threads, seeding, model building, progress bars.

Training states (save, load, random streams) are in :mod:`medssl.train.resume`.
"""

from __future__ import annotations

import logging
import random

import numpy as np
import torch
from torch import nn

from medssl import registry
from medssl.config import BackboneSpec

log = logging.getLogger("medssl")


def setup(seed: int, num_threads: int) -> None:
    """Seed every generator and fix the number of CPU threads of this job."""
    torch.set_num_threads(num_threads)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_backbone(spec: BackboneSpec) -> nn.Module:
    """Instantiate the registry backbone named by ``spec``."""
    return registry.resolve("backbone", spec.name)(**spec.args)


def progress_bar(iterable, total: int, desc: str, enabled: bool):
    """tqdm over ``iterable`` (plain iterable when disabled)."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)
