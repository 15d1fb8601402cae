"""Subject variation of the synthetic torso: geometry, random affine, elastic and organ-size fields.

Convention (documented once, used everywhere): a source's field of view is
``shape * spacing`` mm, centred on world (0, 0, 0). The template (designed for
the :data:`~medssl.data.anatomy.FOV` of 320 x 260 x 320 mm) is scaled
*isotropically* by ``f = min(shape * spacing / FOV)`` so the torso fills the
field of view without changing its proportions (``f = 1`` at the full-size
geometry, e.g. 400 x 325 x 128 voxels of 0.8 x 0.8 x 2.5 mm).

A subject maps its world position ``x`` (RAS mm, from the NIfTI affine) to the
template position ``p`` it came from::

    y = x + u(x)            # smooth elastic field + organ-size bumps (subject frame, mm)
    p = M (y - t),   M = diag(1/s) R^T / f

with a small rotation ``R``, per-axis scale ``s`` and translation ``t``. The
elastic part is a cubic B-spline free-form deformation on a coarse control
grid; each organ-size change is a Gaussian-weighted radial scaling about the
organ's centre. All amplitudes are small enough for the map to be invertible.
Every random amplitude is in template millimetres and scaled by ``f``, so a
subject is the same anatomy at any resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from medssl.data import anatomy

CONTROL_POINTS = 5          # B-spline control points across the field of view (per axis)
ELASTIC_MM = 5.0            # std of the control-point displacements (template mm)
ROTATION_DEG = 5.0          # max rotation about each axis
SCALE_RANGE = (0.94, 1.06)  # per-axis scale
TRANSLATION_MM = 8.0        # max translation along each axis (template mm)
SIZE_RANGE = {"lungs": (0.9, 1.1), "heart": (0.88, 1.12), "liver": (0.85, 1.15),
              "spleen": (0.8, 1.2), "kidney_left": (0.85, 1.15), "kidney_right": (0.85, 1.15)}
LESION_MM = (10.0, 16.0)    # lesion radius range (template mm), at least ~0.7 voxel diagonals


@dataclass(frozen=True)
class Geometry:
    """Raw voxel grid of a source: ``shape`` (i, j, k) and ``spacing`` (mm) in LPS-like orientation."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]

    def __post_init__(self) -> None:
        if len(self.shape) != 3 or any(int(n) < 2 for n in self.shape):
            raise ValueError(f"shape must be three sizes >= 2, got {self.shape}")
        if len(self.spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in self.spacing):
            raise ValueError(f"spacing must be three positive numbers, got {self.spacing}")

    @property
    def affine(self) -> np.ndarray:
        """Voxel -> world (RAS mm): ``diag(-sx, -sy, sz)``, field of view centred on the origin.

        Voxel i runs towards the subject's left and j towards posterior (as a
        DICOM series converted to NIfTI without reorienting), so ``aff2axcodes``
        gives ``('L', 'P', 'S')``.
        """
        sx, sy, sz = self.spacing
        a = np.diag([-sx, -sy, sz, 1.0])
        a[:3, 3] = -a[:3, :3] @ ((np.asarray(self.shape, float) - 1.0) / 2.0)
        return a

    @property
    def scale(self) -> float:
        """Isotropic template-to-subject scale ``f = min(shape * spacing / FOV)``."""
        return float(np.min(np.asarray(self.shape) * np.asarray(self.spacing) / anatomy.FOV))

    def axes(self) -> list[np.ndarray]:
        """World coordinate (mm, float64) of each voxel index along x, y, z."""
        a = self.affine
        return [a[d, d] * np.arange(n) + a[d, 3] for d, n in enumerate(self.shape)]

    def world(self, voxels: np.ndarray) -> np.ndarray:
        """World positions (N, 3) of voxel indices (N, 3)."""
        a = self.affine
        return np.asarray(voxels, float) @ a[:3, :3].T + a[:3, 3]


@dataclass(frozen=True)
class Subject:
    """The random parameters of one phantom (template millimetres unless noted)."""

    rotation: np.ndarray          # 3x3
    scale: np.ndarray             # (3,) per-axis scale
    translation: np.ndarray       # (3,)
    elastic: np.ndarray           # (3, n, n, n) B-spline coefficients
    sizes: dict[str, float]       # organ -> size factor (> 1: bigger than the template)
    lesion: anatomy.Ellipsoid | None
    seeds: tuple[int, int]        # intensity and noise streams


def draw_lesion_flag(rng: np.random.Generator, fraction: float) -> bool:
    """The first draw of a case's generator decides whether it has a lesion."""
    return bool(rng.random() < fraction)


def sample_subject(geometry: Geometry, seed: int, index: int, lesion_fraction: float,
                   lesion_mm: tuple[float, float] = LESION_MM) -> Subject:
    """Draw a subject's parameters from ``np.random.default_rng([seed, index])``.

    The draws have a fixed order and count, so a case depends only on
    ``(seed, index)`` and the geometry (the lesion's minimum size), not on how
    many cases are generated.

    Args:
        geometry: the raw voxel grid (sets the lesion's minimum radius).
        seed: the source's seed (>= 0).
        index: the case index (>= 0).
        lesion_fraction: probability that the case has a lung lesion.
        lesion_mm: the lesion's radius range (template mm).

    Returns:
        The subject's :class:`Subject` parameters.
    """
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    rng = np.random.default_rng([seed, index])
    flag = draw_lesion_flag(rng, lesion_fraction)
    streams = rng.integers(0, 2**63 - 1, size=3)
    rot = Rotation.from_euler("xyz", rng.uniform(-ROTATION_DEG, ROTATION_DEG, 3), degrees=True).as_matrix()
    scale = rng.uniform(*SCALE_RANGE, 3)
    translation = rng.uniform(-TRANSLATION_MM, TRANSLATION_MM, 3)
    n = CONTROL_POINTS + 2
    elastic = rng.normal(0.0, ELASTIC_MM, (3, n, n, n))
    sizes = {k: float(rng.uniform(*r)) for k, r in SIZE_RANGE.items()}
    lesion = _sample_lesion(np.random.default_rng(int(streams[0])), geometry, lesion_mm) if flag else None
    return Subject(rot, scale, translation, elastic, sizes, lesion, (int(streams[1]), int(streams[2])))


def _sample_lesion(rng: np.random.Generator, geometry: Geometry,
                   lesion_mm: tuple[float, float] = LESION_MM) -> anatomy.Ellipsoid:
    """A sphere well inside one lung, big enough to cover voxel centres at this resolution."""
    diagonal = float(np.linalg.norm(geometry.spacing)) / geometry.scale
    radius = max(float(rng.uniform(*lesion_mm)), 0.7 * diagonal)
    lungs = anatomy.lung_candidates()
    probe = np.array([[0, 0, 0], [1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], float)
    ok = {anatomy.S["lung_left"], anatomy.S["lung_right"], anatomy.S["lung_vessel"]}
    for _ in range(200):
        lung = lungs[int(rng.integers(2))]
        u = rng.normal(size=3)
        u *= rng.uniform() ** (1 / 3) * 0.75 / np.linalg.norm(u)
        centre = np.asarray(lung.center) + u * np.asarray(lung.semi)
        pts = centre + 1.3 * radius * probe
        if set(anatomy.render(pts[:, 0], pts[:, 1], pts[:, 2]).tolist()) <= ok:
            return anatomy.Ellipsoid(tuple(float(c) for c in centre), (radius,) * 3)
    raise ValueError(f"no room for a lung lesion of radius {radius:.1f} mm at spacing {geometry.spacing}")


def _bspline(t: np.ndarray) -> np.ndarray:
    """Cubic B-spline basis B3(t)."""
    a = np.abs(t)
    return np.where(a < 1, 2 / 3 - a**2 + a**3 / 2, np.where(a < 2, (2 - a) ** 3 / 6, 0.0))


def _weights(coord: np.ndarray, lo: float, extent: float) -> np.ndarray:
    """B-spline weights (n_voxels, CONTROL_POINTS + 2) of positions along one axis."""
    t = (coord - lo) / extent * (CONTROL_POINTS - 1)
    knots = np.arange(-1, CONTROL_POINTS + 1)
    return _bspline(t[:, None] - knots[None, :]).astype(np.float32)


def _ffd(coef: np.ndarray, w: list[np.ndarray]) -> np.ndarray:
    """Tensor-product B-spline field ``sum_abc w0[i,a] w1[j,b] w2[k,c] coef[:,a,b,c]`` (3, I, J, K).

    Written as element-wise multiply-adds (no BLAS), so the result is bit-identical
    on every machine; each control plane only touches the voxels in its support.
    """
    n = coef.shape[1]
    t1 = np.zeros((3, n, n, len(w[2])), dtype=np.float32)
    for c in range(n):
        t1 += coef[:, :, :, c, None] * w[2][:, c]
    t2 = np.zeros((3, n, len(w[1]), len(w[2])), dtype=np.float32)
    for b in range(n):
        t2 += t1[:, :, b, None, :] * w[1][:, b, None]
    u = np.zeros((3, len(w[0]), len(w[1]), len(w[2])), dtype=np.float32)
    for a in range(n):
        rows = np.flatnonzero(w[0][:, a])
        if rows.size:
            s = slice(rows[0], rows[-1] + 1)
            u[:, s] += w[0][s, a, None, None] * t2[:, a, None]
    return u


def subject_field(subject: Subject, geometry: Geometry) -> np.ndarray:
    """``u`` (3, I, J, K) float32: elastic + organ-size displacement in the subject frame (mm)."""
    f = geometry.scale
    axes = geometry.axes()
    extent = np.asarray(geometry.shape) * np.asarray(geometry.spacing)
    u = _ffd((subject.elastic * f).astype(np.float32), [_weights(c, -e / 2, e) for c, e in zip(axes, extent)])
    forward = f * subject.rotation * subject.scale  # template -> subject linear part
    for organ, factor in subject.sizes.items():
        centre, radii = anatomy.SIZE_BUMPS[organ]
        c = forward @ np.asarray(centre) + f * subject.translation
        sigma = f * np.asarray(radii) * subject.scale
        k = 1.0 / factor - 1.0
        g, d, sl = [], [], []
        for axis in range(3):
            r = (axes[axis] - c[axis]) / sigma[axis]
            idx = np.flatnonzero(np.abs(r) < 4.0)
            if idx.size == 0:
                break
            s = slice(idx[0], idx[-1] + 1)
            sl.append(s)
            g.append(np.exp(-0.5 * r[s] ** 2).astype(np.float32))
            d.append((axes[axis][s] - c[axis]).astype(np.float32))
        else:
            box = tuple(sl)
            gauss = g[0][:, None, None] * g[1][None, :, None] * g[2][None, None, :]
            for axis in range(3):
                shape = [1, 1, 1]
                shape[axis] = -1
                u[(axis, *box)] += np.float32(k) * d[axis].reshape(shape) * gauss
    return u


def template_coordinates(subject: Subject, geometry: Geometry) -> np.ndarray:
    """Template position ``p`` (3, I, J, K) float32 of every voxel of the subject (mm)."""
    f = geometry.scale
    v = subject_field(subject, geometry)
    for axis, coord in enumerate(geometry.axes()):
        shape = [1, 1, 1]
        shape[axis] = -1
        v[axis] += coord.astype(np.float32).reshape(shape)
    m = subject.rotation.T / subject.scale[:, None] / f
    offset = m @ (f * subject.translation)
    p = np.empty_like(v)
    for c in range(3):  # element-wise (no BLAS): bit-identical on every machine
        p[c] = np.float32(m[c, 0]) * v[0]
        p[c] += np.float32(m[c, 1]) * v[1]
        p[c] += np.float32(m[c, 2]) * v[2]
        p[c] -= np.float32(offset[c])
    return p
