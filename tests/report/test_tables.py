"""Tests of medssl.report.tables on synthetic metrics.json trees."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from scipy import stats as sps

from medssl import paths
from medssl.config import StudySpec, TemplateStudySpec
from medssl.io import write_json
from medssl.report import tables

NAN = math.nan
TASKS = {"organs": "segmentation", "lesion": "classification", "breast": "template"}


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
    files = [_write(tmp_path, "organs", "linear", "genesis", 1.0, 0, {"dice": 0.5, "hd95": 4.0}),
             _write(tmp_path, "organs", "linear", "genesis", 1.0, 1, {"dice": 0.75, "hd95": None}),
             _write(tmp_path, "lesion", "finetune", "scratch", 0.5, 0, {"auc": 0.625})]
    df = tables.collect(files)
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


def test_collect_reads_only_the_given_files(tmp_path):
    kept = _write(tmp_path, "organs", "linear", "genesis", 1.0, 0, {"dice": 0.5})
    _write(tmp_path, "organs", "linear", "genesis", 1.0, 7, {"dice": 0.0})  # a stale run of another seed list
    assert tables.collect([kept])["seed"].tolist() == [0]


def test_collect_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="^no metrics.json given"):
        tables.collect([])
    good = _write(tmp_path, "organs", "linear", "genesis", 1.0, 0, {"dice": 0.5})
    bad = paths.downstream_metrics("s", "organs", "linear", "genesis", 1.0, 1, tmp_path)
    with pytest.raises(ValueError, match=f"^1 of 2 metrics.json missing \\(run the study first\\): {bad}$"):
        tables.collect([good, bad])
    bad.parent.mkdir(parents=True)
    bad.write_text('{"study": "s", "dataset": ')
    with pytest.raises(ValueError, match=f"^{bad}: not a readable JSON file"):
        tables.collect([good, bad])

    bad.write_text(json.dumps({"study": "s", "dataset": "organs", "method": "genesis", "seed": 1,
                               "metrics": {}}))
    with pytest.raises(ValueError, match=f"^{bad}: missing key\\(s\\) protocol, fraction, task$"):
        tables.collect([good, bad])

    record = json.loads(good.read_text())
    bad.write_text(json.dumps({**record, "metrics": {"dice": "0.5"}}))
    with pytest.raises(ValueError, match=f"^{bad}: metric 'dice' must be a number or null, got '0.5'$"):
        tables.collect([good, bad])

    bad.write_text(json.dumps(record))  # seed 0 again, in the seed1 folder
    with pytest.raises(ValueError, match=f"^{bad}: same dataset/protocol/method/fraction/seed"):
        tables.collect([good, bad])


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
    # b has one seed: one pair with a, no test, so the top two tie
    assert t.marks.to_numpy().tolist() == [["tie", "tie"], ["tie", "tie"], ["", ""]]
    assert t.p.isna().all().all()  # no reference row given


def _seeded(metric: str, rows: dict[str, list[float]]) -> pd.DataFrame:
    return _long([("organs", "linear", m, 1.0, seed, metric, v)
                  for m, vals in rows.items() for seed, v in enumerate(vals)])


@pytest.mark.parametrize("metric, rows, expected", [
    # well separated rows: best and second
    ("dice", {"a": [0.90, 0.91, 0.93], "b": [0.80, 0.83, 0.81], "c": [0.70, 0.72, 0.71]}, ["best", "second", ""]),
    # lower is better
    ("hd95", {"a": [9.0, 9.5, 9.2], "b": [1.0, 1.2, 1.1], "c": [5.0, 5.5, 5.1]}, ["", "best", "second"]),
    # a higher mean inside seed noise is not best: the top two tie
    ("dice", {"a": [0.9, 0.7, 0.83], "b": [0.8, 0.8, 0.80], "c": [0.1, 0.12, 0.11]}, ["tie", "tie", ""]),
    # NaN never wins
    ("assd", {"a": [1.0, 1.1, 1.05], "b": [NAN, NAN, NAN], "c": [2.0, 2.2, 2.1]}, ["best", "", ""]),
    ("dice", {"a": [NAN, NAN, NAN], "c": [0.1, 0.2, 0.3]}, ["", ""]),        # one filled row: no marks
    ("auc", {"a": [0.5, 0.6, 0.7], "b": [0.5, 0.6, 0.7]}, ["tie", "tie"]),   # identical rows
])
def test_marks_need_a_significant_difference(metric, rows, expected):
    t = tables.build_table(_seeded(metric, rows), metrics={"segmentation": [metric]}, methods_order=list(rows))
    assert t.marks[("organs", "linear", 1.0, metric)].tolist() == expected


def test_p_values_against_the_reference_row_match_scipy():
    rows = {"scratch": [0.60, 0.70, 0.65, 0.62], "x": [0.66, 0.71, 0.75, 0.70], "y": [0.60, 0.70, 0.65]}
    t = tables.build_table(_seeded("dice", rows), methods_order=list(rows), reference="scratch")
    p = t.p[("organs", "linear", 1.0, "dice")]
    assert math.isnan(p["scratch"])
    assert p["x"] == pytest.approx(sps.ttest_rel(rows["x"], rows["scratch"]).pvalue)
    assert p["y"] == 1.0  # seeds 0-2 identical to the reference: paired on the common seeds
    assert t.reference == "scratch"


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
def _tiny_tree(base: Path) -> list[Path]:
    """Binary-exact values, means and stds.

    dice: genesis - scratch is 0.125 for every seed (p = 0: genesis best, ‡).
    hd95: genesis - scratch is 2.5, 2.5, 1.0: t = 2 / (0.866 / sqrt 3) = 4 with 2
    degrees of freedom, p = 1 - 4 / sqrt 18 = 0.057: not significant, a tie.
    """
    files = []
    for seed, dev in enumerate((-1, 0, 1)):
        files.append(_write(base, "organs", "linear", "scratch", 1.0, seed,
                            {"dice": 0.625 + dev / 8, "hd95": 3.0 + dev}))
        files.append(_write(base, "organs", "linear", "genesis", 1.0, seed,
                            {"dice": 0.75 + dev / 8, "hd95": (4.5, 5.5, 5.0)[seed]}))
    files.append(_write(base, "lesion", "linear", "scratch", 1.0, 0, {"auc": 0.75, "accuracy": 0.5}))
    files.append(_write(base, "lesion", "linear", "genesis", 1.0, 0, {"auc": 0.5, "accuracy": 0.5}))
    return files


MD = """\
| method   |   organs · linear · 100% · dice ↑ |   organs · linear · 100% · hd95 (mm) ↓ |   lesion · linear · 100% · auc ↑ |
|:---------|----------------------------------:|---------------------------------------:|---------------------------------:|
| scratch  |                     0.625 ± 0.125 |                      3.00 ± 1.00 (tie) |                0.750 (n=1) (tie) |
| genesis  |                **0.750 ± 0.125**‡ |                      5.00 ± 0.50 (tie) |                0.500 (n=1) (tie) |
| my_ssl   |                                 – |                                      – |                                – |

Mean ± sample std over n = 3 seeds per cell ((n=k): fewer in that cell); ↑ higher / ↓ lower is better. † p < 0.05, ‡ p < 0.01 against the reference row scratch: two-sided paired t-test across seeds (scipy.stats.ttest_rel), no correction for multiple comparisons. Per column, **best** only where it differs from the runner-up (p < 0.05, same test), <u>second</u> only where the runner-up differs from the third; (tie): the top two do not differ.
"""
TEX = r"""% generated by medssl.report.tables; needs \usepackage{booktabs}
\begin{tabular}{lccc}
\toprule
 & \multicolumn{2}{c}{organs} & lesion \\
\cmidrule(lr){2-3} \cmidrule(lr){4-4}
 & \multicolumn{2}{c}{linear, 100\%} & linear, 100\% \\
\cmidrule(lr){2-3} \cmidrule(lr){4-4}
Method & dice $\uparrow$ & hd95 (mm) $\downarrow$ & auc $\uparrow$ \\
\midrule
scratch & 0.625 $\pm$ 0.125 & 3.00 $\pm$ 1.00\,(tie) & 0.750 (n=1)\,(tie) \\
genesis & \textbf{0.750 $\pm$ 0.125}$^{\ddagger}$ & 5.00 $\pm$ 0.50\,(tie) & 0.500 (n=1)\,(tie) \\
my\_ssl & -- & -- & -- \\
\bottomrule
\end{tabular}

\par\smallskip\parbox{\linewidth}{\footnotesize Mean $\pm$ sample std over n = 3 seeds per cell ((n=k): fewer in that cell); $\uparrow$ higher / $\downarrow$ lower is better. $^{\dagger}$ p $<$ 0.05, $^{\ddagger}$ p $<$ 0.01 against the reference row scratch: two-sided paired t-test across seeds (scipy.stats.ttest\_rel), no correction for multiple comparisons. Per column, \textbf{best} only where it differs from the runner-up (p $<$ 0.05, same test), \underline{second} only where the runner-up differs from the third; (tie): the top two do not differ.}
"""
CSV = """\
method,dataset,protocol,fraction,metric,mean,std,n,mark,reference,p_vs_reference
scratch,organs,linear,1.0,dice,0.625,0.125,3,,scratch,
scratch,organs,linear,1.0,hd95,3.0,1.0,3,tie,scratch,
scratch,lesion,linear,1.0,auc,0.75,,1,tie,scratch,
genesis,organs,linear,1.0,dice,0.75,0.125,3,best,scratch,0.0
genesis,organs,linear,1.0,hd95,5.0,0.5,3,tie,scratch,0.05719095841793663
genesis,lesion,linear,1.0,auc,0.5,,1,tie,scratch,
my_ssl,organs,linear,1.0,dice,,,0,,scratch,
my_ssl,organs,linear,1.0,hd95,,,0,,scratch,
my_ssl,lesion,linear,1.0,auc,,,0,,scratch,
"""


def _write_tiny(base: Path) -> dict[str, Path]:
    return tables.write_tables("s", _tiny_tree(base), ["scratch", "genesis", "my_ssl"], base,
                               datasets_order=["organs", "lesion"], reference="scratch")


def test_write_tables_exact(tmp_path):
    out = _write_tiny(tmp_path)
    study_dir = paths.study_results("s", tmp_path)
    assert out == {**{ext: study_dir / f"table.{ext}" for ext in ("md", "tex", "csv")},
                   "summary": study_dir / "summary.json"}
    assert sorted(p.name for p in study_dir.iterdir()) == [
        "runs", "summary.json", "table.csv", "table.md", "table.tex"]  # no temporary files left
    assert out["md"].read_text() == MD
    assert out["tex"].read_text() == TEX
    assert out["csv"].read_text() == CSV
    p_hd95 = float(CSV.splitlines()[5].split(",")[-1])
    assert p_hd95 == pytest.approx(1 - 4 / math.sqrt(18))  # closed form of the docstring


def test_write_tables_with_missing_runs_names_them(tmp_path):
    files = _tiny_tree(tmp_path)
    files[0].unlink()
    with pytest.raises(ValueError, match=f"1 of {len(files)} metrics.json missing .*: {files[0]}$"):
        tables.write_tables("s", files, ["a"], tmp_path)
    assert not paths.table("s", "md", tmp_path).exists()


def _ssl_params(methods: dict[str, str], **study) -> SimpleNamespace:
    spec = StudySpec(backbone="x", pretrain_dataset="corpus", methods=list(methods), **study)
    return SimpleNamespace(studies={"s": spec}, methods={m: SimpleNamespace(kind=k) for m, k in methods.items()})


def test_write_study_tables_uses_study_order_and_only_its_runs(tmp_path):
    for p in ("linear", "finetune"):
        for seed in (0, 1):
            _write(tmp_path, "lesion", p, "b", 1.0, seed, {"auc": 0.5 + seed / 8})
            _write(tmp_path, "lesion", p, "a", 1.0, seed, {"auc": 0.75})
    _write(tmp_path, "lesion", "linear", "a", 1.0, 5, {"auc": 0.0})   # not in the study's seeds
    _write(tmp_path, "lesion", "linear", "gone", 1.0, 0, {"auc": 0.0})  # a method no longer listed
    params = _ssl_params({"b": "genesis", "a": "scratch"}, datasets=["lesion"],
                         protocols=["linear", "finetune"], seeds=[0, 1])
    out = tables.write_study_tables(params, "s", tmp_path)
    lines = out["csv"].read_text().splitlines()
    assert [",".join(x.split(",")[:3]) for x in lines[1:]] == [
        "b,lesion,linear", "b,lesion,finetune", "a,lesion,linear", "a,lesion,finetune"]
    assert "n = 2 seeds" in out["md"].read_text() and "reference row a:" in out["md"].read_text()
    assert "lesion · linear · 100% · auc ↑" in out["md"].read_text()
    with pytest.raises(ValueError, match="study 'nope' is not defined; defined: s"):
        tables.write_study_tables(params, "nope", tmp_path)
    params.studies["s"].seeds.append(2)
    with pytest.raises(ValueError, match="4 of 12 metrics.json missing"):
        tables.write_study_tables(params, "s", tmp_path)


def test_row_study_headers_leave_out_protocol_and_fraction(tmp_path):
    spec = TemplateStudySpec(kind="template", dataset="breast", seeds=[0, 1, 2],
                             models={"unet": {"kind": "unet"}, "diffeo": {"kind": "diffeo_fixed"}})
    params = SimpleNamespace(studies={"t": spec}, methods={})
    for model in ("diffeo", "unet"):
        for seed in (0, 1, 2):
            path = paths.method_metrics("t", "breast", model, seed, tmp_path)
            write_json(path, {"study": "t", "dataset": "breast", "protocol": "template", "method": model,
                              "fraction": 1.0, "seed": seed, "task": "template",
                              "metrics": {"dice": 0.5 + seed / 10, "hausdorff": 3.0 + seed,
                                          "neg_jacobian_pct": 0.0}})
    md = tables.write_study_tables(params, "t", tmp_path)["md"].read_text()
    header = md.splitlines()[0]
    assert "breast · dice ↑" in header and "breast · hausdorff (mm) ↓" in header
    assert "breast · neg_jacobian_pct (%) ↓" in header and "template" not in header and "100%" not in header
    assert "reference row unet" in md
    tex = tables.to_latex(tables.build_table(tables.collect(
        [paths.method_metrics("t", "breast", m, s, tmp_path) for m in ("unet", "diffeo") for s in (0, 1, 2)]),
        settings=False))
    assert "template, 100" not in tex and r"hausdorff (mm) $\downarrow$" in tex


def test_misses_column_follows_the_distance_and_is_not_ranked(tmp_path):
    files = [_write(tmp_path, "organs", "linear", "a", 1.0, 0, {"dice": 0.5, "hd95": 4.0, "misses": 1}),
             _write(tmp_path, "organs", "linear", "a", 1.0, 1, {"dice": 0.7, "hd95": float("nan"), "misses": 2}),
             _write(tmp_path, "organs", "linear", "b", 1.0, 0, {"dice": 0.9, "hd95": 2.0, "misses": 0})]
    df = tables.collect(files)
    assert math.isnan(df.loc[(df["seed"] == 1) & (df["metric"] == "hd95"), "value"].item())  # null: missing
    t = tables.build_table(df, methods_order=["a", "b"], reference="a")
    col = ("organs", "linear", 1.0, "misses")
    assert [c[3] for c in t.columns] == ["dice", "hd95", "misses"]
    assert t.text[col].tolist() == ["1.5 ± 0.7", "0.0 (n=1)"]  # mean over seeds, 1 decimal
    assert t.text[("organs", "linear", 1.0, "hd95")].tolist() == ["4.00 (n=1)", "2.00 (n=1)"]
    assert t.marks[col].tolist() == ["", ""]  # a diagnostic, not ranked
    assert t.p[col].isna().all()              # nor tested
    md = tables.to_markdown(t)
    assert "misses ↓" in md and "misses: test case × class pairs" in md
    assert "misses" not in tables.to_markdown(tables.build_table(df[df["metric"] != "misses"]))
