# Cross-modality domain adaptation (uda studies): one job per method x direction x seed
# (group_seeds: false, the SLURM profile), or per method x direction running all seeds in one
# process (group_seeds: true, the default profile), as for downstream runs.
_UDA = P.studies_of_kind("uda")


if _UDA and not P.group_seeds:

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
            "medssl uda {wildcards.study} {wildcards.method} {wildcards.direction}"
            " --seed {wildcards.seed} 2> {log}"

for _study in _UDA if P.group_seeds else []:

    rule:
        name:
            f"uda_{_study}"
        input:
            source=lambda w, study=_study: str(paths.datalist(P.studies[study].direction(w.direction).source)),
            target=lambda w, study=_study: str(paths.datalist(P.studies[study].direction(w.direction).target)),
        output:
            [str(paths.method_metrics(_study, "{direction}", "{method}", s)) for s in P.studies[_study].seeds],
        wildcard_constraints:
            method="[A-Za-z0-9_\-]+",
            direction="[A-Za-z0-9_\-]+",
        params:
            method=lambda w, study=_study: section(P.studies[study].models[w.method]),
            net=section(P.studies[_study].net),
            train=section(P.studies[_study].train),
            direction=lambda w, study=_study: section(P.studies[study].direction(w.direction)),
            seeds=seed_flags(_study),
            name=_study,
        threads: P.studies[_study].train.num_threads
        conda:
            "../envs/medssl.yaml"
        log:
            f"logs/uda/{_study}/{{direction}}/{{method}}/seeds.log",
        shell:
            "medssl uda {params.name} {wildcards.method} {wildcards.direction}"
            " {params.seeds} 2> {log}"
