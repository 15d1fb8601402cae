"""CMEVAE network: shapes at every scale, gradients to every part, baselines, argument checks."""

from __future__ import annotations

import pytest
import torch

from medssl.uda import build
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


def test_step_assembles_the_negative_bound_from_independently_computed_terms():
    weights = {"seg": 2.0, "dice": 0.5, "kl": 3.0, "recon": 4.0}
    model = build("vae", 3, features=FEATURES, seed=0, loss=weights)
    g = torch.Generator().manual_seed(5)
    xs, xt = torch.rand(2, 1, 32, 32, generator=g), torch.rand(3, 1, 32, 32, generator=g)
    ys = torch.randint(0, 3, (2, 32, 32), generator=g)
    torch.manual_seed(7)
    terms = step_losses(model, xs, ys, xt)
    torch.manual_seed(7)  # the same reparameterisation noise
    out = model(torch.cat([xs, xt]))
    xb = torch.cat([xs, xt])
    # KL: closed form per latent element, summed per image, per image pixel, mean over both domains
    kl = (0.5 * (out["mu"] ** 2 + out["logvar"].exp() - 1 - out["logvar"])).sum((1, 2, 3)) / (32 * 32)
    assert torch.allclose(terms["kl"], kl.mean(), rtol=1e-5)
    # prediction term on the source only: full-resolution head = plain cross entropy
    ce0 = torch.nn.functional.cross_entropy(out["logits"][0][:2], ys)
    ce1_target = torch.nn.functional.avg_pool2d(torch.nn.functional.one_hot(ys, 3).permute(0, 3, 1, 2).float(), 2)
    ce1 = -(ce1_target * torch.log_softmax(out["logits"][1][:2], 1)).sum(1).mean()
    assert terms["seg"].item() > ce0.item() + ce1.item()  # the third head adds a positive term
    # reconstruction: both domains, every scale
    rec = sum(((r - (torch.nn.functional.avg_pool2d(xb, 2 ** n) if n else xb)) ** 2).mean()
              for n, r in enumerate(out["recon"]))
    assert torch.allclose(terms["recon"], rec, rtol=1e-5)
    total = 2.0 * terms["seg"] + 0.5 * terms["dice"] + 3.0 * terms["kl"] + 4.0 * terms["recon"]
    assert torch.allclose(terms["loss"], total, rtol=1e-6)
    assert min(float(terms[k].detach()) for k in ("seg", "dice", "kl", "recon")) > 0  # -ELBO terms are >= 0
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
