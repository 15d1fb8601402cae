# One pre-training job per study x method.
#
# GPUs: the job's `gpu` resource (the SLURM profile sets gpu: 1; the slurm
# executor plugin requests that many GPUs). With gpu > 1 the job runs
# `torchrun --standalone --nproc_per_node <gpu>`: N DDP processes on one node,
# `pretrain.batch_size` being the global batch (it must divide by N), e.g.
#   snakemake --profile workflow/profiles/slurm --set-resources pretrain:gpu=4
# torchrun forwards SIGTERM and SIGUSR1 to the ranks, which save state.pt and
# stop (`medssl pretrain` exits 75 on its own; torchrun reports a failure):
# rerunning the job resumes it.


rule pretrain:
    input:
        corpora=lambda w: pretrain_inputs(w.study),
        # read by the leakage check (medssl.data.leakage) before training; ancient: a changed
        # downstream datalist never reruns pre-training (the downstream jobs check it again)
        held_out=lambda w: [ancient(f) for f in held_out_inputs(w.study)],
    output:
        weights=str(paths.backbone_weights("{study}", "{method}")),
        config=str(paths.backbone_config("{study}", "{method}")),
        # the method's own task on held-out volumes at step 0 and at the end (medssl.train.pretext)
        pretext=str(paths.pretext("{study}", "{method}")),
    params:
        method=lambda w: section(P.methods[w.method]),
        # the cadence of state saves (checkpoint_every) does not change the results: left out
        train=lambda w: json.dumps(
            P.method_pretrain(w.method).model_dump(mode="json", exclude={"checkpoint_every"}), sort_keys=True
        ),
        backbone=lambda w: section(P.backbones[P.studies[w.study].backbone]),
        # `medssl`, or `torchrun ... --no-python medssl` when the job has more than one GPU
        launcher=lambda w, resources: (
            "medssl"
            if int(resources.get("gpu", 0) or 0) <= 1
            else f"torchrun --standalone --nproc_per_node {resources.gpu}"
            " --signals-to-handle SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1 --no-python medssl"
        ),
    resources:
        gpu=0,
    threads: lambda w: P.method_pretrain(w.method).num_threads
    conda:
        "../envs/medssl.yaml"
    log:
        "logs/pretrain/{study}/{method}.log",
    shell:
        "{params.launcher} pretrain {wildcards.study} {wildcards.method} 2> {log}"


rule pretrain_all:
    input:
        [str(paths.backbone_weights(s, m)) for s in ssl_studies() for m in P.studies[s].methods],
