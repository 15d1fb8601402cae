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
        "medssl table --params .medssl/params.yaml {wildcards.study} 2> {log}"


localrules:
    all,
    data,
    pretrain_all,
    table,
