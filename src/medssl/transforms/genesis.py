"""Models Genesis appearance transforms (the damage a restoration pretext undoes).

Models Genesis (Zhou et al., MICCAI 2019; MedIA 2021, Sec. 2.1 and Fig. 2)
learns by restoring an image from a damaged copy; GVSL (He et al., CVPR 2023,
supplement Sec. C) damages image A the same way. The damage is, in order:

1. a non-linear intensity map by a random monotonic cubic Bézier curve
   (:class:`BezierIntensity`, published probability 0.9, half of the maps
   flipped to decreasing);
2. local pixel shuffling inside many small random blocks
   (:class:`LocalPixelShuffle`, probability 0.5, 10000 blocks of at most 1/10
   of each dimension);
3. painting (:class:`Painting`, probability 0.9): in-painting (a few boxes
   inside replaced by uniform noise) with probability ``inpaint_rate`` = 0.2,
   otherwise out-painting (everything outside a few boxes replaced by noise).

Steps 1 and 2 commute (a voxel-wise map and a permutation of voxels), so the
published code's order (shuffle first) gives the same distribution.

Deliberate differences from the published code: blocks are shuffled one after
the other in the progressively shuffled image, so the multiset of voxel values
is preserved exactly (the published code reads every block from the original
and overwrites overlaps, which duplicates and drops values); block and box
sizes are clamped to the volume (blocks may reach 2 voxels a side on small
volumes), so any size >= 1 works; painting always paints
at least one box (the published in-painting paints none 5 % of the time).

Every transform takes a float channel-first array (numpy or torch,
``(C, *spatial)``, values in [0, 1]), returns a damaged copy of the same type
(the input is never modified) and is reproducible with
``set_random_state(seed)``. All channels share the same curve, blocks and boxes.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import comb

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.transforms import Compose, RandomizableTransform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_numpy

Box = tuple[slice, ...]


def bezier_curve(points: Sequence[Sequence[float]] | np.ndarray, n: int = 1000) -> np.ndarray:
    """Points of the Bézier curve with control points ``points`` at ``n`` equally spaced t.

    B(t) = sum_i C(k, i) (1 - t)^(k - i) t^i P_i, t in [0, 1]; for the cubic
    curve of Models Genesis (k = 3) that is
    (1-t)^3 P0 + 3 (1-t)^2 t P1 + 3 (1-t) t^2 P2 + t^3 P3.

    Args:
        points: (k + 1, dims) control points, P0 first; k >= 1.
        n: number of curve points (t = linspace(0, 1, n)), >= 2.

    Returns:
        (n, dims) array, from B(0) = P0 to B(1) = Pk.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[0] < 2:
        raise ValueError(f"points must be a (k + 1, dims) array with k >= 1, got shape {pts.shape}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"n must be an integer >= 2, got {n!r}")
    k = pts.shape[0] - 1
    t = np.linspace(0.0, 1.0, int(n))[:, None]
    i = np.arange(k + 1)[None, :]
    bernstein = np.array([comb(k, j) for j in range(k + 1)])[None, :] * (1 - t) ** (k - i) * t**i
    return bernstein @ pts


def bezier_intensity_map(
    values: np.ndarray, p1: Sequence[float], p2: Sequence[float], flip: bool = False, n: int = 1000
) -> np.ndarray:
    """Map intensities in [0, 1] through the cubic Bézier curve (0,0), p1, p2, (1,1).

    The curve is read as a graph x -> y: its points are sorted by x and y is
    interpolated at each value (``np.interp``, which clamps outside [0, 1]).
    For control points in [0, 1]^2 both x(t) and y(t) are non-decreasing, so
    the map is monotonic with 0 -> 0 and 1 -> 1. ``flip`` pairs the sorted x
    with the y sorted in decreasing order, i.e. x(t) -> y(1 - t): the
    published "flip" (0 -> 1, 1 -> 0, non-increasing).
    """
    curve = bezier_curve([(0.0, 0.0), tuple(p1), tuple(p2), (1.0, 1.0)], n)
    xs, ys = np.sort(curve[:, 0]), np.sort(curve[:, 1])
    if flip:
        ys = ys[::-1]
    return np.interp(values, xs, ys)


def _check_prob(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return float(value)


def _check_count(name: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_range(name: str, value: Sequence[float], high: float) -> tuple[float, float]:
    lo, hi = (float(v) for v in value)
    if not 0.0 < lo <= hi <= high:
        raise ValueError(f"{name} must be (low, high) with 0 < low <= high <= {high}, got {tuple(value)!r}")
    return lo, hi


class _Damage(RandomizableTransform):
    """Shared call logic: copy to numpy, randomise from the shape, damage in place, convert back."""

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        """Return a damaged copy of ``img`` (C, *spatial); ``randomize=False`` reuses the last draw."""
        arr = np.array(convert_to_numpy(img), copy=True)
        if arr.ndim < 2:
            raise ValueError(f"expected a channel-first array (C, *spatial), got shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"expected a floating-point image in [0, 1], got dtype {arr.dtype}")
        if randomize:
            self.randomize(arr)
        if self._do_transform:
            self._apply(arr)
        out, *_ = convert_to_dst_type(arr, img)
        return out

    def _apply(self, arr: np.ndarray) -> None:
        raise NotImplementedError


class BezierIntensity(_Damage):
    """Non-linear intensity transformation by a random cubic Bézier curve (Models Genesis Sec. 2.1).

    Args:
        prob: probability of applying the map.
        flip_prob: probability that the map is the decreasing (flipped) one.
        n_points: points sampled on the curve for interpolation.
    """

    def __init__(self, prob: float = 0.9, flip_prob: float = 0.5, n_points: int = 1000) -> None:
        super().__init__(_check_prob("prob", prob))
        self.flip_prob = _check_prob("flip_prob", flip_prob)
        self.n_points = _check_count("n_points", n_points, 2)
        self.controls = np.array([[1 / 3, 1 / 3], [2 / 3, 2 / 3]])
        self.flip = False

    def randomize(self, data: NdarrayOrTensor | None = None) -> None:
        """Draw whether to apply, the control points P1, P2 in [0, 1]^2 and the flip."""
        super().randomize(None)
        if self._do_transform:
            self.controls = self.R.rand(2, 2)
            self.flip = bool(self.R.rand() < self.flip_prob)

    def _apply(self, arr: np.ndarray) -> None:
        arr[...] = bezier_intensity_map(arr, self.controls[0], self.controls[1], self.flip, self.n_points)


class LocalPixelShuffle(_Damage):
    """Shuffle the voxels inside many small random blocks (Models Genesis Sec. 2.1).

    The number of blocks is drawn uniformly from [min_blocks, max_blocks]; each
    block's size along a dimension of length s is drawn from
    [1, min(s, max(2, floor(s * max_block_frac)))] and it lies inside the
    volume. The floor of 2 keeps the shuffle effective on small volumes (the
    published code uses [1, floor(s / 10)], a no-op below 20 voxels and an
    error below 10); from 20 voxels on (at 1/10) the two agree.

    Args:
        prob: probability of shuffling.
        max_blocks: most blocks (published: 10000).
        max_block_frac: largest block size as a fraction of each dimension
            (published: 1/10).
        min_blocks: fewest blocks; defaults to ``max_blocks`` (the published
            code always uses exactly 10000).
    """

    def __init__(
        self, prob: float = 0.5, max_blocks: int = 10000, max_block_frac: float = 0.1, min_blocks: int | None = None
    ) -> None:
        super().__init__(_check_prob("prob", prob))
        self.max_blocks = _check_count("max_blocks", max_blocks)
        self.min_blocks = self.max_blocks if min_blocks is None else _check_count("min_blocks", min_blocks)
        if self.min_blocks > self.max_blocks:
            raise ValueError(f"min_blocks={min_blocks} exceeds max_blocks={max_blocks}")
        if not 0.0 < max_block_frac <= 1.0:
            raise ValueError(f"max_block_frac must be in (0, 1], got {max_block_frac!r}")
        self.max_block_frac = float(max_block_frac)
        self._starts = np.zeros((0, 0), dtype=int)
        self._sizes = np.zeros((0, 0), dtype=int)
        self._order = np.zeros(0, dtype=int)
        self._offsets = np.zeros(1, dtype=int)

    @property
    def blocks(self) -> list[Box]:
        """The blocks of the last draw, in the order they are shuffled."""
        return [
            tuple(slice(int(a), int(a + s)) for a, s in zip(start, size))
            for start, size in zip(self._starts, self._sizes)
        ]

    def randomize(self, data: NdarrayOrTensor) -> None:
        """Draw whether to shuffle, the blocks (see ``blocks``) and their permutations."""
        super().randomize(None)
        spatial = np.asarray(data.shape[1:])
        self._starts = self._sizes = np.zeros((0, spatial.size), dtype=int)
        self._order, self._offsets = np.zeros(0, dtype=int), np.zeros(1, dtype=int)
        if not self._do_transform:
            return
        n = int(self.R.randint(self.min_blocks, self.max_blocks + 1))
        largest = np.minimum(spatial, np.maximum(2, np.floor(spatial * self.max_block_frac).astype(int)))
        self._sizes = self.R.randint(1, largest + 1, size=(n, spatial.size))
        self._starts = self.R.randint(0, spatial - self._sizes + 1)
        # one uniform key per voxel of every block; sorting the keys within each
        # block gives independent uniform permutations in a single call
        counts = np.prod(self._sizes, axis=1)
        self._offsets = np.concatenate([[0], np.cumsum(counts)])
        owner = np.repeat(np.arange(n), counts)
        self._order = np.lexsort((self.R.rand(int(self._offsets[-1])), owner)) - self._offsets[owner]

    def _apply(self, arr: np.ndarray) -> None:
        channels = arr.shape[0]
        bounds = self._offsets.tolist()
        for i, (start, size) in enumerate(zip(self._starts.tolist(), self._sizes.tolist())):
            view = arr[(slice(None), *(slice(a, a + s) for a, s in zip(start, size)))]
            perm = self._order[bounds[i] : bounds[i + 1]]
            view[...] = view.reshape(channels, -1)[:, perm].reshape(view.shape)


class Painting(_Damage):
    """In-painting or out-painting with uniform noise (Models Genesis Sec. 2.1).

    A first box is always drawn and up to ``max_boxes - 1`` more, each with
    probability ``continue_prob`` (the published 0.95). In-painting replaces
    the boxes by U[0, 1) noise (box sides in ``inpaint_size`` of each dimension,
    published [1/6, 1/3]); out-painting replaces everything outside the boxes
    by noise and keeps the boxes (sides in ``outpaint_size``, published
    [3/7, 4/7]). Boxes keep ``margin`` voxels from the border where they fit.

    Args:
        prob: probability of painting.
        inpaint_rate: probability that painting is in-painting.
        max_boxes: most boxes (published: 5).
        inpaint_size: (low, high) box side as a fraction of each dimension.
        outpaint_size: (low, high) box side as a fraction of each dimension.
        continue_prob: probability of drawing each further box.
        margin: voxels kept between a box and the border where possible.
    """

    def __init__(
        self,
        prob: float = 0.9,
        inpaint_rate: float = 0.2,
        max_boxes: int = 5,
        inpaint_size: Sequence[float] = (1 / 6, 1 / 3),
        outpaint_size: Sequence[float] = (3 / 7, 4 / 7),
        continue_prob: float = 0.95,
        margin: int = 3,
    ) -> None:
        super().__init__(_check_prob("prob", prob))
        self.inpaint_rate = _check_prob("inpaint_rate", inpaint_rate)
        self.max_boxes = _check_count("max_boxes", max_boxes)
        self.inpaint_size = _check_range("inpaint_size", inpaint_size, 1.0)
        self.outpaint_size = _check_range("outpaint_size", outpaint_size, 1.0)
        self.continue_prob = _check_prob("continue_prob", continue_prob)
        self.margin = _check_count("margin", margin, 0)
        self.inpaint = False
        self.boxes: list[Box] = []
        self._noise: list[np.ndarray] = []

    def randomize(self, data: NdarrayOrTensor) -> None:
        """Draw whether to paint, in- or out-painting, the boxes (``self.boxes``) and the noise."""
        super().randomize(None)
        self.boxes, self._noise = [], []
        if not self._do_transform:
            return
        shape = tuple(data.shape)
        self.inpaint = bool(self.R.rand() < self.inpaint_rate)
        low, high = self.inpaint_size if self.inpaint else self.outpaint_size
        self.boxes.append(self._box(shape[1:], low, high))
        while len(self.boxes) < self.max_boxes and self.R.rand() < self.continue_prob:
            self.boxes.append(self._box(shape[1:], low, high))
        if self.inpaint:
            self._noise = [self.R.rand(shape[0], *(b.stop - b.start for b in box)) for box in self.boxes]
        else:
            self._noise = [self.R.rand(*shape)]

    def _box(self, spatial: Sequence[int], low: float, high: float) -> Box:
        box = []
        for s in spatial:
            lo = max(1, int(np.floor(low * s)))
            size = int(self.R.randint(lo, max(lo, int(np.floor(high * s))) + 1))
            size = min(size, s)
            margin = min(self.margin, (s - size) // 2)
            start = int(self.R.randint(margin, s - size - margin + 1))
            box.append(slice(start, start + size))
        return tuple(box)

    def _apply(self, arr: np.ndarray) -> None:
        if self.inpaint:
            for box, noise in zip(self.boxes, self._noise):
                arr[(slice(None), *box)] = noise
            return
        keep = np.zeros(arr.shape[1:], dtype=bool)
        for box in self.boxes:
            keep[box] = True
        arr[:, ~keep] = self._noise[0][:, ~keep]


class GenesisDamage(Compose):
    """The Models Genesis damage: Bézier intensity, local shuffling, painting, in that order.

    A :class:`monai.transforms.Compose` of :class:`BezierIntensity`,
    :class:`LocalPixelShuffle` and :class:`Painting` (reachable as
    ``nonlinear``, ``shuffle`` and ``paint``); ``set_random_state(seed)``
    seeds all three. Returns a damaged copy; the input is never modified.

    Args:
        nonlinear_prob: probability of the Bézier intensity map (published 0.9).
        local_shuffle_prob: probability of local pixel shuffling (published 0.5).
        paint_prob: probability of painting (published 0.9).
        inpaint_rate: share of painting that is in-painting (published 0.2).
        flip_prob: share of intensity maps that are flipped (published 0.5).
        max_blocks: most shuffled blocks (published 10000).
        max_block_frac: largest block side as a fraction of each dimension (published 0.1).
        min_blocks: fewest shuffled blocks (defaults to ``max_blocks``).
    """

    def __init__(
        self,
        nonlinear_prob: float = 0.9,
        local_shuffle_prob: float = 0.5,
        paint_prob: float = 0.9,
        inpaint_rate: float = 0.2,
        flip_prob: float = 0.5,
        max_blocks: int = 10000,
        max_block_frac: float = 0.1,
        min_blocks: int | None = None,
    ) -> None:
        self.nonlinear = BezierIntensity(nonlinear_prob, flip_prob=flip_prob)
        self.shuffle = LocalPixelShuffle(local_shuffle_prob, max_blocks, max_block_frac, min_blocks)
        self.paint = Painting(paint_prob, inpaint_rate=inpaint_rate)
        super().__init__([self.nonlinear, self.shuffle, self.paint])

    @torch.no_grad()
    def batch(self, images: torch.Tensor) -> torch.Tensor:
        """Damage each image of a ``(B, C, D, H, W)`` tensor independently (no gradient)."""
        return torch.stack([torch.as_tensor(self(x.cpu().numpy())) for x in images]).to(images)
