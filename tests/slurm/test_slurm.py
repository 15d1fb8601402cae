"""The workflow on a real single-node SLURM cluster (scripts/slurm-local.sh).

Needs root and the Debian packages munge slurmctld slurmd slurm-client
(scripts/install-system-deps.sh). Without them the cluster tests skip, or fail
when MEDSSL_REQUIRE_SYSTEM=1 (CI). The cluster runs through
tests/slurm/profile, the real SLURM profile cut down to a CPU-only node.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts/slurm-local.sh"
REAL_PROFILE = ROOT / "workflow/profiles/slurm/config.yaml"
TEST_PROFILE = ROOT / "tests/slurm/profile/config.yaml"
TARGET = "results/ssl3d/table.csv"
CLIENTS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "sinfo", "scontrol",
           "scancel")
# what a CPU-only test cluster cannot have (see the comment in tests/slurm/profile/config.yaml)
NO_TEST_RESOURCES = {"slurm_account", "gpu", "gpus", "gpu_model"}
TEST_ONLY_SETTINGS = {"jobs", "latency-wait", "slurm-status-command", "slurm-init-seconds-before-status-checks",
                      "slurm-keep-successful-logs"}


def _pipeline_helpers():
    spec = importlib.util.spec_from_file_location("_medssl_pipeline_helpers", ROOT / "tests/pipeline/conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_helpers = _pipeline_helpers()
copy_project, env_for = _helpers.copy_project, _helpers.env_for


def _require_cluster() -> None:
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin"
    problems = []
    missing = [c for c in CLIENTS if shutil.which(c, path=path) is None]
    if missing:
        problems.append(f"missing {' '.join(missing)} (Debian packages munge slurmctld slurmd slurm-client: "
                        "run scripts/install-system-deps.sh as root)")
    if os.geteuid() != 0:
        problems.append("needs root (slurmd runs jobs as their user)")
    if problems:
        msg = "no local SLURM cluster: " + "; ".join(problems)
        if os.environ.get("MEDSSL_REQUIRE_SYSTEM", "") not in ("", "0"):
            pytest.fail(msg + " [MEDSSL_REQUIRE_SYSTEM is set]", pytrace=False)
        pytest.skip(msg)


def _sh(cmd: list[str], timeout: float, **kw) -> subprocess.CompletedProcess:
    """A command under coreutils `timeout` (kills it, TERM then KILL) and a subprocess timeout as a backstop."""
    return subprocess.run(["timeout", "-k", "10", str(int(timeout)), *cmd], capture_output=True, text=True,
                          timeout=timeout + 30, **kw)


def _script(action: str, state: Path, timeout: float = 90) -> subprocess.CompletedProcess:
    res = _sh(["bash", str(SCRIPT), action, str(state)], timeout)
    if action != "status":
        assert res.returncode == 0, f"slurm-local.sh {action} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
    return res


def _alive(pid: int) -> bool:
    """Running and not a zombie (orphans may wait a moment for their reaper)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _pids(state: Path) -> dict[str, int]:
    files = {"munged": state / "munge/munged.pid", "slurmctld": state / "slurmctld.pid",
             "slurmd": state / "slurmd.pid"}
    return {name: int(f.read_text().strip()) for name, f in files.items() if f.is_file()}


@dataclass
class Cluster:
    state: Path
    start_s: float

    @property
    def conf(self) -> Path:
        return self.state / "slurm.conf"

    def env(self, project: Path) -> dict[str, str]:
        """The project's test environment (venv first in PATH) plus this cluster's clients; SLURM jobs
        inherit it (the plugin submits with --export=ALL)."""
        env = env_for(project)
        env["PATH"] = f"{self.state / 'bin'}{os.pathsep}{env['PATH']}"
        env["SLURM_CONF"] = str(self.conf)
        return env

    def job_states(self, ids: list[str]) -> dict[str, str]:
        res = _sh(["squeue", "--states=all", "-h", "-o", "%i|%T", "-j", ",".join(ids)], 30,
                  env={**os.environ, "SLURM_CONF": str(self.conf)})
        assert res.returncode == 0, res.stderr
        return dict(line.split("|") for line in res.stdout.split())


def _start(state: Path) -> Cluster:
    t0 = time.monotonic()
    _script("start", state)
    return Cluster(state, time.monotonic() - t0)


def _stop(state: Path) -> None:
    pids = _pids(state)
    _script("stop", state)
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = {n: p for n, p in pids.items() if _alive(p)}
    assert not left, f"daemons still running after stop: {left}"
    assert not _pids(state), "stop left pid files"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    _require_cluster()
    state = tmp_path_factory.mktemp("slurm")
    try:
        yield _start(state)
    finally:  # also when start failed half-way
        _stop(state)


def _submitted(out: str) -> list[tuple[str, str]]:
    """(SLURM job id, its log file) of every job Snakemake submitted."""
    return re.findall(r"has been submitted with SLURM jobid (\d+) \(log: (\S+)\)", out)


def _finished_runs(project: Path) -> int:
    con = sqlite3.connect(project / "mlflow.db")
    try:
        return con.execute("select count(*) from runs where status='FINISHED'").fetchone()[0]
    finally:
        con.close()


def test_profile_override_tracks_the_real_profile():
    """tests/slurm/profile = workflow/profiles/slurm minus account and GPUs, with test-cluster sizes."""
    real = yaml.safe_load(REAL_PROFILE.read_text())
    test = yaml.safe_load(TEST_PROFILE.read_text())
    assert set(test["set-resources"]) == set(real["set-resources"])
    for rule, res in real["set-resources"].items():
        assert set(test["set-resources"][rule]) == set(res) - NO_TEST_RESOURCES, rule
        assert not set(test["set-resources"][rule]) & NO_TEST_RESOURCES, rule
        if "gpus" in res:  # torchrun's processes = the GPUs SLURM grants
            assert res["gpus"] == res["gpu"], rule
    assert set(test["default-resources"]) == set(real["default-resources"]) - NO_TEST_RESOURCES
    differ = {k for k in set(real) | set(test) if real.get(k) != test.get(k)}
    assert differ - {"default-resources", "set-resources"} <= TEST_ONLY_SETTINGS
    assert real["slurm-status-command"] == "sacct" and test["slurm-status-command"] == "squeue"
    assert real["slurm-requeue"] is True and real["retries"] >= 1


@pytest.mark.slow
def test_cluster_runs_a_batch_job(cluster, tmp_path):
    assert cluster.start_s < 60
    assert "node state: idle" in _script("status", cluster.state).stdout
    env = {**os.environ, "PATH": f"{cluster.state / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    env.pop("SLURM_CONF", None)  # the wrappers in <state>/bin know the config, as inside a job
    res = _sh(["sbatch", "--parsable", "--mem", "100", "-o", str(tmp_path / "%j.out"),
               "--wrap", "env -u SLURM_CONF srun echo step of $SLURM_JOB_ID"], 30, env=env)
    assert res.returncode == 0, res.stderr
    job = res.stdout.strip()
    deadline = time.monotonic() + 60  # sbatch --wait polls every 10 s; squeue is faster
    while (state := cluster.job_states([job]).get(job)) not in ("COMPLETED", "FAILED") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert state == "COMPLETED"
    assert (tmp_path / f"{job}.out").read_text().strip() == f"step of {job}"


@pytest.mark.slow
def test_second_cluster_gets_its_own_ports_and_stops_cleanly(cluster, tmp_path):
    """start/status/stop of another cluster while the module's one runs: no port clash, nothing left behind."""
    other = tmp_path / "other"
    try:
        _start(other)
        assert _script("status", other).returncode == 0
        ports = [re.search(r"^SlurmctldPort=(\d+)$", (s / "slurm.conf").read_text(), re.M).group(1)
                 for s in (cluster.state, other)]
        assert ports[0] != ports[1]
    finally:
        _stop(other)
    assert _script("status", other).returncode == 1
    assert "node state: idle" in _script("status", cluster.state).stdout  # the module's cluster is untouched


@pytest.mark.slow
def test_tiny_pipeline_same_table_locally_and_through_slurm(cluster, tmp_path, tiny_params, record_property):
    params = tiny_params()
    ssl = params["studies"]["ssl3d"]
    ssl.update(methods=["scratch", "s2dc"], datasets=["phantom_organs"], protocols=["linear", "finetune"],
               fractions=[1.0], seeds=[0])
    local, slurm = copy_project(tmp_path / "local"), copy_project(tmp_path / "slurm")
    for project in (local, slurm):
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    t0 = time.monotonic()
    res = _sh(["snakemake", TARGET, "--cores", "2"], 300, cwd=local, env=env_for(local))
    local_s = time.monotonic() - t0
    assert res.returncode == 0, res.stderr[-4000:]

    t0 = time.monotonic()
    res = _sh(["snakemake", TARGET, "--profile", "tests/slurm/profile"], 360, cwd=slurm, env=cluster.env(slurm))
    slurm_s = time.monotonic() - t0
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-6000:]
    record_property("local_s", round(local_s, 1))
    record_property("slurm_s", round(slurm_s, 1))
    print(f"tiny ssl3d pipeline: local {local_s:.1f} s, SLURM {slurm_s:.1f} s")

    # Same numbers: the runs are deterministic on CPU, and the table is written the same way.
    assert (slurm / TARGET).read_text() == (local / TARGET).read_text()
    assert _finished_runs(slurm) == _finished_runs(local) > 0  # MLflow runs recorded from the SLURM jobs

    # Every job but the local table rule went through SLURM and completed there.
    datasets = {ssl["pretrain_dataset"], *ssl["datasets"]}
    n_jobs = (2 * len(datasets) + len(ssl["methods"])  # fetch + preprocess, pretrain
              + len(ssl["datasets"]) * len(ssl["protocols"]) * len(ssl["methods"]))  # downstream
    jobs = _submitted(out)
    assert len(jobs) == n_jobs, out[-4000:]
    assert set(cluster.job_states([j for j, _ in jobs]).values()) == {"COMPLETED"}
    rules = sorted({re.search(r"/rule_(\w+)/", log).group(1) for _, log in jobs})
    assert rules == sorted(["fetch", "preprocess", "pretrain", "downstream"])
    for job, log in jobs:
        assert Path(log).is_file() and "Finished jobid" in Path(log).read_text(), (job, log)
    assert "localrule table" in out


FAILING = """
rule all:
    input: "ok.txt", "bad.txt"

rule ok:
    output: "ok.txt"
    shell: "echo fine > {output}"

rule bad:
    output: "bad.txt"
    shell: "echo 'medssl-test: this rule fails on purpose' >&2; exit 3"
"""


@pytest.mark.slow
def test_failing_rule_is_reported_failed_through_slurm(cluster, tmp_path):
    (tmp_path / "Snakefile").write_text(FAILING)
    t0 = time.monotonic()
    res = _sh(["snakemake", "--profile", str(TEST_PROFILE.parent)], 180, cwd=tmp_path, env=cluster.env(tmp_path))
    took = time.monotonic() - t0
    out = res.stdout + res.stderr
    assert res.returncode not in (0, 124, 137), f"rc {res.returncode} after {took:.0f} s:\n{out[-4000:]}"
    assert "Error in rule bad" in out and "SLURM status is: 'FAILED'" in out, out[-4000:]
    assert (tmp_path / "ok.txt").read_text() == "fine\n"  # keep-going: the other job still ran
    assert not (tmp_path / "bad.txt").exists()

    bad = [(j, log) for j, log in _submitted(out) if "/rule_bad/" in log]
    assert len(bad) == 2, out[-4000:]  # retries: 1 resubmits it once; --requeue does not rerun a non-zero exit
    assert set(cluster.job_states([j for j, _ in bad]).values()) == {"FAILED"}
    for _, log in bad:
        assert "this rule fails on purpose" in Path(log).read_text()
    print(f"failing rule reported after {took:.1f} s")
