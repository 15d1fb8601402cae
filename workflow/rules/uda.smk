# Cross-modality domain adaptation (uda studies): one job per method x direction x seed.
_UDA = P.studies_of_kind("uda")


if _UDA:

    rule uda:
        input:
            source=lambda w: str(paths.datalist(P.studies[w.study].direction(w.direction).source)),
            target=lambda w: str(paths.datalist(P.studies[w.study].direction(w.direction).target)),
        output:
            str(paths.method_metrics("{study}", "{direction}", "{method}", "{seed}")),
        wildcard_constraints:
            study=alternatives(_UDA),
            method="[A-Za-z0-9_\-]+",
            direction="[A-Za-z0-9_\-]+",
        params:
            method=lambda w: section(P.studies[w.study].models[w.method]),
            net=lambda w: section(P.studies[w.study].net),
            train=lambda w: section(P.studies[w.study].train),
            direction=lambda w: section(P.studies[w.study].direction(w.direction)),
        threads: lambda w: P.studies[w.study].train.num_threads
        conda:
            "../envs/medssl.yaml"
        log:
            "logs/uda/{study}/{direction}/{method}/seed{seed}.log",
        shell:
            "medssl uda --params .medssl/params.yaml {wildcards.study} {wildcards.method} {wildcards.direction}"
            " --seed {wildcards.seed} 2> {log}"
