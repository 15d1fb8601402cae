"""medssl.tracking against an ``mlflow server`` over HTTP, checked through the store and the web UI.

A small study (2 methods x 1 dataset x 2 seeds, metrics and an artifact) is
written with only ``MLFLOW_TRACKING_URI`` pointing at the server. Headless
Debian chromium (Playwright for Python, never ``playwright install``) then
opens the experiment's runs page, expands the collapsed parents, and finds
every run by its link; a parent's page links its children and a child's page
shows its metrics and parent. On a UI failure a screenshot is saved next to
the test's tmp_path and named in the error.

Chromium and the playwright package are installed by CI
(scripts/install-system-deps.sh, the ``test`` extras). Without them the UI
tests skip, unless ``MEDSSL_REQUIRE_SYSTEM=1`` (as CI sets), where they fail.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from medssl import paths, tracking

pytestmark = pytest.mark.slow

UI_TIMEOUT_MS = 30_000
STUDY, DATASET, METHODS, SEEDS = "ui_study", "phantom_organs", ("genesis", "scratch"), (0, 1)
RUN_LINKS = "a[href*='/runs/']"
EXPAND = "button[data-component-id*='runnamecellrenderer']"  # the +/- of a parent row


@pytest.fixture(scope="module")
def study(mlflow_server, tmp_path_factory) -> dict:
    """Write the study through medssl.tracking with only the env var naming the server."""
    import mlflow

    art = tmp_path_factory.mktemp("ui_artifacts") / "metrics.json"
    runs: dict = {"parents": {}, "children": {}}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
        mp.setenv(tracking.TRACKING_ENV, "on")
        assert paths.mlflow_uri() == mlflow_server.url
        for method in METHODS:
            for seed in SEEDS:
                dice = 0.5 + 0.125 * seed + (0.25 if method == "genesis" else 0.0)
                art.write_text(json.dumps({"method": method, "seed": seed, "dice": dice}))
                with tracking.tracked_run(STUDY, method, DATASET, "linear",
                                          tracking.child_name("linear", 1.0, seed),
                                          params={"lr": 0.01, "args": {"seed": seed}},
                                          tags={"seed": seed}) as run:
                    for step in range(3):
                        run.log_metrics({"train_loss": 1.0 / (step + 1)}, step=step)
                    run.log_metrics({"dice": dice})
                    run.log_artifact(art)
                    runs["children"][run.run_id] = (method, seed, dice)
    client = mlflow.MlflowClient(tracking_uri=mlflow_server.url)
    exp = client.get_experiment_by_name(STUDY)
    for r in client.search_runs([exp.experiment_id], filter_string=f"tags.`{tracking.ROLE_TAG}` = 'parent'"):
        runs["parents"][r.info.run_id] = r.info.run_name
    runs["experiment_id"] = exp.experiment_id
    runs["url"] = mlflow_server.url
    return runs


@contextlib.contextmanager
def _page(browser, shot: Path) -> Iterator:
    """A fresh page; on any error a full-page screenshot goes to ``shot`` (named in the error)."""
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.set_default_timeout(UI_TIMEOUT_MS)
    try:
        yield page
    except BaseException as exc:
        with contextlib.suppress(Exception):
            page.screenshot(path=str(shot), full_page=True)
            exc.add_note(f"screenshot of the page: {shot}")
        raise
    finally:
        page.close()


def _links(page) -> list[tuple[str, str]]:
    """(run id, link text) of every run link on the page."""
    out = []
    for a in page.locator(RUN_LINKS).all():
        href = a.get_attribute("href") or ""
        run_id = href.rstrip("/").rsplit("/runs/", 1)[-1].split("/")[0].split("?")[0]
        out.append((run_id, a.inner_text().strip()))
    return out


def _wait_links(page, n: int) -> None:
    page.wait_for_function("([sel, n]) => document.querySelectorAll(sel).length >= n", arg=[RUN_LINKS, n])


# ----------------------------------------------------------------- the store
def test_server_store_holds_the_study(study, mlflow_server, tmp_path):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=mlflow_server.url)
    assert sorted(study["parents"].values()) == [f"{m}/{DATASET}" for m in METHODS]
    parent_of = {name.split("/")[0]: rid for rid, name in study["parents"].items()}
    for run_id, (method, seed, dice) in study["children"].items():
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert run.data.tags[tracking.PARENT_TAG] == parent_of[method]
        assert run.data.params == {"lr": "0.01", "args.seed": str(seed)}
        assert run.data.metrics == {"train_loss": pytest.approx(1 / 3), "dice": dice}
        assert [(m.step, m.value) for m in client.get_metric_history(run_id, "train_loss")] == [
            (0, 1.0), (1, 0.5), (2, pytest.approx(1 / 3))]
        # the artifact went through the server's proxy into --artifacts-destination
        got = Path(client.download_artifacts(run_id, "metrics.json", str(tmp_path / run_id)))
        assert json.loads(got.read_text()) == {"method": method, "seed": seed, "dice": dice}
        stored = list(mlflow_server.artifacts.rglob(f"{run_id}/artifacts/metrics.json"))
        assert len(stored) == 1 and stored[0].read_bytes() == got.read_bytes()


# -------------------------------------------------------------------- the UI
def test_runs_page_lists_every_run(browser, study, tmp_path):
    url = f"{study['url']}/#/experiments/{study['experiment_id']}/runs"
    everything = {**study["parents"], **dict.fromkeys(study["children"])}
    with _page(browser, tmp_path / "runs_page.png") as page:
        page.goto(url, wait_until="domcontentloaded")
        page.wait_for_selector(RUN_LINKS)
        # Parents come first, collapsed: only they are listed until expanded.
        _wait_links(page, len(METHODS))
        shown = dict(_links(page))
        assert set(study["parents"]) <= set(shown), shown
        assert {shown[rid] for rid in study["parents"]} == set(study["parents"].values())
        expanders = page.locator(EXPAND)
        assert expanders.count() == len(study["parents"]), "one expander per parent row"
        for i in range(expanders.count()):
            expanders.nth(i).click()
        _wait_links(page, len(everything))
        links = _links(page)
        assert sorted(rid for rid, _ in links) == sorted(everything), links
        texts = sorted(text for _, text in links)
        children = sorted(tracking.child_name("linear", 1.0, s) for s in SEEDS for _ in METHODS)
        assert texts == sorted(list(study["parents"].values()) + children)


def test_parent_and_child_pages(browser, study, tmp_path):
    base = f"{study['url']}/#/experiments/{study['experiment_id']}/runs"
    parent_id, parent_name = next((rid, n) for rid, n in study["parents"].items() if n.startswith("genesis/"))
    kids = {rid: v for rid, v in study["children"].items() if v[0] == "genesis"}
    with _page(browser, tmp_path / "parent_page.png") as page:
        page.goto(f"{base}/{parent_id}", wait_until="domcontentloaded")
        page.get_by_text(parent_name, exact=True).first.wait_for()
        for rid in kids:  # the parent's overview links each child
            page.locator(f"a[href*='/runs/{rid}']").first.wait_for()
    child_id, (_, seed, dice) = next(iter(kids.items()))
    with _page(browser, tmp_path / "child_page.png") as page:
        page.goto(f"{base}/{child_id}", wait_until="domcontentloaded")
        page.get_by_text(tracking.child_name("linear", 1.0, seed), exact=True).first.wait_for()
        page.get_by_text("dice", exact=True).first.wait_for()
        page.locator(f"a[href*='/runs/{parent_id}']").first.wait_for()  # "Parent run" link
        body = page.locator("body").inner_text()
        assert "train_loss" in body and str(dice) in body and parent_name in body
