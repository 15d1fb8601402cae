"""Differentiable entropic optimal transport in the log domain (S2DC supplement, Alg. 1).

S2DC (ICCV 2025, supplement Sec. D.3, Alg. 1) matches the patch tokens of two
overlapping sub-volumes with a log-domain Sinkhorn: dual potentials ``f`` and
``g`` are updated alternately for ``T`` iterations so that the transport plan
``exp((f_n + g_m + S_nm) / λ)`` has row marginals ``r`` and column marginals
``c``.

Conventions (read before comparing with other code):

* ``scores`` are *similarities* ``S`` (higher = more alike); the plan is
  ``P = diag(u) exp(S / λ) diag(v)``. For a *cost* ``C`` pass ``-C``: the plan is
  then POT's ``ot.sinkhorn(r, c, C, reg=λ)``, the entropic-regularised optimum
  of ``<P, C> - λ H(P)``.
* Alg. 1 as printed sets ``K = λM`` and then divides by ``λ`` everywhere, so
  ``λ`` cancels (the printed plan is ``∝ exp(M)`` for every λ), and its
  f-update carries a minus sign in front of ``λ log(r / ...)`` that makes the
  iteration diverge from the marginals. We implement the standard update
  (Cuturi 2013; Peyré & Cuturi 2019, Remark 4.23) in which ``λ`` is the
  entropic regularisation; at the paper's ``λ = 1`` it is Alg. 1 with the
  sign fixed.
* All marginals are strictly positive weights (not logs); by default uniform,
  ``r = 1/N`` and ``c = 1/M``. Row and column masses must agree.
"""

from __future__ import annotations

import math

import torch

__all__ = ["log_sinkhorn", "marginal_error", "sinkhorn", "sinkhorn_potentials"]


def _as_batched(scores: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if not isinstance(scores, torch.Tensor):
        raise ValueError(f"scores must be a torch.Tensor, got {type(scores).__name__}")
    if not scores.is_floating_point():
        raise ValueError(f"scores must be floating point, got {scores.dtype}")
    if scores.ndim == 2:
        return scores.unsqueeze(0), True
    if scores.ndim != 3:
        raise ValueError(f"scores must be (N, M) or (B, N, M), got shape {tuple(scores.shape)}")
    return scores, False


def _log_marginal(w: torch.Tensor | None, batch: int, n: int, like: torch.Tensor, name: str) -> torch.Tensor:
    """log of a (B, n) marginal; uniform 1/n when ``w`` is None."""
    if w is None:
        return torch.full((batch, n), -math.log(n), dtype=like.dtype, device=like.device)
    w = torch.as_tensor(w, dtype=like.dtype, device=like.device)
    if w.ndim == 1:
        w = w.unsqueeze(0).expand(batch, -1)
    if w.shape != (batch, n):
        raise ValueError(f"marginal {name} must have shape ({n},) or ({batch}, {n}), got {tuple(w.shape)}")
    if not bool((w > 0).all()):
        raise ValueError(f"marginal {name} must be strictly positive (log-domain Sinkhorn), got min {float(w.min())}")
    return w.log()


def _check(lam: float, iterations: int, tol: float | None) -> None:
    if not (isinstance(lam, (int, float)) and lam > 0 and math.isfinite(lam)):
        raise ValueError(f"lam (entropic regularisation λ) must be a finite number > 0, got {lam!r}")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be an integer >= 1, got {iterations!r}")
    if tol is not None and not tol > 0:
        raise ValueError(f"tol must be > 0 or None, got {tol!r}")


def sinkhorn_potentials(
    scores: torch.Tensor,
    lam: float = 1.0,
    iterations: int = 100,
    r: torch.Tensor | None = None,
    c: torch.Tensor | None = None,
    tol: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Dual potentials of the entropic OT between ``r`` and ``c`` (S2DC supplement, Alg. 1, lines 1-6).

    Iterates, for ``t = 1..T`` (log-sum-exp over the other index),

        f_n = λ log r_n - λ logsumexp_m((S_nm + g_m) / λ)
        g_m = λ log c_m - λ logsumexp_n((S_nm + f_n) / λ)

    Args:
        scores: similarities ``S``, shape (N, M) or (B, N, M).
        lam: entropic regularisation λ > 0 (1 in the paper).
        iterations: maximum number of iterations T.
        r, c: row / column marginals, (N,) / (M,) or batched (B, N) / (B, M),
            strictly positive, equal total mass per batch item; uniform when None.
        tol: stop early once the largest row-marginal error (the column
            marginals are exact after each g-update) is below ``tol``; checked
            after every iteration. None runs exactly ``iterations``.

    Returns:
        ``(f, g, n_iter)``: potentials (B, N) and (B, M) (unbatched input gives
        (N,) and (M,)), and the number of iterations run.

    Raises:
        ValueError: on a bad shape, λ, iteration count, marginal or unequal masses.
    """
    _check(lam, iterations, tol)
    s, squeeze = _as_batched(scores)
    b, n, m = s.shape
    log_r = _log_marginal(r, b, n, s, "r")
    log_c = _log_marginal(c, b, m, s, "c")
    mass_r, mass_c = log_r.logsumexp(-1).exp(), log_c.logsumexp(-1).exp()
    if not torch.allclose(mass_r, mass_c, rtol=1e-6, atol=1e-9):
        raise ValueError(f"marginals r and c must have equal mass, got {mass_r.tolist()} and {mass_c.tolist()}")
    z = s / lam
    a = torch.zeros_like(log_r)  # f / λ
    bb = torch.zeros_like(log_c)  # g / λ
    done = 0
    for done in range(1, iterations + 1):
        a = log_r - torch.logsumexp(z + bb.unsqueeze(-2), dim=-1)
        bb = log_c - torch.logsumexp(z + a.unsqueeze(-1), dim=-2)
        if tol is not None:
            with torch.no_grad():
                rows = torch.logsumexp(z + a.unsqueeze(-1) + bb.unsqueeze(-2), dim=-1).exp()
                if float((rows - log_r.exp()).abs().max()) < tol:
                    break
    f, g = lam * a, lam * bb
    if squeeze:
        f, g = f[0], g[0]
    return f, g, done


def log_sinkhorn(
    scores: torch.Tensor,
    lam: float = 1.0,
    iterations: int = 100,
    r: torch.Tensor | None = None,
    c: torch.Tensor | None = None,
    tol: float | None = None,
) -> torch.Tensor:
    """Log of the entropic transport plan (S2DC supplement, Alg. 1, line 7): ``(f_n + g_m + S_nm) / λ``.

    Differentiable with respect to ``scores`` (and the marginals) by unrolling
    the iterations. Arguments as in :func:`sinkhorn_potentials`; the result has
    the shape of ``scores``.
    """
    f, g, _ = sinkhorn_potentials(scores, lam, iterations, r, c, tol)
    return (scores + f.unsqueeze(-1) + g.unsqueeze(-2)) / lam


def sinkhorn(
    scores: torch.Tensor,
    lam: float = 1.0,
    iterations: int = 100,
    r: torch.Tensor | None = None,
    c: torch.Tensor | None = None,
    tol: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Transport plan and its log (S2DC supplement, Alg. 1): ``(exp(log_plan), log_plan)``.

    See :func:`sinkhorn_potentials` for the arguments. Rows of the plan sum to
    ``r`` and columns to ``c`` once converged.
    """
    log_plan = log_sinkhorn(scores, lam, iterations, r, c, tol)
    return log_plan.exp(), log_plan


def marginal_error(plan: torch.Tensor, r: torch.Tensor | None = None, c: torch.Tensor | None = None) -> float:
    """Largest absolute deviation of the plan's row / column sums from ``r`` / ``c`` (uniform when None)."""
    p, _ = _as_batched(plan)
    b, n, m = p.shape
    rr = _log_marginal(r, b, n, p, "r").exp()
    cc = _log_marginal(c, b, m, p, "c").exp()
    return float(torch.maximum((p.sum(-1) - rr).abs().max(), (p.sum(-2) - cc).abs().max()))
