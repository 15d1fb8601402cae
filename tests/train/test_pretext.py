"""Pretext scores through the real pre-training stage, and the pretext table."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from scipy import stats as sps

from medssl import config, paths
from medssl.report.pretext import study_pretext_files, write_pretext_table
from medssl.train.pretrain import pretrain

METHODS = ("scratch", "genesis", "gvsl", "s2dc")


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_params):
    """Tiny root whose phantom_organs has 2 validation cases (GVSL scores their 2 ordered pairs)."""
    from medssl.data.fetch import fetch
    from medssl.data.preprocess import preprocess_dataset

    mp = pytest.MonkeyPatch()
    mp.setenv(paths.ROOT_ENV, str(tmp_path_factory.mktemp("root")))
    m = tiny_params()
    m["datasets"]["phantom_organs"]["splits"] = {"validation": 2, "test": 2, "seed": 0}
    for name in ("genesis", "gvsl"):
        m["methods"][name]["args"]["local_shuffle_prob"] = 0.0  # a Python loop; not what is tested here
    p = config.parse(m)
    for ds in ("phantom_corpus", "phantom_organs", "phantom_lesion"):
        fetch(ds, p.datasets[ds], progress=False)
        preprocess_dataset(ds, p.datasets[ds], progress=False)
    first = {}
    for method in METHODS:
        pretrain(p, "ssl3d", method, progress=False, device="cpu")
        first[method] = json.loads(paths.pretext("ssl3d", method).read_text())
    yield p, first
    mp.undo()


def test_pretext_json_has_step_0_and_end_on_held_out_cases(project):
    p, first = project
    assert first["scratch"]["start"] is None and first["scratch"]["end"] is None  # no pretext task
    expected = {"genesis": ("restoration_psnr", "cases", 2), "gvsl": ("warped_label_dice", "pairs", 2),
                "s2dc": ("patch_match_accuracy", "cases", 2)}
    for method, (metric, over, n) in expected.items():
        rec = first[method]
        assert rec["held_out"]["dataset"] == "phantom_organs" and rec["held_out"]["split"] == "validation"
        assert len(rec["held_out"]["cases"]) == 2 and rec["steps"] == 4  # 2 epochs x 2 steps
        for when in ("start", "end"):
            assert rec[when]["metric"] == metric and rec[when]["over"] == over
            assert len(rec[when]["values"]) == n and all(v is not None for v in rec[when]["values"])
        # the same held-out draws at both ends: a baseline measured on them does not move
        if rec["end"]["baseline_values"] is not None:
            assert rec["start"]["baseline_values"] == rec["end"]["baseline_values"]
    # restoration PSNR is continuous in the weights, so 4 steps move it (warped-label Dice and matching
    # accuracy are argmax-based and may not move in 4 tiny steps)
    assert first["genesis"]["start"]["values"] != first["genesis"]["end"]["values"]


def test_a_rerun_keeps_the_step_0_scores_from_the_state(project):
    p, first = project
    pretrain(p, "ssl3d", "genesis", progress=False, device="cpu")  # state.pt: every epoch done
    again = json.loads(paths.pretext("ssl3d", "genesis").read_text())
    assert again["start"] == first["genesis"]["start"] and again["end"] == first["genesis"]["end"]


def test_pretext_table_rows_tests_and_legend(project):
    p, first = project
    files = study_pretext_files(p)
    assert files == [paths.pretext("ssl3d", m) for m in p.studies["ssl3d"].methods]
    out = write_pretext_table(files)
    df = pd.read_csv(out["csv"])
    assert df["method"].tolist() == ["genesis", "gvsl", "s2dc"]  # scratch has no pretext task
    g = df.set_index("method").loc["genesis"]
    start, end = first["genesis"]["start"]["values"], first["genesis"]["end"]["values"]
    assert g["end_mean"] == pytest.approx(sum(end) / 2) and g["delta"] == pytest.approx((end[0] + end[1] - start[0]
                                                                                         - start[1]) / 2)
    assert g["p_end_vs_start"] == pytest.approx(sps.ttest_rel(end, start).pvalue, nan_ok=True)
    assert math.isnan(df.set_index("method").loc["s2dc", "p_end_vs_baseline"])  # chance: no per-case baseline
    md = out["md"].read_text()
    assert "restoration_psnr (dB) ↑" in md and "2 pairs of 2 phantom_organs validation cases" in md
    assert "paired t-test across cases" in md


def test_pretext_table_names_a_missing_file(tmp_path):
    with pytest.raises(ValueError, match=f"{tmp_path / 'x.json'}: not found"):
        write_pretext_table([tmp_path / "x.json"], tmp_path)
    assert not paths.pretext_table("md", tmp_path).exists()
