"""Prior shape (Diffeomorphic Template Transformers, Eq. 5) against numpy closed forms."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch

from medssl.geometry.prior import PriorShape

torch.set_num_threads(1)

BETAS = [0.5, 1.0, 2.0, 4.0]


def eq5(coords: np.ndarray, mu, sigma2, beta) -> np.ndarray:
    """Eq. 5 in float64: coords (..., ndim), diagonal Sigma."""
    d = coords - np.asarray(mu, dtype=np.float64)
    q = (d * d / np.asarray(sigma2, dtype=np.float64)).sum(-1)
    return np.exp(-(q ** beta) * np.log(2.0))


def grid(shape) -> np.ndarray:
    return np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape],
                                indexing="ij"), axis=-1)


@pytest.mark.parametrize("shape,mu,sigma2,beta", [
    ((6, 7, 9), (2.3, 3.9, 4.1), (3.0, 5.5, 8.0), 1.7),
    ((8, 5), (3.5, 1.25), (6.0, 2.0), 0.6),
])
def test_grid_matches_closed_form(shape, mu, sigma2, beta):
    prior = PriorShape(shape, mu=mu, sigma2=sigma2, beta=beta)
    out = prior(3)
    assert out.shape == (3, 1, *shape)
    ref = eq5(grid(shape), mu, sigma2, beta)
    for b in range(3):
        np.testing.assert_allclose(out[b, 0].numpy(), ref, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(prior.density(torch.tensor(grid(shape))).numpy(), ref,
                               rtol=1e-5, atol=1e-7)


def test_isotropic_matches_closed_form():
    prior = PriorShape((5, 6, 7), covariance="isotropic", mu=(2.0, 2.5, 3.0), sigma2=4.0, beta=2.0)
    ref = eq5(grid((5, 6, 7)), (2.0, 2.5, 3.0), (4.0, 4.0, 4.0), 2.0)
    np.testing.assert_allclose(prior(1)[0, 0].numpy(), ref, rtol=1e-5, atol=1e-7)


def test_one_at_centre():
    prior = PriorShape((5, 7, 9), beta=0.5)  # centre (2, 3, 4) is a voxel
    out = prior(2)
    assert out[0, 0, 2, 3, 4].item() == 1.0 and out[1, 0, 2, 3, 4].item() == 1.0
    assert out.max().item() == 1.0 and out.min().item() > 0.0
    assert prior.density(torch.tensor([[2.0, 3.0, 4.0]])).item() == 1.0


@pytest.mark.parametrize("beta", BETAS)
def test_half_on_decision_boundary_voxels(beta):
    # radii 2, 3, 4 voxels around the integer centre (4, 5, 6): mu +- r_k e_k are voxels
    prior = PriorShape((9, 11, 13), sigma2=(4.0, 9.0, 16.0), beta=beta)
    np.testing.assert_allclose(prior.decision_radius().numpy(), [2.0, 3.0, 4.0], rtol=1e-6)
    p = prior(1)[0, 0]
    for idx in [(2, 5, 6), (6, 5, 6), (4, 2, 6), (4, 8, 6), (4, 5, 2), (4, 5, 10)]:
        assert p[idx].item() == pytest.approx(0.5, abs=1e-6)
    # one step inside / outside along axis 0
    assert p[3, 5, 6].item() > 0.5 > p[1, 5, 6].item()


@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("ndim", [2, 3])
def test_half_on_decision_boundary_off_axis(beta, ndim):
    rng = np.random.default_rng(ndim)
    mu = rng.uniform(2, 6, ndim)
    sigma2 = rng.uniform(1, 10, ndim)
    u = rng.normal(size=(20, ndim))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    pts = mu + u * np.sqrt(sigma2)  # (x-mu)^T Sigma^-1 (x-mu) = 1 exactly
    prior = PriorShape((8,) * ndim, mu=tuple(mu), sigma2=tuple(sigma2), beta=beta)
    np.testing.assert_allclose(prior.density(torch.tensor(pts)).numpy(), 0.5, atol=1e-5)


@pytest.mark.parametrize("beta", BETAS)
def test_monotone_along_ray(beta):
    prior = PriorShape((10, 10, 10), mu=(4.5, 4.0, 5.2), sigma2=(3.0, 6.0, 2.0), beta=beta)
    v = np.array([0.6, -0.48, 0.64])
    mu = np.array([4.5, 4.0, 5.2])
    fine = np.linspace(0.0, 3.0, 61)  # non-increasing everywhere (float32 saturates near mu)
    p = prior.density(torch.tensor(mu + fine[:, None] * v)).numpy()
    assert p[0] == 1.0 and np.all(np.diff(p) <= 0)
    t = np.linspace(0.5, 2.5, 21)  # strictly decreasing where float32 resolves it
    p = prior.density(torch.tensor(mu + t[:, None] * v)).numpy()
    assert np.all(np.diff(p) < 0)
    assert np.all(p < 1) and np.all(p > 0)


def test_larger_beta_sharper_edge():
    shape, sigma2 = (9, 11, 13), (4.0, 9.0, 16.0)
    q = (((grid(shape) - np.array([4.0, 5.0, 6.0])) ** 2) / np.array(sigma2)).sum(-1)
    p1 = PriorShape(shape, sigma2=sigma2, beta=1.0)(1)[0, 0].numpy()
    p4 = PriorShape(shape, sigma2=sigma2, beta=4.0)(1)[0, 0].numpy()
    inside, outside = (q > 0) & (q < 0.99), q > 1.01
    assert inside.sum() > 10 and outside.sum() > 10
    assert np.all(p4[inside] > p1[inside])
    assert np.all(p4[outside] < p1[outside])


def test_paper_initialisation():
    prior = PriorShape((128, 96, 64))
    np.testing.assert_allclose(prior.mu.numpy(), [63.5, 47.5, 31.5])
    # Sec. 5.1 "diagonal components set at half the volume size": scale sqrt(Sigma_kk) = N_k / 2
    np.testing.assert_allclose(prior.decision_radius().detach().numpy(), [64.0, 48.0, 32.0], rtol=1e-6)
    assert prior.beta.item() == pytest.approx(1.0)
    iso = PriorShape((8, 6), covariance="isotropic")
    np.testing.assert_allclose(iso.decision_radius().numpy(), [3.5, 3.5], rtol=1e-6)
    np.testing.assert_allclose(iso.mu.numpy(), [3.5, 2.5])


@pytest.mark.parametrize("shape", [(32, 32, 24), (20, 13), (17, 9, 12)])
def test_default_boundary_is_the_inscribed_ellipsoid(shape):
    """The p = 0.5 set of the default prior, measured on the grid with numpy, spans the whole volume.

    Semi-axes N_k / 2 around the grid centre: every voxel of each central line is inside (N_k
    voxels), the positions one voxel beyond the grid are outside, and the inside holds the
    volume fraction of an ellipsoid inscribed in a box (pi/6 in 3-D, pi/4 in 2-D) up to the
    voxelisation. The literal reading Sigma_kk = N_k / 2 would give ~2 sqrt(N_k / 2) voxels.
    """
    prior = PriorShape(shape)
    p = prior(1)[0, 0].detach().numpy().astype(np.float64)
    inside = p > 0.5
    ndim = len(shape)
    for k, n in enumerate(shape):
        line = [slice(None) if j == k else m // 2 for j, m in enumerate(shape)]
        assert int(inside[tuple(line)].sum()) == n, (k, n)
        # just beyond the first and last voxel of the axis, p < 0.5
        for edge in (-1.0, float(n)):
            x = np.array([(m - 1) / 2.0 for m in shape])
            x[k] = edge
            assert prior.density(torch.tensor(x[None], dtype=torch.float32)).item() < 0.5
    frac = inside.mean()
    ref = math.pi / 6 if ndim == 3 else math.pi / 4
    assert abs(frac - ref) < 0.02, frac  # measured 0.522 (32x32x24), 0.800 (20x13), 0.523 (17x9x12)
    # corners of the volume are outside the boundary: the ellipsoid is inscribed, not circumscribed
    assert not inside[(0,) * ndim] and not inside[tuple(n - 1 for n in shape)]


def test_config_is_json_and_rebuilds():
    prior = PriorShape((6, 7, 5), covariance="diagonal", mu=(2.0, 3.0, 1.5), sigma2=(2.0, 3.0, 1.0),
                       beta=2.0, train_mu=True, train_beta=True)
    rebuilt = PriorShape(**json.loads(json.dumps(prior.config)))
    torch.testing.assert_close(rebuilt(1), prior(1).detach())
    assert {n for n, _ in rebuilt.named_parameters()} == {"mu", "log_beta"}


@pytest.mark.parametrize("flags", list(itertools.product([False, True], repeat=3)))
@pytest.mark.parametrize("covariance", ["isotropic", "diagonal"])
def test_trainable_flags_and_gradients(flags, covariance):
    train_mu, train_sigma, train_beta = flags
    prior = PriorShape((5, 6, 7), covariance=covariance, beta=0.5, train_mu=train_mu,
                       train_sigma=train_sigma, train_beta=train_beta)
    expected = {n for n, f in zip(("mu", "log_sigma2", "log_beta"), flags) if f}
    assert {n for n, _ in prior.named_parameters()} == expected
    assert {n for n, _ in prior.named_buffers()} == {"mu", "log_sigma2", "log_beta"} - expected
    # asymmetric loss so that d/dmu does not cancel by symmetry
    w = torch.linspace(0.0, 1.0, 7)
    out = prior(2)
    assert out.requires_grad == any(flags)
    if not any(flags):
        return
    (out * w).sum().backward()  # (2, 3, 4) is a voxel at mu: gradients must stay finite
    for name, param in prior.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name
    for _, buf in prior.named_buffers():
        assert buf.grad is None and not buf.requires_grad
    assert prior.log_sigma2.shape == ((1,) if covariance == "isotropic" else (3,))


def test_bce_training_moves_parameters_and_keeps_positive():
    torch.manual_seed(0)
    shape = (12, 12, 12)
    target = torch.tensor(eq5(grid(shape), (6.5, 4.0, 5.0), (9.0, 4.0, 6.0), 1.0) > 0.5,
                          dtype=torch.float32)[None, None].expand(2, 1, *shape)
    prior = PriorShape(shape, train_mu=True, train_sigma=True, train_beta=True)
    start = {n: p.detach().clone() for n, p in prior.named_parameters()}
    opt = torch.optim.Adam(prior.parameters(), lr=0.3)
    bce = torch.nn.functional.binary_cross_entropy
    first = bce(prior(2), target).item()
    for _ in range(30):
        opt.zero_grad()
        loss = bce(prior(2), target)
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    for n, p in prior.named_parameters():
        assert not torch.allclose(p, start[n]), n
    assert torch.all(prior.sigma2 > 0) and prior.beta.item() > 0
    assert np.linalg.norm(prior.mu.detach().numpy() - [6.5, 4.0, 5.0]) < 1.0
    # a huge step towards negative values still leaves Sigma and beta positive
    with torch.no_grad():
        prior.log_sigma2 -= 50.0
        prior.log_beta -= 50.0
    assert torch.all(prior.sigma2 > 0) and prior.beta.item() > 0


@pytest.mark.parametrize("kwargs", [
    {"shape": (4,)}, {"shape": (4, 4, 4, 4)}, {"shape": (4, 0, 4)}, {"shape": (4, 2.0, 4)},
    {"shape": (4, True, 4)}, {"shape": "abc"},
    {"shape": (4, 4, 4), "covariance": "full"},
    {"shape": (4, 4, 4), "mu": (1.0, 2.0)}, {"shape": (4, 4, 4), "mu": (1.0, math.nan, 2.0)},
    {"shape": (4, 4, 4), "sigma2": 0.0}, {"shape": (4, 4, 4), "sigma2": -1.0},
    {"shape": (4, 4, 4), "sigma2": (1.0, -2.0, 1.0)}, {"shape": (4, 4, 4), "sigma2": (1.0, 2.0)},
    {"shape": (4, 4, 4), "covariance": "isotropic", "sigma2": (1.0, 2.0, 3.0)},
    {"shape": (4, 4, 4), "beta": 0.0}, {"shape": (4, 4, 4), "beta": -1.0},
    {"shape": (4, 4, 4), "beta": math.inf}, {"shape": (4, 4, 4), "train_mu": 1},
])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        PriorShape(**kwargs)


@pytest.mark.parametrize("bad", [0, -1, 2.0, True])
def test_bad_batch_size(bad):
    with pytest.raises(ValueError, match="batch_size"):
        PriorShape((4, 4))(bad)


def test_bad_coords():
    with pytest.raises(ValueError, match="coords"):
        PriorShape((4, 4, 4)).density(torch.zeros(5, 2))
