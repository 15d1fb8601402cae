"""Figures of a study: ``results/<study>/figures/*.png``, drawn with matplotlib's Agg backend.

Per study kind (:data:`FIGURES`):

* every kind — ``curves.png``: training curves per row (:mod:`medssl.report.curves`):
  the training loss and, where measured, the validation metric per epoch (the
  template study's history is per step), one panel row per setting, one line
  per table row: the mean over seeds, with a band from the minimum to the
  maximum over seeds (with two or three seeds a standard-deviation band would
  claim more than the data hold). The same numbers go to ``curves.csv``.
* ssl — ``label_fraction.png``: the dataset's headline test metric (first of
  :data:`medssl.report.build.HEADLINE` for its task: Dice, AUC) against the
  label fraction, one panel per dataset x protocol, one line per method, error
  bars the sample standard deviation over seeds (``ddof=1``; none below two).
  Points of different methods are offset slightly along x so that their bars
  do not hide each other.
* ssl — ``predictions.png``: each method's prediction on one fixed test case and
  slice per segmentation dataset (:mod:`medssl.report.panels`).
* ssl — ``pretext.png``: each pre-trained method's own task on held-out volumes
  (:mod:`medssl.report.pretext`, from ``checkpoints/<study>/<method>/pretext.json``)
  at step 0 and after the last step, bars with mean ± sample std over the
  held-out cases, the task's baseline dashed; one panel per method, because
  the metrics differ (PSNR in dB, Dice, matching accuracy).

The inputs are exactly the files the study's rule names
(:func:`medssl.report.inputs.study_metrics`, :func:`pretext_files`), never a glob.

Determinism (so that DVC and reruns see no spurious change): figures are
built on :class:`matplotlib.figure.Figure` with an Agg canvas (no pyplot
state), under matplotlib's built-in default style plus :data:`STYLE` (a
user's matplotlibrc does not leak in), with fixed sizes, colours and order,
and saved with ``metadata={"Software": None}``: Agg's PNG writer adds only
that key by default ("Matplotlib version..."; it never writes a date for PNG,
see ``matplotlib.backends.backend_agg.FigureCanvasAgg.print_png``), so the
file has no tEXt chunk. Same inputs and matplotlib version give the same
bytes. Files are written atomically (:func:`medssl.io.atomic_path`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from medssl import paths
from medssl.io import atomic_path
from medssl.report import pretext as pretext_table
from medssl.report.build import HEADLINE, lower_is_better, metric_label
from medssl.report.curves import study_curves, validation_label, write_curves
from medssl.report.inputs import collect, study_metrics
from medssl.report.panels import render_predictions
from medssl.report.render import fraction_label

__all__ = ["CAPTIONS", "FIGURES", "STYLE", "caption", "figure_names", "figure_path", "figures_markdown",
           "pretext_files", "render_curves", "render_label_fraction", "render_pretext", "save_png",
           "study_figure_paths", "write_study_figures"]

#: the figures of each study kind (file stem under results/<study>/figures/); kinds not listed get DEFAULT
FIGURES: dict[str, tuple[str, ...]] = {"ssl": ("curves", "label_fraction", "pretext", "predictions")}
DEFAULT = ("curves",)
#: one-line captions (the table's Markdown lists each figure with its caption)
CAPTIONS = {
    "curves": "Training curves per row: training loss and, where measured, the validation metric per {x}; "
              "line: mean over seeds, band: min–max over seeds.",
    "label_fraction": "Headline test metric against the label fraction, one line per method, one panel per "
                      "dataset and protocol; error bars: sample std over seeds.",
    "pretext": "Each pre-training method's own task on held-out volumes at step 0 and after its last step: "
               "mean ± sample std over the held-out cases (GVSL: ordered pairs); dashed: the task's baseline.",
    "predictions": "Each method's prediction (first seed) on one fixed test case per segmentation dataset, on "
                   "the axial slice with the most labelled voxels, beside the image and the ground truth; "
                   "one row per protocol and label fraction.",
}
#: over matplotlib's built-in defaults (matplotlib.rcParamsDefault)
STYLE = {"font.size": 8.0, "axes.titlesize": 8.0, "axes.labelsize": 8.0, "legend.fontsize": 7.5,
         "xtick.labelsize": 7.0, "ytick.labelsize": 7.0, "axes.grid": True, "grid.alpha": 0.3,
         "axes.spines.top": False, "axes.spines.right": False, "savefig.dpi": 100.0,
         "savefig.facecolor": "white", "figure.facecolor": "white", "path.simplify": True}
#: matplotlib's tab10, then dashed repeats (a study rarely has more than 10 rows)
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
          "#17becf")
METADATA = {"Software": None}  # the only key Agg's PNG writer adds by default


def figure_names(kind: str) -> tuple[str, ...]:
    """The figure stems of a study kind: ``("curves", "label_fraction", "pretext")`` for ssl."""
    return FIGURES.get(kind, DEFAULT)


def figure_path(study: str, name: str, base: Path | None = None) -> Path:
    """``results/<study>/figures/<name>.png`` (accepts ``"{study}"`` placeholders, as :mod:`medssl.paths`)."""
    return paths.figures(study, base) / f"{name}.png"


def study_figure_paths(params, study: str, base: Path | None = None) -> list[Path]:
    """The figure files of ``study``, in :func:`figure_names` order."""
    return [figure_path(study, n, base) for n in figure_names(params.studies[study].kind)]


def pretext_files(params, study: str, base: Path | None = None) -> list[Path]:
    """The pretext.json of every method of an ssl study (what ``pretext.png`` reads)."""
    return [paths.pretext(study, m, base) for m in params.studies[study].methods]


def caption(name: str, kind: str) -> str:
    """The one-line caption of figure ``name`` of a ``kind`` study."""
    return CAPTIONS[name].format(x="step" if kind == "template" else "epoch")


def figures_markdown(kind: str) -> str:
    """The ``## Figures`` section of a study's table.md: a Markdown image link and caption per figure."""
    lines = ["## Figures", ""]
    for name in figure_names(kind):
        lines += [f"![{name}](figures/{name}.png)", "", f"*{name}.png* — {caption(name, kind)}", ""]
    return "\n".join(lines)


def _color(i: int) -> tuple[str, str]:
    return COLORS[i % len(COLORS)], "-" if i < len(COLORS) else "--"


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _style():
    import matplotlib.style

    return matplotlib.style.context(["default", STYLE])


def _empty(fig, text: str):
    ax = fig.add_subplot()
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center")
    return fig


def save_png(fig, path: Path) -> Path:
    """Save ``fig`` as a PNG without metadata text chunks, atomically; returns ``path``.

    Drawing happens here, so it runs under the same fixed style as the construction.
    """
    with _style(), atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=STYLE["savefig.dpi"], metadata=METADATA)
    return Path(path)


def _order(present: Sequence[str], order: Sequence[str] | None) -> list[str]:
    listed = [x for x in dict.fromkeys(order or []) if x in set(present)]
    return listed + sorted(set(present) - set(listed))


def render_curves(curves: pd.DataFrame, methods: Sequence[str] | None = None, *, title: str = "",
                  x_label: str = "epoch"):
    """Loss (left) and validation metric (right, when any run measured one) per setting (panel rows).

    Args:
        curves: :func:`medssl.report.curves.study_curves` frame (its row order gives the setting order).
        methods: legend / colour order (the study's rows).
        title: figure title.
        x_label: ``"epoch"``, or ``"step"`` for per-step histories.
    """
    from matplotlib.ticker import MaxNLocator

    with _style():
        if curves.empty:
            return _empty(_new_figure(6.0, 1.5), "no run recorded a training curve")
        settings = list(dict.fromkeys(curves["setting"]))
        kinds = [c for c in ("loss", "validation") if (curves["curve"] == c).any()]
        methods = _order(curves["method"].unique(), methods)
        fig = _new_figure(4.2 * len(kinds) + 0.4, 2.3 * len(settings) + 0.6)
        axes = fig.subplots(len(settings), len(kinds), squeeze=False)
        handles = {}
        for r, setting in enumerate(settings):
            for c, kind in enumerate(kinds):
                ax = axes[r][c]
                sub = curves[(curves["setting"] == setting) & (curves["curve"] == kind)]
                for i, method in enumerate(methods):
                    m = sub[sub["method"] == method]
                    if m.empty:
                        continue
                    color, style = _color(i)
                    x = m["epoch"].to_numpy(float)
                    ax.fill_between(x, m["min"].to_numpy(float), m["max"].to_numpy(float), color=color,
                                    alpha=0.18, linewidth=0)
                    (line,) = ax.plot(x, m["mean"].to_numpy(float), color=color, linestyle=style, linewidth=1.2,
                                      marker="o" if kind == "validation" or len(x) <= 20 else None, markersize=2.5,
                                      label=method)
                    handles.setdefault(method, line)
                if kind == "loss":
                    ylabel = "training loss"
                else:
                    keys = sub[["metric", "task"]].drop_duplicates().to_numpy().tolist()
                    ylabel = validation_label(*keys[0]) if len(keys) == 1 else "validation metric"
                ax.set_title(f"{setting}: {ylabel}")
                ax.set_ylabel(ylabel)
                ax.set_xlabel(x_label)
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                if not sub.empty:  # training starts at 0: a one-epoch run is a point at x = 1, not a tiny range
                    ax.set_xlim(0, float(sub["epoch"].max()) * 1.04)
        fig.legend([handles[m] for m in methods if m in handles], [m for m in methods if m in handles],
                   loc="outside lower center", ncol=min(len(handles), 5), frameon=False)
        n = int(curves["n"].max())
        spread = "band: min–max over seeds" if n > 1 else "one seed: no band"
        fig.suptitle(f"{title + chr(10) if title else ''}line: mean over {n} seed{'s' if n != 1 else ''}; {spread}")
        return fig


def _fraction_frame(long: pd.DataFrame) -> pd.DataFrame:
    """Per dataset x protocol x method x fraction: mean, std (ddof=1) and n of the dataset's headline metric."""
    parts = []
    for (dataset, task), sub in long.groupby(["dataset", "task"], sort=False):
        metric = (HEADLINE.get(task) or [None])[0]
        if metric is None or not (sub["metric"] == metric).any():
            continue
        parts.append(sub[sub["metric"] == metric])
    if not parts:
        return pd.DataFrame(columns=["dataset", "protocol", "method", "fraction", "metric", "mean", "std", "n"])
    df = pd.concat(parts)
    g = df.groupby(["dataset", "protocol", "method", "fraction", "metric"], sort=False)["value"]
    return g.agg(["mean", "count"]).assign(std=g.std(ddof=1)).rename(columns={"count": "n"}).reset_index()


def render_label_fraction(long: pd.DataFrame, methods: Sequence[str] | None = None,
                          datasets: Sequence[str] | None = None, protocols: Sequence[str] | None = None, *,
                          title: str = ""):
    """Headline metric against label fraction: panels dataset (rows) x protocol (columns), a line per method.

    Args:
        long: :func:`medssl.report.inputs.collect` frame of the study's runs.
        methods, datasets, protocols: orders (names not listed follow, sorted).
    """
    agg = _fraction_frame(long)
    with _style():
        if agg.empty:
            return _empty(_new_figure(6.0, 1.5), "no headline metric to plot against the label fraction")
        datasets = _order(agg["dataset"].unique(), datasets)
        protocols = _order(agg["protocol"].unique(), protocols)
        methods = _order(agg["method"].unique(), methods)
        fig = _new_figure(3.4 * len(protocols) + 0.4, 2.6 * len(datasets) + 0.6)
        axes = fig.subplots(len(datasets), len(protocols), squeeze=False)
        handles = {}
        for r, dataset in enumerate(datasets):
            for c, protocol in enumerate(protocols):
                ax = axes[r][c]
                sub = agg[(agg["dataset"] == dataset) & (agg["protocol"] == protocol)]
                fractions = sorted(sub["fraction"].unique())
                log = len(fractions) > 1 and fractions[-1] / fractions[0] >= 4
                span = (fractions[-1] - fractions[0]) or 1.0
                for i, method in enumerate(methods):
                    m = sub[sub["method"] == method].sort_values("fraction")
                    if m.empty:
                        continue
                    offset = (i - (len(methods) - 1) / 2) * 0.012
                    f = m["fraction"].to_numpy(float)
                    x = f * 10 ** offset if log else f + offset * span
                    yerr = np.nan_to_num(m["std"].to_numpy(float), nan=0.0)
                    color, style = _color(i)
                    line = ax.errorbar(x, m["mean"].to_numpy(float), yerr=yerr, color=color, linestyle=style,
                                       marker="o", markersize=3.5, capsize=3, linewidth=1.2, label=method)
                    handles.setdefault(method, line)
                if log:
                    ax.set_xscale("log")
                ax.set_xticks(fractions, [fraction_label(f) for f in fractions])
                ax.minorticks_off()
                metric = sub["metric"].iloc[0]
                ax.set_ylabel(f"test {metric_label(metric)} {'↓' if lower_is_better(metric) else '↑'}")
                ax.set_xlabel("label fraction")
                ax.set_title(f"{dataset} · {protocol}")
        fig.legend([handles[m] for m in methods if m in handles], [m for m in methods if m in handles],
                   loc="outside lower center", ncol=min(len(handles), 5), frameon=False)
        n = int(agg["n"].max())
        fig.suptitle(f"{title + chr(10) if title else ''}mean ± sample std over {n} seed{'s' if n != 1 else ''}")
        return fig


def render_pretext(df: pd.DataFrame, methods: Sequence[str] | None = None, *, title: str = ""):
    """Pretext score at step 0 and at the end per method (:func:`medssl.report.pretext.collect` frame)."""
    with _style():
        if df.empty:
            return _empty(_new_figure(6.0, 1.5), "no pre-trained method has a pretext score")
        order = _order(df["method"].unique(), methods)
        all_methods = list(dict.fromkeys([*(methods or []), *order]))
        rows = df.set_index("method").loc[order]
        ncols = min(len(order), 4)
        nrows = math.ceil(len(order) / ncols)
        fig = _new_figure(2.5 * ncols + 0.4, 2.6 * nrows + 0.4)
        axes = fig.subplots(nrows, ncols, squeeze=False)
        for k, (method, r) in enumerate(rows.iterrows()):
            ax = axes[k // ncols][k % ncols]
            color, _ = _color(all_methods.index(method))
            means = [r["start_mean"], r["end_mean"]]
            errs = [0.0 if math.isnan(s) else s for s in (r["start_std"], r["end_std"])]
            ax.bar([0, 1], means, yerr=errs, color=["#bbbbbb", color], width=0.6, capsize=4)
            if not math.isnan(r["baseline_mean"]):
                ax.axhline(r["baseline_mean"], color="black", linestyle="--", linewidth=1,
                           label=f"baseline: {r['baseline']}")
                ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False)  # below, off the bars
            elif r["baseline"]:
                ax.text(0.02, 0.98, f"baseline: {r['baseline']}", transform=ax.transAxes, va="top", fontsize=6.5)
            ax.set_xticks([0, 1], ["step 0", f"end ({int(r['steps'])} steps)"])
            unit = f" ({r['unit']})" if r["unit"] else ""
            ax.set_ylabel(f"{r['metric']}{unit} ↑")
            delta = "" if math.isnan(r["delta"]) else f"Δ {r['delta']:+.3g}"
            p = "" if math.isnan(r["p_end_vs_start"]) else f", p = {r['p_end_vs_start']:.2g}"
            ax.set_title(f"{method}: n = {int(r['n'])} {r['over']}\n{delta}{p}")
        for k in range(len(order), nrows * ncols):
            axes[k // ncols][k % ncols].axis("off")
        if title:
            fig.suptitle(title)
        return fig


def write_study_figures(params, study: str, base: Path | None = None) -> dict[str, Path]:
    """Write every figure of ``study`` and its ``curves.csv`` from exactly the runs the study defines.

    Returns:
        ``{figure name: path, ..., "curves_csv": path}``.

    Raises:
        ValueError: naming ``study`` when params does not define it, or a missing / bad input file.
    """
    if study not in params.studies:
        defined = ", ".join(sorted(params.studies)) or "none"
        raise ValueError(f"study {study!r} is not defined; defined: {defined}")
    spec = params.studies[study]
    files = study_metrics(params, study, base)
    protocols = getattr(spec, "protocols", None)
    settings = spec.kind == "ssl"
    curves = study_curves(files, spec.methods, spec.datasets, protocols, settings=settings)
    out: dict[str, Path] = {"curves_csv": write_curves(study, curves, base)}
    x_label = "step" if spec.kind == "template" else "epoch"
    figs = {"curves": lambda: render_curves(curves, spec.methods, title=f"{study}: training curves",
                                            x_label=x_label)}
    if settings:
        figs["label_fraction"] = lambda: render_label_fraction(
            collect(files), spec.methods, spec.datasets, protocols, title=f"{study}: test metric by label fraction")
        figs["predictions"] = lambda: render_predictions(params, study, base, _new_figure, _empty)
        figs["pretext"] = lambda: render_pretext(
            pretext_table.collect(pretext_files(params, study, base)), spec.methods,
            title=f"{study}: pretext task on held-out volumes")
    for fig_name in figure_names(spec.kind):
        out[fig_name] = save_png(figs[fig_name](), figure_path(study, fig_name, base))
    return {k: out[k] for k in (*figure_names(spec.kind), "curves_csv")}
