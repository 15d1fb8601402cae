"""Inference time per volume: U-Net direct estimation vs the template transformers.

The paper reports the diffeomorphic model costs about 10 % more than the U-Net
at inference (the network is the same; scaling and squaring and the warp are
added). Times one forward pass per volume (batch 1, no gradient) on the CPU
for every Table 2 row, after one warm-up pass, with the paper's features
(16, 32, 64, 128, 256).

    python bench/bench_template.py [--size 64 64 64] [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from medssl.template.models import build

ROWS = ("unet", "stt", "diffeo_fixed", "diffeo_trained")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, nargs=3, default=[64, 64, 64])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    shape = tuple(args.size)
    x = torch.rand(1, 1, *shape)
    models = {}
    for name in ROWS:
        torch.manual_seed(0)
        models[name] = build(name, shape).eval()
    times: dict[str, list[float]] = {name: [] for name in ROWS}
    with torch.no_grad():
        for name in ROWS:  # warm-up (thread pools, allocator)
            models[name](x)
        for _ in range(args.repeats):  # interleaved rounds, best of each
            for name in ROWS:
                t0 = time.perf_counter()
                models[name](x)
                times[name].append(time.perf_counter() - t0)
    base = min(times["unet"])
    print(f"| model ({shape}, {args.threads} threads, best of {args.repeats}) | s / volume | vs U-Net |")
    print("|---|---|---|")
    for name in ROWS:
        dt = min(times[name])
        print(f"| {name} | {dt:.3f} | {100 * (dt / base - 1):+.0f} % |")


if __name__ == "__main__":
    main()
