"""SwinUNETR backbone wrapper: contract shapes, MONAI equivalence, config round-trip, checkpoints."""

from __future__ import annotations

import json

import pytest
import torch
from monai.networks.nets import SwinUNETR

from medssl import registry
from medssl.nn.checkpoint import load_backbone, save_backbone
from medssl.nn.swin import SwinUNETRBackbone

GROUP = ["group", {"num_groups": 4}]


def _model(**kw) -> SwinUNETRBackbone:
    torch.manual_seed(0)
    return SwinUNETRBackbone(feature_size=12, **kw)


@pytest.mark.parametrize("use_v2", [False, True])
def test_shapes_and_channels_at_32(use_v2):
    m = _model(use_v2=use_v2, norm_name=GROUP)
    assert (m.local_channels, m.global_channels) == (12, 192)
    out = m(torch.rand(2, 1, 32, 32, 32))
    assert out["local"].shape == (2, 12, 32, 32, 32)
    assert out["global"].shape == (2, 192, 1, 1, 1)
    assert not hasattr(m, "out")  # MONAI's output conv is not part of the backbone
    v2_blocks = [k for k in m.state_dict() if ".layers1c." in k]
    assert bool(v2_blocks) == use_v2


def test_v2_changes_the_architecture():
    assert len(_model(use_v2=True).state_dict()) > len(_model(use_v2=False).state_dict())


def test_local_is_monai_decoder_output_and_global_its_bottleneck():
    """Same weights in MONAI's own SwinUNETR: our maps are what its forward computes before ``out``."""
    m = _model().eval()
    ref = SwinUNETR(in_channels=1, out_channels=2, feature_size=12).eval()
    missing, unexpected = ref.load_state_dict(m.state_dict(), strict=False)
    assert unexpected == [] and all(k.startswith("out.") for k in missing)
    seen = {}
    ref.out.register_forward_hook(lambda mod, inp, out: seen.setdefault("local", inp[0]))
    ref.encoder10.register_forward_hook(lambda mod, inp, out: seen.setdefault("global", out))
    x = torch.rand(1, 1, 64, 32, 32)  # instance norm needs > 1 bottleneck voxel
    with torch.no_grad():
        ref(x)
        ours = m(x)
    assert ours["local"].shape == (1, 12, 64, 32, 32) and ours["global"].shape == (1, 192, 2, 1, 1)
    assert torch.allclose(ours["local"], seen["local"]) and torch.allclose(ours["global"], seen["global"])


def test_every_parameter_gets_a_gradient():
    m = _model(norm_name=GROUP)
    out = m(torch.rand(2, 1, 32, 32, 32))
    (out["local"].square().mean() + out["global"].square().mean()).backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []


def test_impossible_sizes_are_rejected_with_the_shape():
    m = _model()
    with pytest.raises(ValueError, match=r"multiple of 32, got \(40, 40, 40\)"):
        m(torch.rand(1, 1, 40, 40, 40))
    with pytest.raises(ValueError, match=r"instance norm cannot take \(32, 32, 32\)"):
        m(torch.rand(1, 1, 32, 32, 32))
    with pytest.raises(ValueError, match="channels"):
        m(torch.rand(1, 2, 32, 32, 32))
    with pytest.raises(ValueError, match="multiple of 12"):
        SwinUNETRBackbone(feature_size=10)
    with pytest.raises(ValueError, match="norm_name"):
        SwinUNETRBackbone(feature_size=12, norm_name=["group"])


def test_config_round_trip():
    m = _model(use_v2=True, norm_name=GROUP, depths=(1, 1, 1, 1))
    cfg = json.loads(json.dumps(m.config))
    rebuilt = SwinUNETRBackbone(**cfg)
    a, b = m.state_dict(), rebuilt.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape for k in a)
    assert rebuilt.config == m.config
    assert registry.resolve("backbone", "swinunetr") is SwinUNETRBackbone


def test_save_and_load_backbone(tmp_path):
    m = _model(norm_name=GROUP)
    record = save_backbone(m, tmp_path / "backbone.safetensors", tmp_path / "backbone.json", name="swinunetr")
    assert record["args"] == m.config and record["name"] == "swinunetr"
    loaded = load_backbone(tmp_path / "backbone.safetensors")
    assert isinstance(loaded, SwinUNETRBackbone)
    for k, v in m.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    x = torch.rand(1, 1, 32, 32, 32)
    m.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.allclose(m(x)["local"], loaded(x)["local"])
