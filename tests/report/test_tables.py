"""Tests of medssl.report.tables on synthetic metrics.json trees."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from medssl import paths
from medssl.config import StudySpec
from medssl.io import write_json
from medssl.report import tables

NAN = math.nan
TASKS = {"organs": "segmentation", "lesion": "classification"}


def _write(base: Path, dataset: str, protocol: str, method: str, fraction: float, seed: int,
           metrics: dict, study: str = "s") -> Path:
    path = paths.downstream_metrics(study, dataset, protocol, method, fraction, seed, base)
    write_json(path, {"study": study, "dataset": dataset, "protocol": protocol, "method": method,
                      "fraction": fraction, "seed": seed, "task": TASKS[dataset], "metrics": metrics,
                      "per_case": [], "history": [], "best_epoch": 1})
    return path


def _long(rows: list[tuple]) -> pd.DataFrame:
    """Long frame from (dataset, protocol, method, fraction, seed, metric, value) tuples."""
    return pd.DataFrame([("s", d, p, m, f, s, TASKS[d], k, v) for d, p, m, f, s, k, v in rows],
                        columns=tables.LONG_COLUMNS)


# ------------------------------------------------------------------ collect
def test_collect_long_format(tmp_path):
    _write(tmp_path, "organs", "linear", "genesis", 1.0, 0, {"dice": 0.5, "hd95": 4.0})
    _write(tmp_path, "organs", "linear", "genesis", 1.0, 1, {"dice": 0.75, "hd95": None})
    _write(tmp_path, "lesion", "finetune", "scratch", 0.5, 0, {"auc": 0.625})
    df = tables.collect(paths.runs("s", tmp_path))
    assert list(df.columns) == tables.LONG_COLUMNS
    got = sorted(df.itertuples(index=False, name=None), key=str)
    expected = sorted([
        ("s", "lesion", "finetune", "scratch", 0.5, 0, "classification", "auc", 0.625),
        ("s", "organs", "linear", "genesis", 1.0, 0, "segmentation", "dice", 0.5),
        ("s", "organs", "linear", "genesis", 1.0, 0, "segmentation", "hd95", 4.0),
        ("s", "organs", "linear", "genesis", 1.0, 1, "segmentation", "dice", 0.75),
        ("s", "organs", "linear", "genesis", 1.0, 1, "segmentation", "hd95", NAN),
    ], key=str)
    assert [r[:-1] for r in got] == [r[:-1] for r in expected]
    assert [r[-1] for r in got] == pytest.approx([r[-1] for r in expected], nan_ok=True)


def test_collect_errors_name_the_file(tmp_path):
    study_dir = paths.runs("s", tmp_path)
    with pytest.raises(ValueError, match=f"^{study_dir}: results folder not found$"):
        tables.collect(study_dir)
    study_dir.mkdir(parents=True)
    with pytest.raises(ValueError, match=f"^{study_dir}: no metrics.json found$"):
        tables.collect(study_dir)

    good = _write(tmp_path, "organs", "linear", "genesis", 1.0, 0, {"dice": 0.5})
    bad = paths.downstream_metrics("s", "organs", "linear", "genesis", 1.0, 1, tmp_path)
    bad.parent.mkdir(parents=True)
    bad.write_text('{"study": "s", "dataset": ')
    with pytest.raises(ValueError, match=f"^{bad}: not a readable JSON file"):
        tables.collect(study_dir)

    bad.write_text(json.dumps({"study": "s", "dataset": "organs", "method": "genesis", "seed": 1,
                               "metrics": {}}))
    with pytest.raises(ValueError, match=f"^{bad}: missing key\\(s\\) protocol, fraction, task$"):
        tables.collect(study_dir)

    record = json.loads(good.read_text())
    bad.write_text(json.dumps({**record, "metrics": {"dice": "0.5"}}))
    with pytest.raises(ValueError, match=f"^{bad}: metric 'dice' must be a number or null, got '0.5'$"):
        tables.collect(study_dir)

    bad.write_text(json.dumps(record))  # seed 0 again, in the seed1 folder
    with pytest.raises(ValueError, match=f"^{bad}: same dataset/protocol/method/fraction/seed"):
        tables.collect(study_dir)


# -------------------------------------------------------------- aggregation
def test_mean_std_count_and_text():
    df = _long([
        ("organs", "linear", "a", 1.0, 0, "dice", 0.6), ("organs", "linear", "a", 1.0, 1, "dice", 0.8),
        ("organs", "linear", "a", 1.0, 2, "dice", 0.7),
        ("organs", "linear", "a", 1.0, 0, "hd95", 4.0), ("organs", "linear", "a", 1.0, 1, "hd95", 6.0),
        ("organs", "linear", "a", 1.0, 2, "hd95", NAN),
        ("organs", "linear", "b", 1.0, 0, "dice", 0.25),
        ("organs", "linear", "b", 1.0, 0, "hd95", 12.5),
    ])
    t = tables.build_table(df, methods_order=["a", "b", "c"])
    dice, hd = ("organs", "linear", 1.0, "dice"), ("organs", "linear", 1.0, "hd95")
    assert t.columns == [dice, hd]
    assert t.methods == ["a", "b", "c"]
    assert t.mean.at["a", dice] == pytest.approx(0.7) and t.std.at["a", dice] == pytest.approx(0.1)
    assert t.mean.at["a", hd] == 5.0 and t.std.at["a", hd] == pytest.approx(math.sqrt(2))
    assert math.isnan(t.std.at["b", dice]) and math.isnan(t.mean.at["c", dice])
    assert t.n.to_numpy().tolist() == [[3, 2], [1, 1], [0, 0]]
    assert t.decimals == {"dice": 3, "hd95": 2}
    assert t.text.to_numpy().tolist() == [
        ["0.700 ± 0.100", "5.00 ± 1.41 (n=2)"],
        ["0.250 (n=1)", "12.50 (n=1)"],
        ["–", "–"],
    ]
    assert t.marks.to_numpy().tolist() == [["best", "best"], ["second", "second"], ["", ""]]


@pytest.mark.parametrize("metric, means, expected", [
    ("dice", [0.9, 0.8, 0.7], ["best", "second", ""]),
    ("hd95", [3.0, 1.0, 2.0], ["", "best", "second"]),              # lower is better
    ("assd", [1.0, NAN, 2.0], ["best", "", "second"]),              # NaN never wins
    ("dice", [NAN, NAN, 0.1], ["", "", ""]),                        # one filled cell: no marks
    ("dice", [0.8, 0.8, 0.7], ["best", "best", "second"]),          # tie for best
    ("dice", [0.9, 0.8, 0.8], ["best", "second", "second"]),        # tie for second
    ("dice", [0.8001, 0.8004, 0.7], ["best", "best", "second"]),    # tie at the displayed 0.800
    ("error_rate", [0.2, 0.1, 0.3], ["second", "best", ""]),
    ("auc", [0.5, 0.5, 0.5], ["best", "best", "best"]),
])
def test_marks(metric, means, expected):
    rows = [("organs", "linear", m, 1.0, 0, metric, v) for m, v in zip("abc", means)]
    t = tables.build_table(_long(rows), metrics={"segmentation": [metric]}, methods_order=list("abc"))
    assert t.marks[("organs", "linear", 1.0, metric)].tolist() == expected


@pytest.mark.parametrize("metric, lower", [
    ("dice", False), ("hd95", True), ("HD", True), ("assd", True), ("mean_error", True),
    ("auc", False), ("accuracy", False), ("dice_hd", False),
])
def test_lower_is_better(metric, lower):
    assert tables.lower_is_better(metric) is lower


def test_column_and_row_order():
    rows = []
    for f in (1.0, 0.1, 0.5):
        for p in ("linear", "finetune"):
            rows += [("organs", p, "z", f, 0, "dice", 0.5), ("organs", p, "z", f, 0, "hd95", 3.0),
                     ("lesion", p, "z", f, 0, "auc", 0.5)]
    rows += [("organs", "linear", "extra", 1.0, 0, "dice", 0.5)]
    t = tables.build_table(_long(rows), methods_order=["z", "y"], datasets_order=["organs", "lesion"],
                           protocols_order=["linear", "finetune"])
    assert t.methods == ["z", "y", "extra"]
    expected = []
    for d, ms in (("organs", ["dice", "hd95"]), ("lesion", ["auc"])):
        for p in ("linear", "finetune"):
            expected += [(d, p, f, m) for f in (0.1, 0.5, 1.0) for m in ms]
    assert t.columns == expected


def test_metrics_override_by_dataset_then_task():
    rows = [("organs", "linear", "a", 1.0, 0, "dice_lungs", 0.9),
            ("organs", "linear", "a", 1.0, 0, "dice", 0.5),
            ("lesion", "linear", "a", 1.0, 0, "accuracy", 0.75),
            ("lesion", "linear", "a", 1.0, 0, "auc", 0.5)]
    t = tables.build_table(_long(rows), metrics={"organs": ["dice_lungs", "missing"],
                                                 "segmentation": ["dice"]},
                           datasets_order=["organs", "lesion"])
    assert [c[3] for c in t.columns] == ["dice_lungs", "missing", "auc"]
    assert t.text.loc["a"].tolist() == ["0.900", "–", "0.500"]


def test_build_table_errors():
    with pytest.raises(ValueError, match="results frame lacks column\\(s\\) metric, value"):
        tables.build_table(pd.DataFrame(columns=tables.LONG_COLUMNS[:-2]))
    df = _long([("organs", "linear", "a", 1.0, 0, "dice", 0.5)])
    df.loc[0, "task"] = "detection"
    with pytest.raises(ValueError, match="dataset 'organs': no headline metrics for task 'detection'"):
        tables.build_table(df)


# ---------------------------------------------------------------- rendering
def _tiny_tree(base: Path) -> None:
    """Binary-exact values: three seeds with deviations -d, 0, +d give mean m and std d exactly."""
    for seed, dev in enumerate((-1, 0, 1)):
        _write(base, "organs", "linear", "scratch", 1.0, seed, {"dice": 0.625 + dev / 8, "hd95": 3.0 + dev})
        _write(base, "organs", "linear", "genesis", 1.0, seed, {"dice": 0.75 + dev / 8, "hd95": 5.0 + dev})
    _write(base, "lesion", "linear", "scratch", 1.0, 0, {"auc": 0.75, "accuracy": 0.5})
    _write(base, "lesion", "linear", "genesis", 1.0, 0, {"auc": 0.5, "accuracy": 0.5})


MD = """\
| method   |   organs · linear · 100% · dice ↑ |   organs · linear · 100% · hd95 ↓ |   lesion · linear · 100% · auc ↑ |
|:---------|----------------------------------:|----------------------------------:|---------------------------------:|
| scratch  |              <u>0.625 ± 0.125</u> |                   **3.00 ± 1.00** |                  **0.750 (n=1)** |
| genesis  |                 **0.750 ± 0.125** |                <u>5.00 ± 1.00</u> |               <u>0.500 (n=1)</u> |
| my_ssl   |                                 – |                                 – |                                – |

Mean ± sample std over seeds; **best** and <u>second best</u> per column; ↑ higher / ↓ lower is better; \
(n=k): fewer seeds than the other cells.
"""
TEX = r"""% generated by medssl.report.tables; needs \usepackage{booktabs}
\begin{tabular}{lccc}
\toprule
 & \multicolumn{2}{c}{organs} & lesion \\
\cmidrule(lr){2-3} \cmidrule(lr){4-4}
 & \multicolumn{2}{c}{linear, 100\%} & linear, 100\% \\
\cmidrule(lr){2-3} \cmidrule(lr){4-4}
Method & dice $\uparrow$ & hd95 $\downarrow$ & auc $\uparrow$ \\
\midrule
scratch & \underline{0.625 $\pm$ 0.125} & \textbf{3.00 $\pm$ 1.00} & \textbf{0.750 (n=1)} \\
genesis & \textbf{0.750 $\pm$ 0.125} & \underline{5.00 $\pm$ 1.00} & \underline{0.500 (n=1)} \\
my\_ssl & -- & -- & -- \\
\bottomrule
\end{tabular}
"""
CSV = """\
method,dataset,protocol,fraction,metric,mean,std,n
scratch,organs,linear,1.0,dice,0.625,0.125,3
scratch,organs,linear,1.0,hd95,3.0,1.0,3
scratch,lesion,linear,1.0,auc,0.75,,1
genesis,organs,linear,1.0,dice,0.75,0.125,3
genesis,organs,linear,1.0,hd95,5.0,1.0,3
genesis,lesion,linear,1.0,auc,0.5,,1
my_ssl,organs,linear,1.0,dice,,,0
my_ssl,organs,linear,1.0,hd95,,,0
my_ssl,lesion,linear,1.0,auc,,,0
"""


def test_write_tables_exact(tmp_path):
    _tiny_tree(tmp_path)
    out = tables.write_tables("s", ["scratch", "genesis", "my_ssl"], tmp_path,
                              datasets_order=["organs", "lesion"])
    study_dir = paths.study_results("s", tmp_path)
    assert out == {ext: study_dir / f"table.{ext}" for ext in ("md", "tex", "csv")}
    assert sorted(p.name for p in study_dir.iterdir()) == [
        "runs", "table.csv", "table.md", "table.tex"]  # no temporary files left
    assert out["md"].read_text() == MD
    assert out["tex"].read_text() == TEX
    assert out["csv"].read_text() == CSV


def test_write_tables_without_results_names_folder(tmp_path):
    paths.runs("s", tmp_path).mkdir(parents=True)
    with pytest.raises(ValueError, match=f"{paths.runs('s', tmp_path)}: no metrics.json found"):
        tables.write_tables("s", ["a"], tmp_path)
    assert not paths.table("s", "md", tmp_path).exists()


def test_write_study_tables_uses_study_order(tmp_path):
    for p in ("linear", "finetune"):
        _write(tmp_path, "lesion", p, "b", 1.0, 0, {"auc": 0.5})
        _write(tmp_path, "lesion", p, "a", 1.0, 0, {"auc": 0.75})
    spec = StudySpec(backbone="x", pretrain_dataset="corpus", methods=["b", "a"], datasets=["lesion"],
                     protocols=["linear", "finetune"])
    params = SimpleNamespace(studies={"s": spec})
    out = tables.write_study_tables(params, "s", tmp_path)
    lines = out["csv"].read_text().splitlines()
    assert [",".join(x.split(",")[:3]) for x in lines[1:]] == [
        "b,lesion,linear", "b,lesion,finetune", "a,lesion,linear", "a,lesion,finetune"]
    with pytest.raises(ValueError, match="study 'nope' is not defined; defined: s"):
        tables.write_study_tables(params, "nope", tmp_path)


def test_misses_column_follows_the_distance_and_is_not_ranked(tmp_path):
    _write(tmp_path, "organs", "linear", "a", 1.0, 0, {"dice": 0.5, "hd95": 4.0, "misses": 1})
    _write(tmp_path, "organs", "linear", "a", 1.0, 1, {"dice": 0.7, "hd95": float("nan"), "misses": 2})
    _write(tmp_path, "organs", "linear", "b", 1.0, 0, {"dice": 0.9, "hd95": 2.0, "misses": 0})
    df = tables.collect(paths.runs("s", tmp_path))
    assert math.isnan(df.loc[(df["seed"] == 1) & (df["metric"] == "hd95"), "value"].item())  # null: missing
    t = tables.build_table(df, methods_order=["a", "b"])
    col = ("organs", "linear", 1.0, "misses")
    assert [c[3] for c in t.columns] == ["dice", "hd95", "misses"]
    assert t.text[col].tolist() == ["1.5 ± 0.7", "0.0 (n=1)"]  # mean over seeds, 1 decimal
    assert t.text[("organs", "linear", 1.0, "hd95")].tolist() == ["4.00 (n=1)", "2.00 (n=1)"]
    assert t.marks[col].tolist() == ["", ""]  # a diagnostic, not ranked
    md = tables.to_markdown(t)
    assert "misses ↓" in md and "misses: test case × class pairs" in md
    assert "misses" not in tables.to_markdown(tables.build_table(df[df["metric"] != "misses"]))
