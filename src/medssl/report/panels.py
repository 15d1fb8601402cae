"""Qualitative panels of an ssl study: each row's prediction on one fixed test case.

``predictions.png`` (issue 17 item 1): for every segmentation dataset of the study,
one fixed test case -- the first of the datalist's ``test`` entries in case-id order
-- and one fixed axial slice of it -- the slice of the processed label with the most
foreground voxels (the lowest such index on a tie; the middle slice when the label is
empty). One panel row per protocol x label fraction; its columns are the image, the
ground truth and each method's prediction (the study's first seed, from
``<run dir>/predictions/<case>.nii.gz``, :func:`medssl.paths.downstream_predictions`)
overlaid on the image, with the case's Dice from the run's ``metrics.json`` in the
title. A run that kept no predictions (``downstream.save_predictions: false``) gets a
panel saying so. Classification datasets have no panel.

Slices are taken from the RAS-oriented processed grid (axis 2 = superior) and shown
with anterior up (``np.rot90``); classes use matplotlib's ``tab10`` colours, the
background is transparent. Nothing depends on time or random state, so the figure is
as deterministic as :mod:`medssl.report.figures`' others.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from medssl import paths
from medssl.data.datalist import read_datalist
from medssl.report.render import fraction_label

__all__ = ["fixed_case", "fixed_slice", "render_predictions"]


def fixed_case(datalist: Path) -> dict:
    """The first test entry of ``datalist`` in case-id order (``{"case", "image", "label"}``, absolute paths).

    Raises:
        ValueError: naming the datalist when it is missing or has no test case.
    """
    datalist = Path(datalist)
    if not datalist.is_file():
        raise ValueError(f"{datalist}: datalist not found (preprocess the dataset first)")
    entries = read_datalist(datalist, "test")
    if not entries:
        raise ValueError(f"{datalist}: no test case to show")
    entry = min(entries, key=lambda e: str(e.get("case", e["image"])))
    case = str(entry.get("case") or Path(str(entry["image"])).name.split(".")[0])
    return {"case": case, "image": Path(entry["image"]), "label": Path(entry["label"])}


def fixed_slice(label: np.ndarray) -> int:
    """The axial index (axis 2) with the most foreground voxels; lowest on a tie; middle when empty."""
    counts = (np.asarray(label) > 0).reshape(-1, label.shape[2]).sum(axis=0)
    return int(np.argmax(counts)) if counts.max() > 0 else label.shape[2] // 2


def _load(path: Path) -> np.ndarray:
    import nibabel as nib

    return np.asarray(nib.load(str(path)).dataobj)


def _case_dice(metrics: Path, case: str) -> float | None:
    try:
        rec = json.loads(metrics.read_text())
    except (OSError, ValueError):
        return None
    for row in rec.get("per_case") or []:
        if row.get("case") == case and row.get("dice") is not None:
            return float(row["dice"])
    return None


def render_predictions(params, study: str, base: Path | None, new_figure, empty):
    """The ``predictions.png`` figure of ssl ``study`` (``new_figure(w, h)``, ``empty(fig, text)``:
    :mod:`medssl.report.figures`' helpers, so that style and canvas are the same)."""
    from matplotlib.colors import ListedColormap

    spec = params.studies[study]
    datasets = [d for d in spec.datasets if params.datasets[d].task == "segmentation"]
    if not datasets:
        return empty(new_figure(6, 2), f"{study}: no segmentation dataset, so no prediction to show")
    settings = [(d, prot, f) for d in datasets for prot in spec.protocols for f in spec.fractions]
    cols = 2 + len(spec.methods)
    fig = new_figure(1.7 * cols, 1.9 * len(settings) + 0.4)
    axes = fig.subplots(len(settings), cols, squeeze=False)
    seed = spec.seeds[0]
    cmap = ListedColormap(["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                           "#7f7f7f", "#bcbd22", "#17becf"])
    cached: dict[str, tuple[dict, np.ndarray, np.ndarray, int]] = {}
    for r, (dataset, protocol, fraction) in enumerate(settings):
        if dataset not in cached:
            case = fixed_case(paths.datalist(dataset, base))
            image, label = _load(case["image"]), _load(case["label"])
            cached[dataset] = (case, image, label, fixed_slice(label))
        case, image, label, k = cached[dataset]
        img = np.rot90(image[..., k] if image.ndim == 3 else image[0, ..., k])
        n_classes = max(len(params.datasets[dataset].classes), 2)

        def show(ax, labels, title):
            ax.imshow(img, cmap="gray", interpolation="nearest")
            if labels is not None:
                lab = np.rot90(labels[..., k])
                ax.imshow(np.ma.masked_equal(lab, 0), cmap=cmap, vmin=0.5, vmax=10.5, alpha=0.55,
                          interpolation="nearest")
            ax.set_title(title, fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)

        where = f"{dataset} · {protocol} · {fraction_label(fraction)}"
        show(axes[r, 0], None, f"{where}\n{case['case']}, slice {k}")
        show(axes[r, 1], label, "ground truth")
        for c, method in enumerate(spec.methods, start=2):
            pred_file = paths.downstream_predictions(study, dataset, protocol, method, fraction, seed, base) \
                / f"{case['case']}.nii.gz"
            if not pred_file.is_file():
                show(axes[r, c], None, f"{method}: no prediction saved")
                continue
            pred = _load(pred_file)
            if pred.shape != label.shape:
                raise ValueError(f"{pred_file}: shape {pred.shape}, the processed label {label.shape}")
            dice = _case_dice(paths.downstream_metrics(study, dataset, protocol, method, fraction, seed, base),
                              case["case"])
            show(axes[r, c], np.clip(pred, 0, n_classes - 1),
                 f"{method} (seed {seed})" + (f"\nDice {dice:.2f}" if dice is not None else ""))
    fig.suptitle(f"{study}: predictions on a fixed test case (slice with the most labelled voxels)")
    return fig
