"""Randomly rotated hand-written digits (Diffeomorphic Template Transformers, Sec. 5.2).

The paper rotates MNIST digits by an angle drawn uniformly from [-90, 90]
degrees. No download is allowed here, so scikit-learn's bundled 8x8
``load_digits`` (1797 images) stands in: each image is up-sampled
bilinearly, centred on a ``size x size`` canvas with room to rotate, and
rotated about the canvas centre.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

N_SOURCES = 1797  # images in sklearn's load_digits


def _load() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.float32) / 16.0, d.target.astype(np.int64)


def rotate(images: torch.Tensor, angles_deg: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Rotate each image about its centre by its angle (degrees, counter-clockwise as displayed).

    Bilinear resampling, zeros outside the image; ``rotate(rotate(x, a), -a)``
    recovers ``x`` up to interpolation blur.

    Args:
        images: ``(N, C, H, W)``.
        angles_deg: ``(N,)`` angles in degrees.

    Raises:
        ValueError: ``images`` is not 4-D or the angle count differs from ``N``.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got {tuple(images.shape)}")
    a = torch.as_tensor(np.asarray(angles_deg), dtype=torch.float32).reshape(-1) * (math.pi / 180.0)
    if a.numel() != images.shape[0]:
        raise ValueError(f"need one angle per image: {a.numel()} angles for {images.shape[0]} images")
    c, s = torch.cos(a), torch.sin(a)
    # output pixel p samples the input at R(-angle) p (rows of the grid are (x, y), y pointing down)
    theta = torch.stack([torch.stack([c, -s, torch.zeros_like(c)], 1),
                         torch.stack([s, c, torch.zeros_like(c)], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=True)
    return F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def split_sources(seed: int = 0, test_fraction: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Fixed split of the 1797 source digits into disjoint train / test index sets.

    Rotated samples are drawn from these sets, so no source digit is seen in
    both training and testing.

    Raises:
        ValueError: ``test_fraction`` not in ``(0, 1)``.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    perm = np.random.default_rng(seed).permutation(N_SOURCES)
    n_test = int(round(N_SOURCES * test_fraction))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def rotated_digits(n: int, size: int = 32, seed: int = 0, max_angle: float = 90.0,
                   sources: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """``n`` digits rotated uniformly in ``[-max_angle, max_angle]`` degrees (paper Sec. 5.2).

    Deterministic in ``seed``; the digit indices are drawn before the angles,
    so the same ``seed`` with ``max_angle=0`` gives the upright versions.

    Args:
        n: number of samples (drawn with replacement only when ``n`` exceeds the sources).
        size: side of the square canvas (the digit is up-sampled to ``size / sqrt(2)``).
        seed: random seed.
        max_angle: largest absolute rotation in degrees.
        sources: indices into ``load_digits`` to draw from (see :func:`split_sources`); all if ``None``.

    Returns:
        ``images`` ``(n, 1, size, size)`` float32 in ``[0, 1]``, ``labels`` ``(n,)`` int64,
        ``angles`` ``(n,)`` degrees (numpy).

    Raises:
        ValueError: ``n < 1``, ``size < 8``, ``max_angle`` outside ``[0, 180]`` or empty ``sources``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n!r}")
    if size < 8:
        raise ValueError(f"size must be >= 8, got {size!r}")
    if not 0.0 <= max_angle <= 180.0:
        raise ValueError(f"max_angle must be in [0, 180], got {max_angle!r}")
    imgs, targets = _load()
    src = np.arange(N_SOURCES) if sources is None else np.asarray(sources)
    if src.size == 0:
        raise ValueError(f"sources must not be empty, got {src!r}")
    rng = np.random.default_rng(seed)
    idx = src[rng.choice(src.size, size=n, replace=n > src.size)]
    angles = rng.uniform(-1.0, 1.0, size=n) * max_angle
    inner = int(size / math.sqrt(2))
    x = F.interpolate(torch.from_numpy(imgs[idx])[:, None], size=(inner, inner), mode="bilinear",
                      align_corners=False)
    lo = (size - inner) // 2
    x = F.pad(x, (lo, size - inner - lo, lo, size - inner - lo))
    if max_angle > 0:
        x = rotate(x, angles)
    return x.clamp(0.0, 1.0).contiguous(), torch.from_numpy(targets[idx]), angles
