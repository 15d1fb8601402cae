"""Tests of the template-transformer models (Diffeomorphic Template Transformers, Sec. 4-5, Table 2)."""

from __future__ import annotations

import math

import pytest
import torch

from medssl.geometry.components import count_components
from medssl.geometry.jacobian import negative_fraction
from medssl.template import MODELS, DiffeomorphicTemplateTransformer, TemplateNet, build, evaluate, fit

SHAPE = (16, 16, 16)
SMALL = {"features": (4, 8, 8)}
TT = {"features": (4, 8, 8), "T": 2, "alpha": 4.0}


def _model(name: str, **kw):
    torch.manual_seed(0)
    return build(name, SHAPE, **({**SMALL, **kw} if name == "unet" else {**TT, **kw}))


def _ellipsoids(n: int, seed: int = 0, noise: float = 0.3):
    """Noisy ellipsoids with random centre and semi-axes; masks are the ellipsoids."""
    g = torch.Generator().manual_seed(seed)
    grid = torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in SHAPE], indexing="ij"))
    masks = []
    for _ in range(n):
        c = torch.tensor([7.5, 7.5, 7.5]) + (torch.rand(3, generator=g) - 0.5) * 4
        r = 3.0 + torch.rand(3, generator=g) * 2.5
        q = (((grid - c.view(3, 1, 1, 1)) / r.view(3, 1, 1, 1)) ** 2).sum(0)
        masks.append((q <= 1).float())
    masks = torch.stack(masks)[:, None]
    images = masks + noise * torch.randn(masks.shape, generator=g)
    return images, masks


@pytest.mark.parametrize("name", MODELS)
def test_shapes_and_ranges(name):
    model = _model(name)
    out = model(torch.randn(2, 1, *SHAPE))
    assert out["prob"].shape == (2, 1, *SHAPE)
    assert out["prob"].min() >= 0 and out["prob"].max() <= 1
    if name == "unet":
        assert out["ddf"] is None and out["velocity"] is None
    else:
        assert out["ddf"].shape == (2, 3, *SHAPE)
        assert out["velocity"].shape == (2, 2, 3, *SHAPE)
        assert out["velocity"].abs().max() <= 4.0


def test_alpha_tanh_bound():
    torch.manual_seed(0)
    net = TemplateNet(2, 6, (4, 8, 8), alpha=0.5, final_init_std=10.0)
    out = net(torch.randn(1, 2, *SHAPE))
    assert out.abs().max() <= 0.5 and out.abs().max() > 0.45


@pytest.mark.parametrize("name", ["stt", "diffeo_fixed", "diffeo_trained"])
def test_zero_net_returns_prior(name):
    model = _model(name, final_init_std=0.0)
    out = model(torch.randn(2, 1, *SHAPE))
    assert torch.count_nonzero(out["ddf"]) == 0
    # the warp by a zero ddf is the identity up to grid_sample's float rounding of voxel centres
    assert (out["prob"] - model.prior(2)).abs().max() < 1e-6
    # the default prior boundary has semi-axes N/2 = 8 voxels (Sec. 5.1, see medssl.geometry.prior)
    assert torch.allclose(model.prior.decision_radius(), torch.full((3,), 8.0))


def test_every_template_study_row_uses_the_paper_prior():
    """Each transformer row of params.yaml's template study starts from the Sec. 5.1 prior.

    Measured on the grid: along each central line of a 32 x 32 x 24 volume (a 32^3 cube for
    the isotropic rows, whose one scale is the mean size) every voxel has p > 0.5 (the p = 0.5
    boundary is the inscribed ellipsoid, semi-axes N_k / 2), and the corner voxel does not.
    """
    from pathlib import Path

    from medssl.config import load

    root = Path(__file__).resolve().parents[2]
    st = load(root / "params.yaml").studies["template"]
    rows = {name: spec for name, spec in st.models.items() if spec.kind != "unet"}
    assert len(rows) >= 8
    for name, spec in rows.items():
        assert "sigma2" not in spec.args, name
        shape = (32, 32, 32) if spec.args.get("covariance") == "isotropic" else (32, 32, 24)
        model = build(spec.kind, shape, features=(4, 8), T=1, alpha=1.0, **spec.args)
        p = model.prior(1)[0, 0].detach().numpy()
        for k, n in enumerate(shape):
            line = [slice(None) if j == k else m // 2 for j, m in enumerate(shape)]
            assert int((p[tuple(line)] > 0.5).sum()) == n, (name, k)
        assert p[0, 0, 0] < 0.5, name


def test_diffeomorphic_keeps_topology_while_direct_folds():
    x = torch.randn(2, 1, *SHAPE, generator=torch.Generator().manual_seed(1))
    res = {}
    for method in ("ss", "direct"):
        model = _model("diffeo_fixed", integration=method, final_init_std=0.05)
        with torch.no_grad():
            res[method] = model(x)
    assert torch.equal(res["ss"]["velocity"], res["direct"]["velocity"])
    assert res["ss"]["velocity"].abs().max() > 1.0  # a non-trivial field
    assert negative_fraction(res["ss"]["ddf"]).tolist() == [0.0, 0.0]
    assert count_components(res["ss"]["prob"]).ravel().tolist() == [1, 1]
    assert (negative_fraction(res["direct"]["ddf"]) > 0).all()


@pytest.mark.parametrize("name,trained", [("diffeo_fixed", False), ("stt", False), ("diffeo_trained", True)])
def test_gradients(name, trained):
    model = _model(name)
    images, masks = _ellipsoids(2)
    loss = torch.nn.functional.binary_cross_entropy(model(images)["prob"].clamp(1e-6, 1 - 1e-6), masks)
    loss.backward()
    for pname, p in model.net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    assert model.net.down[0][0].conv.weight.grad.abs().sum() > 0
    prior_params = dict(model.prior.named_parameters())
    if trained:
        assert set(prior_params) == {"mu", "log_sigma2", "log_beta"}
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in prior_params.values())
    else:
        assert prior_params == {}


def test_table3_ablation_choice():
    model = _model("diffeo_trained", train_mu=False, train_beta=False, covariance="isotropic", sigma2=16.0)
    assert [n for n, _ in model.prior.named_parameters()] == ["log_sigma2"]
    assert model.integration == "ss"


@pytest.mark.parametrize("name,lr", [("diffeo_trained", 3e-3), ("unet", 1e-2)])
def test_fit_lowers_loss(name, lr):
    images, masks = _ellipsoids(6)
    model = _model(name)
    hist = fit(model, images, masks, steps=20, lr=lr, batch_size=2, seed=0)["loss"]
    assert len(hist) == 20 and all(math.isfinite(v) for v in hist)
    assert sum(hist[-4:]) / 4 < 0.9 * sum(hist[:4]) / 4


@pytest.mark.parametrize("name", ["unet", "diffeo_fixed"])
def test_evaluate_keys(name):
    images, masks = _ellipsoids(2)
    res = evaluate(_model(name), images, masks, spacing=(2.0, 2.0, 2.0))
    for k in ("dice", "hausdorff", "neg_jacobian_pct", "components"):
        assert len(res[k]) == 2 and f"{k}_mean" in res
    assert all(0 <= d <= 1 for d in res["dice"]) and math.isfinite(res["dice_mean"])
    assert all(math.isfinite(h) and h >= 0 for h in res["hausdorff"])
    if name == "unet":
        assert math.isnan(res["neg_jacobian_pct_mean"])
    else:
        assert res["dice_mean"] > 0 and res["neg_jacobian_pct"] == [0.0, 0.0] and res["components"] == [1, 1]


def test_evaluate_perfect_and_empty():
    class Fixed(torch.nn.Module):
        def __init__(self, prob):
            super().__init__()
            self.p = prob

        def forward(self, image):
            return {"prob": self.p, "ddf": None}

    _, masks = _ellipsoids(1)
    res = evaluate(Fixed(masks), masks, masks, spacing=(1.0, 1.0, 2.0))
    assert res["dice"] == [1.0] and res["hausdorff"] == [0.0] and res["components"] == [1]
    res = evaluate(Fixed(torch.zeros_like(masks)), masks, masks, spacing=(1.0, 1.0, 2.0))
    assert res["dice"] == [0.0] and res["hausdorff"][0] == pytest.approx(math.sqrt(15**2 + 15**2 + 30**2))


def test_bad_arguments():
    with pytest.raises(ValueError, match="nope"):
        build("nope", SHAPE)
    with pytest.raises(ValueError, match="'euler'"):
        DiffeomorphicTemplateTransformer(SHAPE, integration="euler", **TT)
    with pytest.raises(ValueError, match="-1"):
        TemplateNet(alpha=-1.0)
    with pytest.raises(ValueError, match="T must"):
        DiffeomorphicTemplateTransformer(SHAPE, T=0)
    images, masks = _ellipsoids(2)
    with pytest.raises(ValueError, match="0"):
        fit(_model("unet"), images, masks, steps=0)
    with pytest.raises(ValueError, match="spacing"):
        evaluate(_model("unet"), images, masks, spacing=(1.0, -1.0, 1.0))
