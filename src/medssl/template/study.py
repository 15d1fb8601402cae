"""The ``template`` study stage: train and evaluate one Table 2/3 row for one seed.

Reads the preprocessed binary segmentation dataset of the study (its
``training`` cases train, its ``test`` cases evaluate; no model selection, so
the ``validation`` cases are not used), trains the row's model with
:func:`medssl.template.train.fit`, evaluates it with
:func:`medssl.template.train.evaluate` (Dice, Hausdorff distance, % negative
Jacobian determinants, connected components; Sec. 5.3 of the paper) and
writes ``results/<study>/runs/<dataset>/<model>/seed<s>/metrics.json``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import nibabel as nib
import numpy as np
import torch

from medssl import paths, provenance, tracking
from medssl.config import Params
from medssl.data.datalist import read_datalist
from medssl.io import write_json
from medssl.metrics import undefined_reasons
from medssl.template.models import build
from medssl.template.train import evaluate, fit
from medssl.train.common import setup

log = logging.getLogger("medssl")


def load_cases(entries: list[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor, tuple[float, ...], list[str]]:
    """Images ``(N, 1, D, H, W)``, binary masks (label > 0), the voxel spacing and the case names.

    Raises:
        ValueError: naming the file when a case has no label, is unreadable or
            its shape / spacing differs from the first case.
    """
    if not entries:
        raise ValueError("no cases to load")
    images, masks, cases = [], [], []
    shape = spacing = None
    for e in entries:
        if "label" not in e or not isinstance(e["label"], str):
            raise ValueError(f"{e['image']}: case {e.get('case')!r} has no label map")
        arrays = []
        for key in ("image", "label"):
            try:
                nii = nib.load(e[key])
                arrays.append(np.asarray(nii.dataobj, dtype=np.float32))
            except Exception as exc:  # nibabel raises many types for corrupt files
                raise ValueError(f"{e[key]}: unreadable NIfTI ({exc})") from None
            zooms = tuple(float(z) for z in nii.header.get_zooms()[:3])
            if arrays[-1].ndim != 3:
                raise ValueError(f"{e[key]}: expected a 3-D volume, got shape {arrays[-1].shape}")
            if shape is None:
                shape, spacing = arrays[-1].shape, zooms
            elif arrays[-1].shape != shape or not np.allclose(zooms, spacing, atol=1e-4):
                raise ValueError(f"{e[key]}: shape {arrays[-1].shape} / spacing {zooms} differ from the first "
                                 f"case's {shape} / {spacing}; preprocess with a fixed roi")
        images.append(arrays[0])
        masks.append(arrays[1] > 0)
        cases.append(str(e.get("case", e["image"])))
    x = torch.from_numpy(np.stack(images)[:, None])
    y = torch.from_numpy(np.stack(masks)[:, None].astype(np.float32))
    return x, y, spacing, cases


def run_template(params: Params, study: str, model_name: str, seed: int, progress: bool = True) -> dict[str, Any]:
    """Train and evaluate row ``model_name`` of template study ``study`` with ``seed``.

    Returns:
        the metrics.json record.

    Raises:
        ValueError: if ``study`` is not a template study or ``model_name`` not one of its models.
    """
    st, spec = params.study_row(study, "template", model_name, what="model")
    cfg = st.train
    setup(seed, cfg.num_threads)
    dl = paths.datalist(st.dataset)
    x_train, y_train, spacing, _ = load_cases(read_datalist(dl, "training"))
    x_test, y_test, _, test_cases = load_cases(read_datalist(dl, "test"))
    shape = tuple(x_train.shape[2:])
    kw: dict[str, Any] = {"features": list(cfg.features)}
    if spec.kind != "unet":
        kw.update(T=cfg.T, alpha=cfg.alpha, bch_order=cfg.bch_order)
    kw.update(spec.args)
    model = build(spec.kind, shape, **kw)
    run_params = {"kind": spec.kind, **{f"arg.{k}": v for k, v in spec.args.items()}, **cfg.model_dump(),
                  "seed": seed, "shape": list(shape), "n_train": int(x_train.shape[0]),
                  "n_test": int(x_test.shape[0])}
    log.info("template: study=%s model=%s (%s) seed=%d dataset=%s shape=%s train=%d test=%d steps=%d",
             study, model_name, spec.kind, seed, st.dataset, shape, x_train.shape[0], x_test.shape[0], cfg.steps)
    t0 = time.time()
    section = {"train": cfg.model_dump(mode="json"), "model": spec.model_dump(mode="json"),
               "dataset": params.datasets[st.dataset].model_dump(mode="json")}  # the seed is a tag of its own
    with tracking.tracked_run(study, model_name, st.dataset, "template", paths.seed_tag(seed), run_params,
                              tags={"seed": seed, **provenance.run_tags(section, [st.dataset])}) as run:
        history = fit(model, x_train, y_train, steps=cfg.steps, lr=cfg.lr,
                      batch_size=min(cfg.batch_size, x_train.shape[0]), seed=seed, progress=progress,
                      desc=f"template {model_name} seed {seed}")
        losses = history["loss"]
        for i in range(0, len(losses), max(1, len(losses) // 20)):
            run.log_metrics({"train_loss": losses[i]}, step=i + 1)
        res = evaluate(model, x_test, y_test, spacing=spacing)
        names = ("dice", "hausdorff", "neg_jacobian_pct", "components")
        metrics = {**{k: res[f"{k}_mean"] for k in names}, "misses": res["misses"]}
        per_case = [{"case": c, **{k: res[k][i] for k in names}} for i, c in enumerate(test_cases)]
        # non-finite values become null in metrics.json (io.write_json), with these reasons beside them
        record = {"study": study, "dataset": st.dataset, "protocol": "template", "method": model_name,
                  "fraction": 1.0, "seed": seed, "task": "template", "metrics": metrics, "per_case": per_case,
                  "undefined": {**undefined_reasons(metrics), **{k: v for i, row in enumerate(per_case) for k, v in
                                                                 undefined_reasons(row, f"per_case.{i}").items()}},
                  "final_loss": losses[-1], "steps": cfg.steps,
                  "history": [round(float(v), 6) for v in losses],  # per-step loss (medssl.report.convergence)
                  "seconds": round(time.time() - t0, 2)}
        out = paths.method_metrics(study, st.dataset, model_name, seed)
        record = write_json(out, record)  # what is on disk: null where undefined
        run.log_metrics({f"test_{k}": v for k, v in record["metrics"].items() if v is not None})
        run.log_artifact(out)
    log.info("template: done in %.1f s: %s", record["seconds"],
             ", ".join(f"{k}={v:.4g}" for k, v in record["metrics"].items() if v is not None))
    return record

