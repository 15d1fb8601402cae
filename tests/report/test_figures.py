"""medssl.report.figures and .curves: deterministic PNGs from exactly a study's runs, exact curve numbers."""

from __future__ import annotations

import json
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from medssl import paths
from medssl.cli import main
from medssl.io import write_json
from medssl.report import curves as C
from medssl.report import figures as F
from medssl.report.tables import write_study_tables

from .conftest import STUDIES, write_study

TEXT_CHUNKS = {b"tEXt", b"iTXt", b"zTXt", b"tIME"}


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, payload) of every chunk of a PNG, checking the signature and each CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    out, i = [], 8
    while i < len(data):
        (n,) = struct.unpack(">I", data[i:i + 4])
        kind, payload = data[i + 4:i + 8], data[i + 8:i + 8 + n]
        assert struct.unpack(">I", data[i + 8 + n:i + 12 + n])[0] == zlib.crc32(kind + payload)
        out.append((kind, payload))
        i += 12 + n
    return out


def test_every_figure_is_byte_identical_on_a_rerun_and_has_no_text_chunk(synthetic):
    params, base = synthetic
    for study in STUDIES:
        first = F.write_study_figures(params, study, base)
        assert list(first) == [*F.figure_names(params.studies[study].kind), "curves_csv"]
        data = {k: Path(p).read_bytes() for k, p in first.items()}
        again = F.write_study_figures(params, study, base)
        assert {k: Path(p).read_bytes() for k, p in again.items()} == data, study
        for name in F.figure_names(params.studies[study].kind):
            chunks = png_chunks(data[name])
            assert [k for k, _ in chunks][0] == b"IHDR" and chunks[-1][0] == b"IEND"
            assert not [k for k, _ in chunks if k in TEXT_CHUNKS], (study, name)  # no Software, no date
            width, height = struct.unpack(">II", chunks[0][1][:8])
            assert width > 300 and height > 100
        assert sorted(p.name for p in paths.figures(study, base).iterdir()) == sorted(
            f"{n}.png" for n in F.figure_names(params.studies[study].kind))  # no temporary files left
    assert F.figure_names("ssl") == ("curves", "label_fraction", "pretext", "predictions")
    assert F.figure_names("stn") == F.figure_names("template") == F.figure_names("uda") == ("curves",)


def test_the_text_chunk_check_can_fail(tmp_path):
    """Saved with matplotlib's default metadata, the PNG carries "Software: Matplotlib version..."."""
    fig = F.render_curves(pd.DataFrame(columns=[*C.CURVE_COLUMNS, "task"]))
    fig.savefig(tmp_path / "default.png", format="png")
    texts = [p for k, p in png_chunks((tmp_path / "default.png").read_bytes()) if k == b"tEXt"]
    assert texts and texts[0].startswith(b"Software\x00Matplotlib version")
    F.save_png(fig, tmp_path / "ours.png")
    assert not [k for k, _ in png_chunks((tmp_path / "ours.png").read_bytes()) if k in TEXT_CHUNKS]


def test_a_changed_run_changes_its_figures_and_a_leftover_run_does_not(synthetic):
    params, base = synthetic
    before = {k: Path(p).read_bytes() for k, p in F.write_study_figures(params, "ssl3d", base).items()}
    # a run the study does not define (seed 7) lies in the runs folder: nothing changes
    extra = paths.downstream_metrics("ssl3d", "phantom_organs", "linear", "scratch", 1.0, 7, base)
    rec = json.loads(paths.downstream_metrics("ssl3d", "phantom_organs", "linear", "scratch", 1.0, 0,
                                              base).read_text())
    write_json(extra, {**rec, "seed": 7, "metrics": {"dice": 0.0, "hd95": 99.0},
                       "history": [{"epoch": 1, "train_loss": 50.0, "val_metric": 0.0}]})
    same = {k: Path(p).read_bytes() for k, p in F.write_study_figures(params, "ssl3d", base).items()}
    assert same == before
    # one defined run's history and metric change: the curves, the CSV and the fraction plot change
    path = paths.downstream_metrics("ssl3d", "phantom_organs", "linear", "scratch", 1.0, 1, base)
    rec = json.loads(path.read_text())
    rec["history"][0]["train_loss"] = 9.0
    rec["metrics"]["dice"] = 0.05
    write_json(path, rec)
    after = {k: Path(p).read_bytes() for k, p in F.write_study_figures(params, "ssl3d", base).items()}
    assert {k for k in before if after[k] != before[k]} == {"curves", "label_fraction", "curves_csv"}
    path.unlink()
    with pytest.raises(ValueError, match=f"{path}: not found"):
        F.write_study_figures(params, "ssl3d", base)


def _run(path: Path, method: str, seed: int, history, dataset="d", protocol="linear", fraction=1.0,
         task="segmentation"):
    write_json(path, {"study": "s", "dataset": dataset, "protocol": protocol, "method": method,
                      "fraction": fraction, "seed": seed, "task": task, "metrics": {"dice": 0.5},
                      "history": history})
    return path


def test_curves_are_mean_std_min_max_over_seeds(tmp_path):
    files = [
        _run(tmp_path / "a0.json", "a", 0, [{"epoch": 1, "train_loss": 1.0}, {"epoch": 2, "train_loss": 0.5,
                                                                                "val_metric": 0.4}]),
        _run(tmp_path / "a1.json", "a", 1, [{"epoch": 1, "train_loss": 3.0}, {"epoch": 2, "train_loss": 1.5,
                                                                                "val_metric": 0.6}]),
        _run(tmp_path / "a2.json", "a", 2, [{"epoch": 1, "train_loss": 2.0}, {"epoch": 2, "train_loss": None,
                                                                                "val_metric": 0.8}]),
        _run(tmp_path / "b0.json", "b", 0, [0.9, 0.7, float("nan")], task="template"),  # per-step losses
    ]
    df = C.study_curves(files, ["b", "a"], settings=False)
    assert list(df.columns) == [*C.CURVE_COLUMNS, "task"]
    got = [(r.method, r.curve, r.metric, r.epoch, r.mean, r.min, r.max, r.n) for r in df.itertuples()]
    assert got == [("b", "loss", "loss", 1.0, 0.9, 0.9, 0.9, 1), ("b", "loss", "loss", 2.0, 0.7, 0.7, 0.7, 1),
                   ("a", "loss", "train_loss", 1.0, 2.0, 1.0, 3.0, 3), ("a", "loss", "train_loss", 2.0, 1.0, 0.5,
                                                                        1.5, 2),
                   ("a", "validation", "val_metric", 2.0, pytest.approx(0.6), 0.4, 0.8, 3)]
    assert df["std"].tolist()[:2] == [pytest.approx(math.nan, nan_ok=True)] * 2  # one seed: no std
    assert df["std"].tolist()[2:] == [pytest.approx(1.0), pytest.approx(math.sqrt(0.5)), pytest.approx(0.2)]
    assert set(df["setting"]) == {"d"}
    out = C.write_curves("s", df, tmp_path)
    lines = out.read_text().splitlines()
    assert lines[0] == ",".join(C.CURVE_COLUMNS)
    assert lines[1] == "d,d,linear,1,b,loss,loss,1,0.9,,0.9,0.9,1"
    assert lines[5] == "d,d,linear,1,a,validation,val_metric,2,0.6,0.2,0.4,0.8,3"


def test_run_curves_reads_every_history_shape():
    assert C.run_curves(None) == {} and C.run_curves([]) == {}
    named = C.run_curves([{"epoch": 3, "train_loss": 1.0, "val_dice": 0.5, "val_loss": 2.0}])
    assert named["validation"][0] == "val_dice" and list(named["validation"][2]) == [0.5]
    both = C.run_curves([{"epoch": 2, "train_loss": 1.0, "val_accuracy": 0.5, "val_metric": 0.5},
                         {"epoch": 4, "train_loss": 0.5, "val_accuracy": 0.75, "val_metric": 0.75}])
    assert both["validation"][0] == "val_accuracy" and list(both["validation"][1]) == [2.0, 4.0]
    uda = C.run_curves([{"epoch": 1, "loss": 2.0, "seg": 1.0, "seconds": 3.0}])
    assert list(uda) == ["loss"] and uda["loss"][0] == "loss"
    steps = C.run_curves([2.0, 1.0])
    assert list(steps["loss"][1]) == [1.0, 2.0] and list(steps["loss"][2]) == [2.0, 1.0]
    assert C.validation_label("val_metric", "segmentation") == "validation Dice"
    assert C.validation_label("val_metric", "classification") == "validation AUC"
    assert C.validation_label("val_auc", "classification") == "validation AUC"
    assert C.validation_label("val_accuracy", "classification") == "validation accuracy"
    assert C.setting_label("d", "linear", 0.17, True) == "d · linear · 17%"


def test_label_fraction_points_are_mean_and_sample_std_of_the_headline_metric(tmp_path):
    files = []
    for seed, (d1, d2) in enumerate([(0.2, 0.6), (0.4, 1.0)]):
        for fraction, dice in ((0.5, d1), (1.0, d2)):
            path = tmp_path / f"r{seed}{fraction}.json"
            write_json(path, {"study": "s", "dataset": "d", "protocol": "linear", "method": "a",
                              "fraction": fraction, "seed": seed, "task": "segmentation",
                              "metrics": {"dice": dice, "hd95": 3.0}})
            files.append(path)
    from medssl.report.inputs import collect

    agg = F._fraction_frame(collect(files))
    assert agg[["fraction", "metric", "n"]].values.tolist() == [[0.5, "dice", 2], [1.0, "dice", 2]]
    assert agg["mean"].tolist() == pytest.approx([0.3, 0.8])
    assert agg["std"].tolist() == pytest.approx([math.sqrt(0.02), math.sqrt(0.08)])
    F.save_png(F.render_label_fraction(collect(files)), tmp_path / "lf.png")
    assert png_chunks((tmp_path / "lf.png").read_bytes())[0][0] == b"IHDR"


def test_pretext_figure_without_a_pretext_score_says_so(synthetic):
    params, base = synthetic
    from medssl.report import pretext

    files = F.pretext_files(params, "ssl3d", base)
    assert files == [paths.pretext("ssl3d", m, base) for m in params.studies["ssl3d"].methods]
    df = pretext.collect(files[:1])  # scratch: no pretext task
    assert df.empty
    fig = F.render_pretext(df)
    assert "no pre-trained method has a pretext score" in [t.get_text() for ax in fig.axes for t in ax.texts]
    full = F.render_pretext(pretext.collect(files), params.studies["ssl3d"].methods)
    titles = [ax.get_title() for ax in full.axes if ax.get_title()]
    assert [t.split(":")[0] for t in titles] == ["genesis", "gvsl", "s2dc"]


def test_table_markdown_links_each_figure_with_a_caption(synthetic):
    params, base = synthetic
    for study in STUDIES:
        kind = params.studies[study].kind
        md = write_study_tables(params, study, base)["md"].read_text()
        section = md[md.index("## Figures"):]
        for name in F.figure_names(kind):
            assert f"![{name}](figures/{name}.png)" in section
            assert f"*{name}.png* — {F.caption(name, kind)}" in section
        assert section.count("![") == len(F.figure_names(kind))
    assert "per step" in F.caption("curves", "template") and "per epoch" in F.caption("curves", "stn")


def test_medssl_figures_command_writes_the_study_figures(synthetic, monkeypatch, tmp_path, tiny_params, capsys):
    params, base = synthetic
    p = tiny_params()
    p["studies"]["ssl3d"].update(fractions=[0.5, 1.0], seeds=[0, 1])
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    monkeypatch.setenv(paths.ROOT_ENV, str(base))
    assert main(["figures", "stn", "--params", str(tmp_path / "p.yaml")]) == 0
    out = capsys.readouterr().out
    assert f"curves: {F.figure_path('stn', 'curves', base)}" in out
    assert f"curves_csv: {C.curves_path('stn', base)}" in out
    with pytest.raises(SystemExit, match="unknown study 'nope'"):
        main(["figures", "nope", "--params", str(tmp_path / "p.yaml")])


def test_synthetic_writer_is_deterministic(tmp_path, tiny_params):
    from .conftest import synthetic_params

    p = synthetic_params(tiny_params)
    a = [f.read_bytes() for f in write_study(p, "uda2d", tmp_path / "a")]
    b = [f.read_bytes() for f in write_study(p, "uda2d", tmp_path / "b")]
    assert a == b and len(a) == 2 * len(p.studies["uda2d"].methods)
    assert np.isfinite([json.loads(x)["metrics"]["dice"] for x in a]).all()
