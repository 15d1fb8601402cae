"""Scaling and squaring (Diffeomorphic Template Transformers, Alg. 1) vs MONAI ``DVF2DDF``.

On a smooth random velocity field (Gaussian-smoothed noise, largest vector
norm ``n / 10`` voxels) at 32^3 and 64^3, times ``medssl`` ``exp_velocity``
and MONAI's ``DVF2DDF`` with ``num_steps`` = the Alg. 1 ``T`` (forward, and
forward + backward), and prints their max / mean difference and the
inverse-consistency error ``|exp(v) o exp(-v)|`` of each (interior, margin
``n / 8``). ``DVF2DDF`` pads with zeros by default; medssl with the border
value, so both paddings are shown.

    python bench/bench_integrate.py [--sizes 32 64] [--repeats 5] [--threads 1] [--steps T]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import torch
from scipy import ndimage

from medssl.geometry.integrate import compose, exp_velocity, n_squarings


def smooth_velocity(n: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    f = np.stack([ndimage.gaussian_filter(rng.standard_normal((n, n, n)), n / 10, mode="wrap") for _ in range(3)])
    f *= (n / 10) / np.linalg.norm(f, axis=0).max()
    return torch.as_tensor(f[None], dtype=torch.float32)


def seconds_per_call(fn, v: torch.Tensor, repeats: int, backward: bool) -> float:
    times = []
    for _ in range(repeats + 1):  # the first call warms up
        x = v.clone().requires_grad_(backward)
        t0 = time.perf_counter()
        out = fn(x)
        if backward:
            out.square().sum().backward()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def inverse_consistency(fn, v: torch.Tensor, margin: int) -> tuple[float, float]:
    with torch.no_grad():
        e = compose(fn(v), fn(-v)).norm(dim=1)[:, margin:-margin, margin:-margin, margin:-margin]
    return float(e.mean()), float(e.max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=None, help="fixed number of squarings (default: Alg. 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from monai.networks.blocks import DVF2DDF

    for n in args.sizes:
        v = smooth_velocity(n)
        t = n_squarings(v, args.steps)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            monai_border = DVF2DDF(num_steps=t, padding_mode="border")
            monai_zeros = DVF2DDF(num_steps=t)
        methods = {
            "medssl exp_velocity": lambda x: exp_velocity(x, t),
            "MONAI DVF2DDF border": monai_border,
            "MONAI DVF2DDF zeros": monai_zeros,
        }
        print(f"{n}^3, max |v| = {float(v.norm(dim=1).max()):.2f} voxels, T = {t} squarings, "
              f"{args.threads} thread(s)")
        with torch.no_grad():
            ours = exp_velocity(v, t)
        margin = n // 8
        for name, fn in methods.items():
            fwd = seconds_per_call(fn, v, args.repeats, backward=False)
            bwd = seconds_per_call(fn, v, args.repeats, backward=True)
            with torch.no_grad():
                diff = (fn(v) - ours).norm(dim=1)
            ic_mean, ic_max = inverse_consistency(fn, v, margin)
            inner = diff[:, margin:-margin, margin:-margin, margin:-margin]
            print(f"  {name:22s} fwd {fwd * 1e3:8.1f} ms  fwd+bwd {bwd * 1e3:8.1f} ms  "
                  f"|diff to medssl| max {float(diff.max()):.2e} mean {float(diff.mean()):.2e} "
                  f"(interior max {float(inner.max()):.2e})  "
                  f"inverse consistency mean {ic_mean:.4f} max {ic_max:.4f}")


if __name__ == "__main__":
    main()
