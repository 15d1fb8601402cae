# Diffeomorphic template transformers: the template study (Tables 2/3, a preprocessed binary
# segmentation dataset) and the stn study (Table 1, rotated digits). As for downstream runs,
# group_seeds: true (the default profile) runs all seeds of a row (model) in one job and process
# (`--seed 0 --seed 1 ...`); group_seeds: false (the SLURM profile) gives one job per model x seed.

_TEMPLATE = P.studies_of_kind("template")
_STN = P.studies_of_kind("stn")


if _TEMPLATE and not P.group_seeds:

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
            "medssl template {wildcards.study} {wildcards.model}"
            " --seed {wildcards.seed} 2> {log}"

for _study in _TEMPLATE if P.group_seeds else []:

    rule:
        name:
            f"template_{_study}"
        input:
            datalist=str(paths.datalist(P.studies[_study].dataset)),
        output:
            [str(paths.method_metrics(_study, P.studies[_study].dataset, "{model}", s)) for s in P.studies[_study].seeds],
        params:
            model=lambda w, study=_study: section(P.studies[study].models[w.model]),
            train=section(P.studies[_study].train),
            seeds=seed_flags(_study),
            study=_study,
        threads: P.studies[_study].train.num_threads
        conda:
            "../envs/medssl.yaml"
        log:
            f"logs/template/{_study}/{{model}}/seeds.log",
        shell:
            "medssl template {params.study} {wildcards.model} {params.seeds} 2> {log}"


if _STN and not P.group_seeds:

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
            "medssl stn {wildcards.study} {wildcards.model}"
            " --seed {wildcards.seed} 2> {log}"

for _study in _STN if P.group_seeds else []:

    rule:
        name:
            f"stn_{_study}"
        output:
            [str(paths.method_metrics(_study, "rotated_digits", "{model}", s)) for s in P.studies[_study].seeds],
        params:
            model=lambda w, study=_study: section(P.studies[study].models[w.model]),
            study=section(P.studies[_study].model_dump(mode="json", exclude={"models", "title"})),
            seeds=seed_flags(_study),
            name=_study,
        threads: P.studies[_study].num_threads
        conda:
            "../envs/medssl.yaml"
        log:
            f"logs/stn/{_study}/{{model}}/seeds.log",
        shell:
            "medssl stn {params.name} {wildcards.model} {params.seeds} 2> {log}"
