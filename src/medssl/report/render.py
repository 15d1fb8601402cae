"""Rendering a :class:`~medssl.report.build.TableData` as Markdown, LaTeX and CSV.

The conventions are those of :mod:`medssl.report.tables`, the module to use.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from medssl.report import stats
from medssl.report.build import COLUMN_LEVELS, COUNTS, EMPTY, TableData, lower_is_better, metric_label

def fraction_label(fraction: float) -> str:
    """Label fraction as a percentage: ``1.0 -> '100%'``, ``0.125 -> '12.5%'``."""
    return f"{fraction * 100:g}%"


def _arrow(metric: str) -> str:
    return "↓" if lower_is_better(metric) else "↑"


def _legend(table: TableData, tex: bool = False) -> str:
    """The caption: spread and n, the test, the reference, the marks (Markdown or LaTeX wording)."""
    if tex:
        best, second, dagger, ddagger = r"\textbf{best}", r"\underline{second}", r"$^{\dagger}$", r"$^{\ddagger}$"
        pm, up, down, times, lt, esc = r"$\pm$", r"$\uparrow$", r"$\downarrow$", r"$\times$", "$<$", tex_escape
    else:
        best, second, dagger, ddagger = "**best**", "<u>second</u>", "†", "‡"
        pm, up, down, times, lt, esc = "±", "↑", "↓", "×", "<", str
    n = table.n_max
    fewer = " ((n=k): fewer in that cell)" if (table.n.to_numpy() < n).any() else ""
    test = esc(stats.TEST_NAME)
    parts = [f"Mean {pm} sample std over n = {n} seed{'s' if n != 1 else ''} per cell{fewer}; "
             f"{up} higher / {down} lower is better."]
    if table.reference is not None:
        parts.append(f"{dagger} p {lt} 0.05, {ddagger} p {lt} 0.01 against the reference row "
                     f"{esc(table.reference)}: {test}, no correction for multiple comparisons.")
    else:
        parts.append("No reference row: no tests against one.")
    parts.append(f"Per column, {best} only where it differs from the runner-up (p {lt} {stats.ALPHA:g}, same test), "
                 f"{second} only where the runner-up differs from the third; (tie): the top two do not differ.")
    if any(c[3] in COUNTS for c in table.columns):
        parts.append(f"misses: test case {times} class pairs per seed with the class missing from the prediction "
                     "or from the reference, scored Dice 0 and the volume diagonal (included in the distance "
                     "to their left).")
    return " ".join(parts)


def _cell(table: TableData, method: str, col: tuple, wrap: Mapping[str, str], markers: Mapping[str, str],
          tie: str) -> str:
    """A rendered cell: its text wrapped by its mark, the significance marker, the tie note."""
    tx = table.text.at[method, col]
    if tx == EMPTY:
        return tx
    mark = table.marks.at[method, col]
    out = wrap.get(mark, "{}").format(tx) + markers.get(stats.stars(table.p.at[method, col]), "")
    return out + (tie if mark == "tie" else "")


def _header(table: TableData, col: tuple) -> str:
    dataset, protocol, fraction, metric = col
    setting = f"{protocol} · {fraction_label(fraction)} · " if table.settings else ""
    return f"{dataset} · {setting}{metric_label(metric)} {_arrow(metric)}"


def to_markdown(table: TableData) -> str:
    """Pipe table (pandas/tabulate): ``**best**``, ``<u>second</u>``, ``(tie)``, ``†``/``‡``; the legend below."""
    out = pd.DataFrame({"method": table.methods})
    wrap = {"best": "**{}**", "second": "<u>{}</u>"}
    for col in table.columns:
        out[_header(table, col)] = [_cell(table, m, col, wrap, {"†": "†", "‡": "‡"}, " (tie)")
                                    for m in table.methods]
    body = out.to_markdown(index=False, disable_numparse=True,
                           colalign=("left", *["right"] * len(table.columns)))
    return f"{body}\n\n{_legend(table)}\n"


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
    """booktabs ``tabular`` (for ``\\input`` inside a table float), then the legend as a paragraph.

    ``\\textbf`` best, ``\\underline`` second, ``(tie)``, ``$^\\dagger$``/``$^\\ddagger$`` markers.
    """
    cols = table.columns
    datasets = [(tex_escape(c[0]),) for c in cols]
    settings = [(c[0], f"{tex_escape(c[1])}, {tex_escape(fraction_label(c[2]))}") for c in cols]
    arrows = [r"$\downarrow$" if lower_is_better(c[3]) else r"$\uparrow$" for c in cols]
    metric_row = " & ".join(["Method", *(f"{tex_escape(metric_label(c[3]))} {a}"
                                         for c, a in zip(cols, arrows))]) + r" \\"
    lines = ["% generated by medssl.report.tables; needs \\usepackage{booktabs}",
             f"\\begin{{tabular}}{{l{'c' * len(cols)}}}", r"\toprule",
             *_header_row(datasets), *(_header_row(settings) if table.settings else []), metric_row, r"\midrule"]
    wrap = {"best": "\\textbf{{{}}}", "second": "\\underline{{{}}}"}
    markers = {"†": r"$^{\dagger}$", "‡": r"$^{\ddagger}$"}
    for method in table.methods:
        cells = [_cell(table, method, col, wrap, markers, r"\,(tie)").replace(EMPTY, "--").replace(" ± ", r" $\pm$ ")
                 for col in cols]
        lines.append(" & ".join([tex_escape(method), *cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", "",
              f"\\par\\smallskip\\parbox{{\\linewidth}}{{\\footnotesize {_legend(table, tex=True)}}}"]
    return "\n".join(lines) + "\n"


def to_csv(table: TableData) -> str:
    """Long CSV without markup: method, dataset, protocol, fraction, metric, mean, std, n, mark, p_vs_reference."""
    frames = {"mean": table.mean, "std": table.std, "n": table.n, "mark": table.marks, "p_vs_reference": table.p}
    rows = [[method, *col, *(frames[k].at[method, col] for k in frames)]
            for method in table.methods for col in table.columns]
    out = pd.DataFrame(rows, columns=["method", *COLUMN_LEVELS, *frames])
    out.insert(len(out.columns) - 1, "reference", table.reference or "")
    return out.to_csv(index=False, lineterminator="\n")


