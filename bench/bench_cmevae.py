"""CMEVAE vs its baselines on the cardiac phantoms: target Dice / ASSD, epoch time, peak memory (CPU).

A measurement, not a test. Generates ``--n`` bSSFP and ``--n`` LGE phantoms
(96 x 96 x 6 at 1.5 x 1.5 x 10 mm, unpaired) for training and ``--test``
further subjects of each sequence as the held-out target test set; trains
``source_only``, ``vae`` and ``cmevae`` in both directions (bSSFP -> LGE and
LGE -> bSSFP) for the same number of optimiser steps and the same source batch
(the UDA methods also see a target batch of the same size every step); scores
the held-out target subjects in 3D (Dice and ASSD per class, MONAI). Target
labels are never used in training.

Each run is a separate process so that its peak memory is its own: the peak
resident set size is sampled with psutil every 20 ms during training and
evaluation (``ru_maxrss`` agrees to within the sampling).

    python bench/bench_cmevae.py                      # the default budget (~8 min on 1 thread)
    python bench/bench_cmevae.py --steps 60 --n 4     # a quick look
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import threading
import time

METHODS = ("source_only", "vae", "cmevae")
DIRECTIONS = {"bSSFP->LGE": ("bssfp", "lge"), "LGE->bSSFP": ("lge", "bssfp")}


def one(method: str, source: str, target: str, n: int, test: int, steps: int, epochs: int, batch: int, lr: float,
        features: list[int], threads: int, seed: int) -> dict:
    import psutil
    import torch

    from medssl.data.cardiac import CLASSES
    from medssl.uda import build, evaluate, fit, phantom_slices

    torch.set_num_threads(threads)
    proc, peak, done = psutil.Process(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    src = phantom_slices(source, n, seed=seed)
    tgt = phantom_slices(target, n, seed=seed)
    tgt_test = phantom_slices(target, test, seed=seed, start=1000)  # held-out target subjects
    model = build(method, len(CLASSES), seed=seed, features=features)
    t0 = time.perf_counter()
    hist = fit(model, src.x, src.y, tgt.x if method != "source_only" else None, epochs=epochs,
               steps_per_epoch=steps // epochs, batch_size=batch, lr=lr, seed=seed)
    train_s = time.perf_counter() - t0
    res = evaluate(model, tgt_test.x, tgt_test.y, CLASSES, tgt_test.spacing, tgt_test.groups)
    done.set()
    sampler.join()
    return {**res, "epoch_s": sum(h["seconds"] for h in hist) / len(hist), "train_s": train_s,
            "final_loss": hist[-1]["loss"], "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
            "peak_rss_MiB": peak[0] / 2**20,
            "ru_maxrss_MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=8, help="training subjects per sequence")
    ap.add_argument("--test", type=int, default=8, help="held-out target subjects")
    ap.add_argument("--steps", type=int, default=300, help="optimiser steps per run")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=4, help="slices per domain per step")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--features", default="8,16,32,64,128")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(one(**json.loads(args.child))))
        return
    feats = [int(f) for f in args.features.split(",")]
    print(f"budget: {args.steps} Adam steps (lr {args.lr}) in {args.epochs} epochs, batch {args.batch} per domain, "
          f"U-Net {'-'.join(map(str, feats))}, {args.n} + {args.n} training subjects (96x96x6), "
          f"{args.test} held-out target subjects, {args.threads} thread(s), seed {args.seed}\n")
    cls = ("LV", "myocardium", "RV")
    print("| direction | method | Dice LV | Dice Myo | Dice RV | Dice mean | ASSD LV | ASSD Myo | ASSD RV | ASSD mean "
          "| missed (pred empty) | s / epoch | train s | peak RSS MiB |\n" + "|---" * 14 + "|")
    for direction, (s, t) in DIRECTIONS.items():
        for method in args.methods.split(","):
            kw = dict(method=method, source=s, target=t, n=args.n, test=args.test, steps=args.steps,
                      epochs=args.epochs, batch=args.batch, lr=args.lr, features=feats, threads=args.threads,
                      seed=args.seed)
            res = subprocess.run([sys.executable, __file__, "--child", json.dumps(kw)], capture_output=True, text=True)
            if res.returncode:
                print(f"| {direction} | {method} | failed: {res.stderr.strip().splitlines()[-1]} |", flush=True)
                continue
            r = json.loads(res.stdout.strip().splitlines()[-1])
            missed = sum(r[f"empty_pred_{c}"] for c in cls)
            print(f"| {direction} | {method} | " + " | ".join(f"{r[f'dice_{c}']:.3f}" for c in cls)
                  + f" | {r['dice']:.3f} | " + " | ".join(f"{r[f'assd_{c}']:.2f}" for c in cls)
                  + f" | {r['assd']:.2f} | {missed} | {r['epoch_s']:.1f} | {r['train_s']:.0f}"
                  + f" | {r['peak_rss_MiB']:.0f} |",
                  flush=True)


if __name__ == "__main__":
    main()
