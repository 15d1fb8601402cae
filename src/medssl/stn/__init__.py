"""Spatial-transformer classification study (Diffeomorphic Template Transformers, Sec. 5.2, Table 1).

Building blocks only: rotated-digit data (:mod:`.data`), the CNN and the
affine / non-diffeomorphic / diffeomorphic STNs (:mod:`.models`), and a small
training / evaluation loop reporting accuracy and "% |J| < 0" (:mod:`.train`).
"""

from __future__ import annotations

from medssl.stn.data import rotate, rotated_digits, split_sources
from medssl.stn.models import ROWS, STN, build, gradient_penalty
from medssl.stn.train import evaluate, fit

__all__ = ["ROWS", "STN", "build", "evaluate", "fit", "gradient_penalty", "rotate", "rotated_digits",
           "split_sources"]
