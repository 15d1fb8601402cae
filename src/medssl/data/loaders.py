"""MONAI datasets and loaders over a processed dataset's ``datalist.json``.

Training loaders draw ``steps_per_epoch * batch_size`` random patches per epoch
with replacement, from a seeded generator, so an epoch costs the same however
many cases a label fraction leaves, and a run is reproducible from its seed.

By default every sample gets its own random crop and left-right flip. A
pre-training method that registers the images of a batch with each other
(GVSL: ``pair_crop = True``, ``flip = False``) gets instead one crop window per
batch, shared by all its images, and no flip (:func:`make_dataset` with
``flip=False, batch_crop=True``, :func:`train_loader` with ``batch_crop=patch``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler


def _transforms(task: str, patch: Sequence[int] | None, train: bool, flip: bool = True,
                random_crop: bool = True):
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
        if random_crop:
            chain.append(T.RandSpatialCropd(keys=keys, roi_size=list(patch), random_size=False))
    if train and flip:
        chain.append(T.RandFlipd(keys=keys, prob=0.5, spatial_axis=0))
    return T.Compose(chain)


def make_dataset(entries: list[dict], task: str, patch: Sequence[int] | None = None,
                 train: bool = True, seed: int = 0, flip: bool = True, batch_crop: bool = False):
    """A cached MONAI dataset of ``entries`` (from :func:`medssl.data.datalist.read_datalist`).

    Args:
        entries: dicts with ``image`` (path) and, for labelled tasks, ``label``
            (a path for segmentation, an int for classification).
        task: ``pretrain``, ``segmentation`` or ``classification``.
        patch: random crop size for training (ignored for classification,
            which sees the whole preprocessed ROI).
        train: random crops and flips when True; whole volumes otherwise.
        seed: seeds the random transforms.
        flip: random left-right flips of training samples.
        batch_crop: pad training volumes to ``patch`` but leave the crop to
            :func:`train_loader` (``batch_crop=patch``), one window per batch.
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
    xform = _transforms(task, patch, train, flip=flip, random_crop=not batch_crop)
    xform.set_random_state(seed)
    return CacheDataset(items, transform=xform, cache_rate=1.0, num_workers=0, progress=False)


def epoch_indices(dataset, batch_size: int, steps: int, seed: int) -> list[int]:
    """The ``steps * batch_size`` case indices of one epoch, drawn with replacement from ``seed``.

    The order of ``torch.utils.data.RandomSampler(replacement=True)`` with a
    generator seeded by ``seed``: batch ``j`` is ``[j * batch_size, (j + 1) * batch_size)``.
    """
    gen = torch.Generator().manual_seed(seed)
    return list(RandomSampler(dataset, replacement=True, num_samples=steps * batch_size, generator=gen))


def epoch_windows(steps: int, seed: int) -> np.ndarray:
    """``(steps, 3)`` relative crop-window positions in [0, 1), one per batch of an epoch.

    A stream of its own (``numpy`` ``SeedSequence([seed, 1])``), independent of
    the sample order drawn from ``seed`` by :func:`epoch_indices`; like it, a
    function of ``seed`` only, so a resumed epoch gets the windows of the
    uninterrupted one without any saved state.
    """
    return np.random.default_rng([int(seed), 1]).random((steps, 3))


def crop_at(x: torch.Tensor, patch: Sequence[int], frac: Sequence[float]) -> torch.Tensor:
    """The ``patch`` of ``x`` ``(C, *spatial)`` whose start along axis k is ``floor(frac_k * (n_k - p_k + 1))``.

    The same ``frac`` gives the same window in volumes of the same size and
    the same relative position in volumes of different sizes.

    Raises:
        ValueError: naming the shapes if ``x`` is smaller than ``patch``.
    """
    spatial = tuple(x.shape[1:])
    if len(spatial) != len(patch) or any(n < p for n, p in zip(spatial, patch)):
        raise ValueError(f"cannot crop a {list(patch)} patch from a volume of spatial shape {list(spatial)}")
    starts = [min(int(f * (n - p + 1)), n - p) for f, n, p in zip(frac, spatial, patch)]
    return x[(slice(None), *(slice(s, s + p) for s, p in zip(starts, patch)))]


class _SharedWindow(Dataset):
    """``dataset`` indexed by ``(case, batch)``: the case cut at the batch's window (image and label)."""

    def __init__(self, dataset, patch: Sequence[int], windows: np.ndarray) -> None:
        self.dataset, self.patch, self.windows = dataset, tuple(int(p) for p in patch), windows

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        case, batch = key
        item = dict(self.dataset[case])
        for k in ("image", "label"):
            if isinstance(item.get(k), torch.Tensor):
                item[k] = crop_at(item[k], self.patch, self.windows[batch])
        return item


def train_loader(dataset, batch_size: int, steps: int, seed: int, start: int = 0,
                 batch_crop: Sequence[int] | None = None) -> DataLoader:
    """Loader of batches ``start .. steps - 1`` of an epoch drawn with replacement from a seeded generator.

    The epoch's sample order depends only on ``seed`` (:func:`epoch_indices`),
    so a run resumed after ``start`` steps gets exactly the batches the
    uninterrupted run got next, without loading the skipped ones. The random
    crops and flips come from the dataset's transforms, whose random states a
    resume restores (:mod:`medssl.train.resume`). ``num_workers`` stays 0: the
    transforms run in this process, in sample order, so their random streams
    are reproducible.

    With ``batch_crop`` (a patch size; the dataset made with ``batch_crop=True``)
    every image of batch ``j`` is cut at window ``j`` of :func:`epoch_windows`,
    so the images of a batch cover corresponding regions.

    Raises:
        ValueError: if ``start`` is not in ``[0, steps]``.
    """
    if not 0 <= start <= steps:
        raise ValueError(f"start must be in [0, {steps}], got {start}")
    indices = epoch_indices(dataset, batch_size, steps, seed)[start * batch_size:]
    if batch_crop is not None:
        dataset = _SharedWindow(dataset, batch_crop, epoch_windows(steps, seed))
        indices = [(i, start + k // batch_size) for k, i in enumerate(indices)]
    return DataLoader(dataset, batch_size=batch_size, sampler=indices, num_workers=0, drop_last=True)


def eval_loader(dataset) -> DataLoader:
    """Whole volumes one at a time, in datalist order."""
    return DataLoader(dataset, batch_size=1, shuffle=False, num_workers=0)
