# One job per study x dataset x protocol x method x label fraction x seed.


rule downstream:
    input:
        weights=str(paths.backbone_weights("{study}", "{method}")),
        config=str(paths.backbone_config("{study}", "{method}")),
        datalist=lambda w: str(paths.datalist(w.dataset)),
    output:
        str(paths.downstream_metrics("{study}", "{dataset}", "{protocol}", "{method}", "{frac}", "{seed}")),
    params:
        # the cadence of state saves (checkpoint_every) does not change the results: left out
        train=json.dumps(P.downstream.model_dump(mode="json", exclude={"checkpoint_every"}), sort_keys=True),
        dataset=lambda w: section(P.datasets[w.dataset]),
    threads: P.downstream.num_threads
    conda:
        "../envs/medssl.yaml"
    log:
        "logs/downstream/{study}/{dataset}/{protocol}/{method}/frac{frac}/seed{seed}.log",
    shell:
        "medssl downstream --params .medssl/params.yaml {wildcards.study} {wildcards.dataset} {wildcards.protocol}"
        " {wildcards.method} --fraction {wildcards.frac} --seed {wildcards.seed} 2> {log}"


# runs_<study>: every downstream run of one study (the target of its DVC stage).
for _study in P.studies:

    rule:
        name:
            f"runs_{_study}"
        input:
            study_runs(_study),
