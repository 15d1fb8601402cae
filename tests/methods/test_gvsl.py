"""GVSL: gradients reach every head at batch size > 1; the heads are wired as the published code."""

from __future__ import annotations

import pytest
import torch

from medssl.geometry.warp import warp
from medssl.methods.gvsl import GVSL
from medssl.nn.unet3d import UNet3D


def _model(**kw):
    torch.manual_seed(0)
    return GVSL(UNet3D(features=(4, 8, 16), groups=2), seed=0, **kw)


def test_gradients_reach_every_head_and_the_backbone_at_batch_2():
    m = _model()
    loss, parts = m.loss(torch.rand(2, 1, 16, 16, 16))
    loss.backward()
    assert set(parts) == {"ncc", "smooth", "mse"}
    groups = {"affine_head": [], "deform_head": [], "restore_head": [], "backbone": []}
    for name, p in m.named_parameters():
        if not p.requires_grad:  # the fixed sigma of the NCC pre-smoothing
            continue
        groups[name.split(".")[0]].append(float(p.grad.abs().sum()) if p.grad is not None else 0.0)
    for group, grads in groups.items():
        assert grads and all(g > 0 for g in grads), group


def test_batch_of_one_is_rejected():
    with pytest.raises(ValueError, match="batch size must be >= 2"):
        _model().loss(torch.rand(1, 1, 16, 16, 16))


def test_dvf_starts_near_identity():
    m = _model()
    dvf = m.predict_dvf(torch.rand(2, 1, 16, 16, 16), torch.rand(2, 1, 16, 16, 16))
    assert dvf.shape == (2, 3, 16, 16, 16) and dvf.abs().max() < 0.05


def test_affine_head_compares_the_spatial_layout_of_the_two_maps():
    """A is B shifted by one voxel: the same channel means, a different registration problem.

    The published head convolves the concatenated maps before pooling, so it sees
    the shift; a head that pools each map to its channel means first cannot.
    """
    from medssl.nn.registration_heads import AffineHead

    torch.manual_seed(0)
    head = AffineHead(8, hidden=16)
    for layer in head.modules():  # untrained weights of a normal size (the identity start is ~1e-3)
        if isinstance(layer, torch.nn.Linear):
            torch.nn.init.normal_(layer.weight, std=1.0)
    g = torch.randn(1, 8, 4, 4, 4)
    with torch.no_grad():
        same = head.parameters_of(g, g)
        shifted = head.parameters_of(torch.roll(g, 1, dims=2), g)
    assert torch.allclose(torch.roll(g, 1, dims=2).mean((2, 3, 4)), g.mean((2, 3, 4)), atol=1e-6)
    diff = max(float((same[k] - shifted[k]).abs().max()) for k in same)
    assert diff > 1e-3, diff


def test_deformable_head_sees_the_moving_features_after_the_affine():
    """As the published forward: Spatial(atn(f_moving^l, M), f_fixed^l)."""
    from medssl.geometry.affine import affine_ddf, affine_matrix

    m = _model()
    shape = (16, 16, 16)
    matrix = affine_matrix(torch.tensor([[0.0, 0.0, 0.2]]), torch.ones(1, 3), torch.zeros(1, 6),
                           torch.tensor([[2.0, 0.0, -1.0]]))
    m.affine_head.forward = lambda g_a, g_b, s: matrix  # a known affine
    seen = {}
    m.deform_head.register_forward_pre_hook(lambda mod, args: seen.update(a=args[0], b=args[1]))
    fa, fb = m.backbone(torch.rand(1, 1, *shape)), m.backbone(torch.rand(1, 1, *shape))
    reg = m.register(fa, fb, shape)
    torch.testing.assert_close(seen["a"], warp(fa["local"], affine_ddf(matrix, shape)))
    torch.testing.assert_close(seen["b"], fb["local"])
    assert not torch.allclose(seen["a"], fa["local"], atol=1e-3)
    assert reg["dvf"].shape == (1, 3, *shape)


# Registration learning is tested through the real loader and pre-training stage in test_gvsl_pretrain.py.
