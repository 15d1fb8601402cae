# Paper-style tables of a study from its metrics.json files.


rule table:
    input:
        lambda w: study_runs(w.study),
    output:
        md=str(paths.table("{study}", "md")),
        tex=str(paths.table("{study}", "tex")),
        csv=str(paths.table("{study}", "csv")),
    conda:
        "../envs/medssl.yaml"
    log:
        "logs/table/{study}.log",
    shell:
        "medssl table {wildcards.study} 2> {log}"


# The pretext table: every ssl study's methods on their own task, step 0 and end.
rule pretext_table:
    input:
        [str(paths.pretext(s, m)) for s in ssl_studies() for m in P.studies[s].methods],
    output:
        md=str(paths.pretext_table("md")),
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
        md=str(paths.claims("md")),
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
