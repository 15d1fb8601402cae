"""CMEVAE network: shapes at every scale, gradients to every part, baselines, argument checks."""

from __future__ import annotations

import math

import pytest
import torch

from medssl.uda import build
from medssl.uda.losses import kl_standard_normal
from medssl.uda.train import step_losses

FEATURES = (4, 8, 8, 16, 16)


def test_shapes_at_every_scale():
    model = build("cmevae", 4, features=FEATURES, embed_dim=6)
    x = torch.rand(2, 1, 48, 64)
    out = model(x)
    assert out["mu"].shape == out["logvar"].shape == out["z"].shape == (2, 16, 3, 4)
    assert len(out["logits"]) == len(out["recon"]) == len(out["embed"]) == 3
    for n in range(3):
        h, w = 48 // 2 ** n, 64 // 2 ** n
        assert out["logits"][n].shape == (2, 4, h, w)
        assert out["recon"][n].shape == (2, 1, h, w)
        assert out["embed"][n].shape == (2, 6, h, w)
        assert torch.allclose(out["embed"][n].norm(dim=1), torch.ones(2, h, w), atol=1e-5)
    assert out["prob"].shape == (2, 4, 48, 64)
    assert torch.allclose(out["prob"].sum(1), torch.ones(2, 48, 64), atol=1e-5)
    assert torch.allclose(model.scale_weights, torch.tensor([4.0, 2.0, 1.0]) / 7)
    assert model.predict(x).shape == (2, 48, 64)
    four = build("cmevae", 3, features=FEATURES, n_scales=4, embed_dim=2)(x)
    assert four["logits"][3].shape == (2, 3, 6, 8) and four["recon"][3].shape == (2, 1, 6, 8)


def test_sampling_only_in_training_and_baselines():
    x = torch.rand(2, 1, 32, 32)
    model = build("vae", 4, features=FEATURES, seed=3)
    model.train()
    a, b = model(x), model(x)
    assert not torch.equal(a["z"], b["z"])  # reparameterised samples
    assert torch.equal(a["mu"], b["mu"])
    model.eval()
    c = model(x)
    assert torch.equal(c["z"], c["mu"])
    assert model.memory is None and c["embed"] == [] and len(c["recon"]) == 3
    so = build("source_only", 4, features=FEATURES)
    o = so(x)
    assert o["logvar"] is None and o["recon"] == [] and o["embed"] == [] and torch.equal(o["z"], o["mu"])
    assert so.recons is None and so.projs is None and so.logvar is None
    assert so.loss["kl"] == so.loss["recon"] == so.loss["contrast"] == so.loss["margin"] == 0.0
    assert model.loss["contrast"] == model.loss["margin"] == 0.0 and model.loss["kl"] > 0
    cm = build("cmevae", 4, features=FEATURES)
    assert cm.loss["contrast"] > 0 and cm.loss["margin"] > 0 and cm.memory is not None
    yaml_style = build("vae", 4, features=list(FEATURES), norm=["instance", {"affine": True}], act=["relu", {}])
    assert yaml_style(x)["prob"].shape == (2, 4, 32, 32)  # lists from a config file work as MONAI tuples
    # same seed, same initial weights
    assert torch.equal(build("vae", 4, features=FEATURES, seed=3).mu.conv.weight, model.mu.conv.weight)


def test_gradients_reach_encoder_every_head_and_every_reconstructor():
    torch.manual_seed(0)
    model = build("cmevae", 4, features=FEATURES, embed_dim=4, loss={"pseudo_threshold": 0.0, "anchors": 8})
    g = torch.Generator().manual_seed(0)
    xs, xt = torch.rand(2, 1, 32, 32, generator=g), torch.rand(2, 1, 32, 32, generator=g)
    ys = torch.zeros(2, 32, 32, dtype=torch.long)
    ys[:, 8:24, 8:24] = 2
    ys[:, 12:20, 12:20] = 1
    ys[:, 2:8, 4:30] = 3
    with torch.no_grad():  # one step of bank filling, so that the contrast and margin terms are on
        step_losses(model, xs, ys, xt, generator=g)
    terms = step_losses(model, xs, ys, xt, use_target_anchors=True, generator=g)
    for k in ("seg", "dice", "kl", "recon", "contrast", "margin"):
        assert float(terms[k].detach()) > 0, k
    model.zero_grad()
    terms["loss"].backward()
    parts = {"encoder": model.enc, "mu": model.mu, "logvar": model.logvar, "decoder": model.ups,
             **{f"seg_head{n}": model.seg_heads[n] for n in range(3)},
             **{f"reconstructor{n}": model.recons[n] for n in range(3)},
             **{f"projection{n}": model.projs[n] for n in range(3)}}
    for name, module in parts.items():
        for pname, p in module.named_parameters():
            assert p.grad is not None, f"{name}.{pname} has no gradient"
            assert p.grad.abs().sum() > 0, f"{name}.{pname} has a zero gradient"


def test_margin_and_contrast_alone_reach_the_projection_heads_and_encoder():
    model = build("cmevae", 4, features=FEATURES, embed_dim=4,
                  loss={"seg": 0.0, "dice": 0.0, "kl": 0.0, "recon": 0.0, "margin": 1.0, "contrast": 0.0})
    x = torch.rand(2, 1, 32, 32)
    y = (torch.arange(32)[None, :, None] // 8 % 4).expand(2, 32, 32).contiguous()
    with torch.no_grad():
        step_losses(model, x, y, x)
    step_losses(model, x, y, x)["loss"].backward()
    assert model.projs[0][1].conv.weight.grad.abs().sum() > 0
    assert model.enc[0].conv_0.conv.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.recons.parameters())  # recon weight 0: not in the graph


def test_kl_term_matches_torch_distributions():
    g = torch.Generator().manual_seed(1)
    mu, logvar = torch.randn(3, 4, 2, 5, generator=g), torch.randn(3, 4, 2, 5, generator=g)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    ref = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).flatten(1).sum(1)
    assert torch.allclose(kl_standard_normal(mu, logvar), ref, rtol=1e-5)


def test_step_terms_of_a_real_network_match_torch_references():
    """KL, prediction and reconstruction terms of CMEVAE Eq. (1) on a VAE's own outputs."""
    model = build("vae", 3, features=FEATURES, seed=0, loss={"seg": 1.0, "dice": 1.0, "kl": 1.0, "recon": 1.0})
    g = torch.Generator().manual_seed(5)
    xs, xt = torch.rand(2, 1, 32, 32, generator=g), torch.rand(3, 1, 32, 32, generator=g)
    ys = torch.randint(0, 3, (2, 32, 32), generator=g)
    torch.manual_seed(7)
    terms = step_losses(model, xs, ys, xt)
    torch.manual_seed(7)  # the same reparameterisation noise
    xb = torch.cat([xs, xt])
    out = model(xb)
    # KL(q(z|x) || N(0, I)) per image pixel, mean over the images of both domains
    q = torch.distributions.Normal(out["mu"], (0.5 * out["logvar"]).exp())
    kl = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).flatten(1).sum(1) / (32 * 32)
    assert torch.allclose(terms["kl"], kl.mean(), rtol=1e-5)
    # -log p(y|z) on the source: cross entropy of every head against the label proportions of its pixels
    onehot = torch.nn.functional.one_hot(ys, 3).permute(0, 3, 1, 2).float()
    ce = sum(torch.nn.functional.cross_entropy(lg[:2], torch.nn.functional.avg_pool2d(onehot, 2 ** n))
             for n, lg in enumerate(out["logits"]))
    assert torch.allclose(terms["seg"], ce, rtol=1e-5)
    # -log p(x|y,z) up to its constant: Gaussian of variance 1/2 around each scale's reconstruction
    nll = 0.0
    for n, r in enumerate(out["recon"]):
        target = torch.nn.functional.avg_pool2d(xb, 2 ** n)
        logp = torch.distributions.Normal(r, math.sqrt(0.5)).log_prob(target)
        nll = nll + (-logp - 0.5 * math.log(math.pi)).mean()
    assert torch.allclose(terms["recon"], nll, rtol=1e-5)


def test_step_assembles_the_negative_bound_with_a_known_value():
    """Fixed network outputs with closed-form terms; the weighted total is the negative bound plus Dice."""
    weights = {"seg": 2.0, "dice": 0.5, "kl": 3.0, "recon": 4.0}
    model = build("vae", 3, features=FEATURES, seed=0, loss=weights)
    ys = torch.zeros(2, 32, 32, dtype=torch.long)
    ys[:, :16] = 1          # half the pixels class 1, a quarter class 2, in 8x8-aligned blocks
    ys[:, 16:, :16] = 2
    x = torch.full((2, 1, 32, 32), 0.3)  # a constant image: every pooled scale is 0.3

    def fixed(xb):
        b = xb.shape[0]
        return {"logits": [torch.zeros(b, 3, 32 >> n, 32 >> n) for n in range(3)],
                "recon": [torch.full((b, 1, 32 >> n, 32 >> n), 0.8) for n in range(3)],
                "embed": [], "mu": torch.ones(b, 16, 2, 2), "logvar": torch.full((b, 16, 2, 2), math.log(2.0)),
                "z": torch.ones(b, 16, 2, 2), "prob": torch.full((b, 3, 32, 32), 1 / 3)}

    model.forward = fixed
    terms = step_losses(model, x, ys, x)
    seg = 3 * math.log(3)                                # uniform softmax on 3 classes, 3 heads
    n_pix = 2 * 32 * 32
    dice = 3 * sum(1 - (2 * n_c / 3) / (n_pix / 3 + n_c) for n_c in (n_pix / 2, n_pix / 4)) / 2
    kl = 0.5 * (1 + 2 - 1 - math.log(2)) * (16 * 2 * 2) / (32 * 32)  # per latent element, per image pixel
    recon = 3 * 0.5 ** 2                                 # (0.8 - 0.3)^2 at each of 3 scales
    assert float(terms["seg"]) == pytest.approx(seg, rel=1e-6)
    assert float(terms["dice"]) == pytest.approx(dice, rel=1e-4)
    assert float(terms["kl"]) == pytest.approx(kl, rel=1e-6)
    assert float(terms["recon"]) == pytest.approx(recon, rel=1e-6)
    assert float(terms["loss"]) == pytest.approx(2 * seg + 0.5 * dice + 3 * kl + 4 * recon, rel=1e-5)
    assert float(terms["contrast"]) == float(terms["margin"]) == 0.0


@pytest.mark.parametrize(("call", "match"), [
    (lambda: build("sifa", 4), "method must be one of"),
    (lambda: build("cmevae", 4, loss={"gamma": 1.0}), "unknown loss settings"),
    (lambda: build("cmevae", 1), "n_classes must be an int >= 2"),
    (lambda: build("cmevae", 4, features=(4, 8, 16, 32)), "five positive widths"),
    (lambda: build("cmevae", 4, n_scales=5), "n_scales must be an int in 1..4"),
    (lambda: build("cmevae", 4, scale_weights=(1.0, 1.0)), "scale_weights must be 3"),
    (lambda: build("cmevae", 4, features=FEATURES)(torch.rand(1, 1, 40, 40)), "divisible by 16"),
])
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()
