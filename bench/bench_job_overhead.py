"""Where the wall time of one downstream job goes: training steps against everything else.

Runs the job Snakemake runs for one ssl3d row under the default profile (all
seeds of the row in one process, ``group_seeds: true``) in an existing project
that holds the row's inputs (``data/processed/<dataset>`` and
``checkpoints/<study>/<method>/backbone.*``, e.g. the copy kept by
``bench/bench_pipeline.py --keep DIR``), and splits its wall time, measured
from outside the process, into

* training steps (forward, backward, optimiser; ``timing.train_steps_s`` of
  each seed's metrics.json),
* in-loop validation and the final test (``validation_s``, ``test_s``),
* the rest of each run (data loading between steps, state saves, building the
  model, MLflow), ``seconds - steps - validation - test``,
* outside the runs: interpreter start, imports, argument parsing, exit.

    python bench/bench_job_overhead.py --project DIR [--protocol finetune] [--method gvsl]
        [--fraction 1.0] [--repeats 1]

Each repeat deletes the row's metrics.json / state.pt first so that it trains
from the start. Prints one line per repeat and the median share of each part.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "pipeline"))
from conftest import env_for  # noqa: E402


def one(project: Path, args: argparse.Namespace, seeds: list[int]) -> dict[str, float]:
    run_dir = project / "results" / args.study / "runs" / args.dataset / args.protocol / args.method
    outs = [run_dir / f"frac{args.fraction}" / f"seed{s}" for s in seeds]
    for d in outs:
        for name in ("metrics.json", "state.pt"):
            (d / name).unlink(missing_ok=True)
    cmd = ["medssl", "downstream", "--params", "params.yaml", args.study, args.dataset, args.protocol, args.method,
           "--fraction", str(args.fraction), *[f"--seed={s}" for s in seeds]]
    env = env_for(project)
    env["PYTHONPATH"] = str(ROOT / "src")  # this checkout's code, whatever the venv's editable install points at
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stderr[-4000:]}")
    parts = {"steps": 0.0, "validation": 0.0, "test": 0.0, "in-run rest": 0.0}
    for d in outs:
        m = json.loads((d / "metrics.json").read_text())
        t = m["timing"]
        parts["steps"] += t["train_steps_s"]
        parts["validation"] += t["validation_s"]
        parts["test"] += t["test_s"]
        parts["in-run rest"] += m["seconds"] - t["train_steps_s"] - t["validation_s"] - t["test_s"]
    parts["outside runs"] = wall - sum(parts.values())
    parts["wall"] = wall
    return parts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--project", type=Path, required=True, help="a project holding the row's inputs")
    ap.add_argument("--study", default="ssl3d")
    ap.add_argument("--dataset", default="phantom_organs")
    ap.add_argument("--protocol", default="finetune", choices=["finetune", "linear"])
    ap.add_argument("--method", default="gvsl")
    ap.add_argument("--fraction", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from medssl import config

    seeds = config.load(args.project / "params.yaml").studies[args.study].seeds
    rows = []
    for i in range(args.repeats):
        parts = one(args.project, args, seeds)
        rows.append(parts)
        print(f"repeat {i + 1}: wall {parts['wall']:.1f} s, " + ", ".join(
            f"{k} {v:.1f} s ({100 * v / parts['wall']:.1f} %)" for k, v in parts.items() if k != "wall"), flush=True)
    print(f"\n{args.study} {args.dataset} {args.protocol} {args.method} {args.fraction:g}, seeds {seeds} in one "
          f"process, n = {len(rows)}; median share of the wall time (min-max):")
    for k in rows[0]:
        if k == "wall":
            continue
        shares = [100 * r[k] / r["wall"] for r in rows]
        print(f"  {k:13s} {statistics.median(shares):5.1f} % ({min(shares):.1f}-{max(shares):.1f})")
    walls = [r["wall"] for r in rows]
    print(f"  wall          {statistics.median(walls):.1f} s ({min(walls):.1f}-{max(walls):.1f})")


if __name__ == "__main__":
    main()
