"""Log-domain Sinkhorn (S2DC supplement Alg. 1): marginals, agreement with POT, gradients."""

from __future__ import annotations

import numpy as np
import ot
import pytest
import torch

from medssl.ot.sinkhorn import log_sinkhorn, marginal_error, sinkhorn, sinkhorn_potentials


def _simplex(n: int, g: torch.Generator, batch: int | None = None) -> torch.Tensor:
    shape = (n,) if batch is None else (batch, n)
    w = torch.rand(shape, generator=g, dtype=torch.float64) + 0.2
    return w / w.sum(-1, keepdim=True)


def test_marginals_are_met_after_convergence():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(3, 6, 9, generator=g, dtype=torch.float64)
    r, c = _simplex(6, g, 3), _simplex(9, g, 3)
    plan, log_plan = sinkhorn(scores, lam=0.5, iterations=500, r=r, c=c)
    assert torch.allclose(plan, log_plan.exp())
    assert (plan.sum(-1) - r).abs().max() < 1e-4
    assert (plan.sum(-2) - c).abs().max() < 1e-4
    assert marginal_error(plan, r, c) < 1e-4
    # uniform marginals by default, in float32 too
    p32, _ = sinkhorn(scores.float(), lam=1.0, iterations=200)
    assert (p32.sum(-1) - 1 / 6).abs().max() < 1e-4 and (p32.sum(-2) - 1 / 9).abs().max() < 1e-4


def test_a_few_iterations_do_not_meet_the_marginals():
    # the previous test could pass with any normalisation; one iteration fixes only the columns
    g = torch.Generator().manual_seed(1)
    scores = 3 * torch.randn(1, 6, 6, generator=g, dtype=torch.float64)
    plan, _ = sinkhorn(scores, lam=0.5, iterations=1)
    assert (plan.sum(-2) - 1 / 6).abs().max() < 1e-12
    assert (plan.sum(-1) - 1 / 6).abs().max() > 1e-3


@pytest.mark.parametrize("reg, n, m", [(1.0, 5, 7), (0.1, 8, 8), (0.05, 12, 4)])
def test_plan_equals_pot_sinkhorn_log(reg, n, m):
    """POT's plan is diag(u) exp(-M / reg) diag(v): ours with scores = -M and λ = reg."""
    g = torch.Generator().manual_seed(int(reg * 100) + n)
    for _ in range(3):
        cost = torch.rand(n, m, generator=g, dtype=torch.float64)
        a, b = _simplex(n, g), _simplex(m, g)
        ref = ot.sinkhorn(a.numpy(), b.numpy(), cost.numpy(), reg, method="sinkhorn_log",
                          numItermax=20000, stopThr=1e-13)
        ours, _ = sinkhorn(-cost, lam=reg, iterations=5000, r=a, c=b)
        np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-5, atol=1e-9)
        assert np.abs(ours.numpy() - ref).max() < 1e-5
        # the λ convention matters: another regularisation gives another plan
        other, _ = sinkhorn(-cost, lam=2 * reg, iterations=5000, r=a, c=b)
        assert np.abs(other.numpy() - ref).max() > 1e-4


def test_batched_equals_one_by_one_and_unbatched_shapes():
    g = torch.Generator().manual_seed(2)
    scores = torch.randn(4, 5, 6, generator=g, dtype=torch.float64)
    batched = log_sinkhorn(scores, lam=0.3, iterations=50)
    for i in range(4):
        single = log_sinkhorn(scores[i], lam=0.3, iterations=50)
        assert single.shape == (5, 6)
        assert torch.allclose(batched[i], single)


def test_potentials_give_the_plan_of_alg1_line7_and_tol_stops_early():
    g = torch.Generator().manual_seed(3)
    scores = torch.randn(2, 7, 7, generator=g, dtype=torch.float64)
    f, g_, n_iter = sinkhorn_potentials(scores, lam=0.7, iterations=10000, tol=1e-10)
    assert 1 < n_iter < 10000
    plan = ((f.unsqueeze(-1) + g_.unsqueeze(-2) + scores) / 0.7).exp()  # Alg. 1 line 7
    assert marginal_error(plan) < 1e-10
    assert torch.allclose(plan, sinkhorn(scores, lam=0.7, iterations=n_iter)[0])


def test_gradients_flow_gradcheck():
    g = torch.Generator().manual_seed(4)
    scores = torch.randn(2, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    r, c = _simplex(3, g), _simplex(4, g)
    assert torch.autograd.gradcheck(lambda s: log_sinkhorn(s, lam=0.7, iterations=20, r=r, c=c), (scores,))
    # and to the marginals
    rr = r.clone().requires_grad_(True)
    cc = c.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, b: sinkhorn(scores.detach(), lam=0.7, iterations=20, r=a / a.sum(), c=b / b.sum())[0], (rr, cc))


def test_bad_inputs_are_rejected():
    s = torch.zeros(1, 3, 4)
    with pytest.raises(ValueError, match="equal mass"):
        sinkhorn(s, r=torch.full((3,), 1 / 3), c=torch.full((4,), 0.5))
    with pytest.raises(ValueError, match="strictly positive"):
        sinkhorn(s, r=torch.tensor([0.5, 0.5, 0.0]))
    with pytest.raises(ValueError, match="marginal r must have shape"):
        sinkhorn(s, r=torch.full((4,), 0.25))
    with pytest.raises(ValueError, match="lam"):
        sinkhorn(s, lam=0.0)
    with pytest.raises(ValueError, match="iterations"):
        sinkhorn(s, iterations=0)
    with pytest.raises(ValueError, match=r"\(N, M\) or \(B, N, M\)"):
        sinkhorn(torch.zeros(3))
    with pytest.raises(ValueError, match="floating point"):
        sinkhorn(torch.zeros(2, 2, dtype=torch.long))
