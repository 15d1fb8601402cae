"""Backbone checkpoints: safetensors weights plus a JSON architecture record.

The pretrain stage writes ``checkpoints/<study>/<method>/backbone.safetensors``
and ``backbone.json`` (DESIGN.md, "Data flow and file contracts"). As in
voxelmorph, the JSON stores the constructor arguments, so a backbone loads
from these two files alone, without the training configuration:

.. code-block:: json

    {"format": "medssl-backbone/1", "name": "unet3d", "args": {...},
     "n_parameters": 123, "weights_sha256": "...", ...extra}

The weights file holds exactly one metadata entry: safetensors writes its
metadata from a hash map whose order changes between runs, so more than one
entry would make the bytes of identical weights differ (and DVC re-upload).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from medssl import registry
from medssl.io import atomic_path, write_json

FORMAT = "medssl-backbone/1"
RESERVED_KEYS = ("format", "name", "args", "n_parameters", "weights_sha256")

PathLike = str | os.PathLike


def save_backbone(
    model: nn.Module,
    weights_path: PathLike,
    config_path: PathLike,
    name: str = "unet3d",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``model``'s weights (safetensors) and architecture (JSON), each atomically.

    Args:
        model: a backbone with a JSON-serialisable ``config`` dict of its
            constructor arguments, an instance of the class registered as ``name``.
        weights_path: where to write the ``.safetensors`` file.
        config_path: where to write the ``.json`` record.
        name: the backbone's name in :data:`medssl.registry.BACKBONES`.
        extra: more JSON-serialisable entries for the record (e.g. the method
            and the number of pre-training steps); may not override the
            reserved keys ``format``, ``name``, ``args``, ``n_parameters``,
            ``weights_sha256``.

    Returns:
        The record written to ``config_path``.

    Raises:
        ValueError: if ``model`` has no ``config``, is not an instance of the
            registered class, or ``config`` / ``extra`` is not plain JSON or
            ``extra`` uses a reserved key.
    """
    config = getattr(model, "config", None)
    if not isinstance(config, dict):
        raise ValueError(f"{type(model).__name__} has no 'config' dict of constructor arguments; cannot save it")
    cls = registry.resolve("backbone", name)
    if not isinstance(model, cls):
        raise ValueError(f"model is a {type(model).__name__}, but backbone {name!r} is {cls.__name__}")
    extra = dict(extra or {})
    clash = sorted(set(extra) & set(RESERVED_KEYS))
    if clash:
        raise ValueError(f"extra may not set the reserved keys {clash}")
    for what, value in (("config", config), ("extra", extra)):
        try:  # fail before writing anything
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{what} is not JSON-serialisable ({exc})") from exc

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(weights_path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    record = {
        **extra,
        "format": FORMAT,
        "name": name,
        "args": config,
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "weights_sha256": _sha256(Path(weights_path)),
    }
    write_json(config_path, record)
    return record


def read_backbone_config(config_path: PathLike) -> dict[str, Any]:
    """Read and validate a ``backbone.json`` record.

    Raises:
        ValueError: naming the file when it is missing, not JSON, of another
            format, or lacks ``name`` / ``args``.
    """
    path = Path(config_path)
    if not path.is_file():
        raise ValueError(f"{path}: backbone config not found")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a valid JSON backbone config ({exc})") from exc
    if not isinstance(record, dict):
        raise ValueError(f"{path}: backbone config must be a JSON object, got {type(record).__name__}")
    if record.get("format") != FORMAT:
        raise ValueError(f"{path}: format is {record.get('format')!r}, expected {FORMAT!r}")
    if not isinstance(record.get("name"), str):
        raise ValueError(f"{path}: 'name' must be a string, got {record.get('name')!r}")
    if not isinstance(record.get("args"), dict):
        raise ValueError(f"{path}: 'args' must be an object, got {record.get('args')!r}")
    return record


def load_backbone(
    weights_path: PathLike,
    config_path: PathLike | None = None,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Rebuild a backbone from its JSON record and load its weights strictly.

    Args:
        weights_path: the ``.safetensors`` file written by :func:`save_backbone`.
        config_path: its ``.json`` record; defaults to ``weights_path`` with
            the suffix ``.json`` (``backbone.safetensors`` -> ``backbone.json``).
        device: where to put the weights.

    Returns:
        The model, on ``device``, in training mode (as constructed).

    Raises:
        ValueError: naming the file on a missing or unreadable file, an unknown
            backbone name, arguments the builder rejects, a weights file that
            is not the one the record describes, or missing, unexpected or
            wrongly shaped tensors.
    """
    weights = Path(weights_path)
    cfg_path = Path(config_path) if config_path is not None else weights.with_suffix(".json")
    record = read_backbone_config(cfg_path)
    if not weights.is_file():
        raise ValueError(f"{weights}: backbone weights not found")
    expected = record.get("weights_sha256")
    if expected is not None and expected != _sha256(weights):
        raise ValueError(f"{weights}: contents do not match the sha256 recorded in {cfg_path}")
    try:
        cls = registry.resolve("backbone", record["name"])
    except ValueError as exc:
        raise ValueError(f"{cfg_path}: {exc}") from exc
    try:
        model = cls(**record["args"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{cfg_path}: cannot build {record['name']!r} from its args ({exc})") from exc
    try:
        state = load_file(str(weights), device=str(device))
    except Exception as exc:  # safetensors raises its own error type for corrupt files
        raise ValueError(f"{weights}: not a readable safetensors file ({type(exc).__name__}: {exc})") from exc
    _check_state(model.state_dict(), state, weights)
    model.load_state_dict(state, strict=True)
    return model.to(device)


def _check_state(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], path: Path) -> None:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{path}: tensors do not match the architecture (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    for key, ref in expected.items():
        if tuple(found[key].shape) != tuple(ref.shape):
            raise ValueError(
                f"{path}: tensor {key!r} has shape {tuple(found[key].shape)}, "
                f"the architecture expects {tuple(ref.shape)}"
            )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
