"""Wall time and peak memory of the default benchmark (`snakemake --cores 2`).

Runs in a temporary copy of the project (the working tree is not touched):
1. the full default pipeline from nothing (fetch -> tables),
2. a rerun with nothing changed,
and prints wall times, the peak resident memory summed over all processes of
the run (sampled every 0.2 s), the peak of the largest single job, and the
share of the downstream jobs' time spent outside training steps (process
start-up and imports, data loading, validation, test, writing): job time from
the first and last time stamps of each job's log, step time from the
``timing`` of its metrics.json files.

    python bench/bench_pipeline.py [--cores 2] [--keep DIR] [--configfile workflow/presets/quick.yaml]

It ends by printing every table the run wrote (the studies', pretext, claims).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "pipeline"))
from conftest import copy_project, env_for  # noqa: E402


def run_measured(cmd: list[str], cwd: Path) -> tuple[float, float, float, int]:
    """Run ``cmd``; return (seconds, peak total RSS GiB, peak single-process RSS GiB, exit code)."""
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env_for(cwd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peak_total = peak_one = 0.0
    done = threading.Event()
    out: list[bytes] = []
    threading.Thread(target=lambda: (out.append(proc.stdout.read()), done.set()), daemon=True).start()
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
            rss = [p.memory_info().rss for p in procs if p.is_running()]
        except psutil.Error:
            rss = []
        if rss:
            peak_total = max(peak_total, sum(rss) / 2**30)
            peak_one = max(peak_one, max(rss) / 2**30)
        time.sleep(0.2)
    done.wait(10)
    if proc.returncode != 0:
        sys.stdout.write(b"".join(out).decode(errors="replace")[-5000:])
    return time.time() - t0, peak_total, peak_one, proc.returncode


def _stamp(line: str) -> datetime | None:
    try:
        return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    except ValueError:
        return None


def downstream_overhead(work: Path) -> tuple[float, float, int]:
    """(summed job seconds, summed training-step seconds, jobs) of the downstream jobs of a run."""
    job_s = 0.0
    logs = sorted((work / "logs" / "downstream").rglob("*.log"))
    for log in logs:
        stamps = [t for t in map(_stamp, log.read_text(errors="replace").splitlines()) if t is not None]
        if len(stamps) >= 2:
            job_s += (stamps[-1] - stamps[0]).total_seconds()
    step_s = sum(json.loads(m.read_text()).get("timing", {}).get("train_steps_s", 0.0)
                 for m in (work / "results").rglob("frac*/seed*/metrics.json"))
    return job_s, step_s, len(logs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--keep", type=Path, help="run in this folder and keep it")
    ap.add_argument("--configfile", help="a preset merged over params.yaml (path relative to the project)")
    args = ap.parse_args()
    cmd = ["snakemake", "--cores", str(args.cores)] + (["--configfile", args.configfile] if args.configfile else [])
    work = args.keep or Path(tempfile.mkdtemp(prefix="medssl-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    copy_project(work)
    try:
        t, mem, one, rc = run_measured(cmd, work)
        print(f"{' '.join(cmd[3:]) or 'default'} pipeline, cold: {t:.1f} s wall, peak RSS {mem:.2f} GiB total, {one:.2f} GiB largest job, rc={rc}")
        job_s, step_s, n = downstream_overhead(work)
        if job_s > 0:
            print(f"downstream: {n} jobs, {job_s:.1f} s summed job time, {step_s:.1f} s in training steps: "
                  f"{100 * (1 - step_s / job_s):.1f} % outside training steps")
        t2, _, _, rc2 = run_measured(cmd, work)
        print(f"rerun with nothing changed: {t2:.1f} s, rc={rc2}")
        for table in sorted((work / "results").glob("*/table.md")) + sorted((work / "results").glob("*.md")):
            print(f"\n===== {table.relative_to(work)}\n{table.read_text()}")
        return rc or rc2
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
