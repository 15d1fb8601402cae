"""Every phantom dataset of params.yaml fetches and preprocesses (shrunk to a few cases)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from medssl import config
from medssl.data.fetch import fetch
from medssl.data.preprocess import preprocess_dataset
from medssl.io import load_nifti

ROOT = Path(__file__).resolve().parents[2]
RAW = yaml.safe_load((ROOT / "params.yaml").read_text())
PHANTOMS = sorted(n for n, d in RAW["datasets"].items() if d["source"]["kind"] == "synthetic")


@pytest.mark.parametrize("name", PHANTOMS)
def test_phantom_dataset_end_to_end(name, tmp_path):
    entry = json.loads(json.dumps(RAW["datasets"][name]))
    entry["source"]["n_cases"] = 4 if entry["task"] != "classification" else 6
    entry["splits"] = {"validation": 1, "test": 1 if entry["task"] != "classification" else 2, "seed": 0}
    if entry["task"] == "pretrain":
        entry["splits"] = {"validation": 0, "test": 0, "seed": 0}
    spec = config.DatasetSpec.model_validate(entry)
    raw = fetch(name, spec, raw_dir=tmp_path / "raw", progress=False)
    out = preprocess_dataset(name, spec, raw_dir=raw, out_dir=tmp_path / "processed", progress=False)
    dl = json.loads((out / "datalist.json").read_text())
    assert sum(len(dl[s]) for s in ("training", "validation", "test")) == spec.source.n_cases
    first = dl["training"][0]
    img, _ = load_nifti(out / first["image"])
    if spec.recipe.roi:
        assert img.shape == tuple(spec.recipe.roi)
    assert 0.0 <= img.min() and img.max() <= 1.0
    if spec.task == "segmentation":
        present = set()
        for e in dl["training"] + dl["validation"] + dl["test"]:
            lab, _ = load_nifti(out / e["label"])
            present |= set(np.unique(lab).tolist())
        assert present == set(range(len(spec.classes))), (name, present)
    if spec.task == "classification":
        assert {e["label"] for e in dl["training"]} <= {0, 1}
