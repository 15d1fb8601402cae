"""Pre-training methods: registry, gradients, and what each one trains."""

from __future__ import annotations

import pytest
import torch

from medssl import registry
from medssl.nn.unet3d import UNet3D


def _backbone():
    torch.manual_seed(0)
    return UNet3D(in_channels=1, features=(4, 8, 16), groups=2)


def test_registry_resolves_and_rejects():
    assert registry.resolve("method", "genesis").__name__ == "Genesis"
    with pytest.raises(ValueError, match="unknown method 'mae'; known: genesis, gvsl, s2dc, scratch"):
        registry.resolve("method", "mae")


def test_scratch_does_not_train():
    m = registry.resolve("method", "scratch")(_backbone())
    assert m.trains is False
    with pytest.raises(NotImplementedError):
        m.loss(torch.zeros(1, 1, 8, 8, 8))


def test_unknown_method_args_rejected():
    with pytest.raises(ValueError, match="unknown arguments"):
        registry.resolve("method", "genesis")(_backbone(), colour=3)


def test_genesis_loss_reaches_backbone_and_head_at_batch_2():
    m = registry.resolve("method", "genesis")(_backbone(), seed=1)
    x = torch.rand(2, 1, 16, 16, 16)
    loss, parts = m.loss(x)
    loss.backward()
    assert parts["mse"] == pytest.approx(float(loss.detach()))
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


class _Seen(torch.nn.Module):
    """Backbone stub: records the image it is given and returns it as the local feature."""

    def forward(self, x):
        self.input = x.detach().clone()
        return {"local": x}


class _Logit(torch.nn.Module):
    """Head stub: the logit of ``fn(feature)``, so that the method's sigmoid returns ``fn(feature)``."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, f):
        return torch.logit(self.fn(f).clamp(1e-6, 1 - 1e-6))


def test_genesis_restoration_target_is_the_clean_image():
    """A restoration that outputs the clean image scores 0; one that outputs the damaged input scores
    MSE(damaged, clean); one that outputs 0.5 * clean scores MSE(0.5 * clean, clean)."""
    m = registry.resolve("method", "genesis")(_backbone(), seed=0, nonlinear_prob=1.0, paint_prob=1.0)
    x = torch.rand(2, 1, 16, 16, 16) * 0.9 + 0.05
    m.backbone = _Seen()
    m.head = _Logit(lambda f: x)
    assert float(m.loss(x)[0]) == pytest.approx(0.0, abs=1e-10)
    m.head = _Logit(lambda f: f)
    loss, _ = m.loss(x)
    damaged = m.backbone.input.clamp(1e-6, 1 - 1e-6)
    assert not torch.allclose(damaged, x, atol=1e-3)  # the network saw a damaged image
    assert float(loss) == pytest.approx(float(((damaged - x) ** 2).mean()), rel=1e-4) and float(loss) > 1e-3
    m.head = _Logit(lambda f: 0.5 * x)
    assert float(m.loss(x)[0]) == pytest.approx(float(((0.5 * x - x) ** 2).mean()), rel=1e-4)


def test_genesis_learns_on_a_fixed_batch():
    torch.manual_seed(0)
    m = registry.resolve("method", "genesis")(_backbone(), seed=0)
    x = torch.rand(2, 1, 16, 16, 16) * 0.2 + torch.linspace(0, 0.8, 16).view(1, 1, 16, 1, 1)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss, _ = m.loss(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
