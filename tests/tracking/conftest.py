"""An ``mlflow server`` on 127.0.0.1 for the tracking tests, stopped by its PID."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
START_TIMEOUT = 180  # s; measured 7-25 s on 2 cores


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log: Path
    db: Path
    artifacts: Path
    start_seconds: float

    def log_tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.is_file() else ""


def start_server(workdir: Path, workers: int = 2, timeout: float = START_TIMEOUT) -> Server:
    """Start ``mlflow server`` (sqlite backend, proxied artifacts) and wait for ``/health``.

    The server runs in its own session, so :func:`stop_server` can end it and the
    uvicorn workers it forks as one process group (SIGTERM to the top process alone
    leaves the workers behind). Background job execution is off: the tests need none.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    db, artifacts, log = workdir / "mlflow.db", workdir / "artifacts", workdir / "server.log"
    port = free_port()
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    env.pop("MLFLOW_TRACKING_URI", None)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    cmd = [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{db}",
           "--artifacts-destination", str(artifacts), "--serve-artifacts",
           "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    start = time.monotonic()
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    server = Server(f"http://127.0.0.1:{port}", proc, log, db, artifacts, 0.0)
    deadline = start + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {proc.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(f"{server.url}/health", timeout=2) as resp:
                if resp.status == 200:
                    break
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            stop_server(server)
            raise RuntimeError(f"mlflow server not healthy within {timeout} s:\n{server.log_tail()}")
        time.sleep(0.25)
    server.start_seconds = time.monotonic() - start
    return server


def stop_server(server: Server, grace: float = 15) -> None:
    """SIGTERM the server's process group (its PID is the group id), SIGKILL after ``grace`` s."""
    proc = server.proc
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):  # workers that outlived the top process
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=grace)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> Server:
    """One ``mlflow server`` for the session's tracking tests (each test uses its own experiment)."""
    server = start_server(tmp_path_factory.mktemp("mlflow_server"))
    print(f"\nmlflow server {server.url} healthy after {server.start_seconds:.1f} s")
    try:
        yield server
    finally:
        stop_server(server)
