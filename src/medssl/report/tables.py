"""Results tables of a study: metrics.json files -> Markdown, LaTeX and CSV.

A table has one row per method and one column per dataset x protocol x label
fraction x metric. Conventions:

* :func:`collect` keeps *every* entry of each file's ``"metrics"`` dict
  (long format); :func:`build_table` picks the columns, by default the
  headline metrics of the dataset's task (:data:`HEADLINE`).
* A cell is the mean over seeds ± the sample standard deviation (``ddof=1``).
  With one seed the standard deviation is undefined: the cell shows the mean
  alone and the CSV leaves ``std`` empty. When a cell has fewer seeds than the
  best-covered cell of the table, ``(n=k)`` follows it. A cell without values
  shows ``–`` (``--`` in LaTeX).
* Numbers get 3 decimals for a metric whose values all lie in [0, 1] (Dice,
  AUC, accuracy) and 2 decimals otherwise (HD95 in mm), per metric over the
  whole table; a count (:data:`COUNTS`) gets 1.
* ``misses`` follows the distance column of its setting: the number of test
  case x class pairs of one seed (mean over seeds) whose prediction or
  reference of the class was empty, which score Dice 0 and the volume
  diagonal as their distance (the rule of :mod:`medssl.metrics`). It is a
  diagnostic: never marked best or second, and shown only where the
  metrics.json files have it.
* Per column, the best mean is bold and the second best underlined, compared
  at the displayed precision, so displayed ties share a mark. Metrics whose
  name starts with ``hd``, ``assd``, ``hausdorff``, ``neg_jacobian`` or
  ``components``, or contains ``error``, are lower-is-better
  (↓), the others higher-is-better (↑). Empty cells never win; a column with
  fewer than two filled cells gets no marks.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from medssl import paths
from medssl.io import write_text

if TYPE_CHECKING:
    from medssl.config import Params

LONG_COLUMNS = ["study", "dataset", "protocol", "method", "fraction", "seed", "task", "metric", "value"]
REQUIRED_KEYS = ("study", "dataset", "protocol", "method", "fraction", "seed", "task", "metrics")
HEADLINE: dict[str, list[str]] = {"segmentation": ["dice", "hd95", "misses"], "classification": ["auc"],
                                  "template": ["dice", "hausdorff", "misses", "neg_jacobian_pct", "components"],
                                  "stn": ["accuracy", "neg_jacobian_pct"], "uda": ["dice", "assd", "misses"]}
LOWER_PREFIXES = ("hd", "assd", "hausdorff", "neg_jacobian", "components", "misses")
#: counts shown beside a distance (medssl.metrics): 1 decimal, never marked best / second
COUNTS = ("misses",)
COLUMN_LEVELS = ["dataset", "protocol", "fraction", "metric"]
EMPTY = "–"


def lower_is_better(metric: str) -> bool:
    """True for distance/error metrics: names starting with one of :data:`LOWER_PREFIXES` or containing ``error``.

    ``components`` (connected components of a single-object segmentation) is
    lower-is-better because every non-empty output has at least one; an
    empty output (0) would win, so read it together with Dice.
    """
    name = metric.lower()
    return name.startswith(LOWER_PREFIXES) or "error" in name


# ------------------------------------------------------------------ reading
def read_metrics(path: Path) -> dict:
    """Read and validate one ``metrics.json``.

    Raises:
        ValueError: naming ``path`` for invalid JSON, a missing key or a bad value.
    """
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path}: top level must be a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise ValueError(f"{path}: missing key(s) {', '.join(missing)}")
    if not isinstance(record["metrics"], dict):
        raise ValueError(f"{path}: 'metrics' must be an object, got {record['metrics']!r}")
    for name, value in record["metrics"].items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"{path}: metric {name!r} must be a number or null, got {value!r}")
    try:
        record["fraction"] = float(record["fraction"])
        record["seed"] = int(record["seed"])
    except (TypeError, ValueError):
        raise ValueError(f"{path}: fraction must be a number and seed an integer, "
                         f"got {record['fraction']!r} and {record['seed']!r}") from None
    return record


def collect(study_dir: Path) -> pd.DataFrame:
    """Every ``metrics.json`` under ``study_dir`` (searched recursively) as one long table.

    ``study_dir`` is normally :func:`medssl.paths.runs` of the study.

    Returns:
        DataFrame with columns :data:`LONG_COLUMNS`, one row per entry of each
        file's ``"metrics"`` dict (null values become NaN), in file order.

    Raises:
        ValueError: naming the folder when it holds no metrics.json, or the file
            that is invalid or repeats another file's dataset/protocol/method/fraction/seed.
    """
    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        raise ValueError(f"{study_dir}: results folder not found")
    files = sorted(study_dir.rglob("metrics.json"))
    if not files:
        raise ValueError(f"{study_dir}: no metrics.json found")
    rows, seen = [], {}
    for path in files:
        rec = read_metrics(path)
        key = (rec["dataset"], rec["protocol"], rec["method"], rec["fraction"], rec["seed"])
        if key in seen:
            raise ValueError(f"{path}: same dataset/protocol/method/fraction/seed {key} as {seen[key]}")
        seen[key] = path
        for metric, value in rec["metrics"].items():
            rows.append([rec["study"], rec["dataset"], rec["protocol"], rec["method"], rec["fraction"],
                         rec["seed"], rec["task"], metric, math.nan if value is None else float(value)])
    return pd.DataFrame(rows, columns=LONG_COLUMNS)


# ---------------------------------------------------------------- building
@dataclass
class TableData:
    """One study table; frames are indexed by method with :data:`COLUMN_LEVELS` columns.

    Attributes:
        mean, std, n: per-cell mean, sample std (ddof=1, NaN below two seeds) and seed count.
        marks: ``"best"``, ``"second"`` or ``""`` per cell.
        text: the cell as displayed, without markup.
        decimals: decimals used per metric.
    """

    mean: pd.DataFrame
    std: pd.DataFrame
    n: pd.DataFrame
    marks: pd.DataFrame
    text: pd.DataFrame
    decimals: dict[str, int]

    @property
    def methods(self) -> list[str]:
        return list(self.mean.index)

    @property
    def columns(self) -> list[tuple[str, str, float, str]]:
        return list(self.mean.columns)


def _ordered(present: Sequence[str], order: Sequence[str] | None) -> list[str]:
    """``order`` first (only names present), then the other present names sorted."""
    order = list(order or [])
    return [x for x in order if x in present] + sorted(set(present) - set(order))


def _columns(df: pd.DataFrame, metrics: Mapping[str, list[str]] | None,
             datasets_order: Sequence[str] | None,
             protocols_order: Sequence[str] | None) -> list[tuple[str, str, float, str]]:
    cols = []
    for dataset in _ordered(df["dataset"].unique(), datasets_order):
        sub = df[df["dataset"] == dataset]
        tasks = sorted(sub["task"].unique())
        if len(tasks) != 1:
            raise ValueError(f"dataset {dataset!r} has results of several tasks: {tasks}")
        task = tasks[0]
        chosen = (metrics or {}).get(dataset) or (metrics or {}).get(task) or HEADLINE.get(task)
        if not chosen:
            raise ValueError(f"dataset {dataset!r}: no headline metrics for task {task!r}; "
                             f"pass metrics={{{task!r}: [...]}}")
        # a count column only where the results have it (older metrics.json files do not)
        chosen = [m for m in chosen if m not in COUNTS or (sub["metric"] == m).any()]
        for protocol in _ordered(sub["protocol"].unique(), protocols_order):
            for fraction in sorted(sub.loc[sub["protocol"] == protocol, "fraction"].unique()):
                cols += [(dataset, protocol, float(fraction), m) for m in chosen]
    return cols


def _fmt(x: float, decimals: int) -> str:
    return f"{x:.{decimals}f}"


def _marks(means: pd.Series, decimals: int, lower: bool) -> list[str]:
    shown = [float(_fmt(m, decimals)) if not math.isnan(m) else math.nan for m in means]
    ranked = sorted({v for v in shown if not math.isnan(v)}, reverse=not lower)
    if sum(not math.isnan(v) for v in shown) < 2:
        return [""] * len(shown)
    labels = {ranked[0]: "best"}
    if len(ranked) > 1:
        labels[ranked[1]] = "second"
    return [labels.get(v, "") for v in shown]


def build_table(df: pd.DataFrame, metrics: Mapping[str, list[str]] | None = None,
                methods_order: Sequence[str] | None = None,
                datasets_order: Sequence[str] | None = None,
                protocols_order: Sequence[str] | None = None) -> TableData:
    """Aggregate a :func:`collect` frame over seeds into a :class:`TableData`.

    Args:
        df: long frame with columns :data:`LONG_COLUMNS`.
        metrics: metrics to show, keyed by dataset name or task name (dataset
            first); datasets not covered use :data:`HEADLINE` of their task.
        methods_order: row order (the study's methods in params.yaml). Every
            listed method gets a row, results or not; methods with results but
            not listed follow, sorted.
        datasets_order, protocols_order: column order; names not listed follow,
            sorted. Fractions are always ascending.

    Raises:
        ValueError: naming missing columns, a dataset with several tasks, or a
            task without headline metrics.
    """
    missing = [c for c in LONG_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"results frame lacks column(s) {', '.join(missing)}")
    if df.empty:
        raise ValueError("results frame is empty")
    cols = _columns(df, metrics, datasets_order, protocols_order)
    listed = list(dict.fromkeys(methods_order or []))
    methods = listed + sorted(set(df["method"]) - set(listed))
    index = pd.MultiIndex.from_tuples(cols, names=COLUMN_LEVELS)
    grouped = df.groupby(["method", *COLUMN_LEVELS])["value"]
    stats = grouped.agg(["mean", "count"]).assign(std=grouped.std(ddof=1))

    def wide(name: str) -> pd.DataFrame:
        return stats[name].unstack(COLUMN_LEVELS).reindex(index=methods, columns=index)

    mean, std, n = wide("mean"), wide("std"), wide("count").fillna(0).astype(int)
    decimals = {}
    for metric in dict.fromkeys(c[3] for c in cols):
        vals = df.loc[df["metric"] == metric, "value"].dropna()
        decimals[metric] = 1 if metric in COUNTS else 3 if ((vals >= 0) & (vals <= 1)).all() else 2
    n_max = int(n.to_numpy().max()) if n.size else 0
    marks = pd.DataFrame("", index=mean.index, columns=index)
    text = pd.DataFrame(EMPTY, index=mean.index, columns=index)
    for col in cols:
        d = decimals[col[3]]
        if col[3] not in COUNTS:
            marks[col] = _marks(mean[col], d, lower_is_better(col[3]))
        for method in methods:
            k, m, s = n.at[method, col], mean.at[method, col], std.at[method, col]
            if k == 0 or math.isnan(m):
                continue
            cell = _fmt(m, d) if k < 2 else f"{_fmt(m, d)} ± {_fmt(s, d)}"
            text.at[method, col] = cell if k >= n_max else f"{cell} (n={k})"
    return TableData(mean, std, n, marks, text, decimals)


# --------------------------------------------------------------- rendering
def fraction_label(fraction: float) -> str:
    """Label fraction as a percentage: ``1.0 -> '100%'``, ``0.125 -> '12.5%'``."""
    return f"{fraction * 100:g}%"


def _arrow(metric: str) -> str:
    return "↓" if lower_is_better(metric) else "↑"


def to_markdown(table: TableData) -> str:
    """Pipe table (pandas/tabulate): ``**best**``, ``<u>second</u>``, one header row."""
    out = pd.DataFrame({"method": table.methods})
    for col in table.columns:
        dataset, protocol, fraction, metric = col
        header = f"{dataset} · {protocol} · {fraction_label(fraction)} · {metric} {_arrow(metric)}"
        wrap = {"best": "**{}**", "second": "<u>{}</u>", "": "{}"}
        out[header] = [wrap[mk].format(tx) if tx != EMPTY else tx
                       for tx, mk in zip(table.text[col], table.marks[col])]
    body = out.to_markdown(index=False, disable_numparse=True,
                           colalign=("left", *["right"] * len(table.columns)))
    legend = ("Mean ± sample std over seeds; **best** and <u>second best</u> per column; "
              "↑ higher / ↓ lower is better; (n=k): fewer seeds than the other cells.")
    if any(c[3] in COUNTS for c in table.columns):
        legend += (" misses: test case × class pairs per seed with the class missing from the prediction "
                   "or from the reference, scored Dice 0 and the volume diagonal (included in the distance "
                   "to their left).")
    return f"{body}\n\n{legend}\n"


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
        "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(text: str) -> str:
    """Escape LaTeX special characters (``phantom_organs -> phantom\\_organs``)."""
    return "".join(_TEX.get(ch, ch) for ch in text)


def _spans(keys: list[tuple]) -> list[tuple[tuple, int, int]]:
    """Runs of equal consecutive keys as (key, first, last) table columns (the method is column 1)."""
    runs: list[tuple[tuple, int, int]] = []
    for i, key in enumerate(keys, start=2):
        if runs and runs[-1][0] == key:
            runs[-1] = (key, runs[-1][1], i)
        else:
            runs.append((key, i, i))
    return runs


def _header_row(keys: list[tuple]) -> list[str]:
    """A header row spanning runs of equal keys (labelled by their last element) + cmidrules."""
    spans = _spans(keys)
    cells = [f"\\multicolumn{{{b - a + 1}}}{{c}}{{{key[-1]}}}" if b > a else key[-1] for key, a, b in spans]
    rules = " ".join(f"\\cmidrule(lr){{{a}-{b}}}" for _, a, b in spans)
    return [" & ".join(["", *cells]) + r" \\", rules]


def to_latex(table: TableData) -> str:
    """booktabs ``tabular`` (for ``\\input`` inside a table float): ``\\textbf``, ``\\underline``."""
    cols = table.columns
    datasets = [(tex_escape(c[0]),) for c in cols]
    settings = [(c[0], f"{tex_escape(c[1])}, {tex_escape(fraction_label(c[2]))}") for c in cols]
    arrows = [r"$\downarrow$" if lower_is_better(c[3]) else r"$\uparrow$" for c in cols]
    metric_row = " & ".join(["Method", *(f"{tex_escape(c[3])} {a}" for c, a in zip(cols, arrows))]) + r" \\"
    lines = ["% generated by medssl.report.tables; needs \\usepackage{booktabs}",
             f"\\begin{{tabular}}{{l{'c' * len(cols)}}}", r"\toprule",
             *_header_row(datasets), *_header_row(settings), metric_row, r"\midrule"]
    wrap = {"best": "\\textbf{{{}}}", "second": "\\underline{{{}}}", "": "{}"}
    for method in table.methods:
        cells = []
        for col in cols:
            tx = table.text.at[method, col]
            tx = "--" if tx == EMPTY else tx.replace(" ± ", r" $\pm$ ")
            cells.append(wrap[table.marks.at[method, col]].format(tx))
        lines.append(" & ".join([tex_escape(method), *cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def to_csv(table: TableData) -> str:
    """Long CSV without markup: method, dataset, protocol, fraction, metric, mean, std, n."""
    frames = {"mean": table.mean, "std": table.std, "n": table.n}
    rows = [[method, *col, *(frames[k].at[method, col] for k in frames)]
            for method in table.methods for col in table.columns]
    out = pd.DataFrame(rows, columns=["method", *COLUMN_LEVELS, "mean", "std", "n"])
    return out.to_csv(index=False, lineterminator="\n")


# ----------------------------------------------------------------- writing
def write_tables(study: str, methods_order: Sequence[str] | None = None, base: Path | None = None,
                 *, metrics: Mapping[str, list[str]] | None = None,
                 datasets_order: Sequence[str] | None = None,
                 protocols_order: Sequence[str] | None = None) -> dict[str, Path]:
    """Collect ``results/<study>/runs`` and write ``results/<study>/table.{md,tex,csv}`` atomically.

    Args:
        study: study name.
        methods_order: row order, normally the study's ``methods`` in params.yaml.
        base: project root holding ``results/`` (default :func:`medssl.paths.root`).
        metrics, datasets_order, protocols_order: as in :func:`build_table`.

    Returns:
        ``{"md": path, "tex": path, "csv": path}``.

    Raises:
        ValueError: naming the folder when no metrics.json is found, or the bad file.
    """
    df = collect(paths.runs(study, base))
    table = build_table(df, metrics, methods_order, datasets_order, protocols_order)
    out = {}
    for ext, render in (("md", to_markdown), ("tex", to_latex), ("csv", to_csv)):
        out[ext] = paths.table(study, ext, base)
        write_text(out[ext], render(table))
    return out


def write_study_tables(params: Params, study: str, base: Path | None = None) -> dict[str, Path]:
    """:func:`write_tables` with the row and column order of ``params.studies[study]``.

    Args:
        params: a validated :class:`medssl.config.Params`.
        study: a study defined in ``params``.

    Raises:
        ValueError: naming ``study`` when params does not define it.
    """
    if study not in params.studies:
        defined = ", ".join(sorted(params.studies)) or "none"
        raise ValueError(f"study {study!r} is not defined; defined: {defined}")
    spec = params.studies[study]
    metrics = None
    if spec.kind == "uda":  # Dice per class and mean, then ASSD mean (CMEVAE Tables 1-2)
        fg = params.datasets[spec.directions[0].target].classes[1:]
        metrics = {"uda": [*(f"dice_{c}" for c in fg), "dice", "assd", "misses"]}
    return write_tables(study, spec.methods, base, metrics=metrics, datasets_order=spec.datasets,
                        protocols_order=getattr(spec, "protocols", None))
