"""Optimal transport and patch matching for S2DC (log-domain Sinkhorn, dustbin, dual-softmax, Sharpe ratio)."""

from __future__ import annotations

from medssl.ot.matching import (SinkhornMatcher, add_dustbin, correspondence, dual_softmax, dustbin_marginals,
                                matching_loss, patch_nll)
from medssl.ot.sharpe import sharpe_ratio, sharpe_weights
from medssl.ot.sinkhorn import log_sinkhorn, marginal_error, sinkhorn, sinkhorn_potentials

__all__ = [
    "SinkhornMatcher",
    "add_dustbin",
    "correspondence",
    "dual_softmax",
    "dustbin_marginals",
    "log_sinkhorn",
    "marginal_error",
    "matching_loss",
    "patch_nll",
    "sharpe_ratio",
    "sharpe_weights",
    "sinkhorn",
    "sinkhorn_potentials",
]
