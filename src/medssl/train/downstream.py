"""The downstream stage: one protocol of one pre-trained backbone on one dataset.

Protocols (GVSL, Sec. 4 of the supplement): ``linear`` freezes the backbone
and trains a 1x1x1 conv on the local feature (segmentation) or a linear layer
on the pooled global feature (classification); ``finetune`` trains
everything. The label fraction subsamples the training split with the run's
seed. The weights with the best validation metric (mean Dice, or AUC) are kept
and evaluated on the test split with MONAI sliding-window inference.

Like pre-training (:mod:`medssl.train.pretrain`), a run keeps its whole
training state (weights, optimizer, random streams, loader position, history,
the best weights so far) in ``state.pt`` beside its ``metrics.json``, saved
every ``downstream.checkpoint_every`` steps, after every epoch (and its
validation) and on ``SIGTERM`` / ``SIGUSR1`` (then
:class:`~medssl.train.resume.Preempted`; ``medssl downstream`` exits 75); a
rerun continues bit-identically and the state is deleted once
``metrics.json`` is written. Before it, the run writes its test predictions
(``downstream.save_predictions``) and, with ``downstream.keep_weights``, the tested
model beside it (:mod:`medssl.train.outputs`). The validation metric is named for
what it is in MLflow and the history (``val_dice``, ``val_auc``; the history keeps
``val_metric`` too). Model and batches go to one device
(:func:`medssl.train.distributed.resolve_device`), training under bf16
autocast (CUDA or CPU, :mod:`medssl.nn.precision`) with ``downstream.amp``. One process only (no DDP).
"""

from __future__ import annotations

import contextlib
import copy
import json
import time

import nibabel as nib
import numpy as np
import torch
from torch import nn

from medssl import paths, provenance, tracking
from medssl.config import Params
from medssl.data.datalist import read_datalist, subsample
from medssl.data.leakage import check_study
from medssl.data.loaders import eval_loader, make_dataset, train_loader
from medssl.io import write_json
from medssl.metrics import undefined_reasons
from medssl.nn.checkpoint import load_backbone
from medssl.nn.heads import ClassificationHead, SegmentationHead
from medssl.train.common import log, progress_bar, run_seeds, setup
from medssl.train import outputs
from medssl.train.distributed import resolve_device
from medssl.train.optim import build_optimizer, build_schedule
from medssl.nn.precision import autocast, plain
from medssl.train.resume import (STATE_VERSION, Preempted, Preemption, capture_rng, due, epoch_batches,
                                 fingerprint, load_state, randomizable_states, save_state, set_randomizable_states,
                                 to_cpu)
from medssl.train.evaluation import classification_metrics, segmentation_metrics, summarise

PROTOCOLS = ("linear", "finetune")
# settings that change neither the numbers nor a resume: left out of the state's fingerprint (and of the
# Snakemake rule's params, so switching them reruns nothing; force a rerun to get the files of a finished run)
OUTPUT_ONLY = frozenset({"checkpoint_every", "save_predictions", "keep_weights"})
PREDICTION_ARTIFACT_BYTES = 16 << 20  # predictions up to this size are copied to MLflow too (else: a path tag)


class DownstreamModel(nn.Module):
    """Backbone + task head; ``forward`` returns logits."""

    def __init__(self, backbone: nn.Module, task: str, n_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.task = task
        if task == "segmentation":
            self.head = SegmentationHead(backbone.local_channels, n_classes)
        else:
            self.head = ClassificationHead(backbone.global_channels, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        return self.head(feats["local"] if self.task == "segmentation" else feats["global"])


def downstream(params: Params, study: str, dataset: str, protocol: str, method: str,
               fraction: float, seed: int, progress: bool = True, return_model: bool = False,
               device: str | None = None, keep_state: bool = False):
    """Train and evaluate one downstream run; write its ``metrics.json``.

    Args:
        device: ``cpu``, ``cuda`` ...; default ``$MEDSSL_DEVICE``, else CUDA when available.
        keep_state: keep ``state.pt`` after writing metrics.json (:func:`downstream_seeds`: until every
            seed of the row is done, so a rerun after one seed failed only re-tests the finished ones).

    Returns:
        the metrics mapping, or ``(metrics, model)`` with ``return_model``.

    Raises:
        Preempted: after saving the state on ``SIGTERM`` / ``SIGUSR1``.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    spec = params.datasets[dataset]
    cfg = params.downstream
    dev = resolve_device(device)
    setup(seed, cfg.num_threads)
    t0 = time.time()
    check_study(params, study, [dataset])  # the backbone never saw this dataset's validation / test cases
    backbone = load_backbone(paths.backbone_weights(study, method), paths.backbone_config(study, method))
    model = DownstreamModel(backbone, spec.task, len(spec.classes))
    if protocol == "linear":
        backbone.requires_grad_(False)
    model.to(dev)
    trainable = [p for p in model.parameters() if p.requires_grad]
    dl = paths.datalist(dataset)
    train_entries = subsample(read_datalist(dl, "training"), fraction, seed)
    val_entries, test_entries = read_datalist(dl, "validation"), read_datalist(dl, "test")
    if not val_entries or not test_entries:
        raise ValueError(f"{dl}: downstream needs non-empty validation and test splits")
    log.info("downstream: study=%s dataset=%s protocol=%s method=%s fraction=%s seed=%d "
             "(%d train / %d val / %d test cases) device=%s", study, dataset, protocol, method, fraction, seed,
             len(train_entries), len(val_entries), len(test_entries), dev)
    train_ds = make_dataset(train_entries, spec.task, patch=cfg.patch, train=True, seed=seed)
    val_ds = make_dataset(val_entries, spec.task, train=False)
    test_ds = make_dataset(test_entries, spec.task, train=False)
    loss_fn = _loss(spec.task)
    opt = build_optimizer(trainable, cfg)  # downstream.optimizer / weight_decay (default: Adam, as GVSL)
    sched = build_schedule(opt, cfg)  # constant or warm-up + cosine to 0, stepped per optimiser step
    child = f"{protocol}/{paths.frac_tag(fraction)}/{paths.seed_tag(seed)}"
    run_params = {**cfg.model_dump(), "fraction": fraction, "seed": seed, "protocol": protocol,
                  "n_train": len(train_entries), "n_trainable": sum(p.numel() for p in trainable)}
    out = paths.downstream_metrics(study, dataset, protocol, method, fraction, seed)
    state_path = out.with_name("state.pt")
    record = json.loads(paths.backbone_config(study, method).read_text())
    config = {"downstream": cfg.model_dump(mode="json", exclude=set(OUTPUT_ONLY)),
              "dataset": spec.model_dump(mode="json"), "protocol": protocol, "fraction": fraction, "seed": seed,
              "backbone_sha256": record.get("weights_sha256"), "version": STATE_VERSION}
    # the configuration hash is the same for every seed of a row and for any backbone (tagged on its own)
    section = {k: v for k, v in config.items() if k not in ("backbone_sha256", "version", "seed")}
    tags = {**provenance.run_tags(section, [dataset]),
            **provenance.backbone_tags(paths.backbone_weights(study, method), record)}
    history: list[dict[str, float]] = []
    timing = {"train_steps_s": 0.0, "validation_s": 0.0}
    with tracking.tracked_run(study, method, dataset, protocol, child, run_params, tags=tags) as run:
        best_metric, best_epoch, best_state = -np.inf, 0, copy.deepcopy(model.state_dict())
        start_epoch, start_step, global_step, pending_rng = 1, 0, 0, None
        losses: list[float] = []
        state = load_state(state_path, config)
        if state is not None:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            if state.get("scheduler") is not None:
                sched.load_state_dict(state["scheduler"])
            set_randomizable_states(train_ds.transform, state["data_rng"])
            start_epoch, start_step, global_step = state["epoch"], state["step"], state["global_step"]
            history, losses, pending_rng = state["history"], state["epoch_losses"], state["rng"]
            best_metric, best_epoch = state["best_metric"], state["best_epoch"]
            best_state = {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in state["best_state"].items()}
            log.info("downstream: resuming from %s at epoch %d step %d (global step %d)", state_path, start_epoch,
                     start_step, global_step)
            for h in history:  # this MLflow run gets the whole curve (val_metric: the old name of val_<metric>)
                run.log_metrics({k: v for k, v in h.items() if k not in ("epoch", "val_metric")}, step=h["epoch"])

        def save(epoch: int, step: int) -> None:
            save_state(state_path, {
                "version": STATE_VERSION, "fingerprint": fingerprint(config), "config": config,
                "epoch": epoch, "step": step, "global_step": global_step,
                "model": to_cpu(model.state_dict()), "optimizer": to_cpu(opt.state_dict()), "scheduler": sched.state_dict(),
                "rng": capture_rng(), "data_rng": randomizable_states(train_ds.transform),
                "history": history, "epoch_losses": list(losses), "best_metric": best_metric,
                "best_epoch": best_epoch, "best_state": to_cpu(best_state)})
            log.info("downstream: saved state at epoch %d step %d (global step %d)", epoch, step, global_step)

        steps = cfg.steps_per_epoch
        with Preemption() as stop:
            for epoch in range(start_epoch, cfg.epochs + 1):
                start = start_step if epoch == start_epoch else 0
                batches = epoch_batches(
                    lambda: train_loader(train_ds, cfg.batch_size, steps, seed=seed * 1000 + epoch, start=start),
                    pending_rng, start)
                pending_rng = None
                model.train()
                if epoch != start_epoch:
                    losses = []
                bar = progress_bar(batches, steps - start, f"{protocol} {method} epoch {epoch}/{cfg.epochs}", progress)
                for step, batch in enumerate(bar, start + 1):
                    t_step = time.perf_counter()
                    with autocast(cfg.amp, dev):
                        logits = model(plain(batch["image"]).to(dev))
                    loss = loss_fn(logits.float(), _to(batch["label"], dev))  # the loss in fp32 (nn.precision)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    losses.append(float(loss.detach()))
                    timing["train_steps_s"] += time.perf_counter() - t_step
                    global_step += 1
                    if step < steps and (stop.requested or due(global_step, step, steps, cfg.checkpoint_every)):
                        save(epoch, step)
                        if stop.requested:
                            raise Preempted(stop.signum or 15, global_step, state_path)
                history.append({"epoch": epoch, "train_loss": float(np.mean(losses))})
                run.log_metrics({"train_loss": history[-1]["train_loss"]}, step=epoch)
                if epoch % cfg.val_every and epoch != cfg.epochs:
                    log.info("downstream: epoch %d/%d loss %.4f", epoch, cfg.epochs, history[-1]["train_loss"])
                else:
                    t_val = time.perf_counter()
                    val = _evaluate(model, val_ds, spec, cfg, dev)
                    timing["validation_s"] += time.perf_counter() - t_val
                    val_name, val_metric = _val_metric(val, spec.task)
                    # named (val_dice, val_auc, val_accuracy), and as val_metric, the key older readers know
                    history[-1].update({val_name: float(val_metric), "val_metric": float(val_metric)})
                    run.log_metrics({val_name: float(val_metric)}, step=epoch)
                    log.info("downstream: epoch %d/%d loss %.4f %s %.4f", epoch, cfg.epochs,
                             history[-1]["train_loss"], val_name, val_metric)
                    if val_metric > best_metric:
                        best_metric, best_epoch = val_metric, epoch
                        best_state = copy.deepcopy(model.state_dict())
                losses = []
                save(epoch + 1, 0)
                if stop.requested:
                    raise Preempted(stop.signum or 15, global_step, state_path)
        model.load_state_dict(best_state)
        t_test = time.perf_counter()
        pred_dir = paths.downstream_predictions(study, dataset, protocol, method, fraction, seed)
        weights_dir = paths.downstream_weights(study, dataset, protocol, method, fraction, seed)
        save_preds = cfg.save_predictions and spec.task == "segmentation"
        if spec.task == "segmentation":
            with (outputs.staged_folder(pred_dir) if save_preds else contextlib.nullcontext()) as staged:
                sink = None if staged is None else (lambda entry, pred: outputs.save_prediction(
                    staged, entry["case"], pred, entry["image"], len(spec.classes)))
                per_case = _evaluate(model, test_ds, spec, cfg, dev, per_case=True, sink=sink)
            metrics = summarise(per_case)
        else:  # one pass over the test set gives both the metrics and the per-case rows
            probs, labels, cases = _class_outputs(model, test_ds, dev)
            metrics = classification_metrics(probs, labels)
            per_case = [{"case": c, "label": int(y), "prob": float(p[-1]), "correct": bool(p.argmax() == y)}
                        for c, y, p in zip(cases, labels, probs, strict=True)]
        if not save_preds:
            outputs.remove_folder(pred_dir)  # an earlier run's, not this metrics.json's
        if cfg.keep_weights:
            identity = {"study": study, "dataset": dataset, "protocol": protocol, "method": method,
                        "fraction": fraction, "seed": seed, "best_epoch": best_epoch,
                        "classes": list(spec.classes), **tags}
            with outputs.staged_folder(weights_dir) as staged:
                outputs.save_weights(staged, model, record["name"], identity)
        else:
            outputs.remove_folder(weights_dir)
        result = {"study": study, "dataset": dataset, "protocol": protocol, "method": method,
                  "fraction": fraction, "seed": seed, "task": spec.task, "metrics": metrics,
                  # folders beside this file (None: not kept; medssl.train.outputs)
                  "predictions": pred_dir.name if save_preds else None,
                  "weights": weights_dir.name if cfg.keep_weights else None,
                  "train_cases": sorted(e["case"] for e in train_entries),  # the label-fraction subset used
                  "per_case": per_case, "history": history, "best_epoch": best_epoch,
                  "undefined": undefined_reasons(metrics), "seconds": round(time.time() - t0, 2),
                  # where this call's time went (this process only; a resumed run counts its own part)
                  "timing": {**{k: round(v, 3) for k, v in timing.items()},
                             "test_s": round(time.perf_counter() - t_test, 3)}}
        write_json(out, result)
        if not keep_state:
            state_path.unlink(missing_ok=True)  # metrics.json is the result; the state only served a resume
        run.log_metrics({f"test_{k}": v for k, v in metrics.items() if np.isfinite(v)})
        run.log_artifact(out)
        _log_outputs(run, pred_dir if save_preds else None, weights_dir if cfg.keep_weights else None)
    log.info("downstream: done in %.1f s: %s", result["seconds"],
             ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if "_" not in k))
    return (result, model) if return_model else result


def downstream_seeds(params: Params, study: str, dataset: str, protocol: str, method: str, fraction: float,
                     seeds: list[int], progress: bool = True, device: str | None = None) -> list[dict]:
    """:func:`downstream` for every seed of one row in this process (one import, one start-up).

    A seed that fails does not stop the others. The finished seeds keep their
    final ``state.pt`` until every seed has succeeded: Snakemake deletes all
    outputs of a failed job, and the rerun then resumes each finished seed from
    its last step (only its test evaluation runs again) instead of training
    it anew. Preemption (:class:`~medssl.train.resume.Preempted`) stops the row at once.

    Raises:
        RuntimeError: naming every seed that failed and why, after the others ran.
    """
    try:
        results = run_seeds(lambda seed: downstream(params, study, dataset, protocol, method, fraction, seed,
                                                    progress=progress, device=device, keep_state=len(seeds) > 1),
                            seeds, "downstream")
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}; the finished seeds kept their state.pt, so a rerun only re-tests them") from None
    for seed in seeds:
        paths.downstream_metrics(study, dataset, protocol, method, fraction, seed).with_name("state.pt").unlink(
            missing_ok=True)
    return results


def _val_metric(val: dict[str, float], task: str) -> tuple[str, float]:
    """``(name, value)`` of the validation metric that selects the best epoch: ``val_dice`` (segmentation),
    ``val_auc``, or ``val_accuracy`` where the AUC is undefined (one class in the validation split)."""
    if task == "segmentation":
        return "val_dice", val["dice"]
    if np.isfinite(val["auc"]):
        return "val_auc", val["auc"]
    return "val_accuracy", val.get("accuracy", -np.inf)


def _log_outputs(run, predictions, weights) -> None:
    """MLflow: the folders' paths as tags; small prediction folders as artifacts (``predictions/``) too."""
    if predictions is not None:
        run.set_tags({"medssl.predictions": predictions.resolve()})
        if outputs.folder_bytes(predictions) <= PREDICTION_ARTIFACT_BYTES:
            run.log_artifacts(predictions, "predictions")
    if weights is not None:
        run.set_tags({"medssl.weights": weights.resolve()})


def _to(label, dev: torch.device):
    """A batch's labels on ``dev`` as a plain tensor (segmentation maps; classification labels may be a list)."""
    return plain(label).to(dev) if isinstance(label, torch.Tensor) else label


def _loss(task: str):
    if task == "segmentation":
        from monai.losses import DiceCELoss

        return DiceCELoss(to_onehot_y=True, softmax=True)
    ce = nn.CrossEntropyLoss()
    return lambda logits, y: ce(logits, torch.as_tensor(y).long().view(-1))


@torch.no_grad()
def predict_segmentation(model: DownstreamModel, image: torch.Tensor, roi: tuple[int, ...],
                         overlap: float) -> torch.Tensor:
    """Label map ``(D, H, W)`` of one ``(1, 1, D, H, W)`` image by sliding windows (MONAI)."""
    from monai.inferers import sliding_window_inference

    model.eval()
    logits = sliding_window_inference(image, roi_size=roi, sw_batch_size=4, predictor=model, overlap=overlap,
                                      mode="gaussian")
    return logits.argmax(1)[0]


def _evaluate(model, ds, spec, cfg, dev: torch.device | None = None, per_case: bool = False, sink=None):
    """Metrics of ``ds`` (summarised, or one row per case); ``sink(entry, pred)`` gets each label map."""
    model.eval()
    if spec.task == "classification":
        probs, labels, _ = _class_outputs(model, ds, dev)
        return classification_metrics(probs, labels)
    cases = []
    for item, entry in zip(eval_loader(ds), ds.data, strict=True):
        image = item["image"] if dev is None else item["image"].to(dev)
        pred = predict_segmentation(model, image, tuple(cfg.patch), cfg.sw_overlap).cpu()
        if sink is not None:
            sink(entry, pred)
        # the voxel spacing of the preprocessed case (a recipe may keep an axis's own spacing: null)
        spacing = tuple(float(z) for z in nib.load(entry["image"]).header.get_zooms()[:3])
        m = segmentation_metrics(pred, item["label"][0, 0], spec.classes, spacing, distances=per_case)
        cases.append({"case": item["case"][0], **m})
    return cases if per_case else summarise(cases)


@torch.no_grad()
def _class_outputs(model, ds, dev: torch.device | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Class probabilities, labels and case ids of every case of ``ds``, in order."""
    model.eval()
    probs, labels, cases = [], [], []
    for item in eval_loader(ds):
        image = item["image"] if dev is None else item["image"].to(dev)
        probs.append(torch.softmax(model(image), 1)[0].cpu().numpy())
        labels.append(int(item["label"][0]))
        cases.append(item["case"][0])
    return np.stack(probs), np.array(labels), cases
