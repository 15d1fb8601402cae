"""Template-transformer segmentation (Diffeomorphic Template Transformers, Sec. 4-5, Tables 2-3)."""

from __future__ import annotations

from medssl.template.models import MODELS, DiffeomorphicTemplateTransformer, DirectUNet, TemplateNet, build
from medssl.template.train import evaluate, fit

__all__ = ["MODELS", "DiffeomorphicTemplateTransformer", "DirectUNet", "TemplateNet", "build", "evaluate", "fit"]
