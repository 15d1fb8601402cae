"""``scratch``: no pre-training; the backbone keeps its seeded random initialisation."""

from __future__ import annotations

from medssl.methods.base import PretrainMethod


class Scratch(PretrainMethod):
    """Random initialisation baseline (the rows "w/o pre-training" of GVSL / S2DC tables)."""

    trains = False
