"""Breast-tissue-like phantoms for the ``template`` study.

Diffeomorphic Template Transformers (Sec. 5.3) segment dense fibroglandular
breast tissue in DCE-MRI, a target that is one connected component. These
phantoms give the same kind of target in a 3D volume: a breast (fat, a
half-ellipsoid in front of the chest wall) holding a lobulated fibroglandular
region, built from overlapping ellipsoids around a common core, kept as its
largest connected component with its holes filled, so it is always one simply
connected region. Subjects differ by size, position, lobulation and a smooth
elastic deformation, whose displacement is returned as the ground truth.

Intensities are MR-like arbitrary units (air 0, fat ≈ 300, muscle ≈ 450,
fibroglandular ≈ 750 with smooth texture), times a smooth bias field, plus
Gaussian noise. The affine is LPS-like, as for the torso phantoms.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import binary_fill_holes, gaussian_filter, label, zoom

from medssl.data.deform import Geometry

STRUCTURES = {"background": 0, "fat": 1, "muscle": 2, "fibroglandular": 3}
_MEAN = {"background": 0.0, "fat": 300.0, "muscle": 450.0, "fibroglandular": 750.0}


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], coarse: int, amplitude: float) -> np.ndarray:
    """A smooth random field: coarse Gaussian noise upsampled by cubic spline to ``shape``."""
    c = rng.standard_normal((coarse,) * len(shape)).astype(np.float32) * amplitude
    return zoom(c, [n / coarse for n in shape], order=3, mode="nearest")[tuple(slice(0, n) for n in shape)]


def generate_breast(shape: tuple[int, int, int], spacing: tuple[float, float, float], seed: int, index: int):
    """One breast phantom.

    Args:
        shape: voxel grid (i, j, k); i runs to the left, j to posterior, k up.
        spacing: voxel size (mm).
        seed: source seed; ``index`` the case (cases are independent of each other).

    Returns:
        ``(image float32, structures uint8, affine 4x4, displacement float32 (i, j, k, 3) mm)``.
    """
    geom = Geometry(tuple(int(n) for n in shape), tuple(float(s) for s in spacing))
    rng = np.random.default_rng([seed, index, 0xB5])
    x, y, z = np.meshgrid(*geom.axes(), indexing="ij")
    ext = np.asarray(shape, float) * np.asarray(spacing, float) / 2  # half field of view, mm
    # smooth elastic deformation (up to ~4 % of the field of view)
    disp = np.stack([_smooth_field(rng, tuple(shape), 4, 0.04 * e) for e in ext], -1)
    tx, ty, tz = x + disp[..., 0], y + disp[..., 1], z + disp[..., 2]
    # chest wall posterior (y < wall), breast anterior half-ellipsoid
    wall = -0.35 * ext[1] + rng.uniform(-0.05, 0.05) * ext[1]
    radii = ext * np.array([rng.uniform(0.75, 0.9), rng.uniform(0.95, 1.2), rng.uniform(0.7, 0.85)])
    breast = ((tx / radii[0]) ** 2 + ((ty - wall) / radii[1]) ** 2 + (tz / radii[2]) ** 2 < 1) & (ty > wall)
    structures = np.zeros(shape, np.uint8)
    structures[breast] = STRUCTURES["fat"]
    structures[(ty <= wall) & (ty > wall - 0.25 * ext[1])] = STRUCTURES["muscle"]
    # fibroglandular: overlapping lobes around a core inside the breast
    core = np.array([rng.uniform(-0.15, 0.15) * ext[0], wall + rng.uniform(0.3, 0.45) * radii[1],
                     rng.uniform(-0.1, 0.1) * ext[2]])
    fg = np.zeros(shape, bool)
    for _ in range(int(rng.integers(3, 7))):
        centre = core + rng.uniform(-0.18, 0.18, 3) * radii
        r = radii * rng.uniform(0.2, 0.38, 3)
        fg |= ((tx - centre[0]) / r[0]) ** 2 + ((ty - centre[1]) / r[1]) ** 2 + ((tz - centre[2]) / r[2]) ** 2 < 1
    fg &= breast
    lab, n = label(fg)
    if n:
        fg = lab == (np.argmax(np.bincount(lab.ravel())[1:]) + 1)
    fg = binary_fill_holes(fg)
    structures[fg] = STRUCTURES["fibroglandular"]
    means = {k: v * rng.uniform(0.9, 1.1) if v else 0.0 for k, v in _MEAN.items()}
    image = np.zeros(shape, np.float32)
    for name, sid in STRUCTURES.items():
        image[structures == sid] = means[name]
    image += fg * _smooth_field(rng, tuple(shape), 8, 60.0)  # glandular texture
    image = gaussian_filter(image, 0.5, mode="nearest")
    image *= 1 + _smooth_field(rng, tuple(shape), 3, 0.08)  # coil bias field
    image += rng.standard_normal(shape).astype(np.float32) * rng.uniform(10.0, 25.0)
    return image.astype(np.float32), structures, geom.affine, disp.astype(np.float32)
