"""Pretext scores of a pre-training run: its own task on held-out volumes, at step 0 and at the end.

The pre-training stage (:mod:`medssl.train.pretrain`) scores the method
(:meth:`medssl.methods.base.PretrainMethod.pretext_scores`) before its first
step and after its last, logs both means to MLflow (``pretext_<metric>`` at
step 0 and at the last global step) and writes
``checkpoints/<study>/<method>/pretext.json`` (:func:`write`), which
:mod:`medssl.report.pretext` turns into the pretext table.

Held-out volumes (:func:`held_out`): the validation split of the study's
first downstream segmentation dataset that is not also a corpus (its labels
give GVSL's warped-label Dice), else of its first downstream dataset; at most
:data:`MAX_CASES` of them, each centre-cropped (or padded) to the
pre-training patch. The leakage check guarantees the corpus holds none of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medssl import paths
from medssl.data.datalist import read_datalist
from medssl.io import load_nifti, write_json
from medssl.methods.pretext import Pretext
from medssl.train.common import log

#: held-out volumes scored (GVSL scores every ordered pair: 30 pairs of 6)
MAX_CASES = 6


@dataclass
class HeldOut:
    """The held-out volumes a pretext is scored on."""

    dataset: str
    split: str
    cases: list[str]
    images: torch.Tensor  # (N, 1, *patch) in [0, 1]
    labels: torch.Tensor | None  # (N, *patch) integer, or None
    n_classes: int


def held_out(params, study: str, patch) -> HeldOut | None:
    """The held-out volumes of ``study`` (module docstring), or None (with a log line) when there are none yet."""
    from monai.transforms import ResizeWithPadOrCrop

    st = params.studies[study]
    names = [d for d in st.datasets if d not in st.pretrain_datasets]
    seg = [d for d in names if params.datasets[d].task == "segmentation"]
    if not names:
        log.warning("pretext: study %s has no downstream dataset outside its corpus: not scored", study)
        return None
    name = (seg or names)[0]
    datalist = paths.datalist(name)
    if not datalist.is_file():
        log.warning("pretext: %s not preprocessed (no %s): not scored", name, datalist)
        return None
    entries = read_datalist(datalist, "validation")[:MAX_CASES]
    if not entries:
        log.warning("pretext: %s has no validation cases: not scored", name)
        return None
    size = list(patch) if patch is not None else None
    images, labels = [], []
    for e in entries:
        img = load_nifti(e["image"])[0].astype(np.float32)[None]
        lab = load_nifti(e["label"])[0].astype(np.int64)[None] if name in seg and "label" in e else None
        if size is None:  # whole volumes: every one the size of the first
            size = list(img.shape[1:])
        crop = ResizeWithPadOrCrop(size)
        images.append(torch.as_tensor(np.asarray(crop(img)), dtype=torch.float32))
        if lab is not None:
            labels.append(torch.as_tensor(np.asarray(crop(lab)), dtype=torch.int64)[0])
    n_classes = len(params.datasets[name].classes or [])
    return HeldOut(name, "validation", [str(e.get("case", Path(e["image"]).name)) for e in entries],
                   torch.stack(images), torch.stack(labels) if labels and len(labels) == len(images) else None,
                   max(n_classes, 2))


def score(model, data: HeldOut | None, device: torch.device) -> Pretext | None:
    """``model.pretext_scores`` on ``data`` in eval mode, without gradients (None without data or pretext)."""
    if data is None:
        return None
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            labels = data.labels.to(device) if data.labels is not None else None
            return model.pretext_scores(data.images.to(device), labels, data.n_classes)
    finally:
        model.train(was)


def to_record(p: Pretext | None) -> dict[str, Any] | None:
    """A JSON-ready form of a :class:`Pretext` (lists of floats; non-finite values become None)."""
    if p is None:
        return None

    def floats(x):
        return None if x is None else [float(v) if math.isfinite(float(v)) else None for v in np.asarray(x)]

    return {"metric": p.metric, "values": floats(p.values), "baseline": p.baseline,
            "baseline_values": floats(p.baseline_values), "over": p.over, "unit": p.unit}


def mean(record: dict[str, Any] | None) -> float | None:
    """Mean of a :func:`to_record` record's finite values, or None."""
    vals = [v for v in (record or {}).get("values") or [] if v is not None]
    return float(np.mean(vals)) if vals else None


def write(study: str, method: str, kind: str, data: HeldOut | None, start: dict | None, end: dict | None,
          steps: int, path: Path | None = None) -> Path:
    """Write ``pretext.json`` (atomically): where it was scored, and the scores at step 0 and after ``steps``."""
    path = path or paths.pretext(study, method)
    held = None if data is None else {"dataset": data.dataset, "split": data.split, "cases": data.cases}
    write_json(path, {"study": study, "method": method, "kind": kind, "held_out": held, "steps": steps,
                      "start": start, "end": end})
    return path
