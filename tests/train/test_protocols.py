"""Pre-training and the downstream protocols on tiny phantoms, through the Python API."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from medssl import paths
from medssl.train.downstream import downstream
from medssl.train.pretrain import pretrain


@pytest.fixture(scope="module")
def tiny(tiny_root):
    p = tiny_root("phantom_corpus", "phantom_organs", "phantom_lesion")
    summaries = {m: pretrain(p, "ssl3d", m, progress=False) for m in ("scratch", "genesis")}
    return p, summaries


def test_pretrain_exports_backbones(tiny):
    p, summaries = tiny
    assert summaries["scratch"]["final_loss"] is None  # scratch does not train
    hist = summaries["genesis"]["history"]
    assert len(hist) == p.pretrain.epochs and all(h["loss"] > 0 for h in hist)
    for m in ("scratch", "genesis"):
        meta = json.loads(paths.backbone_config("ssl3d", m).read_text())
        assert meta["name"] == "unet3d" and meta["method"] == m
        assert paths.train_state("ssl3d", "genesis").is_file()


def test_pretrain_resumes_from_state(tiny):
    p, summaries = tiny
    before = paths.backbone_weights("ssl3d", "genesis").read_bytes()
    again = pretrain(p, "ssl3d", "genesis", progress=False)  # state.pt says: all epochs done
    assert again["history"] == summaries["genesis"]["history"]
    assert paths.backbone_weights("ssl3d", "genesis").read_bytes() == before


def _backbone_state(model):
    return {k: v.detach().clone() for k, v in model.backbone.state_dict().items()}


def test_linear_keeps_the_backbone_finetune_changes_it(tiny):
    p, _ = tiny
    saved = load_file(paths.backbone_weights("ssl3d", "genesis"))
    res, model = downstream(p, "ssl3d", "phantom_organs", "linear", "genesis", 1.0, 0, progress=False,
                            return_model=True)
    for k, v in _backbone_state(model).items():
        assert torch.equal(v, saved[k]), k
    assert res["metrics"]["dice"] >= 0 and len(res["per_case"]) == 2
    assert set(res["metrics"]) >= {"dice", "hd95", "dice_lungs", "hd95_spine"}
    res, model = downstream(p, "ssl3d", "phantom_organs", "finetune", "genesis", 1.0, 0, progress=False,
                            return_model=True)
    changed = [k for k, v in _backbone_state(model).items() if not torch.equal(v, saved[k])]
    assert changed
    out = paths.downstream_metrics("ssl3d", "phantom_organs", "finetune", "genesis", 1.0, 0)
    assert json.loads(out.read_text())["metrics"] == pytest.approx(res["metrics"], nan_ok=True)


def test_classification_and_label_fraction(tiny):
    p, _ = tiny
    from medssl.data.datalist import read_datalist

    training = {e["case"]: e["label"] for e in read_datalist(paths.datalist("phantom_lesion"), "training")}
    test = [e["case"] for e in read_datalist(paths.datalist("phantom_lesion"), "test")]
    res = downstream(p, "ssl3d", "phantom_lesion", "finetune", "scratch", 0.5, 1, progress=False)
    assert set(res["metrics"]) == {"auc", "accuracy"}
    # the fraction subsamples the training split: half of its 4 cases, one of each class (stratified)
    assert len(training) == 4 and len(res["train_cases"]) == 2
    assert set(res["train_cases"]) <= set(training)
    assert {training[c] for c in res["train_cases"]} == {0, 1}
    full = downstream(p, "ssl3d", "phantom_lesion", "finetune", "scratch", 1.0, 1, progress=False)
    assert full["train_cases"] == sorted(training)
    # accuracy is the share of correct test rows, recomputed from the per-case records
    assert sorted(r["case"] for r in res["per_case"]) == sorted(test)
    rows = res["per_case"]
    assert res["metrics"]["accuracy"] == pytest.approx(sum(r["correct"] for r in rows) / len(rows))
    assert all(r["correct"] == ((r["prob"] >= 0.5) == bool(r["label"])) for r in rows if r["prob"] != 0.5)
    assert 1 <= res["best_epoch"] <= p.downstream.epochs


def test_same_seed_same_result(tiny):
    p, _ = tiny
    a = downstream(p, "ssl3d", "phantom_organs", "linear", "scratch", 1.0, 3, progress=False)
    b = downstream(p, "ssl3d", "phantom_organs", "linear", "scratch", 1.0, 3, progress=False)
    assert a["metrics"] == pytest.approx(b["metrics"], nan_ok=True)
    assert a["history"] == b["history"]


def test_bad_protocol_and_fraction(tiny):
    p, _ = tiny
    with pytest.raises(ValueError, match="unknown protocol 'knn'"):
        downstream(p, "ssl3d", "phantom_organs", "knn", "scratch", 1.0, 0)
    with pytest.raises(ValueError, match="label fraction must be in"):
        downstream(p, "ssl3d", "phantom_organs", "linear", "scratch", 1.5, 0)
