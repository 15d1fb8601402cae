"""dvc.yaml's metrics and plots: `dvc metrics show / diff` and `dvc plots show` on a study's files.

A small git + DVC project holds this repository's dvc.yaml, its plot template and its sources (the
report stage's deps) and the summary.json / curves.csv that medssl.report writes from synthetic
runs. The report stage of one study is committed (dvc.lock, cache), one run changes, and DVC must
see the change cell by cell.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from medssl import paths
from medssl.io import write_json
from medssl.report.curves import curves_path, study_curves, write_curves
from medssl.report.figures import write_study_figures
from medssl.report.inputs import study_metrics
from medssl.report.summary import summary_path
from medssl.report.tables import write_study_tables

from .conftest import STUDIES

ROOT = Path(__file__).resolve().parents[2]
DVC = str(Path(sys.executable).parent / "dvc")


def _run(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x", "DVC_NO_ANALYTICS": "1"}
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
    return res.stdout


@pytest.fixture
def dvc_project(synthetic, tiny_params):
    params, base = synthetic  # base already holds results/<study>/runs and checkpoints/
    shutil.copy(ROOT / "dvc.yaml", base / "dvc.yaml")
    (base / "workflow/plots").mkdir(parents=True)
    shutil.copy(ROOT / "workflow/plots/curves.json", base / "workflow/plots/curves.json")
    shutil.copytree(ROOT / "src", base / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    raw = tiny_params()
    raw["studies"]["ssl3d"].update(fractions=[0.5, 1.0], seeds=[0, 1])
    (base / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    for study in STUDIES:  # summary.json and curves.csv of every study (figures: only where committed)
        write_study_tables(params, study, base)
        spec = params.studies[study]
        write_curves(study, study_curves(study_metrics(params, study, base), spec.methods, spec.datasets,
                                         getattr(spec, "protocols", None), settings=spec.kind == "ssl"), base)
    write_study_figures(params, "stn", base)
    _run(["git", "init", "-q"], base)
    _run([DVC, "init", "-q"], base)
    _run([DVC, "config", "core.analytics", "false"], base)
    _run([DVC, "commit", "-f", "-q", "report@stn"], base)  # dvc.lock + cache: the committed revision
    _run(["git", "add", "-A"], base)
    _run(["git", "commit", "-q", "-m", "synthetic study"], base)
    return params, base


def test_dvc_metrics_show_and_diff_read_the_summaries(dvc_project):
    params, base = dvc_project
    shown = json.loads(_run([DVC, "metrics", "show", "--json"], base))
    data = shown[""]["data"] if "" in shown else next(iter(shown.values()))["data"]
    for study in STUDIES:
        rel = str(summary_path(study, base).relative_to(base))
        assert data[rel]["data"] == json.loads(summary_path(study, base).read_text()), study
    stn = data["results/stn/summary.json"]["data"]
    assert set(stn) == set(params.studies["stn"].methods)
    plain = _run([DVC, "metrics", "show"], base)
    assert "results/stn/summary.json" in plain and "cnn.rotated_digits.accuracy.mean" in plain

    # one stn run changes: the summary's cell changes, and `dvc metrics diff` (HEAD vs workspace) says so
    run = paths.method_metrics("stn", "rotated_digits", "cnn", 0, base)
    rec = json.loads(run.read_text())
    old = json.loads(summary_path("stn", base).read_text())["cnn"]["rotated_digits"]["accuracy"]["mean"]
    rec["metrics"]["accuracy"] = 0.125
    write_json(run, rec)
    write_study_tables(params, "stn", base)
    diff = json.loads(_run([DVC, "metrics", "diff", "--json"], base))
    cell = diff["results/stn/summary.json"]["cnn.rotated_digits.accuracy.mean"]
    assert cell["old"] == pytest.approx(old) and cell["new"] == 0.125
    assert cell["diff"] == pytest.approx(0.125 - old)
    assert set(diff) == {"results/stn/summary.json"}  # the other studies did not change


def test_dvc_plots_show_fills_the_curves_template(dvc_project):
    params, base = dvc_project
    out = json.loads(_run([DVC, "plots", "show", "--json"], base))
    plots = out.get("data", out)
    for study in STUDIES:
        rel = str(curves_path(study, base).relative_to(base))
        [plot] = plots[rel]
        spec = plot["content"]
        assert plot["type"] == "vega" and spec["facet"]["column"]["field"] == "setting"
        assert spec["title"] == f"{study}: training curves, mean over seeds (band: min-max)"
        values = spec["data"]["values"]
        n_rows = len(curves_path(study, base).read_text().splitlines()) - 1
        assert len(values) == n_rows > 0
        assert {v["method"] for v in values} == set(params.studies[study].methods)
        layer = spec["spec"]["layer"][1]["encoding"]
        assert spec["transform"][0]["calculate"] == "toNumber(datum['epoch'])"
        assert layer["color"]["field"] == "method"
    html = base / "dvc_plots"
    _run([DVC, "plots", "show", "-o", str(html)], base)
    assert (html / "index.html").is_file()
