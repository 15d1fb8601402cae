"""The pre-training stage: one method of one study on the study's corpus.

Writes ``checkpoints/<study>/<method>/backbone.safetensors`` and
``backbone.json`` (loadable without this code, :mod:`medssl.nn.checkpoint`)
and keeps ``state.pt`` after every epoch, so a rerun resumes where a killed
job stopped.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from medssl import paths, registry, tracking
from medssl.config import Params
from medssl.data.datalist import read_datalist
from medssl.data.loaders import make_dataset, train_loader
from medssl.nn.checkpoint import save_backbone
from medssl.train.common import (build_backbone, load_state, log, progress_bar, rng_state,
                                 save_state, set_rng_state, setup)


def pretrain(params: Params, study: str, method: str, progress: bool = True) -> dict[str, Any]:
    """Pre-train ``method`` for ``study`` and export its backbone.

    Returns:
        a summary: epochs run, final loss, seconds.
    """
    st = params.studies[study]
    mspec = params.methods[method]
    cfg = params.method_pretrain(method)
    seed = params.seed
    setup(seed, cfg.num_threads)
    bspec = params.backbones[st.backbone]
    model = registry.resolve("method", mspec.kind)(build_backbone(bspec), seed=seed, **mspec.args)
    state_path = paths.train_state(study, method)
    summary: dict[str, Any] = {"study": study, "method": method, "epochs": 0, "final_loss": None}
    log.info("pretrain: study=%s method=%s (%s) corpus=%s backbone=%s epochs=%d",
             study, method, mspec.kind, st.pretrain_dataset, st.backbone, cfg.epochs)
    t0 = time.time()
    run_params = {"method_kind": mspec.kind, **{f"arg.{k}": v for k, v in mspec.args.items()},
                  **cfg.model_dump(), "backbone": bspec.name, **{f"backbone.{k}": v for k, v in bspec.args.items()},
                  "seed": seed}
    with tracking.tracked_run(study, method, st.pretrain_dataset, "pretrain", "pretrain", run_params) as run:
        if model.trains and cfg.epochs > 0:
            summary.update(_train(params, study, method, model, cfg, state_path, run, progress))
        summary["seconds"] = round(time.time() - t0, 2)
        save_backbone(model.backbone, paths.backbone_weights(study, method), paths.backbone_config(study, method),
                      name=bspec.name, extra={"study": study, "method": method, "kind": mspec.kind,
                                              "epochs": summary["epochs"], "final_loss": summary["final_loss"]})
        run.log_metrics({"seconds": summary["seconds"]})
    log.info("pretrain: done in %.1f s, final loss %s", summary["seconds"], summary["final_loss"])
    return summary


def _train(params, study, method, model, cfg, state_path, run, progress) -> dict[str, Any]:
    st = params.studies[study]
    dl = paths.datalist(st.pretrain_dataset)
    entries = [e for sec in ("training", "validation", "test") for e in read_datalist(dl, sec)]
    data = make_dataset(entries, "pretrain", patch=cfg.patch, train=True, seed=params.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    start, history = 0, []
    state = load_state(state_path)
    if state is not None and state.get("config") == cfg.model_dump(mode="json") and state["epoch"] <= cfg.epochs:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        start, history = state["epoch"], state["history"]
        log.info("pretrain: resuming from %s at epoch %d", state_path, start)
    model.train()
    for epoch in range(start, cfg.epochs):
        loader = train_loader(data, cfg.batch_size, cfg.steps_per_epoch, seed=params.seed * 1000 + epoch)
        losses = []
        for batch in progress_bar(loader, cfg.steps_per_epoch, f"pretrain {method} epoch {epoch + 1}/{cfg.epochs}",
                                  progress):
            loss, parts = model.loss(batch["image"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        mean = sum(losses) / len(losses)
        history.append({"epoch": epoch + 1, "loss": mean})
        run.log_metrics({"loss": mean}, step=epoch + 1)
        log.info("pretrain: epoch %d/%d loss %.5f", epoch + 1, cfg.epochs, mean)
        save_state(state_path, {"epoch": epoch + 1, "model": model.state_dict(), "optimizer": opt.state_dict(),
                                "rng": rng_state(), "history": history, "config": cfg.model_dump(mode="json")})
    return {"epochs": cfg.epochs, "final_loss": history[-1]["loss"] if history else None, "history": history}
