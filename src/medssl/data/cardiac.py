"""Short-axis cardiac MR phantoms in two sequences for the ``uda2d`` study (CMEVAE).

CMEVAE (Qiao et al., supplement Sec. III-B) adapts a segmenter from bSSFP cine
to LGE MR (MS-CMRSeg, unpaired): both are stacks of a few 2D short-axis slices.
These phantoms give the same task: a small 3D volume ``(H, W, S)`` of ``S``
short-axis slices (e.g. 96 x 96 x 6 at 1.5 x 1.5 x 10 mm), base (k = 0) to
near-apex (k = S - 1), labelled

    0 background, 1 LV blood pool, 2 LV myocardium, 3 RV blood pool

(:data:`CLASSES`, the MS-CMRSeg label set). The anatomy is one template with
per-subject variation: heart position and rotation, LV size and ellipticity,
myocardial thickness varying around the ring, RV size and offset, tapering
towards the apex, papillary muscles inside the LV pool (labelled LV, as the
challenge does), and a smooth elastic warp shared by all structures (so the
myocardium always encloses the LV blood pool). Around the heart: the body
outline with subcutaneous fat and chest-wall muscle, both lungs, the liver,
a vertebral body and the descending aorta (all background).

Two sequences, with different tissue contrasts (arbitrary MR units):

* ``bssfp``: blood bright (~800), myocardium dark (~200), fat bright, lungs dark;
* ``lge``: blood mid-grey (~420), normal myocardium nulled (~50), a scar-like
  enhancement (~780) in an angular sector of the myocardium over a run of
  slices (subendocardial to transmural), different background contrasts
  and a lower signal-to-noise ratio.

Both get a partial-volume blur (in-plane Gaussian, sigma half a pixel), a
smooth multiplicative coil bias field and Rician noise (magnitude of a complex
Gaussian). Subjects are unpaired: the case is drawn from
``np.random.default_rng([seed, index, code(contrast)])``, so bSSFP case 3 and
LGE case 3 are different hearts. The affine is LPS-like (``diag(-sx, -sy, sz)``,
field of view centred on the origin), as for the torso and breast phantoms
(:class:`medssl.data.deform.Geometry`).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import gaussian_filter, zoom

__all__ = ["CLASSES", "CONTRASTS", "MIN_FOV_MM", "affine_of", "generate_cardiac"]

#: Label names, index = label value (MS-CMRSeg: LV blood pool, LV myocardium, RV blood pool).
CLASSES = ["background", "LV", "myocardium", "RV"]
#: Sequence name -> code mixed into the random seed (so the two sequences are unpaired).
CONTRASTS = {"bssfp": 0xC1, "lge": 0xC2}
#: Smallest in-plane field of view (mm): the heart (LV + RV) spans about 100 mm.
MIN_FOV_MM = 80.0

# Tissue means per sequence (arbitrary MR units); per-subject jitter +-10 %.
_TISSUES = ("air", "soft", "fat", "muscle", "lung", "liver", "bone", "blood", "myo", "scar", "papillary")
_MEAN = {
    "bssfp": {"air": 0.0, "soft": 330.0, "fat": 680.0, "muscle": 240.0, "lung": 40.0, "liver": 290.0,
              "bone": 420.0, "blood": 800.0, "myo": 200.0, "scar": 200.0, "papillary": 230.0},
    "lge": {"air": 0.0, "soft": 200.0, "fat": 460.0, "muscle": 130.0, "lung": 25.0, "liver": 330.0,
            "bone": 260.0, "blood": 420.0, "myo": 50.0, "scar": 780.0, "papillary": 70.0},
}
_NOISE = {"bssfp": (12.0, 22.0), "lge": (20.0, 35.0)}  # range of the noise std per sequence


def affine_of(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> np.ndarray:
    """Voxel -> world (mm) of the phantoms: ``diag(-sx, -sy, sz)``, field of view centred on the origin.

    Same convention as :attr:`medssl.data.deform.Geometry.affine` (voxel i runs to
    the subject's left, j to posterior), written out so that a single slice
    (``S = 1``) is allowed too.
    """
    sx, sy, sz = (float(s) for s in spacing)
    a = np.diag([-sx, -sy, sz, 1.0])
    a[:3, 3] = -a[:3, :3] @ ((np.asarray(shape, float) - 1.0) / 2.0)
    return a


def _check(shape, spacing, contrast) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    if contrast not in CONTRASTS:
        raise ValueError(f"contrast must be one of {sorted(CONTRASTS)}, got {contrast!r}")
    if (not isinstance(shape, (tuple, list)) or len(shape) != 3
            or not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) for n in shape)):
        raise ValueError(f"shape must be three ints (H, W, S), got {shape!r}")
    if shape[0] < 16 or shape[1] < 16 or shape[2] < 1:
        raise ValueError(f"shape must have H, W >= 16 and S >= 1, got {tuple(shape)}")
    if (not isinstance(spacing, (tuple, list)) or len(spacing) != 3
            or not all(isinstance(s, (int, float, np.number)) and not isinstance(s, bool)
                       and math.isfinite(s) and s > 0 for s in spacing)):
        raise ValueError(f"spacing must be three positive finite numbers (mm), got {spacing!r}")
    fov = (shape[0] * spacing[0], shape[1] * spacing[1])
    if min(fov) < MIN_FOV_MM:
        raise ValueError(f"in-plane field of view must be >= {MIN_FOV_MM} mm to hold the heart, "
                         f"got {fov[0]:g} x {fov[1]:g} mm (shape {tuple(shape)}, spacing {tuple(spacing)})")
    return (int(shape[0]), int(shape[1]), int(shape[2])), (float(spacing[0]), float(spacing[1]), float(spacing[2]))


def _smooth(rng: np.random.Generator, shape: tuple[int, int], coarse: int, amplitude: float) -> np.ndarray:
    """A smooth random 2D field: coarse Gaussian noise, cubic-spline up-sampled to ``shape``."""
    c = rng.standard_normal((coarse, coarse)) * amplitude
    return zoom(c, [n / coarse for n in shape], order=3, mode="nearest")[: shape[0], : shape[1]]


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, a: float, b: float, angle: float = 0.0) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    u, v = (x - cx) * c + (y - cy) * s, -(x - cx) * s + (y - cy) * c
    return (u / a) ** 2 + (v / b) ** 2 < 1.0


def _subject(rng: np.random.Generator) -> dict:
    """Per-subject anatomy parameters (mm, radians)."""
    return {
        "centre": rng.uniform(-8.0, 8.0, 2),            # LV centre in the field of view
        "rot": rng.uniform(-0.35, 0.35),                 # heart rotation about the long axis
        "lv_r": rng.uniform(19.0, 25.0),                 # basal LV endocardial radius
        "lv_ratio": rng.uniform(0.82, 1.0),              # LV minor / major radius
        "myo": rng.uniform(6.5, 10.5),                   # mean myocardial thickness
        "myo_var": rng.uniform(0.05, 0.25),              # thickness variation around the ring
        "myo_phase": rng.uniform(0, 2 * math.pi),
        "taper": rng.uniform(0.35, 0.55),                # LV radius lost from base to the last slice
        "rv_dist": rng.uniform(0.95, 1.15),              # RV centre distance / LV epicardial radius
        "rv_a": rng.uniform(1.05, 1.3),                  # RV semi-axes / LV epicardial radius
        "rv_b": rng.uniform(0.75, 0.95),
        "rv_angle": rng.uniform(-0.25, 0.25),            # RV direction relative to the heart rotation
        "rv_end": rng.uniform(0.75, 0.95),               # fraction of the stack where the RV ends
        "drift": rng.uniform(-2.5, 2.5, 2),              # centre drift base -> apex
        "pap": rng.uniform(2.0, 3.5),                    # papillary muscle radius
        "body": (rng.uniform(120.0, 150.0), rng.uniform(88.0, 105.0), rng.uniform(15.0, 30.0)),
        "fat": rng.uniform(6.0, 14.0),                   # subcutaneous fat thickness
        "wall": rng.uniform(8.0, 14.0),                  # chest-wall muscle thickness
        "lungs": rng.uniform(0.9, 1.1, 2),
        "liver": (rng.uniform(35.0, 50.0), rng.uniform(-10.0, 10.0)),
        "spine": rng.uniform(-6.0, 6.0, 2),
    }


def generate_cardiac(shape: tuple[int, int, int], spacing: tuple[float, float, float], seed: int, index: int,
                     contrast: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One short-axis stack of a cardiac MR phantom.

    Args:
        shape: ``(H, W, S)`` voxels; i runs to the subject's left, j posterior, k base -> apex.
            ``H, W >= 16``, ``S >= 1``, in-plane field of view ``>= MIN_FOV_MM``.
        spacing: voxel size (mm), e.g. ``(1.5, 1.5, 10.0)``.
        seed: source seed; ``index``: the case. With ``contrast`` they determine the case.
        contrast: ``"bssfp"`` or ``"lge"`` (see the module docstring for the contrasts).

    Returns:
        ``(image float32 (H, W, S), label uint8 (H, W, S), affine 4x4 float64)``.

    Raises:
        ValueError: an unknown ``contrast``, a bad ``shape`` / ``spacing`` or a field of view
            too small for the heart.
    """
    shape, spacing = _check(shape, spacing, contrast)
    rng = np.random.default_rng([int(seed), int(index), CONTRASTS[contrast]])
    p = _subject(rng)
    means = {k: (v * rng.uniform(0.9, 1.1) if v else 0.0) for k, v in _MEAN[contrast].items()}
    noise_std = rng.uniform(*_NOISE[contrast])
    h, w, n_slices = shape
    # anatomy frame (mm from the centre of the field of view): x along i (subject left), y along j (posterior)
    xs = spacing[0] * (np.arange(h) - (h - 1) / 2.0)
    ys = spacing[1] * (np.arange(w) - (w - 1) / 2.0)
    x0, y0 = np.meshgrid(xs, ys, indexing="ij")
    # smooth elastic warp (up to ~3 mm), the same for every structure of a slice and shared by slices
    warp = [_smooth(rng, (h, w), 4, 1.5) for _ in range(2)]
    x, y = x0 + warp[0], y0 + warp[1]
    # scar: an angular sector over a run of slices, subendocardial to transmural (LGE only)
    scar_mid, scar_half = rng.uniform(0, 2 * math.pi), rng.uniform(0.35, 0.9)
    scar_depth = rng.uniform(0.4, 1.0)
    first = int(rng.integers(0, max(1, n_slices // 2)))
    scar_slices = range(first, min(n_slices, first + max(1, int(math.ceil(n_slices * rng.uniform(0.4, 0.8))))))
    pap_angles = p["rot"] + np.array([0.6, 2.2]) + rng.uniform(-0.3, 0.3, 2)
    bias = 1.0 + _smooth(rng, (h, w), 3, 0.1)[..., None] + np.linspace(-0.05, 0.05, n_slices) * rng.uniform(-1, 1)

    image = np.zeros(shape, np.float64)
    label = np.zeros(shape, np.uint8)
    for k in range(n_slices):
        t = 0.05 + 0.85 * (k / (n_slices - 1) if n_slices > 1 else 0.5)  # position base (0) -> apex (1)
        tissue = np.zeros((h, w), np.int16)  # index into _TISSUES
        cx, cy = p["centre"] + p["drift"] * t
        # body: an ellipse whose centre lies posterior to the heart; fat layer and chest-wall muscle inside
        ba, bb, boff = p["body"]
        body = _ellipse(x, y, 0.0, cy + boff, ba, bb)
        inner = _ellipse(x, y, 0.0, cy + boff, ba - p["fat"], bb - p["fat"])
        core = _ellipse(x, y, 0.0, cy + boff, ba - p["fat"] - p["wall"], bb - p["fat"] - p["wall"])
        tissue[body] = _TISSUES.index("fat")
        tissue[inner] = _TISSUES.index("muscle")
        tissue[core] = _TISSUES.index("soft")
        # lungs either side of the heart, liver (more apical), vertebral body and descending aorta behind
        lr = 44.0 * p["lungs"]
        tissue[core & _ellipse(x, y, cx + 62.0, cy + 8.0, 0.6 * lr[0], lr[0], 0.2)] = _TISSUES.index("lung")
        tissue[core & _ellipse(x, y, cx - 66.0, cy + 12.0, 0.55 * lr[1], lr[1], -0.2)] = _TISSUES.index("lung")
        liver_r, liver_dx = p["liver"]
        liver = _ellipse(x, y, cx - 38.0 + liver_dx, cy + 52.0, liver_r * (0.4 + t), 0.7 * liver_r * (0.4 + t))
        tissue[core & liver] = _TISSUES.index("liver")
        sx_, sy_ = p["spine"]
        tissue[core & _ellipse(x, y, sx_, cy + 66.0 + sy_, 14.0, 12.0)] = _TISSUES.index("bone")
        tissue[core & _ellipse(x, y, sx_ + 22.0, cy + 50.0 + sy_, 10.0, 10.0)] = _TISSUES.index("blood")
        # LV: endocardial ellipse in polar form, myocardium = a ring of angle-dependent thickness around it
        rot = p["rot"]
        u, v = x - cx, y - cy
        rho = np.hypot(u, v)
        theta = np.arctan2(v, u)
        a_endo = p["lv_r"] * (1.0 - p["taper"] * t)
        b_endo = a_endo * p["lv_ratio"]
        phi = theta - rot
        r_endo = a_endo * b_endo / np.sqrt((b_endo * np.cos(phi)) ** 2 + (a_endo * np.sin(phi)) ** 2)
        thick = p["myo"] * (1.0 + p["myo_var"] * np.cos(theta - p["myo_phase"]))
        r_epi = r_endo + thick
        lv, epi = rho < r_endo, rho < r_epi
        # RV: an ellipse on the subject's right / anterior side, minus the LV epicardium (a crescent);
        # its thin free wall is myocardial tissue but not labelled (the MS-CMRSeg myocardium is the LV's)
        rv_label = np.zeros((h, w), bool)
        if t <= p["rv_end"]:
            scale = (1.0 - t / p["rv_end"]) ** 0.5 * 0.6 + 0.4
            r_ref = (a_endo + p["myo"]) * scale
            ang = math.pi + rot + p["rv_angle"] - 0.35  # towards -x (subject right), slightly anterior
            rcx, rcy = cx + p["rv_dist"] * r_ref * math.cos(ang), cy + p["rv_dist"] * r_ref * math.sin(ang)
            rv_out = _ellipse(x, y, rcx, rcy, p["rv_a"] * r_ref, p["rv_b"] * r_ref, ang)
            rv_in = _ellipse(x, y, rcx, rcy, p["rv_a"] * r_ref - 3.0, p["rv_b"] * r_ref - 3.0, ang)
            tissue[rv_out & ~epi] = _TISSUES.index("myo")
            rv_label = rv_in & ~epi
            tissue[rv_label] = _TISSUES.index("blood")
        tissue[epi] = _TISSUES.index("myo")
        tissue[lv] = _TISSUES.index("blood")
        if contrast == "lge" and k in scar_slices:
            d = np.angle(np.exp(1j * (theta - scar_mid)))
            scar = epi & ~lv & (np.abs(d) < scar_half) & (rho < r_endo + scar_depth * thick + 0.5)
            tissue[scar] = _TISSUES.index("scar")
        for ang in pap_angles:  # papillary muscles: myocardium-like blobs inside the pool, labelled LV
            pr = p["pap"] * (1.0 - 0.4 * t)
            pcx = cx + 0.72 * a_endo * math.cos(ang)
            pcy = cy + 0.72 * b_endo * math.sin(ang)
            tissue[lv & _ellipse(x, y, pcx, pcy, pr, pr)] = _TISSUES.index("papillary")
        label[..., k][rv_label] = 3
        label[..., k][epi & ~lv] = 2
        label[..., k][lv] = 1
        lut = np.array([means[name] for name in _TISSUES])
        sl = lut[tissue]
        sl += (tissue == _TISSUES.index("myo")) * _smooth(rng, (h, w), 8, 0.04 * means["blood"])  # texture
        sl += (tissue == _TISSUES.index("liver")) * _smooth(rng, (h, w), 8, 0.05 * means["liver"])
        image[..., k] = gaussian_filter(sl, 0.5, mode="nearest")
    image *= bias
    real = image + rng.standard_normal(shape) * noise_std
    imag = rng.standard_normal(shape) * noise_std
    image = np.hypot(real, imag)  # Rician magnitude noise
    return image.astype(np.float32), label, affine_of(shape, spacing)

