"""`snakemake --report report.html` after a finished tiny run, opened in headless Chromium.

The tiny run (tests/conftest.py's tiny params, its default target cut to a small ssl study -- two
methods, one dataset and protocol, two label fractions, two seeds -- and the stn study) really
trains, so the figures come from real histories and pretext scores. The report must hold every
table and figure flagged report() in workflow/rules/report.smk, under the study's category; each
figure is opened in the report's viewer and its image must decode (``naturalWidth > 0``). The
report's size and load time are printed and written to ``report_stats.json`` beside it.

Chromium and Playwright as in tests/tracking/test_server_ui.py: skipped without them, failing
instead when ``MEDSSL_REQUIRE_SYSTEM`` is set (CI).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from medssl.report.figures import figure_names

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
STUDIES = {"ssl3d": "ssl", "stn": "stn"}


def _sh(cmd: list[str], cwd: Path, timeout: int = 1200) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "MEDSSL_TRACKING": "off",
           "OMP_NUM_THREADS": "1"}
    env.pop("MEDSSL_PARAMS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, (f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-3000:]}\n"
                                 f"{res.stderr[-5000:]}")
    return res


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_params) -> Path:
    """A copy of the project (the files git knows) after `snakemake --cores 2` on the small target."""
    project = tmp_path_factory.mktemp("report_project")
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           check=True, capture_output=True, text=True).stdout.split("\n")
    for rel in filter(None, files):
        src, dest = ROOT / rel, project / rel
        if src.is_symlink():
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.readlink(src), dest)
        elif src.is_file():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
    p = tiny_params()
    p["targets"] = list(STUDIES)
    p["studies"]["ssl3d"].update(methods=["scratch", "genesis"], datasets=["phantom_organs"], protocols=["linear"],
                                 fractions=[0.5, 1.0], seeds=[0, 1])
    (project / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    _sh(["snakemake", "--cores", "2"], project)
    return project


def test_the_run_writes_figures_linked_from_the_tables(finished):
    for study, kind in STUDIES.items():
        md = (finished / f"results/{study}/table.md").read_text()
        for name in figure_names(kind):
            png = finished / f"results/{study}/figures/{name}.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
            assert f"![{name}](figures/{name}.png)" in md
        assert (finished / f"results/{study}/summary.json").is_file()
        assert (finished / f"results/{study}/curves.csv").read_text().count("\n") > 1


def test_report_html_shows_every_table_and_figure(finished, browser):
    t0 = time.perf_counter()
    _sh(["snakemake", "--report", "report.html"], finished, timeout=600)
    build_s = time.perf_counter() - t0
    report = finished / "report.html"
    size = report.stat().st_size
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(30_000)
    shots = finished / "report_screens"
    shots.mkdir(exist_ok=True)
    try:
        t0 = time.perf_counter()
        page.goto(report.as_uri(), wait_until="load")
        page.get_by_role("link", name="Across studies", exact=True).wait_for()
        load_s = time.perf_counter() - t0
        for study, kind in STUDIES.items():
            page.get_by_role("link", name=study, exact=True).first.click()
            page.get_by_role("link", name="Tables", exact=True).wait_for()
            page.get_by_role("link", name="Figures", exact=True).first.click()
            rows = page.locator("tbody tr")
            rows.first.wait_for()
            shown = [rows.nth(i).locator("td").nth(1).inner_text() for i in range(rows.count())]
            assert sorted(shown) == sorted(figure_names(kind)), (study, shown)
            for i in range(rows.count()):
                name = rows.nth(i).locator("td").nth(1).inner_text()
                rows.nth(i).locator("a[iconname=eye]").click()
                img = page.locator(f"img[src*='filename={name}.png']")
                img.wait_for()
                page.wait_for_function("el => el.complete", arg=img.element_handle())
                width = img.evaluate("el => el.naturalWidth")
                assert width > 0, f"{study}/{name}.png did not load in the report"
                page.screenshot(path=str(shots / f"{study}_{name}.png"))
            page.goto(report.as_uri(), wait_until="load")  # back to the start page
        page.get_by_role("link", name="Across studies", exact=True).click()
        for sub in ("Pre-training", "Claims"):
            page.get_by_role("link", name=sub, exact=True).wait_for()
        # the check can fail: an image that does not decode has naturalWidth 0
        broken = page.evaluate("""() => new Promise(done => { const i = new Image();
            i.onerror = () => done(i.naturalWidth); i.onload = () => done(-1);
            i.src = 'data:image/png;base64,iVBORw0KGgoAAAA='; })""")
        assert broken == 0
    except BaseException as exc:
        page.screenshot(path=str(shots / "failure.png"), full_page=True)
        exc.add_note(f"screenshot: {shots / 'failure.png'}")
        raise
    finally:
        page.close()
    stats = {"report_bytes": size, "build_s": round(build_s, 2), "load_s": round(load_s, 2)}
    (finished / "report_stats.json").write_text(json.dumps(stats))
    print(f"report.html: {size / 1e6:.2f} MB, built in {build_s:.1f} s, loaded in {load_s:.2f} s")
    assert size < 50e6  # self-contained, but not every byte of the run (times are reported, not asserted)
