# Diffeomorphic template transformers: the template study (Tables 2/3, one job per
# model x seed on a preprocessed binary segmentation dataset) and the stn study
# (Table 1, one job per classifier x seed on rotated digits).

_TEMPLATE = P.studies_of_kind("template")
_STN = P.studies_of_kind("stn")


if _TEMPLATE:

    rule template:
        input:
            datalist=lambda w: str(paths.datalist(P.studies[w.study].dataset)),
        output:
            str(paths.method_metrics("{study}", "{dataset}", "{model}", "{seed}")),
        wildcard_constraints:
            study=alternatives(_TEMPLATE),
            model="[A-Za-z0-9_\-]+",
        params:
            model=lambda w: section(P.studies[w.study].models[w.model]),
            train=lambda w: section(P.studies[w.study].train),
        threads: lambda w: P.studies[w.study].train.num_threads
        conda:
            "../envs/medssl.yaml"
        log:
            "logs/template/{study}/{dataset}/{model}/seed{seed}.log",
        shell:
            "medssl template --params .medssl/params.yaml {wildcards.study} {wildcards.model}"
            " --seed {wildcards.seed} 2> {log}"


if _STN:

    rule stn:
        output:
            str(paths.method_metrics("{study}", "rotated_digits", "{model}", "{seed}")),
        wildcard_constraints:
            study=alternatives(_STN),
            model="[A-Za-z0-9_\-]+",
        params:
            model=lambda w: section(P.studies[w.study].models[w.model]),
            study=lambda w: section(P.studies[w.study].model_dump(mode="json", exclude={"models", "title"})),
        threads: lambda w: P.studies[w.study].num_threads
        conda:
            "../envs/medssl.yaml"
        log:
            "logs/stn/{study}/{model}/seed{seed}.log",
        shell:
            "medssl stn --params .medssl/params.yaml {wildcards.study} {wildcards.model}"
            " --seed {wildcards.seed} 2> {log}"
