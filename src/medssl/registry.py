"""Lazy registries of named builders (backbones, methods).

A registry maps a name to ``"module:attribute"``; nothing is imported until a
builder is asked for, so validating ``params.yaml`` (done on every Snakemake
start) never pays for importing torch. Adding a method is one module plus one
line in :data:`METHODS`; a third-party package may call :func:`register`.
"""

from __future__ import annotations

import importlib
from typing import Any

BACKBONES: dict[str, str] = {
    "unet3d": "medssl.nn.unet3d:UNet3D",
    "swinunetr": "medssl.nn.swin:SwinUNETRBackbone",
}

METHODS: dict[str, str] = {
    "scratch": "medssl.methods.scratch:Scratch",
    "genesis": "medssl.methods.genesis:Genesis",
    "gvsl": "medssl.methods.gvsl:GVSL",
    "s2dc": "medssl.methods.s2dc:S2DC",
}

_TABLES = {"backbone": BACKBONES, "method": METHODS}


def register(kind: str, name: str, target: str) -> None:
    """Register ``target`` (``"module:attr"``) under ``name`` in the ``kind`` registry."""
    table = _table(kind)
    if ":" not in target:
        raise ValueError(f"target must look like 'module:attribute', got {target!r}")
    table[name] = target


def names(kind: str) -> list[str]:
    """Sorted names registered for ``kind`` ("backbone" or "method")."""
    return sorted(_table(kind))


def resolve(kind: str, name: str) -> Any:
    """Import and return the builder registered as ``name``.

    Raises:
        ValueError: if ``name`` is unknown; the message lists the known names.
    """
    table = _table(kind)
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; known: {', '.join(sorted(table))}")
    module, attr = table[name].split(":")
    return getattr(importlib.import_module(module), attr)


def _table(kind: str) -> dict[str, str]:
    if kind not in _TABLES:
        raise ValueError(f"unknown registry {kind!r}; known: {', '.join(_TABLES)}")
    return _TABLES[kind]
