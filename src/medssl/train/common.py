"""Helpers shared by the training loops: threads, seeding, model building, progress bars, seed groups.

Training states (save, load, random streams) are in :mod:`medssl.train.resume`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from medssl import registry
from medssl.config import BackboneSpec

log = logging.getLogger("medssl")
T = TypeVar("T")


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


def run_seeds(run_one: Callable[[int], T], seeds: Sequence[int], what: str) -> list[T]:
    """``run_one(seed)`` for every seed in this process (one import and start-up for all of them).

    A seed that fails does not stop the others; preemption
    (:class:`~medssl.train.resume.Preempted`) and Ctrl-C stop at once. Used by
    the template, stn and uda commands when Snakemake groups a row's seeds into
    one job (``group_seeds: true``); these runs keep no training state, so a
    rerun after a failure trains the row's seeds again.

    Raises:
        RuntimeError: naming every seed that failed and why, after the others ran.
    """
    from medssl.train.resume import Preempted

    results, failed = [], []
    for seed in seeds:
        try:
            results.append(run_one(seed))
        except (Preempted, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - reported with the seed, the other seeds still run
            log.error("%s: seed %d failed: %s", what, seed, exc)
            failed.append(f"seed {seed}: {exc}")
    if failed:
        raise RuntimeError(f"{what}: {len(failed)} of {len(seeds)} seeds failed ({'; '.join(failed)})")
    return results
