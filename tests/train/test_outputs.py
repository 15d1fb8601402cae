"""What a downstream run keeps beside metrics.json (predictions, weights) and the provenance it tags in MLflow.

One tracked pre-training (``scratch``: no training, it only exports its backbone) and one
tracked fine-tune on the tiny phantoms, into a temporary sqlite store; then the same run
with both switches off. The Dice of every saved prediction against the processed label
is recomputed here with numpy, independently of ``medssl.metrics``.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medssl import config, paths, provenance, tracking
from medssl.data.datalist import read_datalist
from medssl.train import outputs
from medssl.train.downstream import OUTPUT_ONLY, downstream, predict_segmentation
from medssl.train.pretrain import pretrain

ROOT = Path(__file__).resolve().parents[2]
RUN = ("ssl3d", "phantom_organs", "finetune", "scratch", 1.0, 0)


def _mapping(tiny_params, **switches) -> dict:
    mapping = tiny_params()
    # 40 steps: predictions that are not one class, so a wrong axis order changes the Dice
    mapping["downstream"].update(epochs=4, steps_per_epoch=10, **switches)
    return mapping


@pytest.fixture(scope="module")
def tracked(tiny_root, tiny_params, tmp_path_factory):
    """Params with both switches on; a tracked pretrain and downstream run; the store's URI."""
    tiny_root("phantom_corpus", "phantom_organs")
    p = config.parse(_mapping(tiny_params, save_predictions=True, keep_weights=True))
    uri = f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv(tracking.TRACKING_ENV, "on")
        pretrain(p, "ssl3d", "scratch", progress=False)
        result = downstream(p, *RUN, progress=False, keep_state=True)
    return p, result, uri


def _client(uri: str):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri)


def _child(uri: str, name: str):
    client = _client(uri)
    exp = client.get_experiment_by_name("ssl3d")
    runs = client.search_runs([exp.experiment_id], filter_string=f"attributes.run_name = '{name}'")
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return runs[0]


def _dice(pred: np.ndarray, truth: np.ndarray, k: int) -> float:
    a, b = pred == k, truth == k
    total = int(a.sum() + b.sum())
    return float("nan") if total == 0 else 2.0 * int((a & b).sum()) / total


def test_predictions_lie_on_the_processed_grid_and_score_the_metrics_dice(tracked):
    p, result, _ = tracked
    folder = paths.downstream_predictions(*RUN)
    test = read_datalist(paths.datalist("phantom_organs"), "test")
    assert sorted(f.name for f in folder.iterdir()) == sorted(f"{e['case']}.nii.gz" for e in test)
    classes = p.datasets["phantom_organs"].classes
    rows = {r["case"]: r for r in json.loads(paths.downstream_metrics(*RUN).read_text())["per_case"]}
    checked = 0
    for entry in test:
        pred_img, image, label = (nib.load(str(x)) for x in
                                  (folder / f"{entry['case']}.nii.gz", entry["image"], entry["label"]))
        assert np.array_equal(pred_img.affine, image.affine)
        assert pred_img.shape == image.shape[:3] == label.shape[:3]
        pred = np.asarray(pred_img.dataobj)
        assert pred.dtype == np.uint8 and pred.max() < len(classes)
        truth = np.asarray(label.dataobj).astype(int)
        dice = [_dice(pred, truth, k) for k in range(1, len(classes))]
        for name, value in zip(classes[1:], dice, strict=True):
            stored = rows[entry["case"]][f"dice_{name}"]
            if np.isnan(value):
                assert stored is None, (entry["case"], name)
            else:
                assert stored == pytest.approx(value, abs=1e-6), (entry["case"], name)
                checked += 1
        assert rows[entry["case"]]["dice"] == pytest.approx(float(np.nanmean(dice)), abs=1e-6)
        # the comparison can tell: the same labels with the axes reversed score another Dice
        flipped = [_dice(pred.transpose(2, 1, 0)[::-1], truth, k) for k in range(1, len(classes))]
        assert abs(np.nanmean(flipped) - np.nanmean(dice)) > 1e-3
    assert checked >= len(test)  # the comparison ran on real classes, not only on undefined ones
    assert result["predictions"] == "predictions" and result["weights"] == "weights"


def test_predictions_are_deterministic_nifti(tracked):
    """The same label map gives the same bytes (io.save_nifti: no gzip timestamp)."""
    folder = paths.downstream_predictions(*RUN)
    f = sorted(folder.iterdir())[0]
    img = nib.load(str(f))
    again = f.parent.parent / "again.nii.gz"
    outputs.save_prediction(again.parent, "again", np.asarray(img.dataobj), f, n_classes=8)
    try:
        assert again.read_bytes() == f.read_bytes()
    finally:
        again.unlink()


def test_kept_weights_are_the_tested_model(tracked):
    p, _, _ = tracked
    model = outputs.load_model(paths.downstream_weights(*RUN))
    entry = read_datalist(paths.datalist("phantom_organs"), "test")[0]
    image = torch.from_numpy(np.asarray(nib.load(entry["image"]).dataobj, dtype=np.float32))[None, None]
    pred = predict_segmentation(model, image, tuple(p.downstream.patch), p.downstream.sw_overlap).numpy()
    saved = np.asarray(nib.load(str(paths.downstream_predictions(*RUN) / f"{entry['case']}.nii.gz")).dataobj)
    assert np.array_equal(pred, saved)
    record = json.loads((paths.downstream_weights(*RUN) / "backbone.json").read_text())
    assert record["downstream"]["best_epoch"] == json.loads(paths.downstream_metrics(*RUN).read_text())["best_epoch"]


def test_downstream_run_links_backbone_and_pretraining(tracked):
    _, _, uri = tracked
    run = _child(uri, tracking.child_name("finetune", 1.0, 0))
    tags = run.data.tags
    weights = paths.backbone_weights("ssl3d", "scratch")
    assert tags["medssl.backbone_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    pre = _client(uri).get_run(tags["medssl.pretrain_run_id"])  # raises when no such run exists
    assert (pre.info.run_name, pre.data.tags["method"], pre.data.tags["protocol"]) == ("pretrain", "scratch",
                                                                                       "pretrain")
    assert pre.info.run_id == json.loads(paths.backbone_config("ssl3d", "scratch").read_text())["mlflow_run_id"]
    dl = paths.datalist("phantom_organs")
    assert tags["medssl.datalist_sha256.phantom_organs"] == hashlib.sha256(dl.read_bytes()).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", tags["medssl.config_sha256"])
    assert tags["medssl.version"] == __import__("medssl").__version__
    assert tags["medssl.predictions"] == str(paths.downstream_predictions(*RUN).resolve())
    assert tags["medssl.weights"] == str(paths.downstream_weights(*RUN).resolve())
    pre_dl = paths.datalist("phantom_corpus")
    assert pre.data.tags["medssl.datalist_sha256.phantom_corpus"] == hashlib.sha256(pre_dl.read_bytes()).hexdigest()
    # predictions are small here: copied as artifacts too
    arts = [a.path for a in _client(uri).list_artifacts(run.info.run_id, "predictions")]
    assert sorted(Path(a).name for a in arts) == sorted(f.name for f in paths.downstream_predictions(*RUN).iterdir())


def test_validation_metric_is_named(tracked):
    _, result, uri = tracked
    run = _child(uri, tracking.child_name("finetune", 1.0, 0))
    assert "val_dice" in run.data.metrics and "val_metric" not in run.data.metrics
    validated = [h for h in result["history"] if "val_dice" in h]
    assert validated and all(h["val_metric"] == h["val_dice"] for h in validated)  # the old key stays
    history = _client(uri).get_metric_history(run.info.run_id, "val_dice")
    assert [(m.step, m.value) for m in history] == [(h["epoch"], pytest.approx(h["val_dice"])) for h in validated]


def test_switches_off_write_none_and_remove_earlier_folders(tracked, tiny_params, caplog):
    off = config.parse(_mapping(tiny_params, save_predictions=False, keep_weights=False))
    caplog.set_level("INFO", logger="medssl")
    res = downstream(off, *RUN, progress=False)  # resumes the kept state: the switches are not in its fingerprint
    assert any("resuming from" in r.getMessage() for r in caplog.records)
    run_dir = paths.downstream_dir(*RUN)
    assert sorted(f.name for f in run_dir.iterdir()) == ["metrics.json"]
    assert (res["predictions"], res["weights"]) == (None, None)
    other = downstream(off, "ssl3d", "phantom_organs", "linear", "scratch", 1.0, 1, progress=False)
    assert other["metrics"]["dice"] >= 0
    assert sorted(f.name for f in paths.downstream_dir("ssl3d", "phantom_organs", "linear", "scratch", 1.0, 1)
                  .iterdir()) == ["metrics.json"]


def test_staged_folder_is_all_or_nothing(tmp_path):
    final = tmp_path / "predictions"
    with outputs.staged_folder(final) as d:
        (d / "a.nii.gz").write_bytes(b"old")
    with pytest.raises(RuntimeError, match="killed"):
        with outputs.staged_folder(final) as d:
            (d / "b.nii.gz").write_bytes(b"half")
            raise RuntimeError("killed")
    assert sorted(f.name for f in tmp_path.iterdir()) == ["predictions"]
    assert sorted(f.name for f in final.iterdir()) == ["a.nii.gz"]
    (tmp_path / ".predictions.999.tmp").mkdir()  # left by a writer killed with SIGKILL
    with outputs.staged_folder(final) as d:
        (d / "c.nii.gz").write_bytes(b"new")
    assert sorted(f.name for f in tmp_path.iterdir()) == ["predictions"]
    assert sorted(f.name for f in final.iterdir()) == ["c.nii.gz"]  # replaced as a whole


def test_rule_params_leave_out_the_same_switches():
    """workflow/rules/downstream.smk copies OUTPUT_ONLY (importing it would load torch in the DAG)."""
    text = (ROOT / "workflow" / "rules" / "downstream.smk").read_text()
    literal = re.search(r"^DOWNSTREAM_OUTPUT_ONLY = (\{.*\})$", text, flags=re.M).group(1)
    assert eval(literal) == set(OUTPUT_ONLY)  # noqa: S307 - a literal of this repository
    assert set(OUTPUT_ONLY) - {"checkpoint_every"} <= set(config.DownstreamSpec.model_fields)
    assert provenance.config_hash({"b": 1, "a": [1, 2]}) == hashlib.sha256(b'{"a":[1,2],"b":1}').hexdigest()
