"""Tests of backbone checkpoints (medssl.nn.checkpoint)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from medssl.nn.checkpoint import FORMAT, load_backbone, read_backbone_config, save_backbone
from medssl.nn.unet3d import UNet3D

torch.set_num_threads(1)

ARGS = {"in_channels": 1, "features": [4, 8, 16], "groups": 2}


def _trained_model(seed: int = 0) -> UNet3D:
    """A backbone whose weights differ from any fresh initialisation."""
    torch.manual_seed(seed)
    model = UNet3D(**ARGS)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.fixture
def saved(tmp_path):
    model = _trained_model()
    w, c = tmp_path / "backbone.safetensors", tmp_path / "backbone.json"
    save_backbone(model, w, c, extra={"method": "genesis", "steps": 3})
    return model, w, c


def test_record_contents(saved):
    model, w, c = saved
    record = json.loads(c.read_text())
    assert record["format"] == FORMAT == "medssl-backbone/1"
    assert record["name"] == "unet3d"
    assert record["args"] == model.config
    assert record["n_parameters"] == sum(p.numel() for p in model.parameters())
    assert record["method"] == "genesis" and record["steps"] == 3
    assert read_backbone_config(c) == record
    assert sorted(os.listdir(w.parent)) == ["backbone.json", "backbone.safetensors"]  # no temp files left


def test_round_trip_gives_identical_outputs(saved):
    model, w, c = saved
    x = torch.rand(2, 1, 8, 8, 8)
    loaded = load_backbone(w, c)
    assert isinstance(loaded, UNet3D) and loaded is not model
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    a, b = model(x), loaded(x)
    assert torch.equal(a["local"], b["local"]) and torch.equal(a["global"], b["global"])
    # the record's path defaults to the weights' path with a .json suffix
    assert torch.equal(load_backbone(w)(x)["local"], a["local"])


def test_loads_in_a_fresh_process_from_the_two_files_only(saved, tmp_path):
    model, w, c = saved
    x = torch.rand(1, 1, 8, 8, 8)
    torch.save(x, tmp_path / "x.pt")
    script = textwrap.dedent(
        f"""
        import torch
        torch.set_num_threads(1)
        from medssl.nn.checkpoint import load_backbone, save_backbone
        m = load_backbone({str(w)!r}, {str(c)!r})
        out = m(torch.load({str(tmp_path / "x.pt")!r}))
        torch.save(out["local"], {str(tmp_path / "out.pt")!r})
        save_backbone(m, {str(tmp_path / "again.safetensors")!r}, {str(tmp_path / "again.json")!r})
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, cwd=tmp_path, timeout=300)
    assert torch.equal(torch.load(tmp_path / "out.pt"), model(x)["local"])
    # same weights, another process: byte-identical safetensors file
    assert (tmp_path / "again.safetensors").read_bytes() == w.read_bytes()


def test_weights_bytes_are_deterministic(tmp_path):
    model = _trained_model(1)
    save_backbone(model, tmp_path / "a.safetensors", tmp_path / "a.json")
    save_backbone(_trained_model(1), tmp_path / "b.safetensors", tmp_path / "b.json")
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    save_backbone(_trained_model(2), tmp_path / "c.safetensors", tmp_path / "c.json")
    assert (tmp_path / "a.safetensors").read_bytes() != (tmp_path / "c.safetensors").read_bytes()


def test_missing_files(saved, tmp_path):
    _, w, c = saved
    with pytest.raises(ValueError, match="nothere.safetensors"):
        load_backbone(tmp_path / "nothere.safetensors", c)
    with pytest.raises(ValueError, match="nothere.json"):
        load_backbone(w, tmp_path / "nothere.json")


@pytest.mark.parametrize(
    "text, word",
    [
        ("{not json", "not a valid JSON"),
        ("[1, 2]", "JSON object"),
        (json.dumps({"format": "other/9", "name": "unet3d", "args": {}}), "format"),
        (json.dumps({"format": FORMAT, "args": {}}), "'name'"),
        (json.dumps({"format": FORMAT, "name": "unet3d", "args": [1]}), "'args'"),
    ],
)
def test_corrupted_record(saved, text, word):
    _, w, c = saved
    c.write_text(text)
    with pytest.raises(ValueError, match=word) as info:
        load_backbone(w, c)
    assert str(c) in str(info.value)


def _edit_record(path, **changes):
    record = json.loads(path.read_text())
    record.update(changes)
    path.write_text(json.dumps(record))


def test_unknown_name(saved):
    _, w, c = saved
    _edit_record(c, name="resnet9000")
    with pytest.raises(ValueError, match="resnet9000") as info:
        load_backbone(w, c)
    assert str(c) in str(info.value)


def test_bad_args(saved):
    _, w, c = saved
    _edit_record(c, args={**ARGS, "colour": "red"})
    with pytest.raises(ValueError, match="cannot build") as info:
        load_backbone(w, c)
    assert str(c) in str(info.value)


def test_shape_mismatch(saved):
    _, w, c = saved
    _edit_record(c, args={**ARGS, "features": [4, 8, 32]})
    with pytest.raises(ValueError, match="shape") as info:
        load_backbone(w, c)
    assert str(w) in str(info.value)


def test_missing_tensors(saved):
    _, w, c = saved
    _edit_record(c, args={**ARGS, "features": [4, 8, 16, 32]})
    with pytest.raises(ValueError, match="missing") as info:
        load_backbone(w, c)
    assert str(w) in str(info.value)


def test_weights_of_another_model_are_detected(saved, tmp_path):
    _, w, c = saved
    save_backbone(_trained_model(5), w, tmp_path / "other.json")  # overwrite weights only
    with pytest.raises(ValueError, match="sha256"):
        load_backbone(w, c)


def test_truncated_weights(saved):
    _, w, c = saved
    w.write_bytes(w.read_bytes()[:100])
    record = json.loads(c.read_text())
    del record["weights_sha256"]
    c.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="safetensors") as info:
        load_backbone(w, c)
    assert str(w) in str(info.value)


def test_save_rejects_bad_models_and_extras(tmp_path):
    with pytest.raises(ValueError, match="config"):
        save_backbone(nn.Linear(2, 2), tmp_path / "w.safetensors", tmp_path / "w.json")

    class Impostor(nn.Linear):
        config = {"in_features": 2}

    with pytest.raises(ValueError, match="UNet3D"):
        save_backbone(Impostor(2, 2), tmp_path / "w.safetensors", tmp_path / "w.json")
    with pytest.raises(ValueError, match="unknown backbone"):
        save_backbone(_trained_model(), tmp_path / "w.safetensors", tmp_path / "w.json", name="nope")
    with pytest.raises(ValueError, match="extra is not JSON"):
        save_backbone(_trained_model(), tmp_path / "w.safetensors", tmp_path / "w.json", extra={"t": torch.ones(1)})
    with pytest.raises(ValueError, match="reserved"):
        save_backbone(_trained_model(), tmp_path / "w.safetensors", tmp_path / "w.json", extra={"args": {}})
    assert list(tmp_path.iterdir()) == []
