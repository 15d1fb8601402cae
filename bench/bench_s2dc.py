"""S2DC pre-training step: time and peak memory (CPU); our log-domain Sinkhorn vs POT; bf16 throughput on a GPU.

Each step configuration runs in its own process so that its peak resident
memory (``ru_maxrss``) is its own. A step = two views per volume + one student
pass over both views + patch tokens + Sinkhorn (100 iterations, dustbin) +
Sharpe-weighted matching loss + EMA update + one teacher pass + InfoNCE
against batch and queue + backward + Adam.

The Sinkhorn comparison solves the same entropic OT problem (uniform
marginals, random uniform costs in [0, 1], float64, one thread) with
:func:`medssl.ot.sinkhorn_potentials` and POT's
``ot.sinkhorn(..., method="sinkhorn_log")``, each stopped at a marginal
error of 1e-6 (ours: max-abs row error checked every iteration; POT: its
2-norm column error checked every 10 iterations), and reports iterations,
time and the max-abs marginal error of the returned plan.

    python bench/bench_s2dc.py                  # CPU tables (steps on 1 thread)
    python bench/bench_s2dc.py --part steps --threads 2
    python bench/bench_s2dc.py --gpu            # add 96^3 steps/s with and without bf16 autocast (CUDA)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

UNET_TINY = {"name": "unet3d", "args": {"in_channels": 1, "features": [8, 16, 32, 64], "groups": 4}}
UNET_PAPER = {"name": "unet3d", "args": {"in_channels": 1, "features": [32, 64, 128, 256, 512], "groups": 8}}
SWIN_12_GROUP = {"name": "swinunetr", "args": {"in_channels": 1, "feature_size": 12,
                                               "norm_name": ["group", {"num_groups": 4}]}}
SWIN_12 = {"name": "swinunetr", "args": {"in_channels": 1, "feature_size": 12}}
SWIN_48_V2 = {"name": "swinunetr", "args": {"in_channels": 1, "feature_size": 48, "use_v2": True}}

CONFIGS = [  # (label, backbone, batch patch, view, p, batch); threads from --threads
    ("unet3d_tiny, patch 32^3, views 24^3, batch 2", UNET_TINY, 32, 24, 8, 2),
    ("swinunetr F=12 group norm, patch 40^3, views 32^3, batch 2", SWIN_12_GROUP, 40, 32, 8, 2),
    ("swinunetr F=12 instance norm, patch 72^3, views 64^3, batch 2", SWIN_12, 72, 64, 8, 2),
]


def one(backbone, size, view, p, batch, threads, steps, device="cpu", bf16=False, method_args=None) -> dict:
    import torch

    from medssl import registry
    from medssl.methods.s2dc import S2DC

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = registry.resolve("backbone", backbone["name"])(**backbone["args"])
    model = S2DC(net, seed=0, view=view, patch=p, **(method_args or {})).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.rand(batch, 1, size, size, size, device=device)
    times = []
    for i in range(steps + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            loss, _ = model.loss(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        if i:  # the first step warms up
            times.append(time.perf_counter() - t0)
    n_params = sum(p.numel() for p in model.backbone.parameters())
    out = {"s_per_step": sum(times) / len(times), "params_M": n_params / 1e6,
           "peak_GiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    if device == "cuda":
        out["peak_GiB"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def _problem(kind: str, n: int):
    """(cost, r, c) in float64: squared distances of random 2-D points (max 1), or an S2DC-like dustbin problem."""
    import torch

    from medssl.ot.matching import add_dustbin, dustbin_marginals

    g = torch.Generator().manual_seed(n)
    if kind == "points":
        x, y = torch.rand(n, 2, generator=g, dtype=torch.float64), torch.rand(n, 2, generator=g, dtype=torch.float64)
        cost = torch.cdist(x, y) ** 2
        cost = cost / cost.max()
        return cost, torch.full((n,), 1.0 / n, dtype=torch.float64), torch.full((n,), 1.0 / n, dtype=torch.float64)
    # S2DC: cosine similarities of n unit tokens plus a dustbin of score 1 (the cost is minus the score)
    t = torch.nn.functional.normalize(torch.randn(2, n, 16, generator=g, dtype=torch.float64), dim=-1)
    scores = add_dustbin((t[0] @ t[1].T)[None], torch.tensor(1.0, dtype=torch.float64))[0]
    r, c = dustbin_marginals(n, n, scores)
    return -scores, r, c


def sinkhorn_vs_pot(kind: str, n: int, reg: float, tol: float = 1e-6, repeats: int = 5) -> list[dict]:
    """Same problem, each solver stopped at marginal error ``tol``: iterations, seconds, achieved error."""
    import numpy as np
    import ot
    import torch

    from medssl.ot.sinkhorn import log_sinkhorn, marginal_error, sinkhorn_potentials

    torch.set_num_threads(1)
    cost, r, c = _problem(kind, n)
    rows = []

    def best(fn):
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            res = fn()
            ts.append(time.perf_counter() - t0)
        return min(ts), res

    t_tol, (f, gg, it) = best(lambda: sinkhorn_potentials(-cost, reg, 100000, r, c, tol=tol))
    plan = ((f[:, None] + gg[None, :] - cost) / reg).exp()
    t_fixed, lp = best(lambda: log_sinkhorn(-cost, reg, it, r, c))
    rows.append({"solver": "medssl (torch), tol checked every iteration", "iterations": it,
                 "seconds": t_tol, "error": marginal_error(plan, r, c)})
    rows.append({"solver": "medssl (torch), same iterations, no check", "iterations": it,
                 "seconds": t_fixed, "error": marginal_error(lp.exp(), r, c)})
    for backend, args in (("numpy", (r.numpy(), c.numpy(), cost.numpy())), ("torch", (r, c, cost))):
        t_pot, (p_pot, log) = best(lambda: ot.sinkhorn(*args, reg, method="sinkhorn_log", numItermax=100000,
                                                        stopThr=tol, log=True))
        p_pot = torch.as_tensor(np.asarray(p_pot)) if backend == "numpy" else p_pot
        rows.append({"solver": f"POT sinkhorn_log ({backend}), its check every 10 iterations",
                     "iterations": int(log["niter"]), "seconds": t_pot, "error": marginal_error(p_pot, r, c)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the CPU step runs")
    ap.add_argument("--part", choices=("all", "steps", "sinkhorn"), default="all")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(one(**json.loads(args.child))))
        return
    if args.part in ("all", "steps"):
        print(f"| S2DC step ({args.threads} thread(s) on CPU) | backbone params (M) | s / step | peak memory (GiB) |\n"
              "|---|---|---|---|")
        runs = [(label, dict(backbone=b, size=s, view=v, p=p, batch=n, threads=args.threads, steps=args.steps))
                for label, b, s, v, p, n in CONFIGS]
        if args.gpu:
            for label, b in (("swinunetr F=48 v2", SWIN_48_V2), ("unet3d 32-64-128-256-512", UNET_PAPER)):
                for bf16 in (False, True):
                    runs.append((f"GPU {label}, views 96^3 (patch 128^3, p 16), batch 2{' bf16' if bf16 else ''}",
                                 dict(backbone=b, size=128, view=96, p=16, batch=2, threads=4, steps=10,
                                      device="cuda", bf16=bf16)))
        for label, kw in runs:
            res = subprocess.run([sys.executable, __file__, "--child", json.dumps(kw)], capture_output=True, text=True)
            if res.returncode:
                print(f"| {label} | failed: {res.stderr.strip().splitlines()[-1]} | | |", flush=True)
                continue
            r = json.loads(res.stdout.strip().splitlines()[-1])
            extra = f" ({1 / r['s_per_step']:.2f} steps/s)" if kw.get("device") == "cuda" else ""
            print(f"| {label} | {r['params_M']:.2f} | {r['s_per_step']:.2f}{extra} | {r['peak_GiB']:.2f} |",
                  flush=True)
    if args.part == "steps":
        return
    print("\n| problem | λ (reg) | solver | iterations to 1e-6 | ms | ms / iteration | max marginal error |\n"
          "|---|---|---|---|---|---|---|")
    problems = [("points", 64, 0.05), ("points", 64, 0.01), ("points", 512, 0.05), ("points", 512, 0.01),
                ("s2dc", 27, 1.0), ("s2dc", 216, 1.0)]
    for kind, n, reg in problems:
        name = f"{n}x{n} squared distances" if kind == "points" else f"{n}+1 x {n}+1 cosine + dustbin (S2DC)"
        for row in sinkhorn_vs_pot(kind, n, reg):
            print(f"| {name} | {reg} | {row['solver']} | {row['iterations']} | {1000 * row['seconds']:.1f} | "
                  f"{1000 * row['seconds'] / row['iterations']:.3f} | {row['error']:.1e} |", flush=True)


if __name__ == "__main__":
    main()
