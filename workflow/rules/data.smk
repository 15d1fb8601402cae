# fetch -> preprocess, one job per dataset.


rule fetch:
    output:
        str(paths.raw_done("{dataset}")),
    params:
        spec=lambda w: section(P.datasets[w.dataset].source),
    conda:
        "../envs/medssl.yaml"
    log:
        "logs/fetch/{dataset}.log",
    shell:
        "medssl fetch {wildcards.dataset} 2> {log}"


rule preprocess:
    input:
        str(paths.raw_done("{dataset}")),
    output:
        str(paths.datalist("{dataset}")),
    params:
        spec=lambda w: section(P.datasets[w.dataset]),
    conda:
        "../envs/medssl.yaml"
    log:
        "logs/preprocess/{dataset}.log",
    shell:
        "medssl preprocess {wildcards.dataset} 2> {log}"


rule data:
    input:
        [str(paths.datalist(d)) for s in P.target_studies() for d in study_datasets(s)],
