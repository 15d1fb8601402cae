"""Training and evaluation for the STN study (Diffeomorphic Template Transformers, Sec. 5.1-5.2).

The paper trains with Adam (lr 1e-3, betas 0.9/0.999), batch 64, cross
entropy, 10 epochs, and reports test accuracy and the percentage of pixels
whose Jacobian determinant is negative ("% |J| < 0", Table 1), optionally
adding ``lambda * ||grad v||^2`` (lambda = 10) to the loss.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from medssl.geometry.jacobian import negative_fraction
from medssl.stn.models import gradient_penalty
from medssl.train.common import progress_bar


def _check_xy(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.ndim != 4 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"expected x (N, 1, H, W) and y (N,), got {tuple(x.shape)} and {tuple(y.shape)}")


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int = 10, lr: float = 1e-3,
        batch_size: int = 64, seed: int = 0, penalty_weight: float = 0.0, progress: bool = False,
        desc: str = "stn") -> list[dict]:
    """Train ``model`` with Adam and cross entropy (paper Sec. 5.1 defaults).

    Args:
        model: a model from :func:`medssl.stn.models.build` (needs ``forward_aux``).
        x: ``(N, 1, H, W)`` images; y: ``(N,)`` labels.
        epochs: passes over the data.
        lr: Adam learning rate.
        batch_size: mini-batch size.
        seed: seeds the shuffling (and torch's generator).
        penalty_weight: ``lambda`` of the ``||grad v||^2`` penalty on the predicted field
            (ignored for models without a dense field).
        progress: show a progress bar (labelled ``desc``) over the epochs.

    Returns:
        One dict per epoch: ``epoch``, ``loss`` (mean total), ``ce``, ``penalty``.

    Raises:
        ValueError: bad shapes, ``epochs`` / ``batch_size`` < 1, ``lr`` <= 0 or negative ``penalty_weight``.
    """
    _check_xy(x, y)
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got epochs={epochs!r}, batch_size={batch_size!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if penalty_weight < 0:
        raise ValueError(f"penalty_weight must be >= 0, got {penalty_weight!r}")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999))
    history = []
    model.train()
    for epoch in progress_bar(range(epochs), epochs, desc, progress):
        tot = ce_tot = pen_tot = 0.0
        perm = torch.randperm(x.shape[0], generator=gen)
        for start in range(0, x.shape[0], batch_size):
            idx = perm[start:start + batch_size]
            logits, _, field = model.forward_aux(x[idx])
            ce = F.cross_entropy(logits, y[idx])
            pen = gradient_penalty(field) if field is not None else torch.zeros(())
            loss = ce + penalty_weight * pen
            opt.zero_grad()
            loss.backward()
            opt.step()
            n = len(idx)
            tot, ce_tot, pen_tot = tot + loss.item() * n, ce_tot + ce.item() * n, pen_tot + pen.item() * n
        history.append({"epoch": epoch + 1, "loss": tot / x.shape[0], "ce": ce_tot / x.shape[0],
                        "penalty": pen_tot / x.shape[0]})
    return history


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> dict:
    """Accuracy and "% |J| < 0" of the transformation actually applied (Table 1).

    ``neg_jacobian_pct`` is the percentage, over all test pixels, of Jacobian
    determinants ``<= 0`` of the applied displacement (for the affine STN the
    determinant is constant, so it is 0 or 100); NaN for the plain CNN.

    Raises:
        ValueError: bad shapes.
    """
    _check_xy(x, y)
    model.eval()
    correct, negative = 0, []
    for start in range(0, x.shape[0], batch_size):
        logits, ddf, _ = model.forward_aux(x[start:start + batch_size])
        correct += int((logits.argmax(1) == y[start:start + batch_size]).sum())
        if ddf is not None:  # every image has the same pixel count: the mean of per-image % is the pooled %
            negative.append(negative_fraction(ddf))
    return {"accuracy": correct / x.shape[0],
            "neg_jacobian_pct": float(torch.cat(negative).mean()) if negative else math.nan}
