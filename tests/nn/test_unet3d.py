"""Tests of the GVSL 3D U-Net backbone (medssl.nn.unet3d)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from medssl.nn.unet3d import UNet3D, group_count

torch.set_num_threads(1)


def _expected_parameters(in_channels: int, features: list[int], deconv: bool = False) -> int:
    """Parameter count of the architecture as specified, written out independently.

    A conv group has a 3x3x3 conv (27*cin*cout weights + cout biases) and a
    GroupNorm (cout weights + cout biases); each level has two; the decoder's
    first conv reads the up-sampled coarse map concatenated with the skip.
    """

    def group(cin: int, cout: int) -> int:
        return 27 * cin * cout + cout + 2 * cout

    total, cin = 0, in_channels
    for f in features:
        total += group(cin, f) + group(f, f)
        cin = f
    for coarse, fine in zip(features[:0:-1], features[-2::-1]):
        total += group(coarse + fine, fine) + group(fine, fine)
        if deconv:
            total += 8 * coarse * coarse + coarse
    return total


@pytest.mark.parametrize(
    "features, size",
    [
        ((4, 8), (6, 10, 4)),
        ((4, 8, 16), (8, 12, 16)),
        ((4, 8, 16, 32), (16, 8, 24)),
    ],
)
@pytest.mark.parametrize("upsample", ["trilinear", "deconv"])
def test_output_shapes(features, size, upsample):
    model = UNet3D(in_channels=2, features=features, groups=2, upsample=upsample)
    out = model(torch.rand(2, 2, *size))
    factor = 2 ** (len(features) - 1)
    assert set(out) == {"global", "local"}
    assert out["local"].shape == (2, features[0], *size)
    assert out["global"].shape == (2, features[-1], *(s // factor for s in size))
    assert model.local_channels == features[0]
    assert model.global_channels == features[-1]


@pytest.mark.parametrize(
    "features, size",
    [((4, 8), (15, 16, 16)), ((4, 8, 16), (16, 16, 6)), ((4, 8, 16, 32), (16, 12, 16))],
)
def test_indivisible_sizes_rejected(features, size):
    model = UNet3D(features=features, groups=2)
    with pytest.raises(ValueError, match="divisible"):
        model(torch.rand(1, 1, *size))


def test_wrong_rank_and_channels_rejected():
    model = UNet3D(in_channels=1, features=(4, 8), groups=2)
    with pytest.raises(ValueError, match="channels"):
        model(torch.rand(1, 2, 8, 8, 8))
    with pytest.raises(ValueError, match="shape"):
        model(torch.rand(1, 8, 8, 8))


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"features": (8,)}, "features"),
        ({"features": ()}, "features"),
        ({"features": (8, 0)}, "features"),
        ({"features": (8, 16.0)}, "features"),
        ({"features": (6, 12), "groups": 4}, "groups=4"),
        ({"groups": 0}, "groups"),
        ({"in_channels": 0}, "in_channels"),
        ({"negative_slope": -0.1}, "negative_slope"),
        ({"dropout": 1.0}, "dropout"),
        ({"upsample": "nearest"}, "upsample"),
    ],
)
def test_invalid_arguments(kwargs, word):
    args = {"features": (4, 8), "groups": 2, **kwargs}
    with pytest.raises(ValueError, match=word):
        UNet3D(**args)


def test_group_count_uses_min_of_groups_and_channels():
    assert group_count(4, 8) == 4
    assert group_count(16, 8) == 8
    with pytest.raises(ValueError, match="channels=12"):
        group_count(12, 8)
    model = UNet3D(features=(2, 4, 16), groups=8)
    found = sorted({m.num_groups for m in model.modules() if isinstance(m, nn.GroupNorm)})
    assert found == [2, 4, 8]


@pytest.mark.parametrize("features", [(4, 8), (4, 8, 16), (4, 8, 16, 32)])
def test_groupnorm_everywhere_and_no_batchnorm(features):
    model = UNet3D(features=features, groups=2)
    modules = list(model.modules())
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in modules)
    assert not any(isinstance(m, nn.modules.instancenorm._InstanceNorm) for m in modules)
    levels = len(features)
    # two conv groups per encoder level and per decoder level
    n_conv3 = sum(isinstance(m, nn.Conv3d) and m.kernel_size == (3, 3, 3) for m in modules)
    n_gn = sum(isinstance(m, nn.GroupNorm) for m in modules)
    assert n_conv3 == n_gn == 2 * levels + 2 * (levels - 1)
    slopes = {m.negative_slope for m in modules if isinstance(m, nn.LeakyReLU)}
    assert slopes == {0.2}


@pytest.mark.parametrize("features", [[4, 8], [4, 8, 16, 32], [8, 12, 24]])
@pytest.mark.parametrize("upsample", ["trilinear", "deconv"])
def test_parameter_count_matches_the_specification(features, upsample):
    model = UNet3D(in_channels=1, features=features, groups=4, upsample=upsample)
    n = sum(p.numel() for p in model.parameters())
    assert n == _expected_parameters(1, features, deconv=upsample == "deconv")


def test_published_size_parameter_count():
    # GVSL's backbone 32-64-128-256-512 with trilinear up-sampling.
    n = sum(p.numel() for p in UNet3D().parameters())
    assert n == _expected_parameters(1, [32, 64, 128, 256, 512]) == 23_538_144


@pytest.mark.parametrize("upsample", ["trilinear", "deconv"])
def test_gradients_reach_every_parameter(upsample):
    torch.manual_seed(0)
    model = UNet3D(features=(4, 8, 16), groups=2, upsample=upsample)
    out = model(torch.rand(2, 1, 8, 8, 8))
    loss = out["local"].pow(2).mean() + out["global"].pow(2).mean()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name


def test_global_feature_is_the_bottleneck():
    """f^g depends on the encoder only: a loss on it leaves the decoder without gradient."""
    model = UNet3D(features=(4, 8, 16), groups=2)
    model(torch.rand(2, 1, 8, 8, 8))["global"].pow(2).mean().backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None) == name.startswith("encoder."), name


def test_samples_in_a_batch_are_independent():
    """GroupNorm (unlike BatchNorm) normalises each sample alone."""
    torch.manual_seed(0)
    model = UNet3D(features=(4, 8), groups=2)
    x = torch.rand(2, 1, 8, 8, 8)
    both = model(x)["local"]
    alone = model(x[1:])["local"]
    torch.testing.assert_close(both[1:], alone, rtol=1e-4, atol=1e-4)


def test_config_is_json_and_rebuilds_the_architecture():
    model = UNet3D(in_channels=2, features=[4, 8, 16], groups=2, negative_slope=0.1, dropout=0.1, upsample="deconv")
    config = json.loads(json.dumps(model.config))
    assert config == {
        "in_channels": 2,
        "features": [4, 8, 16],
        "groups": 2,
        "negative_slope": 0.1,
        "dropout": 0.1,
        "upsample": "deconv",
    }
    clone = UNet3D(**config)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert {k: v.shape for k, v in clone.state_dict().items()} == shapes
    assert sum(isinstance(m, nn.Dropout3d) or isinstance(m, nn.Dropout) for m in clone.modules()) > 0


def test_params_yaml_backbone_builds():
    from medssl import registry

    cls = registry.resolve("backbone", "unet3d")
    model = cls(**{"in_channels": 1, "features": [8, 16, 32, 64], "groups": 4})
    out = model(torch.rand(1, 1, 8, 8, 8))
    assert out["local"].shape == (1, 8, 8, 8, 8)
    assert out["global"].shape == (1, 64, 1, 1, 1)
