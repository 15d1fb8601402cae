# One pre-training job per study x method.


rule pretrain:
    input:
        lambda w: str(paths.datalist(P.studies[w.study].pretrain_dataset)),
    output:
        weights=str(paths.backbone_weights("{study}", "{method}")),
        config=str(paths.backbone_config("{study}", "{method}")),
    params:
        method=lambda w: section(P.methods[w.method]),
        train=lambda w: section(P.method_pretrain(w.method)),
        backbone=lambda w: section(P.backbones[P.studies[w.study].backbone]),
    threads: lambda w: P.method_pretrain(w.method).num_threads
    conda:
        "../envs/medssl.yaml"
    log:
        "logs/pretrain/{study}/{method}.log",
    shell:
        "medssl pretrain --params .medssl/params.yaml {wildcards.study} {wildcards.method} 2> {log}"


rule pretrain_all:
    input:
        [str(paths.backbone_weights(s, m)) for s in ssl_studies() for m in P.studies[s].methods],
