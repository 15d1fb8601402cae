"""What a downstream run keeps beside its ``metrics.json``: test predictions and, optionally, its weights.

``<run dir>/predictions/<case>.nii.gz`` (``downstream.save_predictions``, on by default;
segmentation only): the predicted label map of each test case, on the processed
image's grid (the shape and affine of ``data/processed/<dataset>``'s image of that
case, voxel order i, j, k), unsigned 8-bit (16-bit above 255 classes), written with
:func:`medssl.io.save_nifti` (deterministic gzip, so a rerun gives the same bytes).

``<run dir>/weights/`` (``downstream.keep_weights``, off by default): the best-epoch
model, the weights that were tested: ``backbone.safetensors`` + ``backbone.json``
(:func:`medssl.nn.checkpoint.save_backbone`; loadable without the training code) and
``head.safetensors``; ``backbone.json`` holds the head's kind, sizes and sha256 and the
run's identity under ``downstream``. :func:`load_model` rebuilds the model.

Each folder is written whole into ``.<name>.<pid>.tmp`` beside it and renamed into
place (:func:`staged_folder`) before ``metrics.json`` is written, so a killed run
leaves no half-written folder under the final name (the next run deletes the
leftover), and a rerun replaces the previous folder as a whole. With a switch off,
a folder left by an earlier run is deleted, so what is there always belongs to the
``metrics.json`` beside it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from medssl.io import atomic_path, save_nifti
from medssl.nn.checkpoint import load_backbone, save_backbone
from medssl.provenance import sha256_file

HEAD_FILE = "head.safetensors"


def _leftovers(final: Path) -> list[Path]:
    return [*final.parent.glob(f".{final.name}.*.tmp"), *final.parent.glob(f".{final.name}.*.old")]


def remove_folder(final: Path) -> None:
    """Delete ``final`` and any staging leftovers of it (a switch turned off since an earlier run)."""
    for p in [final, *_leftovers(final)]:
        if p.is_dir():
            shutil.rmtree(p)


@contextlib.contextmanager
def staged_folder(final: Path) -> Iterator[Path]:
    """Yield an empty folder beside ``final``; on success it replaces ``final`` as a whole.

    On an exception the staged folder is deleted and ``final`` is untouched. Leftovers of a
    killed writer (``.<name>.*.tmp`` / ``.old``) are deleted first: one run writes one folder.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    for p in _leftovers(final):
        shutil.rmtree(p, ignore_errors=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    tmp.mkdir()  # the umask's mode, as for any folder
    try:
        yield tmp
        old = final.with_name(f".{final.name}.{os.getpid()}.old")
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def prediction_file(folder: Path, case: str) -> Path:
    """``<folder>/<case>.nii.gz``.

    Raises:
        ValueError: for a case id that is not a plain file name.
    """
    if not case or "/" in case or "\\" in case or case.startswith("."):
        raise ValueError(f"case id {case!r} cannot name a prediction file")
    return Path(folder) / f"{case}.nii.gz"


def save_prediction(folder: Path, case: str, pred: torch.Tensor | np.ndarray, image: str | Path,
                    n_classes: int) -> Path:
    """Write the label map ``pred`` of ``case`` on the grid of its processed ``image``.

    Raises:
        ValueError: naming the image when the prediction's shape is not the image's.
    """
    import nibabel as nib

    ref = nib.load(str(image))
    labels = pred.cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred)
    if labels.shape != tuple(ref.shape[:3]):
        raise ValueError(f"{image}: the prediction of case {case!r} has shape {labels.shape}, the image "
                         f"{tuple(ref.shape[:3])}")
    path = prediction_file(folder, case)
    save_nifti(path, labels, ref.affine, dtype=np.uint8 if n_classes <= 256 else np.uint16)
    return path


def folder_bytes(folder: Path) -> int:
    """Total size of the files under ``folder``."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def save_weights(folder: Path, model: Any, backbone_name: str, identity: dict[str, Any]) -> None:
    """Write ``model`` (a :class:`~medssl.train.downstream.DownstreamModel`) into ``folder``.

    Args:
        backbone_name: the backbone's registry name (``backbone.json``'s ``name``).
        identity: JSON-able run identity stored under ``downstream`` (study, dataset, protocol ...).
    """
    folder = Path(folder)
    head = {k: v.detach().to("cpu").contiguous() for k, v in model.head.state_dict().items()}
    with atomic_path(folder / HEAD_FILE, suffix=".safetensors") as tmp:
        save_file(head, str(tmp), metadata={"format": "pt"})
    first = next(iter(model.head.parameters()))
    head_record = {"task": model.task, "in_channels": int(first.shape[1]), "n_classes": int(first.shape[0]),
                   "weights": HEAD_FILE, "weights_sha256": sha256_file(folder / HEAD_FILE)}
    save_backbone(model.backbone, folder / "backbone.safetensors", folder / "backbone.json", name=backbone_name,
                  extra={"head": head_record, "downstream": identity})


def load_model(folder: Path, device: str | torch.device = "cpu"):
    """The :class:`~medssl.train.downstream.DownstreamModel` kept by :func:`save_weights` in ``folder``.

    Raises:
        ValueError: naming the file when the head's weights do not match their recorded sha256.
    """
    import json

    from medssl.train.downstream import DownstreamModel

    folder = Path(folder)
    backbone = load_backbone(folder / "backbone.safetensors", folder / "backbone.json", device=device)
    head = json.loads((folder / "backbone.json").read_text(encoding="utf-8"))["head"]
    if sha256_file(folder / head["weights"]) != head["weights_sha256"]:
        raise ValueError(f"{folder / head['weights']}: contents do not match the sha256 in backbone.json")
    model = DownstreamModel(backbone, head["task"], head["n_classes"])
    model.head.load_state_dict(load_file(str(folder / head["weights"]), device=str(device)), strict=True)
    return model.to(device)
