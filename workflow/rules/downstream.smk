# The downstream runs: study x dataset x protocol x method x label fraction x seed.
# group_seeds: true (params.yaml, the default profile): one job per row runs all of the study's
# seeds in one process (`medssl downstream ... --seed 0 --seed 1 --seed 2`); a failed seed does
# not stop the others, and the finished ones keep state.pt so a rerun only re-tests them.
# group_seeds: false (the SLURM profile): one job per seed.
# Besides metrics.json a run writes predictions/ (downstream.save_predictions) and weights/
# (downstream.keep_weights) into its folder, whole or not at all (medssl.train.outputs); they are
# not declared outputs: metrics.json, written after them, stands for the finished run.

# the same set as medssl.train.downstream.OUTPUT_ONLY (not imported: that would load torch here)
DOWNSTREAM_OUTPUT_ONLY = {"checkpoint_every", "save_predictions", "keep_weights"}


if not P.group_seeds:

    rule downstream:
        input:
            weights=str(paths.backbone_weights("{study}", "{method}")),
            config=str(paths.backbone_config("{study}", "{method}")),
            datalist=lambda w: str(paths.datalist(w.dataset)),
        output:
            str(paths.downstream_metrics("{study}", "{dataset}", "{protocol}", "{method}", "{frac}", "{seed}")),
        params:
            # the cadence of state saves and the kept files (predictions, weights) do not change the results:
            # left out (medssl.train.downstream.OUTPUT_ONLY), so switching them reruns nothing
            train=json.dumps(P.downstream.model_dump(mode="json", exclude=DOWNSTREAM_OUTPUT_ONLY), sort_keys=True),
            dataset=lambda w: section(P.datasets[w.dataset]),
        threads: P.downstream.num_threads
        conda:
            "../envs/medssl.yaml"
        log:
            "logs/downstream/{study}/{dataset}/{protocol}/{method}/frac{frac}/seed{seed}.log",
        shell:
            "medssl downstream {wildcards.study} {wildcards.dataset} {wildcards.protocol}"
            " {wildcards.method} --fraction {wildcards.frac} --seed {wildcards.seed} 2> {log}"

else:
    # One job per row (study x dataset x protocol x method x fraction) running every seed of the study
    # in one process (group_seeds: true, the default profile): one import and start-up per row.
    for _study in ssl_studies_all():

        rule:
            name:
                f"downstream_{_study}"
            input:
                weights=str(paths.backbone_weights(_study, "{method}")),
                config=str(paths.backbone_config(_study, "{method}")),
                datalist=lambda w: str(paths.datalist(w.dataset)),
            output:
                [str(paths.downstream_metrics(_study, "{dataset}", "{protocol}", "{method}", "{frac}", s))
                 for s in P.studies[_study].seeds],
            params:
                train=json.dumps(P.downstream.model_dump(mode="json", exclude=DOWNSTREAM_OUTPUT_ONLY), sort_keys=True),
                dataset=lambda w: section(P.datasets[w.dataset]),
                seeds=seed_flags(_study),
                study=_study,
            threads: P.downstream.num_threads
            conda:
                "../envs/medssl.yaml"
            log:
                f"logs/downstream/{_study}/{{dataset}}/{{protocol}}/{{method}}/frac{{frac}}/seeds.log",
            shell:
                "medssl downstream {params.study} {wildcards.dataset}"
                " {wildcards.protocol} {wildcards.method} --fraction {wildcards.frac} {params.seeds} 2> {log}"


# runs_<study>: every downstream run of one study (the target of its DVC stage).
for _study in P.studies:

    rule:
        name:
            f"runs_{_study}"
        input:
            study_runs(_study),
