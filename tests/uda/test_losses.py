"""CMEVAE loss terms against independent references and hand cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence

from medssl.uda.losses import (cpmc_loss, kl_standard_normal, margin_loss, pixel_labels, pseudo_labels,
                               reconstruction_terms, sample_anchors, segmentation_terms, soft_targets)


def test_kl_matches_torch_distributions_and_vanishes_at_the_prior():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(3, 4, 2, 2, generator=g)
    logvar = torch.randn(3, 4, 2, 2, generator=g)
    ref = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).flatten(1).sum(1)
    got = kl_standard_normal(mu, logvar)
    assert got.shape == (3,)
    assert torch.allclose(got, ref, atol=1e-5)
    assert (got > 0).all()
    assert torch.equal(kl_standard_normal(torch.zeros(2, 5), torch.zeros(2, 5)), torch.zeros(2))
    with pytest.raises(ValueError, match="same shape"):
        kl_standard_normal(mu, logvar[:, :2])


def test_soft_targets_are_block_proportions():
    y = torch.tensor([[[0, 1, 2, 2], [1, 3, 2, 2]]])  # (1, 2, 4)
    t = soft_targets(y, 4, 1)
    assert t.shape == (1, 4, 1, 2)
    assert torch.allclose(t[0, :, 0, 0], torch.tensor([0.25, 0.5, 0.0, 0.25]))
    assert torch.allclose(t[0, :, 0, 1], torch.tensor([0.0, 0.0, 1.0, 0.0]))
    assert torch.equal(pixel_labels(y, 4, 1), torch.tensor([[[-1, 2]]]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\]"):
        soft_targets(y + 1, 4, 0)


def test_segmentation_terms_cross_entropy_per_head():
    y = torch.tensor([[[0, 1], [2, 1]]])
    g = torch.Generator().manual_seed(1)
    fine = torch.randn(1, 3, 2, 2, generator=g)
    coarse = torch.zeros(1, 3, 1, 1)  # uniform prediction: cross entropy log(3) whatever the target
    ce, dice = segmentation_terms([fine, coarse], y)
    assert len(ce) == 2 and len(dice) == 2
    assert torch.allclose(ce[0], F.cross_entropy(fine, y))
    assert math.isclose(float(ce[1]), math.log(3), rel_tol=1e-6)
    # soft Dice of a perfect, confident prediction is ~0, of the uniform one is > 0
    perfect = 50.0 * F.one_hot(y, 3).permute(0, 3, 1, 2).float()
    assert float(segmentation_terms([perfect], y)[1][0]) < 1e-4
    assert float(dice[1]) > 0.3


def test_reconstruction_terms_are_mse_against_pooled_images():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    pooled = F.avg_pool2d(x, 2)
    terms = reconstruction_terms([x, pooled + 0.5], x)
    assert float(terms[0]) == 0.0
    assert math.isclose(float(terms[1]), 0.25)
    assert torch.equal(pooled[0, 0, 0, 0], torch.tensor(2.5))  # mean of 0, 1, 4, 5


def test_margin_hand_case():
    protos = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    valid = torch.tensor([True, True, False])  # class 2 has no prototype yet: out of the softmax
    a = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    lab = torch.tensor([0])
    got = margin_loss(a, lab, protos, valid, margin=0.2, scale=10.0)
    assert math.isclose(float(got), math.log(1 + math.exp(-8.0)), rel_tol=1e-5)  # -log(e^8 / (e^8 + e^0))
    assert float(got) > float(margin_loss(a, lab, protos, valid, margin=0.0, scale=10.0))
    # an anchor half-way between the prototypes: cos 0.707 each; the margin makes it lose
    h = torch.tensor([[0.5 ** 0.5, 0.5 ** 0.5]], dtype=torch.float64)
    assert math.isclose(float(margin_loss(h, lab, protos, valid, 0.3, 10.0)), math.log(1 + math.exp(3.0)), rel_tol=1e-5)
    assert float(margin_loss(a, torch.tensor([2]), protos, valid)) == 0.0  # anchor of a class without prototype
    with pytest.raises(ValueError, match="margin must be >= 0"):
        margin_loss(a, lab, protos, valid, margin=-0.1)


def test_cpmc_hand_case():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    lab = torch.tensor([0, 1])
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    bank_lab = torch.tensor([0, 1, 1])
    got = cpmc_loss(a, lab, bank, bank_lab, temperature=1.0)
    z0 = math.log(math.e + 1 + math.exp(-1))  # anchor 0: dots 1, 0, -1
    l0 = -(1 - z0)
    z1 = math.log(1 + math.e + 1)  # anchor 1: dots 0, 1, 0; positives: bank 1 (dot 1) and bank 2 (dot 0)
    l1 = -((1 - z1) + (0 - z1)) / 2
    assert math.isclose(float(got), (l0 + l1) / 2, rel_tol=1e-6)
    # temperature sharpens: the well-placed anchor's loss falls
    assert float(cpmc_loss(a[:1], lab[:1], bank, bank_lab, 0.1)) < l0
    assert float(cpmc_loss(a, torch.tensor([3, 3]), bank, bank_lab)) == 0.0  # no positives stored
    with pytest.raises(ValueError, match="temperature must be > 0"):
        cpmc_loss(a, lab, bank, bank_lab, 0.0)


def test_pseudo_labels_and_anchor_sampling():
    logits = torch.tensor([[[[5.0, 0.0]], [[0.0, 0.1]]]])  # (1, 2 classes, 1, 2)
    assert torch.equal(pseudo_labels(logits, 0.9), torch.tensor([[[0, -1]]]))
    emb = torch.arange(12.0).reshape(1, 2, 2, 3)
    lab = torch.tensor([[[0, 0, 1], [-1, 0, 1]]])
    feats, fl = sample_anchors(emb, lab, per_class=2, generator=torch.Generator().manual_seed(0))
    assert sorted(fl.tolist()) == [0, 0, 1, 1]
    flat = emb[0].reshape(2, -1).T
    for f, c in zip(feats, fl, strict=True):  # every anchor is a pixel of its class
        hits = (flat == f).all(1).nonzero().squeeze(1)
        assert lab.reshape(-1)[hits].tolist() == [int(c)]
