"""Patch matching: ground truth (D.1), dustbin Sinkhorn, dual-softmax (D.3), loss, Sharpe ratio (Eq. 1)."""

from __future__ import annotations

import math

import numpy as np
import ot
import pytest
import torch

from medssl.ot import (SinkhornMatcher, add_dustbin, correspondence, dual_softmax, dustbin_marginals,
                       matching_loss, patch_nll, sharpe_ratio, sharpe_weights)


# ------------------------------------------------------------------ D.1 ground truth
def test_correspondence_on_the_toy_sample_of_fig1():
    """Supplement Fig. 1: "the 2nd patch in V_i corresponds to the 4th patch in V_i'".

    The figure itself is not in the text; the smallest geometry that gives
    exactly that statement, reconstructed here: a 2-D slice, each view 2x2
    patches of size p numbered 1..4 row by row, and V_i lies one patch row
    lower than V_i' in the volume (V_i at (p, 0), V_i' at (0, 0)). Then the
    top row of V_i is the bottom row of V_i': patch 1 <-> 3, patch 2 <-> 4,
    and patches 3, 4 of V_i have no partner.
    """
    p = 16
    gt = correspondence((2 * p, 2 * p), offset_a=(p, 0), offset_b=(0, 0), p=p)
    assert gt.tolist() == [2, 3, -1, -1]
    assert int(gt[2 - 1]) + 1 == 4  # 1-based, as in the paper
    # and the reverse direction
    assert correspondence((2 * p, 2 * p), (0, 0), (p, 0), p).tolist() == [-1, -1, 0, 1]


def test_correspondence_matches_voxel_contents_in_3d():
    """Independent reference: label every p-cell of a volume, crop both views, compare the labels."""
    p, vol = 4, (20, 16, 24)
    cells = np.arange(np.prod([v // p for v in vol])).reshape([v // p for v in vol])
    labels = np.kron(cells, np.ones((p, p, p), dtype=int))
    rng = np.random.default_rng(0)
    for _ in range(20):
        shape_a = tuple(int(rng.integers(1, v // p + 1)) * p for v in vol)
        shape_b = tuple(int(rng.integers(1, v // p + 1)) * p for v in vol)
        oa = tuple(int(rng.integers(0, (v - s) // p + 1)) * p for v, s in zip(vol, shape_a))
        ob = tuple(int(rng.integers(0, (v - s) // p + 1)) * p for v, s in zip(vol, shape_b))
        a = labels[oa[0]:oa[0] + shape_a[0], oa[1]:oa[1] + shape_a[1], oa[2]:oa[2] + shape_a[2]][::p, ::p, ::p]
        b = labels[ob[0]:ob[0] + shape_b[0], ob[1]:ob[1] + shape_b[1], ob[2]:ob[2] + shape_b[2]][::p, ::p, ::p]
        b_flat = b.ravel().tolist()
        expected = [b_flat.index(x) if x in b_flat else -1 for x in a.ravel()]
        assert correspondence(shape_a, oa, ob, p, shape_b=shape_b).tolist() == expected


def test_correspondence_rejects_offsets_off_the_patch_grid():
    with pytest.raises(ValueError, match="multiples of p=8"):
        correspondence((24, 24, 24), (4, 0, 0), (0, 0, 0), 8)
    with pytest.raises(ValueError, match="multiples of p=8"):
        correspondence((20, 24, 24), (0, 0, 0), (0, 0, 0), 8)
    with pytest.raises(ValueError, match="dimensions"):
        correspondence((24, 24, 24), (0, 0), (0, 0, 0), 8)


# ------------------------------------------------------------------ dual-softmax
def test_dual_softmax_hand_case():
    s = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    e, e2 = math.e, math.e ** 2
    rows = torch.tensor([[e / (e + 2), 1 / (e + 2), 1 / (e + 2)], [1 / (e2 + 2), e2 / (e2 + 2), 1 / (e2 + 2)]])
    cols = torch.tensor([[e / (e + 1), 1 / (1 + e2), 0.5], [1 / (e + 1), e2 / (1 + e2), 0.5]])
    assert torch.allclose(dual_softmax(s), rows * cols, atol=1e-6)
    assert torch.allclose(dual_softmax(s, log=True).exp(), rows * cols, atol=1e-6)
    # the temperature divides the scores
    assert torch.allclose(dual_softmax(2 * s, temperature=2.0), rows * cols, atol=1e-6)
    with pytest.raises(ValueError, match="temperature"):
        dual_softmax(s, temperature=0)


def test_dual_softmax_is_the_product_of_the_two_softmaxes():
    """Batched, non-square logits: softmax over the patches of B times softmax over the patches of A (D.3)."""
    s = torch.randn(3, 5, 7, generator=torch.Generator().manual_seed(0)) * 3
    for tau in (1.0, 0.3):
        ref = torch.softmax(s / tau, dim=2) * torch.softmax(s / tau, dim=1)
        assert torch.allclose(dual_softmax(s, tau), ref, atol=1e-6)
        assert torch.allclose(dual_softmax(s, tau, log=True), ref.log(), atol=1e-5)
    # each factor is a distribution, so the product is at most 1 and every row / column sums to at most 1
    conf = dual_softmax(s)
    assert float(conf.max()) <= 1 and bool((conf.sum(2) <= 1 + 1e-6).all()) and bool((conf.sum(1) <= 1 + 1e-6).all())


# ------------------------------------------------------------------ dustbin Sinkhorn
def test_matcher_with_dustbin_equals_pot_on_the_augmented_problem():
    """SuperGlue: plan of the (N+1)x(M+1) problem with marginals [1..1, M], [1..1, N] / (N+M), times N+M."""
    g = torch.Generator().manual_seed(0)
    n, m, lam = 5, 7, 0.5
    scores = torch.randn(2, n, m, generator=g, dtype=torch.float64)
    matcher = SinkhornMatcher(iterations=3000, lam=lam, dustbin=True, bin_init=0.3).double()
    log_assign = matcher(scores)
    assert log_assign.shape == (2, n + 1, m + 1)
    r, c = dustbin_marginals(n, m, scores)
    for i in range(2):
        aug = add_dustbin(scores[i:i + 1], torch.tensor(0.3, dtype=torch.float64))[0]
        ref = ot.sinkhorn(r.numpy(), c.numpy(), -aug.numpy(), lam, method="sinkhorn_log",
                          numItermax=20000, stopThr=1e-13)
        np.testing.assert_allclose(log_assign[i].exp().detach().numpy(), ref * (n + m), rtol=1e-5, atol=1e-9)
    p = log_assign.exp()
    assert torch.allclose(p[:, :n].sum(-1), torch.ones(2, n, dtype=torch.float64), atol=1e-6)  # rows of A
    assert torch.allclose(p[:, :, :m].sum(-2), torch.ones(2, m, dtype=torch.float64), atol=1e-6)  # columns of B


def test_matcher_without_dustbin_rows_are_probabilities():
    matcher = SinkhornMatcher(iterations=200, lam=1.0, dustbin=False)
    assert matcher.bin_score is None and not list(matcher.parameters())
    p = matcher(torch.randn(3, 6, 6)).exp()
    assert p.shape == (3, 6, 6)
    assert torch.allclose(p.sum(-1), torch.ones(3, 6), atol=1e-4)


def test_dustbin_score_is_trained_towards_unmatched_patches():
    """With only unmatched patches in the target, gradient steps must raise the dustbin score."""
    g = torch.Generator().manual_seed(1)
    matcher = SinkhornMatcher(iterations=50, lam=1.0, dustbin=True, bin_init=0.0)
    assert [n for n, _ in matcher.named_parameters()] == ["bin_score"]
    scores = torch.randn(2, 6, 6, generator=g)
    target = torch.tensor([[0, 1, -1, -1, -1, -1], [-1, -1, 2, -1, -1, -1]])
    opt = torch.optim.SGD(matcher.parameters(), lr=0.5)
    values = [float(matcher.bin_score.detach())]
    for _ in range(5):
        loss = matching_loss(matcher(scores), target, dustbin=True)
        opt.zero_grad()
        loss.backward()
        opt.step()
        values.append(float(matcher.bin_score.detach()))
    assert all(b > a for a, b in zip(values, values[1:])), values
    assert values[-1] > 0.1


# ------------------------------------------------------------------ loss
def test_patch_nll_and_matching_loss_by_hand():
    log_p = torch.log(torch.tensor([[[0.7, 0.1, 0.2],
                                     [0.2, 0.3, 0.5],
                                     [0.25, 0.6, 0.9]]]))  # 2x2 real patches + dustbin row / column
    target = torch.tensor([[1, -1]])  # A0 <-> B1, A1 unmatched, B0 unmatched
    row, row_mask, col, col_mask = patch_nll(log_p, target, dustbin=True)
    assert torch.allclose(row, -torch.log(torch.tensor([[0.1, 0.5]])))
    assert row_mask.tolist() == [[True, True]] and col_mask.tolist() == [[True, False]]
    assert torch.allclose(col[0, 0], -torch.log(torch.tensor(0.25)))
    expected = -(math.log(0.1) + math.log(0.5) + math.log(0.25)) / 3
    assert matching_loss(log_p, target, dustbin=True) == pytest.approx(expected, rel=1e-6)
    weighted = -(3 * math.log(0.1) + math.log(0.5) + math.log(0.25)) / 5
    assert matching_loss(log_p, target, dustbin=True, weights=torch.tensor([[3.0, 0.0]])) == pytest.approx(
        weighted, rel=1e-6)
    # without dustbin only the true match counts
    assert matching_loss(log_p[:, :2, :2], target, dustbin=False) == pytest.approx(-math.log(0.1), rel=1e-6)
    with pytest.raises(ValueError, match="target indices"):
        matching_loss(log_p[:, :2, :2], torch.tensor([[2, 0]]))


# ------------------------------------------------------------------ Sharpe ratio (Eq. 1)
def test_sharpe_ratio_on_hand_vectors():
    one_peak = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0])
    two_peaks = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0])
    # (max - mean) / population std: (1 - 0.2) / 0.4 and (1 - 0.4) / sqrt(0.24)
    assert float(sharpe_ratio(one_peak)) == pytest.approx(2.0, rel=1e-6)
    assert float(sharpe_ratio(two_peaks)) == pytest.approx(0.6 / math.sqrt(0.24), rel=1e-6)
    assert sharpe_ratio(one_peak) > sharpe_ratio(two_peaks)
    # unchanged by the published code's map (1 + cos) / 2
    sims = torch.randn(4, 9)
    assert torch.allclose(sharpe_ratio(sims), sharpe_ratio((1 + sims) / 2), atol=1e-5)
    assert float(sharpe_ratio(torch.ones(5))) == 0.0


def test_sharpe_weights_mean_one_over_mask_without_gradient():
    sim = torch.randn(2, 4, 6, requires_grad=True)
    mask = torch.tensor([[True, True, False, True], [False, True, False, False]])
    w = sharpe_weights(sim, mask)
    assert not w.requires_grad
    assert torch.allclose(w[mask].reshape(-1)[:3].mean(), torch.tensor(1.0))
    assert float(w[1, 1]) == pytest.approx(1.0) and (w[~mask] == 0).all()
    sr = sharpe_ratio(sim.detach())
    assert float(w[0, 0] / w[0, 1]) == pytest.approx(float(sr[0, 0] / sr[0, 1]), rel=1e-5)
