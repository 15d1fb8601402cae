# Paper-style tables and figures of a study from its metrics.json files, and the Snakemake report.
# `snakemake --report report.html` collects every output flagged report() below, with the caption
# .rst files of workflow/report/ (as the Snakemake workflow catalog does), by study (category) and
# tables / figures (subcategory).
from medssl.report.curves import curves_path
from medssl.report.figures import figure_path, pretext_files, study_figure_paths
from medssl.report.summary import summary_path


report: "../report/workflow.rst"


_SSL_ALL = ssl_studies_all()
_OTHER = [s for s in P.studies if P.studies[s].kind != "ssl"]


rule table:
    input:
        runs=lambda w: study_runs(w.study),
        figures=lambda w: [str(f) for f in study_figure_paths(P, w.study)],  # table.md links them
    output:
        md=report(
            str(paths.table("{study}", "md")),
            caption="../report/table.rst",
            category="{study}",
            subcategory="Tables",
            labels={"study": "{study}", "table": "table.md"},
        ),
        tex=str(paths.table("{study}", "tex")),
        csv=report(
            str(paths.table("{study}", "csv")),
            caption="../report/table_csv.rst",
            category="{study}",
            subcategory="Tables",
            labels={"study": "{study}", "table": "table.csv"},
        ),
        summary=str(summary_path("{study}")),
    conda:
        "../envs/medssl.yaml"
    log:
        "logs/table/{study}.log",
    shell:
        "medssl table {wildcards.study} 2> {log}"


# The figures of an ssl study: training curves, metric against label fraction, pretext before/after.
if _SSL_ALL:

    rule figures_ssl:
        input:
            runs=lambda w: study_runs(w.study),
            pretext=lambda w: [str(f) for f in pretext_files(P, w.study)],
            datalists=lambda w: [str(paths.datalist(d)) for d in P.studies[w.study].datasets],
        output:
            curves=report(
                str(figure_path("{study}", "curves")),
                caption="../report/figure_curves.rst",
                category="{study}",
                subcategory="Figures",
                labels={"study": "{study}", "figure": "curves"},
            ),
            label_fraction=report(
                str(figure_path("{study}", "label_fraction")),
                caption="../report/figure_label_fraction.rst",
                category="{study}",
                subcategory="Figures",
                labels={"study": "{study}", "figure": "label_fraction"},
            ),
            pretext=report(
                str(figure_path("{study}", "pretext")),
                caption="../report/figure_pretext.rst",
                category="{study}",
                subcategory="Figures",
                labels={"study": "{study}", "figure": "pretext"},
            ),
            predictions=report(
                str(figure_path("{study}", "predictions")),
                caption="../report/figure_predictions.rst",
                category="{study}",
                subcategory="Figures",
                labels={"study": "{study}", "figure": "predictions"},
            ),
            csv=str(curves_path("{study}")),
        wildcard_constraints:
            study=alternatives(_SSL_ALL),
        conda:
            "../envs/medssl.yaml"
        log:
            "logs/figures/{study}.log",
        shell:
            "medssl figures {wildcards.study} 2> {log}"


# The figures of a template, stn or uda study: training curves.
if _OTHER:

    rule figures:
        input:
            runs=lambda w: study_runs(w.study),
        output:
            curves=report(
                str(figure_path("{study}", "curves")),
                caption="../report/figure_curves.rst",
                category="{study}",
                subcategory="Figures",
                labels={"study": "{study}", "figure": "curves"},
            ),
            csv=str(curves_path("{study}")),
        wildcard_constraints:
            study=alternatives(_OTHER),
        conda:
            "../envs/medssl.yaml"
        log:
            "logs/figures/{study}.log",
        shell:
            "medssl figures {wildcards.study} 2> {log}"


# The pretext table: every ssl study's methods on their own task, step 0 and end.
rule pretext_table:
    input:
        [str(paths.pretext(s, m)) for s in ssl_studies() for m in P.studies[s].methods],
    output:
        md=report(
            str(paths.pretext_table("md")),
            caption="../report/pretext_table.rst",
            category="Across studies",
            subcategory="Pre-training",
        ),
        csv=str(paths.pretext_table("csv")),
    conda:
        "../envs/medssl.yaml"
    log:
        "logs/table/pretext.log",
    shell:
        "medssl pretext-table 2> {log}"


# The papers' claims tested on this run (medssl.report.claims).
rule claims:
    input:
        lambda w: [f for s in claim_studies() for f in study_runs(s)],
    output:
        md=report(
            str(paths.claims("md")),
            caption="../report/claims.rst",
            category="Across studies",
            subcategory="Claims",
        ),
        csv=str(paths.claims("csv")),
    conda:
        "../envs/medssl.yaml"
    log:
        "logs/table/claims.log",
    shell:
        "medssl claims 2> {log}"


localrules:
    all,
    data,
    pretrain_all,
    table,
    pretext_table,
    claims,


if _SSL_ALL:

    localrules:
        figures_ssl,


if _OTHER:

    localrules:
        figures,
