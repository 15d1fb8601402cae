"""Tests of the Models Genesis appearance transforms against their definitions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from medssl.transforms.genesis import (
    BezierIntensity,
    GenesisDamage,
    LocalPixelShuffle,
    Painting,
    bezier_curve,
    bezier_intensity_map,
)

torch.set_num_threads(1)

P0, P3 = (0.0, 0.0), (1.0, 1.0)


def _image(shape=(1, 16, 16, 16), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def _union(boxes, spatial) -> np.ndarray:
    mask = np.zeros(spatial, dtype=bool)
    for box in boxes:
        mask[box] = True
    return mask


# --- Bézier curve and intensity map ----------------------------------------


def test_bezier_curve_hand_values():
    p1, p2 = (0.2, 0.8), (0.6, 0.1)
    curve = bezier_curve([P0, p1, p2, P3], n=5)  # t = 0, 1/4, 1/2, 3/4, 1
    # B(1/2) = (P0 + 3 P1 + 3 P2 + P3) / 8
    np.testing.assert_allclose(curve[2], [0.425, 0.4625], atol=1e-12)
    # B(1/4) = (27 P0 + 27 P1 + 9 P2 + P3) / 64
    np.testing.assert_allclose(curve[1], [(27 * 0.2 + 9 * 0.6 + 1) / 64, (27 * 0.8 + 9 * 0.1 + 1) / 64], atol=1e-12)
    np.testing.assert_array_equal(curve[0], P0)
    np.testing.assert_array_equal(curve[-1], P3)


@pytest.mark.parametrize("seed", range(5))
def test_bezier_curve_equals_power_basis_polynomial(seed):
    pts = np.random.default_rng(seed).random((4, 2))
    t = np.linspace(0, 1, 37)
    q0, q1, q2, q3 = pts
    # power basis: P0 + 3t(P1-P0) + 3t^2(P0-2P1+P2) + t^3(P3-3P2+3P1-P0)
    coeffs = [q3 - 3 * q2 + 3 * q1 - q0, 3 * (q0 - 2 * q1 + q2), 3 * (q1 - q0), q0]
    expected = np.stack([np.polyval([c[d] for c in coeffs], t) for d in range(2)], axis=1)
    np.testing.assert_allclose(bezier_curve(pts, 37), expected, atol=1e-12)


def test_bezier_curve_argument_checks():
    with pytest.raises(ValueError, match="shape"):
        bezier_curve([0.0, 1.0], 10)
    with pytest.raises(ValueError, match="n must"):
        bezier_curve([P0, P3], 1)


def test_straight_control_points_give_the_identity_map():
    v = np.linspace(0, 1, 101)
    np.testing.assert_allclose(bezier_intensity_map(v, (1 / 3, 1 / 3), (2 / 3, 2 / 3)), v, atol=1e-12)
    np.testing.assert_allclose(bezier_intensity_map(v, (1 / 3, 1 / 3), (2 / 3, 2 / 3), flip=True), 1 - v, atol=1e-12)


@pytest.mark.parametrize("seed", range(20))
def test_intensity_map_is_monotonic_with_fixed_ends(seed):
    rng = np.random.default_rng(seed)
    p1, p2 = rng.random(2), rng.random(2)
    if seed == 0:
        p1, p2 = (1.0, 0.0), (0.0, 1.0)  # extreme control points
    v = np.linspace(0, 1, 2001)
    up = bezier_intensity_map(v, p1, p2)
    down = bezier_intensity_map(v, p1, p2, flip=True)
    assert np.all(np.diff(up) >= 0) and np.all(np.diff(down) <= 0)
    np.testing.assert_allclose([up[0], up[-1], down[0], down[-1]], [0, 1, 1, 0], atol=1e-12)
    assert up.min() >= 0 and up.max() <= 1


def test_intensity_map_reads_the_curve_as_a_graph():
    """y is the curve's y at the curve's x; the flipped map pairs x(t) with y(1 - t)."""
    p1, p2 = (0.7, 0.2), (0.9, 0.4)
    curve = bezier_curve([P0, p1, p2, P3], 201)
    np.testing.assert_allclose(bezier_intensity_map(curve[:, 0], p1, p2, n=201), curve[:, 1], atol=1e-12)
    np.testing.assert_allclose(bezier_intensity_map(curve[:, 0], p1, p2, True, n=201), curve[::-1, 1], atol=1e-12)


def test_bezier_transform_applies_the_drawn_map():
    x = _image()
    t = BezierIntensity(prob=1.0)
    t.set_random_state(4)
    y = t(x)
    expected = bezier_intensity_map(x, t.controls[0], t.controls[1], t.flip, t.n_points)
    np.testing.assert_allclose(y, expected.astype(np.float32))
    assert not np.array_equal(y, x)


# --- local pixel shuffling --------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 16, 16, 16), (2, 12, 20, 8)])
def test_shuffle_preserves_values_and_touches_only_blocks(shape):
    x = _image(shape, seed=1)
    t = LocalPixelShuffle(prob=1.0, max_blocks=300, max_block_frac=0.25)
    t.set_random_state(0)
    y = t(x)
    assert len(t.blocks) == 300  # min_blocks defaults to max_blocks, as published
    for c in range(shape[0]):
        np.testing.assert_array_equal(np.sort(y[c], axis=None), np.sort(x[c], axis=None))
    # all channels move together: the multiset of voxel vectors is preserved too
    vx, vy = x.reshape(shape[0], -1).T, y.reshape(shape[0], -1).T
    np.testing.assert_array_equal(vx[np.lexsort(vx.T)], vy[np.lexsort(vy.T)])
    inside = _union(t.blocks, shape[1:])
    changed = np.any(y != x, axis=0)
    assert changed.any() and not (changed & ~inside).any()


def test_shuffle_block_sizes_and_counts():
    t = LocalPixelShuffle(prob=1.0, max_blocks=50, max_block_frac=0.3, min_blocks=10)
    spatial = (10, 20, 3)
    counts = set()
    for seed in range(30):
        t.set_random_state(seed)
        t(np.zeros((1, *spatial), dtype=np.float32))
        counts.add(len(t.blocks))
        for box in t.blocks:
            # at most floor(dim * 0.3), but 2 where that is smaller, and never beyond dim
            for s, dim, most in zip(box, spatial, (3, 6, 2)):
                assert 0 <= s.start and s.stop <= dim and 1 <= s.stop - s.start <= most
    assert min(counts) >= 10 and max(counts) <= 50 and len(counts) > 5


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (1, 1, 1, 2), (1, 4, 4, 4), (1, 2, 9, 3)])
def test_shuffle_is_safe_on_small_volumes(shape):
    x = _image(shape)
    t = LocalPixelShuffle(prob=1.0, max_blocks=20)
    t.set_random_state(0)
    y = t(x)
    np.testing.assert_array_equal(np.sort(y, axis=None), np.sort(x, axis=None))
    if x.size > 1:
        assert not np.array_equal(y, x)  # blocks reach 2 voxels a side, so it still shuffles


# --- painting ---------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_inpainting_changes_only_the_boxes(seed):
    x = _image((2, 16, 16, 16), seed)
    t = Painting(prob=1.0, inpaint_rate=1.0)
    t.set_random_state(seed)
    y = t(x)
    assert t.inpaint and 1 <= len(t.boxes) <= 5
    inside = _union(t.boxes, x.shape[1:])
    np.testing.assert_array_equal(y[:, ~inside], x[:, ~inside])
    assert np.all(y[:, inside] != x[:, inside])  # U[0, 1) noise never equals the image
    for box in t.boxes:  # sides in [1/6, 1/3] of 16 -> [2, 5], 3 voxels from the border
        for s in box:
            assert 2 <= s.stop - s.start <= 5 and s.start >= 3 and s.stop <= 13


@pytest.mark.parametrize("seed", range(6))
def test_outpainting_keeps_the_box_interiors(seed):
    x = _image((2, 14, 16, 21), seed)
    t = Painting(prob=1.0, inpaint_rate=0.0)
    t.set_random_state(seed)
    y = t(x)
    assert not t.inpaint
    inside = _union(t.boxes, x.shape[1:])
    np.testing.assert_array_equal(y[:, inside], x[:, inside])
    assert np.all(y[:, ~inside] != x[:, ~inside])
    for box in t.boxes:  # sides in [3/7, 4/7] of each dimension
        for s, dim in zip(box, x.shape[1:]):
            assert np.floor(3 * dim / 7) <= s.stop - s.start <= np.floor(4 * dim / 7)


@pytest.mark.parametrize("continue_prob, expected", [(0.0, 1), (1.0, 4)])
def test_box_count(continue_prob, expected):
    t = Painting(prob=1.0, max_boxes=4, continue_prob=continue_prob)
    for seed in range(5):
        t.set_random_state(seed)
        t(_image((1, 8, 8, 8)))
        assert len(t.boxes) == expected


def test_painting_is_safe_on_small_volumes():
    for shape in [(1, 1, 2, 3), (1, 3, 3, 3)]:
        for rate in (0.0, 1.0):
            y = Painting(prob=1.0, inpaint_rate=rate)(_image(shape))
            assert y.shape == shape and 0 <= y.min() and y.max() <= 1


# --- all transforms ---------------------------------------------------------


def _all(prob):
    return [
        BezierIntensity(prob),
        LocalPixelShuffle(prob, max_blocks=200),
        Painting(prob),
        GenesisDamage(prob, prob, prob, max_blocks=200),
    ]


@pytest.mark.parametrize("index", range(4))
def test_prob_zero_is_identity(index):
    x = _image()
    t = _all(0.0)[index]
    for seed in range(5):
        t.set_random_state(seed)
        y = t(x)
        assert y is not x
        np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize("index", range(4))
def test_prob_one_always_changes_and_stays_in_range(index):
    t = _all(1.0)[index]
    for seed in range(10):
        x = _image(seed=seed)
        t.set_random_state(seed)
        y = t(x)
        assert not np.array_equal(y, x)
        assert y.dtype == np.float32 and y.shape == x.shape
        assert y.min() >= 0 and y.max() <= 1


@pytest.mark.parametrize("index", range(4))
def test_same_seed_same_output(index):
    x = _image()
    a, b = _all(0.7)[index], _all(0.7)[index]
    outs = []
    for seed in range(4):
        a.set_random_state(seed)
        b.set_random_state(seed)
        ya, yb = a(x), b(x)
        np.testing.assert_array_equal(ya, yb)
        outs.append(ya)
    assert any(not np.array_equal(outs[0], o) for o in outs[1:])


@pytest.mark.parametrize("index", range(3))
def test_randomize_false_reuses_the_draw(index):
    x = _image()
    t = _all(1.0)[index]
    t.set_random_state(2)
    y = t(x)
    np.testing.assert_array_equal(t(x, randomize=False), y)


def test_applied_fractions_follow_the_probabilities():
    x = _image((1, 8, 8, 8))
    t = BezierIntensity(prob=0.3)
    t.set_random_state(0)
    applied = np.mean([not np.array_equal(t(x), x) for _ in range(600)])
    assert 0.25 < applied < 0.35
    p = Painting(prob=1.0, inpaint_rate=0.2)
    p.set_random_state(0)
    inpaint = []
    for _ in range(600):
        p(x)
        inpaint.append(p.inpaint)
    assert 0.15 < np.mean(inpaint) < 0.25


def test_composite_never_modifies_its_input_and_keeps_the_type():
    x = _image((1, 16, 16, 16))
    xt = torch.from_numpy(x.copy())
    g = GenesisDamage(1.0, 1.0, 1.0, max_blocks=200)
    g.set_random_state(0)
    for _ in range(5):
        y, yt = g(x), g(xt)
        assert isinstance(yt, torch.Tensor) and yt.dtype == torch.float32
        assert yt.min() >= 0 and yt.max() <= 1
    np.testing.assert_array_equal(x, _image((1, 16, 16, 16)))
    np.testing.assert_array_equal(xt.numpy(), x)


def test_composite_order_is_intensity_shuffle_paint():
    x = _image()
    g = GenesisDamage(1.0, 1.0, 1.0, max_blocks=100)
    g.set_random_state(5)
    y = g(x)
    replay = g.paint(g.shuffle(g.nonlinear(x, randomize=False), randomize=False), randomize=False)
    np.testing.assert_array_equal(y, replay)
    wrong = g.nonlinear(g.paint(x, randomize=False), randomize=False)
    assert not np.array_equal(y, wrong)


def test_composite_accepts_the_params_yaml_arguments():
    params = yaml.safe_load((Path(__file__).parents[2] / "params.yaml").read_text())
    args = params["methods"]["genesis"]["args"]
    g = GenesisDamage(**args, max_blocks=50)
    assert (g.nonlinear.prob, g.shuffle.prob, g.paint.prob, g.paint.inpaint_rate) == (0.9, 0.5, 0.9, 0.2)
    defaults = GenesisDamage()
    assert (defaults.nonlinear.prob, defaults.shuffle.prob, defaults.paint.prob) == (0.9, 0.5, 0.9)
    shuffle = defaults.shuffle
    assert (defaults.paint.inpaint_rate, shuffle.max_blocks, shuffle.max_block_frac) == (0.2, 10000, 0.1)


@pytest.mark.parametrize(
    "build, word",
    [
        (lambda: BezierIntensity(prob=1.5), "prob"),
        (lambda: BezierIntensity(flip_prob=-0.1), "flip_prob"),
        (lambda: LocalPixelShuffle(max_blocks=0), "max_blocks"),
        (lambda: LocalPixelShuffle(max_blocks=5, min_blocks=6), "min_blocks"),
        (lambda: LocalPixelShuffle(max_block_frac=0.0), "max_block_frac"),
        (lambda: Painting(inpaint_rate=2.0), "inpaint_rate"),
        (lambda: Painting(inpaint_size=(0.5, 0.2)), "inpaint_size"),
        (lambda: Painting(max_boxes=0), "max_boxes"),
        (lambda: GenesisDamage(paint_prob=-1.0), "prob"),
    ],
)
def test_invalid_arguments(build, word):
    with pytest.raises(ValueError, match=word):
        build()


def test_invalid_inputs():
    t = BezierIntensity(prob=1.0)
    with pytest.raises(ValueError, match="dtype"):
        t(np.zeros((1, 4, 4, 4), dtype=np.int16))
    with pytest.raises(ValueError, match="channel-first"):
        t(np.zeros(4, dtype=np.float32))
