"""medssl: a reproducible benchmark pipeline for representation learning on medical images."""

from __future__ import annotations

__version__ = "0.1.0"
