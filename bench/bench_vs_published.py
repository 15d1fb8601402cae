"""One GVSL pre-training step on the CPU: medssl versus the published code, time and peak memory.

The published code is GVSL (He et al., CVPR 2023), https://github.com/YutingHe-list/GVSL;
get it with ``git clone https://github.com/YutingHe-list/GVSL`` and pass the checkout
as ``--published PATH`` (its commit is recorded when it is a git repository). It is
imported from the checkout at run time, never copied into this file.

What one step is, on both sides (equal work):

* fp32 (``--threads`` intra-op threads, default 2, ``torch.set_num_threads``), one pair
  (A, B) per step, cubic inputs of ``--sizes`` (default 64 96), U-Net widths
  32-64-128-256-512 on both sides (``--features``; the published side requires these).
* Inputs already augmented and damaged: three fixed tensors made once per process from
  ``--data-seed`` (A clean, A damaged, B; smooth random volumes in [0, 1], the damage a
  gamma change plus one cube of noise). Neither side augments or damages inside the step.
* forward of the full GVSL loss + backward + Adam step (lr 1e-4).

  - ``published``: ``res_A, warp_BA, aff, flow_BA = GVSL()(A_damaged, B)`` and, as
    ``PyTorch/Train_GVSL.py`` (``Trainer.train_iterator``) does, loss =
    ``ncc_loss(warp_BA, A) + MSE(res_A, A) + gradient_loss(flow_BA)`` (weights 1, 1, 1).
  - ``medssl``: ``GVSL(UNet3D(features, groups=8), seed=0).prepared_loss(A, B, A_damaged)``
    with medssl's default weights, under ``medssl.nn.precision.autocast(False)``.
  - ``medssl_bf16``: the same under ``autocast(True)`` (bf16 with fp32 islands).
  - ``published_bf16`` (optional): ``torch.autocast("cpu", torch.bfloat16)`` around the
    published forward and loss, nothing kept in fp32.

Patches to the published code (CPU only, never its maths): ``PyTorch/models/gvsl.py``,
``PyTorch/utils/STN.py`` and ``PyTorch/utils/losses.py`` are copied into a temporary
directory with two textual substitutions on every line, ``.cuda()`` -> (nothing) and
``.to("cuda")`` -> ``.to("cpu")``; empty ``models/__init__.py`` and ``utils/__init__.py``
are added so these copies are the ones imported. Every substituted line is printed.
Warnings (meshgrid indexing, grid_sample align_corners) are silenced in the workers.

Measurement: every measurement runs in its own fresh process (this script re-invoked in
a hidden ``--worker`` mode, one JSON line back), so ``ru_maxrss`` is that variant's own
peak (it includes the interpreter and the imports: torch, plus MONAI for medssl). A worker
builds the model (``torch.manual_seed(0)``), takes one untimed warm-up step, then
``--steps`` timed steps, and returns the median s/step, peak RSS, parameter count and
final loss. The driver interleaves: ``for size: for rep in range(reps): for variant``.

    python bench/bench_vs_published.py --published ../GVSL --sizes 64 96 --reps 5 --json out.json
    python bench/bench_vs_published.py --loss-check            # medssl bf16 vs fp32 loss, 20 steps at 64^3
    python bench/bench_vs_published.py --sizes 32 --features 8 16 32 64 --variants medssl medssl_bf16
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PUBLISHED_FEATURES = (32, 64, 128, 256, 512)
PUBLISHED_FILES = ("models/gvsl.py", "utils/STN.py", "utils/losses.py")
SUBSTITUTIONS = ((".cuda()", ""), ('.to("cuda")', '.to("cpu")'))
VARIANTS = ("published", "medssl", "medssl_bf16", "published_bf16")
MARK = "@@RESULT "


# ------------------------------------------------------------------ published code
def published_commit(path: Path) -> str | None:
    """HEAD of the checkout (with ``-dirty`` when it has local changes), or None if not a git repo."""
    try:
        head = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(path), "status", "--porcelain"], capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("-dirty" if dirty else "")


def patch_published(path: Path, dest: Path) -> list[str]:
    """Copy the needed published files to ``dest`` with the CPU substitutions; return the changed lines."""
    changed = []
    for rel in PUBLISHED_FILES:
        src = path / "PyTorch" / rel
        if not src.is_file():
            raise SystemExit(f"--published {path}: {src} not found (expected a GVSL checkout)")
        out = []
        for n, line in enumerate(src.read_text(encoding="utf-8").splitlines(keepends=True), 1):
            new = line
            for old, rep in SUBSTITUTIONS:
                new = new.replace(old, rep)
            if new != line:
                changed.append(f"PyTorch/{rel}:{n}: {line.strip()}  ->  {new.strip()}")
            out.append(new)
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("".join(out), encoding="utf-8")
        (target.parent / "__init__.py").touch()
    return changed


# ------------------------------------------------------------------ worker
def make_inputs(size: int, seed: int):
    """A clean, A damaged, B: (1, 1, S, S, S) float32 in [0, 1], fixed by ``seed``."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)

    def smooth():
        low = torch.rand(1, 1, *(max(size // 8, 2),) * 3, generator=g)
        return F.interpolate(low, size=(size,) * 3, mode="trilinear", align_corners=True)

    a, b = smooth(), smooth()
    damaged = a ** 1.5  # nonlinear intensity change
    side = size // 4
    z, y, x = (int(v) for v in torch.randint(0, size - side, (3,), generator=g))
    damaged[..., z:z + side, y:y + side, x:x + side] = torch.rand(side, side, side, generator=g)  # in-painting
    return a, damaged.clamp(0, 1), b


def build(variant: str, features, patched: str | None):
    """(model, loss_fn) where ``loss_fn(a, b, damaged)`` returns (loss, parts) under the variant's precision."""
    import contextlib

    import torch

    torch.manual_seed(0)
    if variant.startswith("published"):
        if tuple(features) != PUBLISHED_FEATURES:
            raise SystemExit(f"the published GVSL has fixed widths {PUBLISHED_FEATURES}; got {tuple(features)}")
        sys.path.insert(0, patched)
        from models.gvsl import GVSL as PublishedGVSL
        from utils.losses import MSE, gradient_loss, ncc_loss

        model = PublishedGVSL()
        ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if variant == "published_bf16" \
            else contextlib.nullcontext

        def loss_fn(a, b, damaged):
            with ctx():
                res_a, warp_ba, _aff, flow_ba = model(damaged, b)
                l_ncc, l_mse, l_smooth = ncc_loss(warp_ba, a), MSE(res_a, a), gradient_loss(flow_ba)
                loss = l_ncc + l_mse + l_smooth
            return loss, {"ncc": float(l_ncc), "mse": float(l_mse), "smooth": float(l_smooth)}
    else:
        from medssl.methods.gvsl import GVSL
        from medssl.nn.precision import autocast
        from medssl.nn.unet3d import UNet3D

        model = GVSL(UNet3D(features=tuple(features), groups=8), seed=0)
        amp = variant == "medssl_bf16"

        def loss_fn(a, b, damaged):
            with autocast(amp, torch.device("cpu")):
                return model.prepared_loss(a, b, damaged)
    model.train()
    return model, loss_fn


def run_steps(variant, features, size, n_steps, data_seed, patched=None, warmup=1):
    """Build, warm up, time ``n_steps`` steps; return the per-step times, losses and the model."""
    import torch

    a, damaged, b = make_inputs(size, data_seed)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    model, loss_fn = build(variant, features, patched)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    times, losses, parts = [], [], {}
    for i in range(warmup + n_steps):
        t0 = time.perf_counter()
        loss, parts = loss_fn(a, b, damaged)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        dt = time.perf_counter() - t0
        losses.append(float(loss.detach()))
        if i >= warmup:
            times.append(dt)
    return {"times": times, "losses": losses, "parts": parts, "rss_before_model_GiB": rss_before,
            "params": sum(p.numel() for p in model.parameters())}


def worker(args) -> None:
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    r = run_steps(args.variant, args.features, args.size, args.steps, args.data_seed, args.patched_dir)
    r.update(variant=args.variant, size=args.size, threads=torch.get_num_threads(),
             s_per_step=statistics.median(r["times"]), final_loss=r["losses"][-1],
             peak_rss_GiB=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, torch=torch.__version__)
    print(MARK + json.dumps(r), flush=True)


# ------------------------------------------------------------------ driver
def run_worker(args, variant: str, size: int, patched: str | None) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--variant", variant, "--size", str(size),
           "--steps", str(args.steps), "--threads", str(args.threads), "--data-seed", str(args.data_seed),
           "--features", *map(str, args.features)]
    if patched:
        cmd += ["--patched-dir", patched]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               MEDSSL_TRACKING="off")
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in p.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    return {"variant": variant, "size": size, "error": f"rc {p.returncode}: {(p.stderr or p.stdout)[-2000:]}"}


def _span(xs, fmt="{:.3f}") -> str:
    return f"{fmt.format(statistics.median(xs))} ({fmt.format(min(xs))}-{fmt.format(max(xs))})"


def table(size: int, runs: list[dict], variants: list[str], args) -> str:
    ok = {v: [r for r in runs if r["variant"] == v and "error" not in r] for v in variants}
    lines = [f"\n== {size}^3, {args.threads} threads, {args.steps} timed steps per worker, {args.reps} reps ==",
             f"{'variant':<15} {'s/step median (min-max)':<26} {'peak RSS GiB':<13} {'params M':<9} final loss"]
    for v in variants:
        rs = ok[v]
        if not rs:
            errs = [r["error"] for r in runs if r["variant"] == v]
            lines.append(f"{v:<15} FAILED: {errs[0].strip().splitlines()[-1] if errs else 'no run'}")
            continue
        lines.append(f"{v:<15} {_span([r['s_per_step'] for r in rs]):<26} "
                     f"{statistics.median([r['peak_rss_GiB'] for r in rs]):<13.2f} {rs[0]['params'] / 1e6:<9.2f} "
                     f"{statistics.median([r['final_loss'] for r in rs]):.4f}")
    base = {r["rep"]: r for r in ok.get("published", [])}
    if base:
        lines.append(f"{'ratio':<24} {'per-rep median (min-max)':<26} {'of medians':<11} RSS ratio")
        for v in [v for v in variants if v != "published" and ok[v]]:
            per = [r["s_per_step"] / base[r["rep"]]["s_per_step"] for r in ok[v] if r["rep"] in base]
            if not per:
                continue
            med = statistics.median(r["s_per_step"] for r in ok[v]) / \
                statistics.median(r["s_per_step"] for r in base.values())
            rss = statistics.median(r["peak_rss_GiB"] for r in ok[v]) / \
                statistics.median(r["peak_rss_GiB"] for r in base.values())
            lines.append(f"{v + '/published':<24} {_span(per):<26} {med:<11.3f} {rss:.3f}")
    return "\n".join(lines)


def loss_check(args) -> None:
    """medssl fp32 vs bf16 from the same init and inputs: final losses, relative difference, trajectories."""
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    out = {}
    for variant in ("medssl", "medssl_bf16"):
        t0 = time.perf_counter()
        out[variant] = run_steps(variant, args.features, args.loss_size, args.loss_steps, args.data_seed, warmup=0)
        print(f"{variant}: {args.loss_steps} steps at {args.loss_size}^3 in {time.perf_counter() - t0:.1f} s",
              flush=True)
    f32, b16 = out["medssl"]["losses"], out["medssl_bf16"]["losses"]
    print(f"\n{'step':>4} {'fp32':>10} {'bf16':>10} {'rel diff':>9}")
    for i, (x, y) in enumerate(zip(f32, b16), 1):
        print(f"{i:>4} {x:>10.5f} {y:>10.5f} {abs(y - x) / abs(x):>9.4%}")
    rel = abs(b16[-1] - f32[-1]) / abs(f32[-1])
    print(f"\nfinal loss fp32 {f32[-1]:.6f}  bf16 {b16[-1]:.6f}  |bf16 - fp32| / |fp32| = {rel:.4%} "
          f"({'within' if rel <= 0.01 else 'OUTSIDE'} 1 %)")
    print("final parts fp32", out["medssl"]["parts"], "\nfinal parts bf16", out["medssl_bf16"]["parts"])
    if args.json:
        Path(args.json).write_text(json.dumps({"loss_check": out, "rel_diff_final": rel}, indent=1))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog="See the module docstring for the "
                                 "protocol and the patches applied to the published code.")
    ap.add_argument("--published", type=Path, help="checkout of github.com/YutingHe-list/GVSL; without it the "
                    "published variants are skipped")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 96], help="cubic input sizes (default 64 96)")
    ap.add_argument("--reps", type=int, default=5, help="interleaved repetitions (fresh processes) per variant")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per worker, after 1 warm-up step")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads in each worker (default 2)")
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS[:3]),
                    help="default: published medssl medssl_bf16 (add published_bf16 for the published code "
                         "under plain bf16 autocast)")
    ap.add_argument("--features", type=int, nargs="+", default=list(PUBLISHED_FEATURES),
                    help="medssl U-Net widths (default the published 32 64 128 256 512; others only for tests)")
    ap.add_argument("--data-seed", type=int, default=0, help="seed of the fixed input tensors")
    ap.add_argument("--json", help="write all raw numbers here")
    ap.add_argument("--loss-check", action="store_true", help="compare medssl fp32 and bf16 losses instead")
    ap.add_argument("--loss-steps", type=int, default=20, help="steps of --loss-check (default 20)")
    ap.add_argument("--loss-size", type=int, default=64, help="input size of --loss-check (default 64)")
    for hidden in ("--variant", "--patched-dir"):
        ap.add_argument(hidden, help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.loss_check:
        return loss_check(args)

    variants = list(args.variants)
    tmp, patches, commit = None, [], None
    if any(v.startswith("published") for v in variants):
        if args.published is None:
            print("no --published checkout: skipping", [v for v in variants if v.startswith("published")])
            variants = [v for v in variants if not v.startswith("published")]
        else:
            commit = published_commit(args.published)
            tmp = tempfile.mkdtemp(prefix="gvsl_published_cpu_")
            patches = patch_published(args.published.resolve(), Path(tmp))
            print(f"published: {args.published} commit {commit or '(not a git repository)'}")
            print(f"CPU patches ({len(patches)} lines, copies in {tmp}):")
            print("\n".join("  " + p for p in patches))
    print(f"{args.threads} threads, variants {variants}, sizes {args.sizes}", flush=True)
    runs = []
    try:
        for size in args.sizes:
            for rep in range(args.reps):
                for v in variants:
                    r = run_worker(args, v, size, tmp)
                    r["rep"] = rep
                    runs.append(r)
                    msg = r.get("error", "").strip().splitlines()[-1:] if "error" in r else \
                        [f"{r['s_per_step']:.3f} s/step, {r['peak_rss_GiB']:.2f} GiB, loss {r['final_loss']:.4f}"]
                    print(f"  {size}^3 rep {rep} {v:<15} {' '.join(msg)}", flush=True)
            print(f"torch {next((r['torch'] for r in runs if 'torch' in r), '?')}", end="")
            print(table(size, [r for r in runs if r["size"] == size], variants, args), flush=True)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        meta = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        Path(args.json).write_text(json.dumps({"args": meta, "published_commit": commit, "patches": patches,
                                               "runs": runs}, indent=1))
        print(f"raw numbers: {args.json}")


if __name__ == "__main__":
    main()
