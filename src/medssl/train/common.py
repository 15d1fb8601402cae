"""Helpers shared by the training loops: threads, seeding, model building, state files."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medssl import registry
from medssl.config import BackboneSpec
from medssl.io import atomic_path

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


def save_state(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` atomically (a killed job never leaves a truncated state)."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state(path: Path) -> dict[str, Any] | None:
    """The saved training state, or None when there is none or it is unreadable."""
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a state from an older, incompatible run: start over
        log.warning("%s: ignoring unreadable training state (%s)", path, exc)
        return None


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def progress_bar(iterable, total: int, desc: str, enabled: bool):
    """tqdm over ``iterable`` (plain iterable when disabled)."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)
