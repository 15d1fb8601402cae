"""Cost of MLflow tracking through medssl.tracking: a sqlite file against an ``mlflow server``.

Starts ``mlflow server`` on 127.0.0.1 (a free port, sqlite backend, proxied
artifacts; ``--workers`` 2 and MLflow's default 4, each started and stopped
``--starts`` times) and reports the seconds until ``/health`` answers. Then,
for a sqlite file and for the server, medssl.tracking's costs:

* open+close of an empty child run (experiment/parent lookup, child creation,
  end; on a server also the duplicate-parent merge),
* one metric written at once (``log_metrics`` + ``flush`` = one ``log_batch``),
  and MLflow's own ``MlflowClient.log_metric`` for reference,
* ``N`` steps of one metric buffered and flushed in one go (``--batch``).

Medians (and 90th percentiles) over ``--repeat`` calls. Everything runs in
temporary folders; the server's process group is stopped by its PID.

    python bench/bench_tracking.py
    python bench/bench_tracking.py --repeat 200 --batch 100 1000 5000
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(folder: Path, workers: int, timeout: float = 180) -> tuple[subprocess.Popen, str, float]:
    port = free_port()
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
           "--artifacts-destination", str(folder / "artifacts"), "--serve-artifacts",
           "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    start = time.monotonic()
    with open(folder / "server.log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited: {(folder / 'server.log').read_text()[-2000:]}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return proc, url, time.monotonic() - start
        if time.monotonic() - start > timeout:
            stop_server(proc)
            raise RuntimeError(f"mlflow server not healthy within {timeout} s")
        time.sleep(0.1)


def stop_server(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=15)


def stats(xs: list[float]) -> str:
    xs = sorted(xs)
    return f"{statistics.median(xs) * 1e3:.1f} ms (p90 {xs[int(0.9 * (len(xs) - 1))] * 1e3:.1f})"


def measure(uri: str, repeat: int, batches: list[int]) -> dict[str, str]:
    import mlflow

    from medssl import tracking

    out: dict[str, str] = {}
    t = time.monotonic()
    with tracking.tracked_run("bench", "m", "d", "linear", "first", params={"a": 1}, uri=uri):
        pass
    out["first run (creates experiment + parent)"] = f"{(time.monotonic() - t) * 1e3:.0f} ms"
    opens = []
    for i in range(max(3, repeat // 10)):
        t = time.monotonic()
        with tracking.tracked_run("bench", "m", "d", "linear", f"empty{i}", params={}, uri=uri):
            pass
        opens.append(time.monotonic() - t)
    out["open+close of a child run"] = stats(opens)

    with tracking.tracked_run("bench", "m", "d", "linear", "metrics", params={}, uri=uri) as run:
        single = []
        for step in range(repeat):
            t = time.monotonic()
            run.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
            run.flush()
            single.append(time.monotonic() - t)
        out["one metric, flushed (log_batch of 1)"] = stats(single)
        client = mlflow.MlflowClient(tracking_uri=uri)
        raw = []
        for step in range(repeat):
            t = time.monotonic()
            client.log_metric(run.run_id, "raw", float(step), step=step)
            raw.append(time.monotonic() - t)
        out["MlflowClient.log_metric (reference)"] = stats(raw)
        for n in batches:
            t = time.monotonic()
            for step in range(n):
                run.log_metrics({f"batch{n}": float(step)}, step=step)
            run.flush()
            dt = time.monotonic() - t
            out[f"{n} steps buffered + flush"] = f"{dt * 1e3:.0f} ms ({dt / n * 1e6:.0f} µs/step)"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=100)
    ap.add_argument("--batch", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--starts", type=int, default=1)
    ap.add_argument("--workers", type=int, nargs="+", default=[2, 4])
    a = ap.parse_args()
    os.environ["MEDSSL_TRACKING"] = "on"
    import mlflow  # noqa: F401  (import time is not part of any measurement)

    from medssl import tracking

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print("| mlflow server | seconds to /health |\n|---|---|")
        for w in a.workers:
            for k in range(a.starts):
                folder = tmp / f"start{w}_{k}"
                folder.mkdir()
                proc, _, dt = start_server(folder, w)
                stop_server(proc)
                print(f"| --workers {w} | {dt:.1f} |")

        uri_sqlite = tracking.init_store(f"sqlite:///{tmp / 'mlflow.db'}")
        results = {"sqlite": measure(uri_sqlite, a.repeat, a.batch)}
        (tmp / "server").mkdir()
        proc, url, _ = start_server(tmp / "server", 2)
        try:
            results["HTTP server"] = measure(url, a.repeat, a.batch)
        finally:
            stop_server(proc)
    print(f"\n| medssl.tracking ({a.repeat} calls) | sqlite | HTTP server |\n|---|---|---|")
    for key in results["sqlite"]:
        print(f"| {key} | {results['sqlite'][key]} | {results['HTTP server'][key]} |")


if __name__ == "__main__":
    main()
