"""Scaling and squaring (Alg. 1), composition order and binary-tree composition.

References: closed forms (constant shifts, ``(I + A/2^T)^(2^T)`` via numpy),
``scipy.linalg.expm`` for linear fields, ``scipy.integrate.solve_ivp`` of the
stationary ODE for a non-linear field, and the identity map for ``exp(v) o exp(-v)``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.linalg import expm

from medssl.geometry.integrate import compose, compose_tree, direct, exp_velocity, integrate, n_squarings
from medssl.geometry.warp import identity_grid, warp


def smooth_field(n: int, sigma: float, vmax: float, seed: int, dtype=torch.float32) -> torch.Tensor:
    """Gaussian-smoothed noise (scipy) rescaled to a largest vector norm of ``vmax`` voxels."""
    rng = np.random.default_rng(seed)
    f = np.stack([ndimage.gaussian_filter(rng.standard_normal((n, n, n)), sigma, mode="wrap") for _ in range(3)])
    f *= vmax / np.linalg.norm(f, axis=0).max()
    return torch.as_tensor(f[None], dtype=dtype)


def linear_field(m: np.ndarray, n: int, dtype=torch.float32) -> torch.Tensor:
    """``v(x) = M x`` on centred voxel coordinates, ``(1, 3, n, n, n)``."""
    x = identity_grid((n, n, n)).double()
    return torch.einsum("ij,jdhw->idhw", torch.as_tensor(m), x)[None].to(dtype)


def constant(shift, n: int = 16) -> torch.Tensor:
    return torch.tensor(shift, dtype=torch.float64).view(1, 3, 1, 1, 1).expand(1, 3, n, n, n).clone()


def interior(t: torch.Tensor, m: int) -> torch.Tensor:
    return t[..., m:-m, m:-m, m:-m]


def _max_norm(v: torch.Tensor) -> float:
    """Largest Euclidean vector norm of a field, in numpy (independent of the module)."""
    return float(np.linalg.norm(v.double().numpy(), axis=1).max())


@pytest.mark.parametrize("direction", [(0.6, 0.0, 0.8), (1.0, 1.0, 1.0)])
@pytest.mark.parametrize("vmax", [0.0, 0.1, 0.3, 0.5, 0.6, 1.0, 1.5, 3.0, 4.0, 4.01, 6.0, 256.0])
def test_n_squarings_brings_the_scaled_field_under_half_a_voxel(vmax, direction):
    """What T is for (Alg. 1): ``phi_0 = v / 2^T`` moves every point by at most half a voxel,
    with no more squarings than that needs.

    Catches a T from the largest component instead of the norm (the diagonal direction), from
    the misprinted ``ceil(log2(max ||v|| + 1))`` or a floor (vmax 3 and 6), or one squaring too many.
    """
    rng = np.random.default_rng(0)
    v = torch.as_tensor(rng.uniform(-1, 1, (1, 3, 4, 4, 4)) * 0.2 * vmax / math.sqrt(3), dtype=torch.float32)
    d = torch.tensor(direction) / torch.tensor(direction).norm()
    v[0, :, 1, 2, 3] = d * vmax  # the largest vector
    t = n_squarings(v)
    norm = _max_norm(v)
    assert isinstance(t, int) and t >= 0
    assert norm / 2**t <= 0.5 + 1e-6
    assert t == 0 or norm / 2 ** (t - 1) > 0.5


def test_n_squarings_serves_the_whole_batch_and_override():
    """One T for the batch: the one its largest sample needs, wherever that sample sits."""
    v = torch.zeros(3, 3, 4, 4, 4)
    v[0, 0, 0, 0, 0], v[1, 2, 3, 3, 3], v[2, 1, 2, 1, 0] = 1.0, -10.0, 0.2
    t = n_squarings(v)
    per_sample = [n_squarings(v[i:i + 1]) for i in range(3)]
    assert t == max(per_sample) and per_sample[0] < t  # not the first sample's
    assert t == n_squarings(v.flip(0))
    assert _max_norm(v) / 2**t <= 0.5 < _max_norm(v) / 2 ** (t - 1)
    assert _max_norm(v[:1]) / 2**t < 0.5 / 4  # the small sample gets the same, finer, steps
    # an explicit count wins over Alg. 1, and exp_velocity uses it: 0 squarings is v itself
    assert n_squarings(v, steps=7) == 7 and n_squarings(v, steps=0) == 0
    assert torch.equal(exp_velocity(v, steps=0), v)
    for bad in (-1, 2.0, True):
        with pytest.raises(ValueError, match="steps"):
            n_squarings(v, steps=bad)
    v[0, 0, 1, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        n_squarings(v)
    with pytest.raises(ValueError, match=r"\(B, 3, D, H, W\)"):
        n_squarings(torch.zeros(1, 2, 4, 4, 4))


def _analytic_velocity(p: np.ndarray, amp: float) -> np.ndarray:
    """A smooth non-linear stationary velocity ``v(p)``, ``p`` of shape ``(ndim, ...)`` in voxels."""
    d = p.shape[0]
    return np.stack([amp * np.sin(2 * np.pi * p[(k + 1) % d] / 40 + 0.3 * (k + 1))
                     * np.cos(2 * np.pi * p[(k + 2) % d] / 53 + 0.2 * k) for k in range(d)])


@pytest.mark.parametrize("shape", [(40, 40), (28, 28, 28)])
@pytest.mark.parametrize("amp", [1.0, 3.0, 6.0])
def test_scaling_and_squaring_matches_ode_integration(shape, amp):
    """Alg. 1 against scipy's ``solve_ivp`` of ``dx/dt = v(x)``, ``x(0) = p``, over unit time (Eq. 1).

    With Alg. 1's T the flow is within 2.5 % of the largest displacement at interior points
    (trilinear sampling of v limits it; measured max 0.019 / 0.054 / 0.11 voxel in 2-D for
    displacements up to 1 / 3 / 5.7 voxels); two squarings fewer is at least twice as far off.
    """
    from scipy.integrate import solve_ivp

    d = len(shape)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"))
    v = torch.as_tensor(_analytic_velocity(grid, amp)[None])
    m = 8
    idx = tuple(np.meshgrid(*[np.arange(m, n - m, 4) for n in shape], indexing="ij"))
    pts = np.stack([i.ravel() for i in idx]).astype(np.float64)  # (d, P) interior voxels

    def rhs(_t, y):
        return _analytic_velocity(y.reshape(d, -1), amp).ravel()

    sol = solve_ivp(rhs, (0.0, 1.0), pts.ravel(), rtol=1e-9, atol=1e-9)
    ref = sol.y[:, -1].reshape(d, -1) - pts
    scale = np.abs(ref).max()

    def err(steps):
        u = exp_velocity(v, steps)[0].numpy()
        return np.abs(u[(slice(None),) + idx].reshape(d, -1) - ref).max()

    t = n_squarings(v)
    assert t >= 2
    e_alg1, e_fewer = err(None), err(t - 2)
    assert e_alg1 < 0.025 * scale, (e_alg1, scale)
    assert e_fewer > 2 * e_alg1, (e_fewer, e_alg1)


def test_exp_of_zero_is_exactly_identity():
    v = torch.zeros(2, 3, 16, 16, 16)
    for steps in (None, 0, 4):
        assert torch.equal(exp_velocity(v, steps), v)


def test_compose_order_constant_shifts_and_linear_field():
    a, b = constant([1.0, 0.0, 2.0]), constant([0.0, -1.0, 0.5])
    assert torch.allclose(compose(a, b), a + b)  # translations commute
    m = np.array([[0.05, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, -0.04]])
    lin = linear_field(m, 16, torch.float64)
    x = identity_grid((16, 16, 16)).double()[None]
    # (lin o a)(x) = a + M (x + a): the shift is applied first, so M also acts on it.
    exp_la = a + torch.einsum("ij,bjdhw->bidhw", torch.as_tensor(m), x + a)
    # (a o lin)(x) = M x + a.
    exp_al = lin + a
    got_la, got_al = compose(lin, a), compose(a, lin)
    assert torch.allclose(interior(got_la, 3), interior(exp_la, 3), atol=1e-9)
    assert torch.allclose(interior(got_al, 3), interior(exp_al, 3), atol=1e-9)
    assert not torch.allclose(interior(got_la, 3), interior(got_al, 3), atol=1e-2)
    # Three fields, fields[0] first: lin o b o a = (a + b) + M (x + a + b).
    exp3 = a + b + torch.einsum("ij,bjdhw->bidhw", torch.as_tensor(m), x + a + b)
    assert torch.allclose(interior(compose_tree([a, b, lin]), 4), interior(exp3, 4), atol=1e-9)


def test_warp_by_composition_is_warp_by_u_then_v():
    # Linear image c.x and affine fields: trilinear sampling is exact, so the interior is exact.
    n = 16
    x = identity_grid((n, n, n)).double()[None]
    img = torch.einsum("j,bjdhw->bdhw", torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64), x)[:, None]
    a = constant([1.0, -0.5, 0.25], n)
    lin = linear_field(np.array([[0.0, 0.05, 0.0], [0.0, 0.0, -0.05], [0.04, 0.0, 0.0]]), n, torch.float64)
    one = warp(img, compose(a, lin))
    assert torch.allclose(interior(one, 3), interior(warp(warp(img, a), lin), 3), atol=1e-9)
    assert not torch.allclose(interior(one, 3), interior(warp(warp(img, lin), a), 3), atol=1e-2)


def test_exp_linear_field_matches_expm():
    a = np.random.default_rng(1).normal(0.0, 0.03, (3, 3))
    n, m = 24, 4
    v = linear_field(a, n)
    x = identity_grid((n, n, n)).double()
    for steps, tol in ((None, 5e-3), (6, 5e-4), (10, 5e-5)):  # measured 2.6e-3, 1.6e-4, 1.0e-5
        t = n_squarings(v, steps)
        u = exp_velocity(v, steps).double()
        ref = torch.einsum("ij,jdhw->idhw", torch.as_tensor(expm(a) - np.eye(3)), x)[None]
        # Trilinear sampling reproduces linear fields, so the interior is exactly (I + A/2^T)^(2^T) - I.
        power = np.linalg.matrix_power(np.eye(3) + a / 2**t, 2**t) - np.eye(3)
        closed = torch.einsum("ij,jdhw->idhw", torch.as_tensor(power), x)[None]
        assert interior((u - closed).abs(), m).max() < 1e-5
        assert interior((u - ref).abs(), m).max() < tol
    assert n_squarings(v) == 2


def test_exp_inverse_consistency_on_smooth_field():
    n, m = 24, 4
    v = smooth_field(n, 4, 2.5, 0)  # max norm 2.5 voxels, T = 3 by Alg. 1

    def err(steps):
        e = compose(exp_velocity(v, steps), exp_velocity(-v, steps)).norm(dim=1)
        return interior(e, m)

    alg1, fine = err(None), err(8)
    assert alg1.mean() < 0.05 and alg1.max() < 0.2  # measured mean 0.041, max 0.125
    assert fine.mean() < 0.02 and fine.max() < 0.08  # measured mean 0.015, max 0.051
    no_int = interior(compose(v, -v).norm(dim=1), m)
    assert no_int.mean() > 3 * alg1.mean()  # the field itself is far from its own inverse


def test_gradients_reach_the_velocity():
    v = smooth_field(16, 3, 2.0, 4).requires_grad_(True)
    exp_velocity(v).square().sum().backward()
    assert torch.isfinite(v.grad).all() and v.grad.abs().max() > 0


def test_integrate_by_name_and_checks():
    v = smooth_field(16, 3, 2.0, 5)
    assert integrate(v, "direct") is v and direct(v, steps=3) is v
    assert torch.equal(integrate(v, "ss", 3), exp_velocity(v, 3))
    with pytest.raises(ValueError, match="euler"):
        integrate(v, "euler")
    with pytest.raises(ValueError, match="same shape"):
        compose(v, v[..., :8])
    with pytest.raises(ValueError, match="empty"):
        compose_tree([])


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_compose_tree_equals_sequential(k):
    fields = [exp_velocity(smooth_field(16, 4, 0.7, 10 + i)) for i in range(k)]
    seq, rev = fields[0], fields[-1]
    for f in fields[1:]:
        seq = compose(f, seq)  # fields[0] first
    for f in fields[-2::-1]:
        rev = compose(f, rev)  # the opposite order
    tree = compose_tree(fields)
    if k == 1:
        assert tree is fields[0]
    elif k == 2:
        assert torch.equal(tree, seq)
    else:
        d, r = interior((tree - seq).norm(dim=1), 4), interior((tree - rev).norm(dim=1), 4)
        # Interpolation error only, measured mean <= 0.010, max <= 0.019 voxel; reversed order mean >= 0.059.
        assert d.mean() < 0.015 and d.max() < 0.03
        assert d.mean() < 0.25 * r.mean()
