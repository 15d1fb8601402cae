"""The ``uda`` study stage: train and evaluate one method in one direction for one seed.

For direction ``source -> target`` of a uda study (CMEVAE supplement,
Sec. III: MS-CMRSeg bSSFP -> LGE and back), the method's network is trained
on the labelled ``training`` slices of the source and the *unlabelled*
``training`` slices of the target (their labels are never read), then scored
on the target's ``test`` cases: Dice per class and mean, ASSD per class and
mean (MONAI, per subject in 3D, a missed structure scoring the volume
diagonal) and ``misses`` (see :mod:`medssl.metrics`). Writes
``results/<study>/runs/<direction>/<method>/seed<s>/metrics.json``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from medssl import paths, provenance, tracking
from medssl.config import Params
from medssl.data.datalist import read_datalist
from medssl.io import write_json
from medssl.metrics import undefined_reasons
from medssl.train.common import setup
from medssl.uda.data import load_slices
from medssl.uda.metrics import evaluate
from medssl.uda.models import build
from medssl.uda.train import fit

log = logging.getLogger("medssl")


def _images_only(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Target training entries without their labels: the target is unlabelled."""
    return [{k: v for k, v in e.items() if k != "label"} for e in entries]


def run_uda(params: Params, study: str, method: str, direction: str, seed: int,
            progress: bool = True) -> dict[str, Any]:
    """Train and evaluate ``method`` of uda study ``study`` in ``direction`` with ``seed``.

    Returns:
        the metrics.json record.

    Raises:
        ValueError: if ``study`` is not a uda study, or ``method`` / ``direction`` are not in it.
    """
    st, spec = params.study_row(study, "uda", method, what="method")
    d = st.direction(direction)
    cfg = st.train
    classes = params.datasets[d.target].classes
    setup(seed, cfg.num_threads)
    src = load_slices(read_datalist(paths.datalist(d.source), "training"))
    tgt_train = load_slices(_images_only(read_datalist(paths.datalist(d.target), "training")), labels=False)
    tgt_test = load_slices(read_datalist(paths.datalist(d.target), "test"))
    if src.x.shape[-2:] != tgt_test.x.shape[-2:]:
        raise ValueError(f"direction {d.label!r}: source slices are {tuple(src.x.shape[-2:])} but target slices "
                         f"{tuple(tgt_test.x.shape[-2:])}; give both datasets the same in-plane roi")
    model = build(spec.kind, len(classes), seed=seed, **{**st.net, **spec.args})
    run_params = {"kind": spec.kind, **{f"net.{k}": v for k, v in st.net.items()},
                  **{f"arg.{k}": v for k, v in spec.args.items()}, **cfg.model_dump(), "epochs": d.epochs,
                  "source": d.source, "target": d.target, "seed": seed, "n_source_slices": int(src.x.shape[0]),
                  "n_target_slices": int(tgt_train.x.shape[0])}
    log.info("uda: study=%s method=%s (%s) %s -> %s seed=%d epochs=%d source slices=%d target slices=%d",
             study, method, spec.kind, d.source, d.target, seed, d.epochs, src.x.shape[0], tgt_train.x.shape[0])
    t0 = time.time()
    section = {"train": cfg.model_dump(mode="json"), "net": st.net, "model": spec.model_dump(mode="json"),
               "direction": d.model_dump(mode="json"),
               "datasets": {n: params.datasets[n].model_dump(mode="json") for n in (d.source, d.target)}}
    tags = {"seed": seed, "source": d.source, "target": d.target,
            **provenance.run_tags(section, sorted({d.source, d.target}))}
    with tracking.tracked_run(study, method, d.label, "uda", paths.seed_tag(seed), run_params, tags=tags) as run:
        history = fit(model, src.x, src.y, None if spec.kind == "source_only" else tgt_train.x, epochs=d.epochs,
                      steps_per_epoch=cfg.steps_per_epoch, batch_size=cfg.batch_size, lr=cfg.lr, seed=seed,
                      progress=progress)
        for h in history:
            run.log_metrics({f"train_{k}": float(v) for k, v in h.items() if k != "epoch"}, step=h["epoch"])
            log.info("uda: epoch %d/%d loss %.4f", h["epoch"], d.epochs, h["loss"])
        res = evaluate(model, tgt_test.x, tgt_test.y, classes, tgt_test.spacing, groups=tgt_test.groups)
        metrics = {k: v for k, v in res.items() if k.startswith(("dice", "assd", "misses"))}
        # non-finite values become null in metrics.json (io.write_json), with these reasons beside them
        record = {"study": study, "dataset": d.label, "protocol": "uda", "method": method, "fraction": 1.0,
                  "seed": seed, "task": "uda", "source": d.source, "target": d.target, "metrics": metrics,
                  "empty": {k: v for k, v in res.items() if k.startswith("empty_")}, "n_cases": res["n_cases"],
                  "undefined": undefined_reasons(metrics), "history": history,
                  "seconds": round(time.time() - t0, 2)}
        out = paths.method_metrics(study, d.label, method, seed)
        record = write_json(out, record)  # what is on disk: null where undefined
        metrics = record["metrics"]
        run.log_metrics({f"test_{k}": v for k, v in metrics.items() if v is not None})
        run.log_artifact(out)
    log.info("uda: done in %.1f s: dice %.4f assd %s", record["seconds"], res["dice"], metrics.get("assd"))
    return record

