"""End to end: Snakemake on a tiny configuration, then `dvc repro` on the same project."""

from __future__ import annotations

import json
import math
import sqlite3

import pandas as pd
import pytest
import yaml

from .conftest import run

pytestmark = pytest.mark.slow


def _metrics_files(project):
    return sorted((project / "results/ssl3d/runs").rglob("metrics.json"))


def test_snakemake_then_dvc_repro(tiny_project):
    project = tiny_project
    params = yaml.safe_load((project / "params.yaml").read_text())
    study = params["studies"]["ssl3d"]

    res = run(["snakemake", "--cores", "2"], project)
    table = project / "results/ssl3d/table.csv"
    for ext in ("md", "tex", "csv"):
        assert (project / f"results/ssl3d/table.{ext}").is_file()
    n_runs = (len(study["datasets"]) * len(study["protocols"]) * len(study["methods"])
              * len(study["fractions"]) * len(study["seeds"]))
    files = _metrics_files(project)
    assert len(files) == n_runs
    for f in files:
        m = json.loads(f.read_text())
        assert all(math.isfinite(v) for k, v in m["metrics"].items() if k in ("dice", "auc", "accuracy")), f

    df = pd.read_csv(table)
    assert sorted(df["method"].unique()) == sorted(study["methods"])
    numeric = df.select_dtypes("number")
    assert len(numeric.columns) > 0
    assert numeric.notna().all().all() or numeric.stack().map(math.isfinite).any()
    md = (project / "results/ssl3d/table.md").read_text()
    for method in study["methods"]:
        assert method in md

    # MLflow holds the runs: one experiment, a parent per method/dataset pair, nested children.
    con = sqlite3.connect(project / "mlflow.db")
    exp = con.execute("select experiment_id from experiments where name='ssl3d'").fetchone()
    assert exp is not None
    runs = con.execute("select run_uuid, name from runs where experiment_id=?", exp).fetchall()
    parents = con.execute(
        "select count(distinct value) from tags where key='mlflow.parentRunId' and run_uuid in "
        "(select run_uuid from runs where experiment_id=?)", exp).fetchone()[0]
    n_pairs = len(study["methods"]) * (len(study["datasets"]) + 1)  # + the pretraining pair
    assert parents == n_pairs
    assert len(runs) >= n_pairs + n_runs
    finished = con.execute("select count(*) from runs where experiment_id=? and status='FINISHED'", exp).fetchone()[0]
    assert finished == len(runs)

    # The template and stn studies: one metrics.json per model x seed, a row per model, MLflow runs.
    for name, n_groups in (("template", 1), ("stn", 1), ("uda2d", 2)):
        spec = params["studies"][name]
        files = sorted((project / f"results/{name}/runs").rglob("metrics.json"))
        assert len(files) == n_groups * len(spec["models"]) * len(spec["seeds"]), name
        df = pd.read_csv(project / f"results/{name}/table.csv")
        assert sorted(df["method"].unique()) == sorted(spec["models"]), name
        exp = con.execute("select experiment_id from experiments where name=?", (name,)).fetchone()
        assert exp is not None, name
        n = con.execute("select count(*) from runs where experiment_id=? and status='FINISHED'", exp).fetchone()[0]
        # a parent per model x dataset (direction) + a child per seed
        assert n == n_groups * len(spec["models"]) * (len(spec["seeds"]) + 1), name

    # Every job read the run's own configuration file. A second parse with another configuration
    # (a `snakemake -n --configfile` beside a running pipeline) writes its own file, not that one.
    [own] = (project / ".medssl/run").iterdir()
    text = own.read_text()
    (project / "other.yaml").write_text("downstream:\n  lr: 0.5\n")
    run(["snakemake", "--dry-run", "--configfile", "other.yaml"], project)
    assert own.read_text() == text and len(list((project / ".medssl/run").iterdir())) == 2

    # A rerun with nothing changed does nothing.
    again = run(["snakemake", "--cores", "2"], project)
    assert "Nothing to be done" in again.stdout + again.stderr

    # dvc repro over the same work: Snakemake finds it done, DVC records it; the table is unchanged.
    before = table.read_text()
    before_template = (project / "results/template/table.csv").read_text()
    run(["git", "init", "-q"], project)
    run(["git", "add", "-A"], project)
    run(["git", "-c", "user.email=ci@medssl", "-c", "user.name=ci", "commit", "-qm", "tiny"], project)
    run(["dvc", "add", "-q", "data/raw"], project)
    run(["dvc", "repro"], project, timeout=900)
    assert table.read_text() == before
    assert (project / "results/template/table.csv").read_text() == before_template
    status = run(["dvc", "status"], project)
    assert "changed" not in status.stdout, status.stdout
    assert (project / "dvc.lock").is_file()
