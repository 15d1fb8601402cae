"""Synthetic finished studies: every metrics.json (with its history) and pretext.json a study defines.

The values are a deterministic function of the run's names, so that two calls write the same files,
and a test can change one run and see the figure (or summary) change.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from medssl import config, paths
from medssl.io import write_json
from medssl.report.inputs import study_metrics

STUDIES = ("ssl3d", "template", "stn", "uda2d")


def synthetic_params(tiny_params) -> config.Params:
    """The tiny params with two label fractions and a 3-epoch history shape (nothing is trained)."""
    p = tiny_params()
    p["studies"]["ssl3d"].update(fractions=[0.5, 1.0], seeds=[0, 1])
    return config.parse(p)


def _rng(*names) -> np.random.Generator:
    return np.random.default_rng(int(hashlib.sha256("/".join(map(str, names)).encode()).hexdigest()[:8], 16))


def _metrics(kind: str, task: str, rng, classes=()) -> dict:
    if kind == "ssl":
        return ({"dice": rng.uniform(0.4, 0.9), "hd95": rng.uniform(2, 9), "misses": 0.0}
                if task == "segmentation" else {"auc": rng.uniform(0.4, 0.9)})
    if kind == "template":
        return {"dice": rng.uniform(0.4, 0.9), "hausdorff": rng.uniform(2, 9), "misses": 0.0,
                "neg_jacobian_pct": rng.uniform(0, 2), "components": 1.0}
    if kind == "stn":
        return {"accuracy": rng.uniform(0.4, 0.9), "neg_jacobian_pct": rng.uniform(0, 2)}
    out = {f"dice_{c}": rng.uniform(0.3, 0.9) for c in classes}
    return {**out, "dice": float(np.mean(list(out.values()))), "assd": rng.uniform(1, 5), "misses": 0.0}


def _history(kind: str, rng) -> list:
    if kind == "template":  # per-step losses
        return [round(float(2.0 / (s + 1) + rng.uniform(0, 0.1)), 6) for s in range(8)]
    if kind == "ssl":  # train loss every epoch, validation every other epoch
        return [{"epoch": e, "train_loss": 2.0 / e + rng.uniform(0, 0.2),
                 **({"val_metric": 0.3 + 0.1 * e + rng.uniform(0, 0.05)} if e % 2 == 0 else {})}
                for e in range(1, 7)]
    return [{"epoch": e, "loss": 3.0 / e + rng.uniform(0, 0.2), "seconds": 0.5} for e in range(1, 5)]


def write_study(params, study: str, base: Path) -> list[Path]:
    """Write every metrics.json of ``study`` (and, for ssl, every method's pretext.json) under ``base``."""
    spec = params.studies[study]
    files = study_metrics(params, study, base)
    for path in files:
        parts = path.relative_to(paths.runs(study, base)).parts
        if spec.kind == "ssl":
            dataset, protocol, method, frac, seed = parts[:5]
            fraction, task = float(frac.removeprefix("frac")), params.datasets[dataset].task
        else:
            dataset, method, seed = parts[:3]
            protocol, fraction, task = spec.kind, 1.0, spec.kind
        classes = ()
        if spec.kind == "uda":
            target = next(d.target for d in spec.directions if d.label == dataset)
            classes = params.datasets[target].classes[1:]
        rng = _rng(study, *parts)
        write_json(path, {"study": study, "dataset": dataset, "protocol": protocol, "method": method,
                          "fraction": fraction, "seed": int(seed.removeprefix("seed")), "task": task,
                          "metrics": _metrics(spec.kind, task, rng, classes), "history": _history(spec.kind, rng)})
    if spec.kind == "ssl":
        write_predictions(params, study, base)
        tasks = {"genesis": ("restoration_psnr", "dB", "cases", "damaged input"),
                 "gvsl": ("warped_label_dice", "", "pairs", "unwarped labels"),
                 "s2dc": ("patch_match_accuracy", "", "cases", "chance")}
        for method in spec.methods:
            kind = params.methods[method].kind
            rec = {"study": study, "method": method, "start": None, "end": None, "steps": 4,
                   "held_out": {"dataset": spec.datasets[0], "split": "validation", "cases": ["a", "b", "c"]}}
            if kind in tasks:
                metric, unit, over, baseline = tasks[kind]
                rng = _rng(study, method, "pretext")
                start = [float(v) for v in rng.uniform(0.3, 0.5, 3)]
                end = [v + float(rng.uniform(0.05, 0.2)) for v in start]
                base_values = None if kind == "s2dc" else [0.35, 0.36, 0.37]
                for when, values in (("start", start), ("end", end)):
                    rec[when] = {"metric": metric, "unit": unit, "over": over, "values": values,
                                 "baseline": baseline, "baseline_values": base_values}
            write_json(paths.pretext(study, method, base), rec)
    return files


SHAPE = (10, 9, 6)  # a processed RAS grid: x, y, z (axial slices along z)


def _blob(rng, n_classes: int) -> np.ndarray:
    """A label map with a few boxes of classes 1..n_classes-1, most of them on one axial slice band."""
    lab = np.zeros(SHAPE, np.uint8)
    for c in range(1, n_classes):
        x, y = rng.integers(0, SHAPE[0] - 3), rng.integers(0, SHAPE[1] - 3)
        z = int(rng.integers(1, SHAPE[2] - 2))
        lab[x:x + 3, y:y + 3, z:z + 2] = c
    return lab


def write_predictions(params, study: str, base: Path) -> None:
    """For each segmentation dataset: a processed datalist with two test cases (image, label), and
    for every run a prediction of each test case: the label with a run-dependent patch flipped."""
    from medssl.io import save_nifti

    spec = params.studies[study]
    for dataset in spec.datasets:
        ds = params.datasets[dataset]
        if ds.task != "segmentation":
            continue
        folder = paths.processed(dataset, base)
        tests = []
        for case in ("case_b", "case_a"):  # out of order: the fixed case is the first by id
            rng = _rng(dataset, case)
            label = _blob(rng, len(ds.classes))
            save_nifti(folder / "labels" / f"{case}.nii.gz", label, np.diag([2.0, 2.0, 3.0, 1.0]))
            image = (label * 40 + rng.normal(0, 5, SHAPE)).astype(np.float32)
            save_nifti(folder / "images" / f"{case}.nii.gz", image, np.diag([2.0, 2.0, 3.0, 1.0]))
            tests.append({"case": case, "image": f"images/{case}.nii.gz", "label": f"labels/{case}.nii.gz"})
        write_json(paths.datalist(dataset, base), {"name": dataset, "task": "segmentation",
                                                     "training": [], "validation": [], "test": tests})
        for protocol in spec.protocols:
            for method in spec.methods:
                for fraction in spec.fractions:
                    for seed in spec.seeds:
                        out = paths.downstream_predictions(study, dataset, protocol, method, fraction, seed, base)
                        for entry in tests:
                            label = np.asarray(__import__("nibabel").load(
                                str(folder / entry["label"])).dataobj).copy()
                            rng = _rng(study, dataset, protocol, method, fraction, seed, entry["case"])
                            x, y = rng.integers(0, SHAPE[0] - 2), rng.integers(0, SHAPE[1] - 2)
                            label[x:x + 2, y:y + 2, :] = 0
                            save_nifti(out / f"{entry['case']}.nii.gz", label, np.diag([2.0, 2.0, 3.0, 1.0]))


@pytest.fixture
def synthetic(tmp_path, tiny_params):
    """``(params, base)``: every default study written under ``tmp_path``."""
    p = synthetic_params(tiny_params)
    for study in STUDIES:
        write_study(p, study, tmp_path)
    return p, tmp_path
