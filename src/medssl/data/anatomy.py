"""Template anatomy of the synthetic CT torso, defined analytically in millimetres.

The template lives in a fixed frame of :data:`FOV` = 320 x 260 x 320 mm centred
on the origin, with RAS+ axes: x towards the subject's right, y anterior,
z superior (so the subject's left lung and spleen have negative x). Every
structure is an ellipsoid, a capsule (tube segment), an elliptic cylinder or a
ring, painted in a fixed order (later structures overwrite earlier ones, some
only over given tissues). :func:`render` evaluates the fine-grained structure
id (:data:`STRUCTURES`) at arbitrary template positions, so a subject's labels
are exact: they are the template evaluated at the subject's deformed
coordinates, never resampled.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

#: Extent (mm) of the template field of view along x (left-right), y (posterior-anterior), z.
FOV = np.array([320.0, 260.0, 320.0])

#: Fine-grained structure ids, in painting-independent order.
STRUCTURES: dict[str, int] = {
    "background": 0, "fat": 1, "soft_tissue": 2, "lung_left": 3, "lung_right": 4,
    "trachea": 5, "lung_vessel": 6, "lesion": 7, "myocardium": 8, "lv": 9, "rv": 10,
    "la": 11, "ra": 12, "aorta": 13, "liver": 14, "spleen": 15, "kidney_left": 16,
    "kidney_right": 17, "vertebra": 18, "rib": 19,
}
S = STRUCTURES

# Organs whose size varies between subjects: name -> (centre, radii) of the smooth
# scaling bump (mm, template frame) that :mod:`medssl.data.deform` applies.
SIZE_BUMPS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "lungs": ((0.0, -5.0, 55.0), (115.0, 70.0, 95.0)),
    "heart": ((-20.0, 30.0, 22.0), (50.0, 40.0, 45.0)),
    "liver": ((50.0, 10.0, -30.0), (80.0, 65.0, 60.0)),
    "spleen": ((-88.0, -30.0, -12.0), (24.0, 42.0, 38.0)),
    "kidney_left": ((-55.0, -55.0, -92.0), (24.0, 20.0, 50.0)),
    "kidney_right": ((55.0, -52.0, -105.0), (24.0, 20.0, 50.0)),
}


# ------------------------------------------------------------------ shapes
@dataclass(frozen=True)
class Ellipsoid:
    """Solid ellipsoid: centre, semi-axes (mm) and a rotation (columns = local axes)."""

    center: tuple[float, float, float]
    semi: tuple[float, float, float]
    rot: np.ndarray = field(default_factory=lambda: np.eye(3))

    def bbox(self) -> tuple[np.ndarray, np.ndarray]:
        half = np.sqrt(((np.asarray(self.rot) * np.asarray(self.semi)) ** 2).sum(axis=1))
        c = np.asarray(self.center)
        return c - half, c + half

    def inside(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        c = [float(v) for v in self.center]
        d = (x - c[0], y - c[1], z - c[2])
        total = 0.0
        for axis in range(3):
            r = [float(v) for v in self.rot[:, axis] / self.semi[axis]]  # Python floats keep float32
            q = r[0] * d[0] + r[1] * d[1] + r[2] * d[2]
            total = total + q * q
        return total <= 1.0


@dataclass(frozen=True)
class Capsule:
    """Tube of ``radius`` around the segment ``a``-``b`` with round ends (mm)."""

    a: tuple[float, float, float]
    b: tuple[float, float, float]
    radius: float

    def bbox(self) -> tuple[np.ndarray, np.ndarray]:
        a, b = np.asarray(self.a), np.asarray(self.b)
        return np.minimum(a, b) - self.radius, np.maximum(a, b) + self.radius

    def inside(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        a = [float(v) for v in self.a]  # Python floats keep float32 arrays float32
        ab = [float(v) - w for v, w in zip(self.b, a)]
        d = (x - a[0], y - a[1], z - a[2])
        t = np.clip((d[0] * ab[0] + d[1] * ab[1] + d[2] * ab[2]) * (1.0 / sum(v * v for v in ab)), 0.0, 1.0)
        dist2 = (d[0] - t * ab[0]) ** 2 + (d[1] - t * ab[1]) ** 2 + (d[2] - t * ab[2]) ** 2
        return dist2 <= self.radius**2


@dataclass(frozen=True)
class Cylinder:
    """Elliptic cylinder along z, optionally hollow (``inner``) and cut into periodic bands.

    A point is inside when it lies in the ellipse ``semi`` around ``center`` (x, y),
    outside the ellipse ``inner`` (if given), ``z_lo <= z <= z_hi`` and, when
    ``period`` is given, ``(z - z_lo) mod period < height``.
    """

    center: tuple[float, float]
    semi: tuple[float, float]
    z_lo: float = -1e9
    z_hi: float = 1e9
    inner: tuple[float, float] | None = None
    period: float | None = None
    height: float = 0.0

    def bbox(self) -> tuple[np.ndarray, np.ndarray]:
        c, s = np.asarray(self.center), np.asarray(self.semi)
        return np.r_[c - s, self.z_lo], np.r_[c + s, self.z_hi]

    def inside(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        u, v = x - self.center[0], y - self.center[1]
        m = (u / self.semi[0]) ** 2 + (v / self.semi[1]) ** 2 <= 1.0
        if self.inner is not None:
            m &= (u / self.inner[0]) ** 2 + (v / self.inner[1]) ** 2 > 1.0
        if self.z_lo > -1e8 or self.z_hi < 1e8:
            m &= (z >= self.z_lo) & (z <= self.z_hi)
        if self.period is not None:
            m &= np.mod(z - self.z_lo, self.period) < self.height
        return m


@dataclass(frozen=True)
class Paint:
    """Paint ``label`` where ``shape`` is inside and (if ``over``) the current id is in ``over``."""

    shape: Ellipsoid | Capsule | Cylinder
    label: int
    over: frozenset[int] | None = None

    @functools.cached_property
    def allowed(self) -> np.ndarray | None:
        """Lookup table id -> may be painted over (None: anything)."""
        if self.over is None:
            return None
        lut = np.zeros(256, dtype=bool)
        lut[list(self.over)] = True
        return lut


# --------------------------------------------------------------- template
def _frame(first: np.ndarray, hint: np.ndarray) -> np.ndarray:
    """Orthonormal frame whose first column is ``first`` and second is closest to ``hint``."""
    u = first / np.linalg.norm(first)
    v = hint - (hint @ u) * u
    v /= np.linalg.norm(v)
    return np.stack([u, v, np.cross(u, v)], axis=1)


def _vessel_tree(root: np.ndarray, direction: np.ndarray, depth: int = 5) -> list[Capsule]:
    """A binary tree of tapering tubes grown from ``root`` (deterministic, no randomness).

    The first split is in the coronal plane (upper / lower lobe); each further
    split turns its plane by 90 degrees about the parent branch.
    """
    out: list[Capsule] = []
    lengths = [15.0, 32.0, 27.0, 22.0, 18.0, 15.0]
    radii = [5.0, 4.0, 3.3, 2.8, 2.4, 2.0]

    def grow(start: np.ndarray, d: np.ndarray, level: int, previous: np.ndarray) -> None:
        end = start + d * lengths[level]
        out.append(Capsule(tuple(start), tuple(end), radii[level]))
        if level == depth:
            return
        axis = np.cross(d, previous)
        axis /= np.linalg.norm(axis)
        angle = np.deg2rad(55.0 if level == 0 else 38.0)
        for sign in (1.0, -1.0):
            child = Rotation.from_rotvec(sign * angle * axis).apply(d)
            grow(end, child / np.linalg.norm(child), level + 1, axis)

    grow(np.asarray(root, float), np.asarray(direction, float) / np.linalg.norm(direction), 0,
         np.array([0.0, 0.0, 1.0]))
    return out


@functools.lru_cache(maxsize=1)
def template() -> tuple[Paint, ...]:
    """The template's painting program (cached; the lesion is added by :func:`render`)."""
    soft, lungs = S["soft_tissue"], (S["lung_left"], S["lung_right"])
    ops: list[Paint] = [
        Paint(Cylinder((0.0, 0.0), (148.0, 102.0)), S["fat"]),
        Paint(Cylinder((0.0, 0.0), (133.0, 88.0)), soft),
        Paint(Cylinder((0.0, -2.0), (128.0, 84.0), z_lo=-44.0, z_hi=160.0, inner=(120.0, 77.0),
                       period=28.0, height=10.0), S["rib"], frozenset({soft})),
        Paint(Ellipsoid((-65.0, -5.0, 58.0), (50.0, 70.0, 95.0)), S["lung_left"], frozenset({soft})),
        Paint(Ellipsoid((65.0, -5.0, 52.0), (55.0, 72.0, 100.0)), S["lung_right"], frozenset({soft})),
    ]
    airway = frozenset({soft, *lungs})
    ops += [Paint(Capsule(a, b, r), S["trachea"], airway) for a, b, r in [
        ((0.0, -15.0, 175.0), (0.0, -18.0, 100.0), 9.0),
        ((0.0, -18.0, 100.0), (-35.0, -12.0, 62.0), 6.0),
        ((0.0, -18.0, 100.0), (35.0, -12.0, 60.0), 6.0),
    ]]
    for root, direction in [((-36.0, -12.0, 62.0), (-1.0, 0.1, 0.0)), ((36.0, -12.0, 60.0), (1.0, 0.1, 0.0))]:
        ops += [Paint(c, S["lung_vessel"], frozenset(lungs)) for c in _vessel_tree(np.array(root), np.array(direction))]
    # Slot of the subject's lesion (render substitutes its sphere; skipped without one).
    ops.append(Paint(Ellipsoid((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)), S["lesion"], frozenset({*lungs, S["lung_vessel"]})))
    belly = frozenset({soft, *lungs, S["lung_vessel"], S["lesion"], S["trachea"]})
    ops += [
        Paint(Ellipsoid(*SIZE_BUMPS["liver"], rot=Rotation.from_euler("y", 15, degrees=True).as_matrix()),
              S["liver"], belly),
        Paint(Ellipsoid(*SIZE_BUMPS["spleen"], rot=Rotation.from_euler("x", -20, degrees=True).as_matrix()),
              S["spleen"], belly),
        Paint(Ellipsoid(*SIZE_BUMPS["kidney_left"], rot=Rotation.from_euler("y", -12, degrees=True).as_matrix()),
              S["kidney_left"], belly | {S["spleen"]}),
        Paint(Ellipsoid(*SIZE_BUMPS["kidney_right"], rot=Rotation.from_euler("y", 12, degrees=True).as_matrix()),
              S["kidney_right"], belly | {S["liver"]}),
    ]
    path = [(-5.0, 22.0, 60.0), (-5.0, 22.0, 88.0), (-18.0, 8.0, 110.0), (-28.0, -22.0, 105.0),
            (-30.0, -38.0, 80.0), (-26.0, -40.0, 0.0), (-16.0, -45.0, -170.0)]
    radii = [14.0, 13.0, 12.0, 11.5, 11.0, 10.0]
    ops += [Paint(Capsule(a, b, r), S["aorta"]) for a, b, r in zip(path[:-1], path[1:], radii)]
    # Heart: long axis from base (right, posterior, superior) to apex (left, anterior, inferior);
    # second local axis from the left towards the right heart.
    centre = np.array(SIZE_BUMPS["heart"][0])
    rot = _frame(np.array([-0.6, 0.55, -0.5]), np.array([1.0, 0.6, 0.3]))
    ops.append(Paint(Ellipsoid(tuple(centre), (60.0, 45.0, 34.0), rot), S["myocardium"]))
    chambers = {"lv": ((14.0, -13.0, 0.0), (34.0, 15.0, 19.0)), "rv": ((10.0, 17.0, 0.0), (30.0, 11.0, 21.0)),
                "la": ((-33.0, -14.0, 0.0), (16.0, 15.0, 18.0)), "ra": ((-31.0, 16.0, 0.0), (17.0, 14.0, 18.0))}
    for name, (offset, semi) in chambers.items():
        ops.append(Paint(Ellipsoid(tuple(centre + rot @ np.array(offset)), semi, rot), S[name],
                         frozenset({S["myocardium"]})))
    ops.append(Paint(Cylinder((0.0, -70.0), (20.0, 15.0), z_lo=-1006.0, z_hi=1e9, period=30.0, height=24.0),
                     S["vertebra"]))
    return tuple(ops)


def lung_candidates() -> tuple[Ellipsoid, Ellipsoid]:
    """The two lung ellipsoids (left, right), for sampling lesion positions."""
    ops = template()
    return tuple(op.shape for op in ops if op.label in (S["lung_left"], S["lung_right"]))  # type: ignore[return-value]


# ---------------------------------------------------------------- render
class _Blocks:
    """Per-block min / max of the coordinates, to cull structures by bounding box."""

    def __init__(self, coords: tuple[np.ndarray, np.ndarray, np.ndarray], size: int):
        self.size = size
        starts = [np.arange(0, n, size) for n in coords[0].shape]
        lo, hi = [], []
        for c in coords:
            mn, mx = c, c
            for axis, idx in enumerate(starts):
                mn = np.minimum.reduceat(mn, idx, axis=axis)
                mx = np.maximum.reduceat(mx, idx, axis=axis)
            lo.append(mn)
            hi.append(mx)
        self.lo, self.hi = lo, hi

    def slices(self, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, ...] | None:
        hit = (self.lo[0] <= hi[0]) & (self.hi[0] >= lo[0])
        for c in (1, 2):
            hit &= (self.lo[c] <= hi[c]) & (self.hi[c] >= lo[c])
        if not hit.any():
            return None
        out = []
        for axis in range(3):
            other = tuple(a for a in range(3) if a != axis)
            idx = np.flatnonzero(hit.any(axis=other))
            out.append(slice(idx[0] * self.size, (idx[-1] + 1) * self.size))
        return tuple(out)


def render(x: np.ndarray, y: np.ndarray, z: np.ndarray, lesion: Ellipsoid | None = None,
           block: int = 8) -> np.ndarray:
    """Fine-grained structure ids (:data:`STRUCTURES`) of the template at positions (mm).

    Args:
        x, y, z: template coordinates, arrays of one shape (any number of dimensions).
        lesion: a lung lesion (sphere, template frame) or None.
        block: edge (voxels) of the blocks used to cull structures by bounding box.

    Returns:
        uint8 array of the shape of ``x``.
    """
    x, y, z = (np.asarray(a) for a in (x, y, z))
    if not x.shape == y.shape == z.shape:
        raise ValueError(f"x, y, z must have one shape, got {x.shape}, {y.shape}, {z.shape}")
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    shape = x.shape
    if x.ndim != 3:
        x, y, z = (a.reshape(-1, 1, 1) for a in (x, y, z))
    out = np.zeros(x.shape, dtype=np.uint8)
    if out.size == 0:
        return out.reshape(shape)
    blocks = _Blocks((x, y, z), block)
    for op in template():
        if op.label == S["lesion"]:
            if lesion is None:
                continue
            op = dataclasses.replace(op, shape=lesion)
        sl = blocks.slices(*op.shape.bbox())
        if sl is None:
            continue
        mask = op.shape.inside(x[sl], y[sl], z[sl])
        view = out[sl]
        if op.allowed is not None:
            mask &= op.allowed[view]
        view[mask] = op.label
    return out.reshape(shape)
