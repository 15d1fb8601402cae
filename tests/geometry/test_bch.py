"""BCH combination of velocity fields (paper Eq. 4) against scipy's matrix logarithm.

For linear fields ``v_A(x) = A x`` the flow is ``exp(v_A)(x) = expm(A) x`` and
``exp(v_A) o exp(v_B) = expm(A) expm(B) x``, so ``log(exp(v_A) o exp(v_B))`` is
the linear field of ``L = logm(expm(A) @ expm(B))`` (scipy). Finite
differences are exact on linear fields (also one-sided at the border), so the
whole volume only shows the truncation error of the series.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.linalg import expm, logm

from medssl.geometry.bch import bch, bch_combine, lie_bracket
from medssl.geometry.integrate import compose, exp_velocity
from medssl.geometry.warp import identity_grid

N = 16


def lin(m: np.ndarray, n: int = N) -> torch.Tensor:
    x = identity_grid((n, n, n)).double()
    return torch.einsum("ij,jdhw->idhw", torch.as_tensor(m, dtype=torch.float64), x)[None]


def log_of_product(*mats: np.ndarray) -> np.ndarray:
    """``logm(expm(M0) @ expm(M1) @ ...)``: ``mats[0]`` is the outer (last applied) map."""
    p = np.eye(3)
    for m in mats:
        p = p @ expm(m)
    out = logm(p)
    assert np.abs(out.imag).max() < 1e-12
    return out.real


def smooth_field(n: int, sigma: float, vmax: float, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    f = np.stack([ndimage.gaussian_filter(rng.standard_normal((n, n, n)), sigma, mode="wrap") for _ in range(3)])
    f *= vmax / np.linalg.norm(f, axis=0).max()
    return torch.as_tensor(f[None], dtype=torch.float64)


@pytest.fixture(scope="module")
def ab():
    rng = np.random.default_rng(0)
    return rng.normal(0.0, 0.2, (3, 3)), rng.normal(0.0, 0.2, (3, 3))


def test_bracket_of_linear_fields_is_matrix_commutator(ab):
    a, b = ab
    # [Ax, Bx] = (Du) v - (Dv) u = A B x - B A x.
    assert torch.allclose(lie_bracket(lin(a), lin(b)), lin(a @ b - b @ a), atol=1e-12)
    assert torch.allclose(lie_bracket(lin(a), lin(b)), -lie_bracket(lin(b), lin(a)), atol=1e-12)
    assert lie_bracket(lin(a), lin(a)).abs().max() < 1e-12


def test_bracket_of_constant_and_linear_field():
    # u = c (constant), v = B x: [u, v] = 0 * v - B c = -B c everywhere.
    b = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 2.0], [-1.0, 0.0, 0.0]])
    c = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    u = c.view(1, 3, 1, 1, 1).expand(1, 3, N, N, N)
    expected = -(torch.as_tensor(b) @ c).view(1, 3, 1, 1, 1).expand(1, 3, N, N, N)
    assert torch.allclose(lie_bracket(u, lin(b)), expected, atol=1e-12)


@pytest.mark.parametrize(("order", "lo", "hi"), [(1, 3.0, 4.5), (2, 6.0, 9.0), (3, 12.0, 18.0)])
def test_bch_truncation_error_order(ab, order, lo, hi):
    """Error of the order-k series is O(eps^(k+1)): halving eps divides it by ~2^(k+1)."""
    a, b = ab
    errs = []
    for eps in (1.0, 0.5, 0.25):
        z = bch(lin(eps * a), lin(eps * b), order)
        errs.append(float((z - lin(log_of_product(eps * a, eps * b))).abs().max()))
    ratios = [errs[0] / errs[1], errs[1] / errs[2]]
    # measured: order 1 -> 3.7, 3.9; order 2 -> 7.8, 7.9; order 3 -> 16.0, 16.0
    assert all(lo < r < hi for r in ratios), (errs, ratios)
    if order == 2:
        assert all(r > 5 for r in ratios) and errs[0] < 0.11  # measured 0.099 voxel at eps = 1


def test_bch_order_is_exp_u_after_exp_v(ab):
    a, b = ab
    right = float((bch(lin(a), lin(b), 2) - lin(log_of_product(a, b))).abs().max())
    wrong = float((bch(lin(a), lin(b), 2) - lin(log_of_product(b, a))).abs().max())
    assert right < 0.11 and wrong > 1.0  # measured 0.099 vs 1.51


def test_bch_combine_linear_fields_tree():
    rng = np.random.default_rng(3)
    ms = [rng.normal(0.0, 0.1, (3, 3)) for _ in range(4)]
    exact = lin(log_of_product(*ms[::-1]))  # fields[0] applied first = innermost
    errs = [float((bch_combine([lin(m) for m in ms], o) - exact).abs().max()) for o in (1, 2, 3)]
    assert errs[0] > 0.4 and errs[1] < 0.06 and errs[2] < 0.008  # measured 0.61, 0.043, 0.0051
    reversed_err = float((bch_combine([lin(m) for m in ms], 2) - lin(log_of_product(*ms))).abs().max())
    assert reversed_err > 1.0  # measured 1.25
    # Tree shape: [f0, f1, f2, f3] -> bch(bch(f3, f2), bch(f1, f0)).
    fs = [lin(m) for m in ms]
    tree = bch(bch(fs[3], fs[2], 2), bch(fs[1], fs[0], 2), 2)
    assert torch.allclose(bch_combine(fs, 2), tree, atol=1e-12)
    assert bch_combine(fs[:1], 2) is fs[0]


def test_bch_on_smooth_fields_approaches_composition():
    """exp(bch(u, v)) vs exp(u) o exp(v) on smooth non-linear fields (24^3, interior)."""
    n, m = 24, 4
    u, v = smooth_field(n, 4, 2.0, 0), smooth_field(n, 4, 2.0, 10)
    ref = compose(exp_velocity(u, 8), exp_velocity(v, 8))

    def err(z):
        return float((exp_velocity(z, 8) - ref).norm(dim=1)[0, m:-m, m:-m, m:-m].mean())

    e1, e2, e3 = err(bch(u, v, 1)), err(bch(u, v, 2)), err(bch(u, v, 3))
    assert e2 < 0.03 and e2 < 0.3 * e1 and e3 <= e2 * 1.05  # measured 0.088, 0.015, 0.012
    assert err(bch(v, u, 2)) > e1  # the opposite order is worse than no correction


def test_bch_checks():
    u = torch.zeros(1, 3, 4, 4, 4)
    for bad in (0, 4, True, 2.0):
        with pytest.raises(ValueError, match="order"):
            bch(u, u, bad)
    with pytest.raises(ValueError, match="same shape"):
        lie_bracket(u, u[..., :3])
    with pytest.raises(ValueError, match="empty"):
        bch_combine([])
    with pytest.raises(ValueError, match=r"fields\[1\]"):
        bch_combine([u, u[..., :3]])
    with pytest.raises(ValueError, match="at least 2 voxels"):
        lie_bracket(u[..., :1], u[..., :1])
