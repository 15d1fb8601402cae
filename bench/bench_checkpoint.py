"""Cost of saving the full pre-training state (medssl.train.resume) against the cost of a step.

For each backbone: one GVSL step (fwd + bwd + Adam, batch 2, 32³ patches) and
one save of the whole state a resumable run writes (weights with the GVSL
heads, Adam moments, every random stream, the position), atomically
(``torch.save`` to a temporary file, then ``os.replace``) into a temporary
folder under ``--dir`` (default: the system's temporary folder, which may be
in memory: pass a folder on the disk the checkpoints go to).
Reports the state size, seconds per save (median of ``--saves``), seconds per
step (median of ``--steps``), the save as a share of one step, and the
overhead of saving every 100 steps (the ``checkpoint_every`` default).

    python bench/bench_checkpoint.py --dir .         # CPU, 1 thread, states on this disk
    python bench/bench_checkpoint.py --threads 2 --dir /scratch/x
    python bench/bench_checkpoint.py --device cuda --steps 20 --dir .
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

BACKBONES = [  # (label, args of medssl.nn.unet3d.UNet3D)
    ("unet3d_tiny [8,16,32,64] (params.yaml default)", {"in_channels": 1, "features": [8, 16, 32, 64], "groups": 4}),
    ("unet3d [32,64,128,256]", {"in_channels": 1, "features": [32, 64, 128, 256], "groups": 8}),
]


def measure(label: str, args: dict, threads: int, steps: int, saves: int, folder: Path,
            device: str = "cpu") -> dict:
    """Median step and save times of GVSL on the backbone ``args``."""
    import torch

    from medssl.methods.gvsl import GVSL
    from medssl.nn.unet3d import UNet3D
    from medssl.train.resume import capture_rng, save_state, to_cpu

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = GVSL(UNet3D(**args), seed=0).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.rand(2, 1, 32, 32, 32, device=device)

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    step_times = []
    for i in range(steps + 1):
        sync()
        t = time.perf_counter()
        loss, _ = model(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync()
        if i:  # the first step allocates
            step_times.append(time.perf_counter() - t)
    path = folder / "state.pt"
    save_times = []
    for _ in range(saves):
        t = time.perf_counter()
        save_state(path, {"version": 2, "epoch": 0, "step": 1, "global_step": 1,
                          "model": to_cpu(model.state_dict()), "optimizer": to_cpu(opt.state_dict()),
                          "scheduler": None, "rng": capture_rng(), "history": [], "epoch_losses": [0.0]})
        save_times.append(time.perf_counter() - t)
    step, save = statistics.median(step_times), statistics.median(save_times)
    return {"backbone": label, "parameters_M": sum(p.numel() for p in model.parameters()) / 1e6,
            "state_MB": path.stat().st_size / 2**20, "save_s": save, "step_s": step,
            "save_per_step_pct": 100 * save / step, "overhead_every_100_pct": 100 * save / (100 * step)}


def main() -> None:
    """Print one row per backbone."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--saves", type=int, default=10)
    ap.add_argument("--dir", type=Path, default=None, help="where to write the states (default: a temp folder)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        rows = [measure(label, bb, args.threads, args.steps, args.saves, Path(tmp), args.device)
                for label, bb in BACKBONES]
    print(f"GVSL, batch 2, 32^3 patches, {args.device}, {args.threads} thread(s); medians of {args.steps} steps / "
          f"{args.saves} saves\n")
    print("| backbone | params (M) | state (MB) | s / save | s / step | save / step | overhead, every 100 steps |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['backbone']} | {r['parameters_M']:.2f} | {r['state_MB']:.1f} | {r['save_s']:.4f} | "
              f"{r['step_s']:.3f} | {r['save_per_step_pct']:.1f} % | {r['overhead_every_100_pct']:.3f} % |")


if __name__ == "__main__":
    main()
