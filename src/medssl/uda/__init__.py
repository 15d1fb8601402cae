"""Unsupervised cross-modality domain adaptation, 2D (``uda2d`` study): CMEVAE and its baselines.

Qiao et al., "Unsupervised Domain Adaptation with Contrastive Margin-Enhanced
VAE for Cross-Modality Cardiac Segmentation" (supplement in
``shared/seeds``): a VAE with a five-level U-Net encoder, multi-scale
segmentation heads and reconstructors (:mod:`.models`), the lower bound of
supplement Eq. (1), the CPMC contrast and the margin term (:mod:`.losses`),
the prototype memory bank (:mod:`.memory`), training on tensors
(:mod:`.train`), Dice / ASSD evaluation (:mod:`.metrics`) and slice loading
(:mod:`.data`). Methods: ``source_only``, ``vae`` (no contrastive / margin
terms), ``cmevae``.
"""

from __future__ import annotations

from medssl.uda.data import Slices, load_slices, phantom_slices
from medssl.uda.memory import PrototypeMemory
from medssl.uda.metrics import evaluate
from medssl.uda.models import METHODS, CMEVAENet, build
from medssl.uda.train import fit

__all__ = ["METHODS", "CMEVAENet", "PrototypeMemory", "Slices", "build", "evaluate", "fit", "load_slices",
           "phantom_slices"]
