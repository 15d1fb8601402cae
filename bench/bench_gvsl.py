"""GVSL pre-training step: time and peak memory (CPU), and bf16 throughput on a GPU.

Each configuration runs in its own process so that its peak resident memory
(``ru_maxrss``) is its own. A step = Genesis damage + two backbone passes +
affine/deformable/restoration heads + fused warp + NCC/smoothness/MSE +
backward + Adam.

    python bench/bench_gvsl.py            # CPU table
    python bench/bench_gvsl.py --gpu      # add 128^3 steps/s with and without bf16 autocast (CUDA)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

CONFIGS = [  # (label, features, size, pairs per step, threads)
    ("default CPU size (8-16-32-64, 32^3, 2 pairs, 1 thread)", (8, 16, 32, 64), 32, 2, 1),
    ("default CPU size (8-16-32-64, 32^3, 2 pairs, 2 threads)", (8, 16, 32, 64), 32, 2, 2),
    ("published U-Net 32-64-128-256-512, 64^3, 1 pair", (32, 64, 128, 256, 512), 64, 1, 2),
    ("published U-Net 32-64-128-256-512, 96^3, 1 pair", (32, 64, 128, 256, 512), 96, 1, 2),
    ("published U-Net 32-64-128-256-512, 96^3, 2 pairs", (32, 64, 128, 256, 512), 96, 2, 2),
]


def one(features, size, batch, threads, steps, device="cpu", bf16=False) -> dict:
    import torch

    from medssl.methods.gvsl import GVSL
    from medssl.nn.unet3d import UNet3D

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = GVSL(UNet3D(features=features, groups=8), seed=0).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.rand(2 * batch, 1, size, size, size, device=device)  # ``batch`` pairs (A_i, B_i)
    times = []
    for i in range(steps + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            loss, _ = model.pair_loss(x[:batch], x[batch:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        if i:  # the first step warms up
            times.append(time.perf_counter() - t0)
    n_params = sum(p.numel() for p in model.parameters())
    out = {"s_per_step": sum(times) / len(times), "params_M": n_params / 1e6,
           "peak_GiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    if device == "cuda":
        out["peak_GiB"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(one(**json.loads(args.child))))
        return
    print("| configuration | params (M) | s / step | peak memory (GiB) |\n|---|---|---|---|")
    runs = [(label, dict(features=f, size=s, batch=b, threads=t, steps=args.steps)) for label, f, s, b, t in CONFIGS]
    if args.gpu:
        for bf16 in (False, True):
            runs.append((f"GPU 128^3 batch 2{' bf16' if bf16 else ''}",
                         dict(features=(32, 64, 128, 256, 512), size=128, batch=2, threads=4, steps=10,
                              device="cuda", bf16=bf16)))
    for label, kw in runs:
        res = subprocess.run([sys.executable, __file__, "--child", json.dumps(kw)], capture_output=True, text=True)
        if res.returncode:
            print(f"| {label} | failed: {res.stderr.strip().splitlines()[-1]} | | |")
            continue
        r = json.loads(res.stdout.strip().splitlines()[-1])
        extra = f" ({1 / r['s_per_step']:.2f} steps/s)" if kw.get("device") == "cuda" else ""
        print(f"| {label} | {r['params_M']:.2f} | {r['s_per_step']:.2f}{extra} | {r['peak_GiB']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
