from __future__ import annotations

import locale
import os

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

# Tests never write to a developer's mlflow.db, and stay on one thread.
os.environ.setdefault("MEDSSL_TRACKING", "off")
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    torch.set_num_threads(1)
    yield


def _tiny_params() -> dict:
    """params.yaml shrunk to seconds: tiny phantoms, a 3-level width-4 U-Net, 2 epochs."""
    p = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    for name in ("phantom_corpus", "phantom_organs", "phantom_lesion"):
        ds = p["datasets"][name]
        ds["source"].update(shape=[24, 24, 12], spacing=[12.0, 12.0, 24.0])
        ds["recipe"].update(spacing=[12.0, 12.0, 12.0], roi=[24, 24, 24])
    p["datasets"]["phantom_corpus"]["source"]["n_cases"] = 4
    p["datasets"]["phantom_organs"]["source"]["n_cases"] = 6
    p["datasets"]["phantom_lesion"]["source"]["n_cases"] = 8
    p["datasets"]["phantom_organs"]["splits"] = {"validation": 1, "test": 2, "seed": 0}
    p["datasets"]["phantom_lesion"]["splits"] = {"validation": 2, "test": 2, "seed": 0}
    p["backbones"]["unet3d_tiny"]["args"] = {"in_channels": 1, "features": [4, 8, 16], "groups": 2}
    for stage in ("pretrain", "downstream"):
        p[stage].update(epochs=2, steps_per_epoch=2, patch=[16, 16, 16])
    p["downstream"].update(schedule="constant", warmup_fraction=0.0)  # tests/train/test_resume.py: the cosine
    p["methods"]["s2dc"]["args"].update(view=12, patch=4)  # two 12³ views of a 16³ patch, 4³ patches
    # the default's 3 seeds x 2 fractions would triple every pipeline test; 2 seeds still group
    # the lesion task is out of the default study (it does not learn) but keeps its pipeline coverage here
    p["studies"]["ssl3d"].update(datasets=["phantom_organs", "phantom_lesion"], fractions=[1.0], seeds=[0, 1])
    for name in ("template", "uda2d"):
        p["studies"][name]["seeds"] = [0]
    # template study: 16x16x12 breast phantoms, two rows, a 3-level width-4 net, 3 steps
    breast = p["datasets"]["phantom_breast"]
    breast["source"].update(n_cases=5, shape=[32, 32, 12], spacing=[5.0, 5.0, 10.0])
    breast["recipe"].update(spacing=[10.0, 10.0, 10.0], roi=[16, 16, 12])
    breast["splits"] = {"validation": 1, "test": 2, "seed": 0}
    tpl = p["studies"]["template"]
    tpl["models"] = {k: tpl["models"][k] for k in ("unet", "diffeo_trained")}
    tpl["train"].update(steps=3, features=[4, 8, 16])
    # stn study: 64 digits, one epoch, two rows
    stn = p["studies"]["stn"]
    stn["models"] = {k: stn["models"][k] for k in ("cnn", "stn_diffeo")}
    stn.update(n_train=64, n_test=32, epochs=1, seeds=[0])
    # uda2d study: 4 + 2 subjects of 64x64x2 (at 3 mm), a 16-32 ... net, 2 epochs of 2 steps
    for name in ("phantom_cmr_bssfp", "phantom_cmr_lge"):
        ds = p["datasets"][name]
        ds["source"].update(n_cases=6, shape=[32, 32, 2], spacing=[3.0, 3.0, 10.0])
        ds["recipe"].update(spacing=[3.0, 3.0, 10.0], roi=[32, 32, 2])
        ds["splits"] = {"validation": 0, "test": 2, "seed": 0}
    uda = p["studies"]["uda2d"]
    uda["net"].update(features=[4, 4, 8, 8, 8], embed_dim=8, memory_size=6)
    for d in uda["directions"]:
        d["epochs"] = 2
    uda["train"].update(steps_per_epoch=2, batch_size=2)
    return p


@pytest.fixture(scope="session")
def tiny_params():
    """Factory of a fresh tiny params mapping (mutable copy per call)."""
    return _tiny_params


def _leaky_params() -> dict:
    """Tiny params whose ssl3d pre-trains on ``dup_corpus``: phantom_organs' own raw images (same
    generator and seed) under another name, so its validation and test cases leak into pre-training."""
    import copy

    p = _tiny_params()
    dup = copy.deepcopy(p["datasets"]["phantom_organs"])
    dup.update(task="pretrain", splits={"validation": 0.0, "test": 0.0, "seed": 0})
    dup.pop("classes")
    p["datasets"]["dup_corpus"] = dup
    p["studies"]["ssl3d"]["pretrain_dataset"] = ["phantom_corpus", "dup_corpus"]
    return p


@pytest.fixture(scope="session")
def leaky_params():
    """Factory of the leaking tiny params (:func:`_leaky_params`)."""
    return _leaky_params


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory, tiny_params):
    """Factory: ``prepare(*datasets)`` fetches and preprocesses ``datasets`` of the tiny
    params under a fresh ``MEDSSL_ROOT`` (kept for the module) and returns the params."""
    from medssl import config, paths
    from medssl.data.fetch import fetch
    from medssl.data.preprocess import preprocess_dataset

    mp = pytest.MonkeyPatch()

    def prepare(*datasets: str):
        mp.setenv(paths.ROOT_ENV, str(tmp_path_factory.mktemp("root")))
        p = config.parse(tiny_params())
        for ds in datasets:
            fetch(ds, p.datasets[ds], progress=False)
            preprocess_dataset(ds, p.datasets[ds], progress=False)
        return p

    yield prepare
    mp.undo()


@pytest.fixture(autouse=True)
def _keep_locale():
    """Restore the process locale after each test.

    GDCM's DICOM writer (SimpleITK ``ImageFileWriter`` with an image position tag)
    switches the whole process to the C locale and leaves it so; Python's
    ``open()`` then defaults to ASCII and later tests fail to read UTF-8 files
    such as params.yaml. Reading DICOM does not do this.
    """
    saved = locale.setlocale(locale.LC_ALL)
    yield
    if locale.setlocale(locale.LC_ALL) != saved:
        locale.setlocale(locale.LC_ALL, saved)


# Headless Debian chromium driven by Playwright (never `playwright install`), for the UI tests
# (tests/tracking/test_server_ui.py, tests/report/test_snakemake_report.py). CI installs both
# (scripts/install-system-deps.sh, the test extras); without them the tests skip, unless
# MEDSSL_REQUIRE_SYSTEM is set (as CI sets it), where they fail.
CHROMIUM = Path("/usr/bin/chromium")
# --disable-* background services: this machine's closed network refuses chromium's own connections.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def require_system(ok: bool, what: str) -> None:
    """Skip with ``what``, or fail when ``MEDSSL_REQUIRE_SYSTEM`` is set (CI installs these)."""
    if ok:
        return
    hint = f"{what}; CI installs it (scripts/install-system-deps.sh, pip install -e '.[test]')"
    if os.environ.get("MEDSSL_REQUIRE_SYSTEM", "").strip() not in ("", "0"):
        pytest.fail(f"{hint}; MEDSSL_REQUIRE_SYSTEM is set, so this fails instead of skipping")
    pytest.skip(hint)


@pytest.fixture(scope="module")
def browser():
    """A headless chromium browser (Playwright), closed after the module."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require_system(False, "the python package playwright is not installed")
    require_system(CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK), f"no chromium at {CHROMIUM}")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True, timeout=60_000)
        try:
            yield b
        finally:
            b.close()
