"""Tests of the STN study building blocks (Diffeomorphic Template Transformers, Table 1)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medssl.stn import ROWS, STN, build, evaluate, fit, gradient_penalty, rotate, rotated_digits, split_sources
from medssl.geometry.integrate import exp_velocity as exp_velocity2d
from medssl.geometry.jacobian import jacobian_determinant as jacobian_determinant2d
from medssl.geometry.warp import warp as warp2d


@pytest.fixture(scope="module")
def batch():
    return rotated_digits(32, size=32, seed=3)


def test_data_shapes_ranges_determinism(batch):
    x, y, a = batch
    assert x.shape == (32, 1, 32, 32) and x.dtype == torch.float32
    assert y.shape == (32,) and y.dtype == torch.int64 and set(y.tolist()) <= set(range(10))
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0 and float(x.max()) > 0.5
    assert np.all(np.abs(a) <= 90.0) and np.abs(a).max() > 45.0 and (a < 0).any() and (a > 0).any()
    x2, y2, a2 = rotated_digits(32, size=32, seed=3)
    assert torch.equal(x, x2) and torch.equal(y, y2) and np.array_equal(a, a2)
    x3, _, _ = rotated_digits(32, size=32, seed=4)
    assert not torch.equal(x, x3)
    _, _, a4 = rotated_digits(200, seed=0, max_angle=30)
    assert np.abs(a4).max() <= 30.0


def test_rotating_back_recovers_upright(batch):
    x, _, a = batch
    up, _, a0 = rotated_digits(32, size=32, seed=3, max_angle=0)
    assert np.all(a0 == 0)
    err_back = float(((rotate(x, -a) - up) ** 2).mean())
    err_wrong = float(((rotate(x, a) - up) ** 2).mean())
    assert err_back < 0.05 * float((up ** 2).mean())
    assert err_back < 0.2 * err_wrong


def test_split_disjoint_and_fixed():
    tr, te = split_sources(seed=0)
    assert len(set(tr) & set(te)) == 0 and len(tr) + len(te) == 1797
    tr2, te2 = split_sources(seed=0)
    assert np.array_equal(tr, tr2) and np.array_equal(te, te2)
    with pytest.raises(ValueError, match="1.5"):
        split_sources(test_fraction=1.5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="'rigid'"):
        STN("rigid")
    with pytest.raises(ValueError, match="'tps'"):
        build("tps")
    with pytest.raises(ValueError, match="-1"):
        rotated_digits(-1)


@pytest.mark.parametrize("name", ROWS)
def test_output_shape(name, batch):
    torch.manual_seed(0)
    assert build(name)(batch[0][:8]).shape == (8, 10)


@pytest.mark.parametrize("kind", ["affine", "nondiffeo", "diffeo"])
def test_identity_initialisation(kind, batch):
    torch.manual_seed(0)
    x = batch[0][:8]
    assert torch.allclose(STN(kind)(x), x, atol=1e-5)


def test_warp2d_convention():
    img = torch.arange(16.0).view(1, 1, 4, 4)
    ddf = torch.zeros(1, 2, 4, 4)
    ddf[:, 1] = 1.0  # sample one column to the right: out(p) = in(p + u)
    out = warp2d(img, ddf, padding_mode="border")
    assert torch.allclose(out[0, 0, :, :3], img[0, 0, :, 1:])


def test_affine_jacobian_matches_matrix_determinant():
    s = STN("affine")
    with torch.no_grad():
        s.out.bias.copy_(torch.tensor([0.5, 0.2, 0.0, -0.1, 0.8, 0.1]))
    ddf, field = s.transform(torch.zeros(1, 1, 32, 32))
    assert field is None
    assert torch.allclose(jacobian_determinant2d(ddf), torch.tensor(0.5 * 0.8 + 0.2 * 0.1), atol=1e-4)


def _random_stn(kind: str, grid: int | None = 8) -> STN:
    """An STN with a large random field: smooth on an 8 x 8 lattice, rough per pixel with ``grid=None``."""
    torch.manual_seed(0)
    s = STN(kind, grid=grid)
    with torch.no_grad():
        s.out.weight.normal_(0.0, 0.1)
        s.out.bias.copy_(torch.randn(s.out.bias.shape) * 2.0 / s.alpha)
    return s


def test_diffeo_does_not_fold_where_nondiffeo_does(batch):
    # A smooth (8 x 8 lattice) field: integration removes all folding. A per-pixel random field
    # folds after integration too (finite differences of a field rough at the pixel scale), see
    # test_integration_lowers_folding_on_the_pixel_lattice.
    x = batch[0][:8]
    with torch.no_grad():
        ddf_d, v = _random_stn("diffeo").transform(x)
        ddf_n, u = _random_stn("nondiffeo").transform(x)
    assert torch.equal(v, u) and float(v.abs().max()) > 2.0  # the same large field
    assert int((jacobian_determinant2d(ddf_d) <= 0).sum()) == 0
    assert float((jacobian_determinant2d(ddf_n) <= 0).double().mean()) > 0.01
    assert not torch.allclose(ddf_d, ddf_n)


def test_exp_of_zero_is_identity_and_constant_is_translation():
    assert torch.equal(exp_velocity2d(torch.zeros(1, 2, 8, 8)), torch.zeros(1, 2, 8, 8))
    v = torch.full((1, 2, 8, 8), 0.75)
    assert torch.allclose(exp_velocity2d(v), v, atol=1e-5)


def test_gradient_penalty():
    assert float(gradient_penalty(torch.zeros(2, 2, 8, 8))) == 0.0
    assert float(gradient_penalty(torch.full((2, 2, 8, 8), 3.0))) == 0.0
    torch.manual_seed(0)
    assert float(gradient_penalty(torch.randn(2, 2, 8, 8))) > 0.0
    ramp = torch.arange(8.0).view(1, 1, 1, 8).expand(1, 2, 8, 8)
    assert math.isclose(float(gradient_penalty(ramp)), 1.0, rel_tol=1e-6)


def test_fit_cnn_beats_chance_and_evaluate():
    tr, te = split_sources(seed=0)
    xtr, ytr, _ = rotated_digits(400, size=16, seed=1, max_angle=30, sources=tr)
    xte, yte, _ = rotated_digits(200, size=16, seed=2, max_angle=30, sources=te)
    torch.manual_seed(0)
    model = build("cnn")
    hist = fit(model, xtr, ytr, epochs=6, lr=3e-3, batch_size=32, seed=0)
    assert len(hist) == 6 and hist[-1]["ce"] < hist[0]["ce"]
    res = evaluate(model, xte, yte)
    assert res["accuracy"] > 0.3 and math.isnan(res["neg_jacobian_pct"])


def _field_gradient_energy(field: torch.Tensor) -> float:
    """Mean squared spatial gradient of a (B, 2, H, W) field, with numpy.gradient."""
    g = np.gradient(field.double().numpy(), axis=(2, 3))
    return float(np.mean(g[0] ** 2 + g[1] ** 2))


def test_penalty_smooths_the_learned_field():
    """lambda ||grad v||^2 (Sec. 5.2, lambda = 10) must make the learned field smoother than the
    same seed trained without it (measured: 3.7e-5 against 4.2e-2, a factor ~1000)."""
    x, y, _ = rotated_digits(128, size=16, seed=1)
    energy, hist = {}, {}
    for w in (0.0, 10.0):
        torch.manual_seed(0)
        model = build("stn_diffeo", size=16)
        hist[w] = fit(model, x, y, epochs=2, batch_size=32, lr=3e-3, penalty_weight=w, seed=0)
        with torch.no_grad():
            energy[w] = _field_gradient_energy(model.stn.transform(x)[1])
    assert energy[0.0] > 1e-3  # the unpenalised field does get rough
    assert energy[10.0] < 0.05 * energy[0.0], energy
    assert all(math.isfinite(h["loss"]) and h["penalty"] >= 0 for h in hist[10.0])
    assert hist[10.0][-1]["penalty"] < hist[0.0][-1]["penalty"]
    with pytest.raises(ValueError, match="-1"):
        fit(model, x, y, penalty_weight=-1.0)


def _numpy_neg_jacobian_pct(ddf: torch.Tensor) -> float:
    """% of pixels with det(I + Du) <= 0, Du by numpy.gradient (central inside, one-sided at edges)."""
    u = ddf.double().numpy()
    d0 = np.gradient(u[:, 0], axis=(1, 2))  # d u_row / d row, d u_row / d col
    d1 = np.gradient(u[:, 1], axis=(1, 2))
    det = (1 + d0[0]) * (1 + d1[1]) - d0[1] * d1[0]
    return float((det <= 0).mean() * 100.0)


@pytest.mark.parametrize("kind", ["nondiffeo", "diffeo"])
def test_evaluated_folding_is_that_of_the_applied_displacement(kind, batch):
    """evaluate()'s "% |J| <= 0" equals an independent numpy count on the displacement that warps the image."""
    from medssl.stn.models import CNN, STNClassifier

    x, y, _ = batch
    model = STNClassifier(_random_stn(kind), CNN())
    with torch.no_grad():
        model.stn.out.weight.mul_(5.0)  # so that the folding differs from image to image
        ddf, field = model.stn.transform(x)
    ref = _numpy_neg_jacobian_pct(ddf)
    got = evaluate(model, x, y, batch_size=10)["neg_jacobian_pct"]  # several batches of unequal size
    assert got == pytest.approx(ref, abs=1e-9)
    if kind == "nondiffeo":
        assert ref > 1.0  # a folding field, so the count is not trivially 0
    else:  # the velocity itself folds; the metric must be of the integrated map, which does not
        assert _numpy_neg_jacobian_pct(field) > 1.0 and ref == 0.0


def test_evaluated_folding_of_affine_rows(batch):
    x, y, _ = batch
    ident = build("stn_affine", size=32)
    assert evaluate(ident, x, y)["neg_jacobian_pct"] == 0.0
    with torch.no_grad():
        ident.stn.out.bias.copy_(torch.tensor([-1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))  # a mirror: det = -1
    assert evaluate(ident, x, y)["neg_jacobian_pct"] == 100.0


def test_default_lattice_is_the_image_resolution():
    """Table 1's dense STNs use a 28 x 28 lattice on 28 x 28 images: one vector per pixel."""
    for size in (16, 28, 32):
        s = STN("diffeo", size=size)
        assert s.grid == size and s.out.out_features == 2 * size * size
        with torch.no_grad():
            s.out.bias.normal_(0.0, 1.0)
            _, field = s.transform(torch.zeros(1, 1, size, size))
        # each pixel has its own vector: neighbouring pixels differ (a coarser lattice would interpolate)
        assert torch.equal(field[0], s.alpha * torch.tanh(s.out.bias.view(2, size, size)))
    assert STN("diffeo", size=32, grid=8).out.out_features == 2 * 8 * 8
    for bad in ({"grid": 33}, {"grid": 1}, {"grid": 8.0}):
        with pytest.raises(ValueError, match="grid"):
            STN("diffeo", size=32, **bad)


def test_integration_lowers_folding_on_the_pixel_lattice(batch):
    """On the default (pixel) lattice a random field folds less once integrated (Table 1's ordering)."""
    x = batch[0][:8]
    with torch.no_grad():
        ddf_d, v = _random_stn("diffeo", grid=None).transform(x)
        ddf_n, u = _random_stn("nondiffeo", grid=None).transform(x)
    assert torch.equal(v, u)
    fold_d, fold_n = _numpy_neg_jacobian_pct(ddf_d), _numpy_neg_jacobian_pct(ddf_n)
    assert fold_n > 5.0 and fold_d < 0.5 * fold_n, (fold_d, fold_n)
