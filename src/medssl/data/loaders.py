"""MONAI datasets and loaders over a processed dataset's ``datalist.json``.

Training loaders draw ``steps_per_epoch * batch_size`` random patches per epoch
with replacement, from a seeded generator, so an epoch costs the same however
many cases a label fraction leaves, and a run is reproducible from its seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, RandomSampler


def _transforms(task: str, patch: Sequence[int] | None, train: bool):
    from monai import transforms as T

    keys = ["image", "label"] if task == "segmentation" else ["image"]
    chain: list[Any] = [
        T.LoadImaged(keys=keys, image_only=True),
        T.EnsureChannelFirstd(keys=keys),
        T.EnsureTyped(keys=["image"], dtype=torch.float32, track_meta=False),
    ]
    if task == "segmentation":
        chain.append(T.EnsureTyped(keys=["label"], dtype=torch.long, track_meta=False))
    if train and patch is not None and task != "classification":
        chain.append(T.SpatialPadd(keys=keys, spatial_size=list(patch)))
        chain.append(T.RandSpatialCropd(keys=keys, roi_size=list(patch), random_size=False))
    if train:
        chain.append(T.RandFlipd(keys=keys, prob=0.5, spatial_axis=0))
    return T.Compose(chain)


def make_dataset(entries: list[dict], task: str, patch: Sequence[int] | None = None,
                 train: bool = True, seed: int = 0):
    """A cached MONAI dataset of ``entries`` (from :func:`medssl.data.datalist.read_datalist`).

    Args:
        entries: dicts with ``image`` (path) and, for labelled tasks, ``label``
            (a path for segmentation, an int for classification).
        task: ``pretrain``, ``segmentation`` or ``classification``.
        patch: random crop size for training (ignored for classification,
            which sees the whole preprocessed ROI).
        train: random crops and flips when True; whole volumes otherwise.
        seed: seeds the random transforms.
    """
    from monai.data import CacheDataset

    if not entries:
        raise ValueError("no cases to load (empty split)")
    items = []
    for e in entries:
        item = {"image": str(e["image"]), "case": e.get("case", "")}
        if task in ("segmentation", "classification"):
            if "label" not in e:
                raise ValueError(f"{e['image']}: case has no label")
            item["label"] = str(e["label"]) if task == "segmentation" else int(e["label"])
        items.append(item)
    xform = _transforms(task, patch, train)
    xform.set_random_state(seed)
    return CacheDataset(items, transform=xform, cache_rate=1.0, num_workers=0, progress=False)


def epoch_indices(dataset, batch_size: int, steps: int, seed: int) -> list[int]:
    """The ``steps * batch_size`` case indices of one epoch, drawn with replacement from ``seed``.

    The order of ``torch.utils.data.RandomSampler(replacement=True)`` with a
    generator seeded by ``seed``: batch ``j`` is ``[j * batch_size, (j + 1) * batch_size)``.
    """
    gen = torch.Generator().manual_seed(seed)
    return list(RandomSampler(dataset, replacement=True, num_samples=steps * batch_size, generator=gen))


def train_loader(dataset, batch_size: int, steps: int, seed: int, start: int = 0) -> DataLoader:
    """Loader of batches ``start .. steps - 1`` of an epoch drawn with replacement from a seeded generator.

    The epoch's sample order depends only on ``seed`` (:func:`epoch_indices`),
    so a run resumed after ``start`` steps gets exactly the batches the
    uninterrupted run got next, without loading the skipped ones. The random
    crops and flips come from the dataset's transforms, whose random states a
    resume restores (:mod:`medssl.train.resume`). ``num_workers`` stays 0: the
    transforms run in this process, in sample order, so their random streams
    are reproducible.

    Raises:
        ValueError: if ``start`` is not in ``[0, steps]``.
    """
    if not 0 <= start <= steps:
        raise ValueError(f"start must be in [0, {steps}], got {start}")
    indices = epoch_indices(dataset, batch_size, steps, seed)[start * batch_size:]
    return DataLoader(dataset, batch_size=batch_size, sampler=indices, num_workers=0, drop_last=True)


def eval_loader(dataset) -> DataLoader:
    """Whole volumes one at a time, in datalist order."""
    return DataLoader(dataset, batch_size=1, shuffle=False, num_workers=0)
