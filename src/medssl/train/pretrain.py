"""The pre-training stage: one method of one study on the study's corpus.

Writes ``checkpoints/<study>/<method>/backbone.safetensors`` and
``backbone.json`` (loadable without this code, :mod:`medssl.nn.checkpoint`); the
record's ``mlflow_run_id`` is this run's MLflow id (None untracked), which every
downstream run of the backbone tags as ``medssl.pretrain_run_id``.

Preemption: the whole training state (``state.pt`` beside them: weights,
optimizer, every random stream, loader position, loss history;
:mod:`medssl.train.resume`) is saved atomically every
``pretrain.checkpoint_every`` steps, at the end of every epoch and when the
job gets ``SIGTERM`` or ``SIGUSR1`` (it then stops at the next step boundary
and raises :class:`~medssl.train.resume.Preempted`; ``medssl pretrain`` exits
with status 75). Rerunning the same command with the same configuration
continues from the state, bit-identically to a run that was never
interrupted (same device, same number of processes and threads).

Pretext scores (:mod:`medssl.train.pretext`): the method's own task on
held-out volumes before the first step and after the last, in MLflow and in
``pretext.json`` beside the backbone; the step-0 scores travel in the state,
so a resumed run still reports them.

Devices and processes: the model and batches go to one device
(:func:`medssl.train.distributed.resolve_device`), optionally under bf16
autocast on CUDA or the CPU (``pretrain.amp``, :mod:`medssl.nn.precision`). Under ``torchrun --nproc_per_node N``
the method is wrapped in ``DistributedDataParallel``: every rank loads the
same global batch of ``batch_size`` volumes, the method draws its random
augmentation for all of it and trains on ``batch_size / N`` of them; only
rank 0 writes the state, the backbone and MLflow.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import torch

from medssl import paths, provenance, registry, tracking
from medssl.config import Params, PretrainSpec
from medssl.data.leakage import check_study, pretrain_entries
from medssl.data.loaders import make_dataset, train_loader
from medssl.nn.checkpoint import save_backbone
from medssl.train import distributed, pretext
from medssl.train.optim import build_optimizer, build_schedule
from medssl.train.common import build_backbone, log, progress_bar, setup
from medssl.nn.precision import autocast, plain
from medssl.train.resume import (STATE_VERSION, Preempted, Preemption, capture_rng, due, epoch_batches,
                                 fingerprint, load_state, randomizable_states, save_state, set_randomizable_states,
                                 to_cpu)


def resume_config(params: Params, study: str, method: str) -> dict[str, Any]:
    """What a saved state must have been written for to be resumed: everything that changes the numbers.

    The pretrain settings (without ``checkpoint_every``, which only changes
    when states are saved), the method, the backbone, the seed and the corpus.
    """
    st = params.studies[study]
    return {"pretrain": params.method_pretrain(method).model_dump(mode="json", exclude={"checkpoint_every"}),
            "method": params.methods[method].model_dump(mode="json"),
            "backbone": params.backbones[st.backbone].model_dump(mode="json"),
            "seed": params.seed, "dataset": st.pretrain_dataset}


def pretrain(params: Params, study: str, method: str, progress: bool = True,
             device: str | None = None) -> dict[str, Any]:
    """Pre-train ``method`` for ``study`` and export its backbone.

    Args:
        params: the validated configuration.
        study, method: which run.
        progress: show a progress bar (rank 0 only).
        device: ``cpu``, ``cuda``, ``cuda:1`` ...; default ``$MEDSSL_DEVICE``,
            else CUDA when available.

    Returns:
        a summary: epochs run, final loss, loss history, seconds.

    Raises:
        Preempted: after saving the state on ``SIGTERM`` / ``SIGUSR1``.
        ValueError: if ``batch_size`` does not split over the DDP processes.
    """
    rank, world, local_rank = distributed.env_world()
    dev = distributed.resolve_device(device, local_rank)
    dist_env = distributed.init(dev)
    try:
        return _pretrain(params, study, method, progress and dist_env.is_main, dev, dist_env)
    finally:
        distributed.shutdown(dist_env)


def _pretrain(params: Params, study: str, method: str, progress: bool, dev: torch.device,
              dist_env: distributed.Dist) -> dict[str, Any]:
    st = params.studies[study]
    mspec = params.methods[method]
    cfg = params.method_pretrain(method)
    seed = params.seed
    setup(seed, cfg.num_threads)
    bspec = params.backbones[st.backbone]
    model = registry.resolve("method", mspec.kind)(build_backbone(bspec), seed=seed, **mspec.args)
    state_path = paths.train_state(study, method)
    summary: dict[str, Any] = {"study": study, "method": method, "epochs": 0, "final_loss": None}
    log.info("pretrain: study=%s method=%s (%s) corpus=%s backbone=%s epochs=%d device=%s processes=%d",
             study, method, mspec.kind, st.pretrain_name, st.backbone, cfg.epochs, dev, dist_env.world_size)
    t0 = time.time()
    run_params = {"method_kind": mspec.kind, **{f"arg.{k}": v for k, v in mspec.args.items()},
                  **cfg.model_dump(), "backbone": bspec.name, **{f"backbone.{k}": v for k, v in bspec.args.items()},
                  "seed": seed, "device": dev.type, "world_size": dist_env.world_size}
    if dist_env.is_main:
        section = {k: v for k, v in resume_config(params, study, method).items() if k != "seed"}
        tags = {"seed": seed, **provenance.run_tags(section, st.pretrain_datasets)}
        tracked = tracking.tracked_run(study, method, st.pretrain_name, "pretrain", "pretrain", run_params, tags=tags)
    else:
        tracked = contextlib.nullcontext(tracking.RunLogger(None, ""))
    held = pretext.held_out(params, study, cfg.patch) if dist_env.is_main and model.trains else None
    with tracked as run:
        if model.trains and cfg.epochs > 0:
            summary.update(_train(params, study, method, model, cfg, state_path, run, progress, dev, dist_env,
                                  held))
        summary["seconds"] = round(time.time() - t0, 2)
        if dist_env.is_main:
            _write_pretext(study, method, mspec.kind, model, held, summary, run, dev)
            model.to("cpu")
            save_backbone(model.backbone, paths.backbone_weights(study, method), paths.backbone_config(study, method),
                          name=bspec.name, extra={"study": study, "method": method, "kind": mspec.kind,
                                                  "epochs": summary["epochs"], "final_loss": summary["final_loss"],
                                                  # the run downstream runs link to (medssl.provenance)
                                                  "mlflow_run_id": run.run_id or None})
        run.log_metrics({"seconds": summary["seconds"]})
    distributed.barrier(dist_env)
    log.info("pretrain: done in %.1f s, final loss %s", summary["seconds"], summary["final_loss"])
    return summary


def _write_pretext(study: str, method: str, kind: str, model, held, summary: dict[str, Any], run,
                   dev: torch.device) -> None:
    """Score the trained method on the held-out volumes; write pretext.json and log both means to MLflow."""
    steps = int(summary.get("global_step", 0))
    end = pretext.to_record(pretext.score(model.to(dev), held, dev))
    start = summary.get("pretext_start", end if steps == 0 else None)
    pretext.write(study, method, kind, held, start, end, steps)
    for step, rec in ((0, start), (steps, end)):
        if rec is not None and pretext.mean(rec) is not None:
            run.log_metrics({f"pretext_{rec['metric']}": pretext.mean(rec)}, step=step)
    if end is not None:
        log.info("pretext: %s on %d held-out %s of %s: %s -> %s (%s)", end["metric"], len(end["values"]),
                 end["over"], held.dataset, pretext.mean(start) if start else "n/a", pretext.mean(end),
                 end["baseline"])


def _train(params: Params, study: str, method: str, model, cfg: PretrainSpec, state_path: Path, run,
           progress: bool, dev: torch.device, dist_env: distributed.Dist, held=None) -> dict[str, Any]:
    if cfg.batch_size % dist_env.world_size:
        raise ValueError(f"batch_size {cfg.batch_size} (the global batch) does not split over "
                         f"{dist_env.world_size} processes")
    unchecked = check_study(params, study, require=False)  # no downstream validation / test case is pre-trained on
    if unchecked:
        log.warning("pretrain: %s not preprocessed yet, so not checked for leakage here (the downstream jobs "
                    "check them)", ", ".join(unchecked))
    entries = pretrain_entries(params, study)  # the training split of each corpus (S2DC Sec. B), pooled
    pair_crop = cfg.patch is not None and getattr(model, "pair_crop", False)  # GVSL: one window per batch, no flip
    data = make_dataset(entries, "pretrain", patch=cfg.patch, train=True, seed=params.seed,
                        flip=getattr(model, "flip", True), batch_crop=pair_crop)
    model.to(dev)
    model.set_data_parallel(dist_env.rank, dist_env.world_size)
    opt = build_optimizer(model.parameters(), cfg)  # Adam / AdamW (medssl.train.optim)
    sched = build_schedule(opt, cfg)  # constant / warm-up + cosine, stepped per optimiser step
    steps = cfg.steps_per_epoch
    config = {**resume_config(params, study, method), "version": STATE_VERSION}
    start_epoch, start_step, global_step = 0, 0, 0
    history: list[dict[str, float]] = []
    epoch_losses: list[float] = []
    pending_rng = None
    pretext_start = None
    state = load_state(state_path, config)
    if state is None and dist_env.is_main:  # step 0: before any update (draws from no training stream)
        pretext_start = pretext.to_record(pretext.score(model, held, dev))
    if state is not None:
        pretext_start = state.get("pretext_start")
        model.load_state_dict(state["model"])  # includes the method's own generators
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        set_randomizable_states(data.transform, state["data_rng"])
        start_epoch, start_step, global_step = state["epoch"], state["step"], state["global_step"]
        history, epoch_losses, pending_rng = state["history"], state["epoch_losses"], state["rng"]
        log.info("pretrain: resuming from %s at epoch %d step %d (global step %d)", state_path,
                 start_epoch + 1, start_step, global_step)
        if state.get("world_size", 1) != dist_env.world_size:
            log.warning("pretrain: the state was saved by %d processes, this run has %d: the continuation is "
                        "equivalent but not bit-identical", state.get("world_size", 1), dist_env.world_size)
        for h in history:  # this MLflow run gets the whole curve
            run.log_metrics({"loss": h["loss"]}, step=h["epoch"])
        run.set_tags({"medssl.resumed_from_step": global_step})
    _agree(dist_env, global_step, dev)
    net = distributed.wrap(model, dist_env, dev)
    model.train()

    def save(epoch: int, step: int, losses: list[float]) -> None:
        if dist_env.is_main:
            save_state(state_path, {
                "version": STATE_VERSION, "fingerprint": fingerprint(config), "config": config,
                "epoch": epoch, "step": step, "global_step": global_step,
                "model": to_cpu(model.state_dict()), "optimizer": to_cpu(opt.state_dict()),
                "scheduler": sched.state_dict(),
                "rng": capture_rng(), "data_rng": randomizable_states(data.transform),
                "history": history, "epoch_losses": list(losses), "world_size": dist_env.world_size,
                "pretext_start": pretext_start})
            log.info("pretrain: saved state at epoch %d step %d (global step %d)", epoch + 1, step, global_step)
        distributed.barrier(dist_env)

    with Preemption() as stop:
        for epoch in range(start_epoch, cfg.epochs):
            start = start_step if epoch == start_epoch else 0
            batches = epoch_batches(
                lambda: train_loader(data, cfg.batch_size, steps, seed=params.seed * 1000 + epoch, start=start,
                                     batch_crop=cfg.patch if pair_crop else None),
                pending_rng, start)
            pending_rng = None
            losses = epoch_losses if epoch == start_epoch else []
            bar = progress_bar(batches, steps - start, f"pretrain {method} epoch {epoch + 1}/{cfg.epochs}", progress)
            for step, batch in enumerate(bar, start + 1):
                with autocast(cfg.amp, dev):
                    loss, _ = net(plain(batch["image"]).to(dev, non_blocking=True))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                value, stopping = distributed.reduce_step(dist_env, loss, stop.requested)
                losses.append(value)
                global_step += 1
                at = (epoch, step)
                if step == steps:
                    mean = sum(losses) / len(losses)
                    history.append({"epoch": epoch + 1, "loss": mean})
                    run.log_metrics({"loss": mean}, step=epoch + 1)
                    log.info("pretrain: epoch %d/%d loss %.5f", epoch + 1, cfg.epochs, mean)
                    at, losses = (epoch + 1, 0), []
                if stopping or due(global_step, step, steps, cfg.checkpoint_every):
                    save(*at, losses)
                if stopping:
                    run.set_tags({"medssl.preempted_at_step": global_step})
                    raise Preempted(stop.signum or 15, global_step, state_path)
    return {"epochs": cfg.epochs, "final_loss": history[-1]["loss"] if history else None, "history": history,
            "global_step": global_step, "pretext_start": pretext_start}


def _agree(dist_env: distributed.Dist, global_step: int, dev: torch.device) -> None:
    """Every rank must continue from the same step (they each read the state file)."""
    if not dist_env.enabled:
        return
    import torch.distributed as dist

    t = torch.tensor([global_step, -global_step], dtype=torch.float64, device=dev)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    if int(t[0]) != -int(t[1]):
        raise RuntimeError(f"the ranks read different training states (global steps {-int(t[1])} to {int(t[0])}): "
                           "is the checkpoint folder shared by every process?")
