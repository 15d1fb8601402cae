"""Tests of the task heads (medssl.nn.heads) against their definitions."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from medssl.nn.heads import ClassificationHead, RestorationHead, SegmentationHead
from medssl.nn.unet3d import UNet3D

torch.set_num_threads(1)


def test_segmentation_head_is_a_voxelwise_linear_map():
    torch.manual_seed(0)
    head = SegmentationHead(4, 3)
    f = torch.randn(2, 4, 3, 5, 2)
    w = head.conv.weight.reshape(3, 4)
    expected = torch.einsum("kc,bcdhw->bkdhw", w, f) + head.conv.bias.reshape(1, 3, 1, 1, 1)
    out = head(f)
    assert out.shape == (2, 3, 3, 5, 2)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(head({"local": f, "global": torch.zeros(2, 9, 1, 1, 1)}), expected)


def test_classification_head_is_linear_on_the_spatial_mean():
    torch.manual_seed(0)
    head = ClassificationHead(6, 2)
    f = torch.randn(3, 6, 2, 3, 4)
    expected = f.mean(dim=(2, 3, 4)) @ head.linear.weight.T + head.linear.bias
    out = head(f)
    assert out.shape == (3, 2)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(head({"global": f, "local": torch.zeros(3, 1, 8, 8, 8)}), expected)


def test_restoration_head_structure_and_shape():
    head = RestorationHead(8, out_channels=2, groups=4)
    convs = [m for m in head.modules() if isinstance(m, nn.Conv3d)]
    assert [c.kernel_size for c in convs] == [(3, 3, 3), (1, 1, 1)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(8, 8), (8, 2)]
    norms = [m for m in head.modules() if isinstance(m, nn.GroupNorm)]
    assert len(norms) == 1 and norms[0].num_groups == 4
    assert [m.negative_slope for m in head.modules() if isinstance(m, nn.LeakyReLU)] == [0.2]
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in head.modules())
    assert head(torch.rand(2, 8, 4, 6, 2)).shape == (2, 2, 4, 6, 2)


@pytest.mark.parametrize(
    "head, config",
    [
        (SegmentationHead(4, 3), {"in_channels": 4, "n_classes": 3}),
        (ClassificationHead(16, 1), {"in_channels": 16, "n_classes": 1}),
        (RestorationHead(8), {"in_channels": 8, "out_channels": 1, "groups": 8, "negative_slope": 0.2}),
    ],
)
def test_config_rebuilds(head, config):
    assert json.loads(json.dumps(head.config)) == config
    clone = type(head)(**head.config)
    assert {k: v.shape for k, v in clone.state_dict().items()} == {k: v.shape for k, v in head.state_dict().items()}


@pytest.mark.parametrize(
    "build, word",
    [
        (lambda: SegmentationHead(0, 2), "in_channels"),
        (lambda: SegmentationHead(4, 0), "n_classes"),
        (lambda: ClassificationHead(4, 1.5), "n_classes"),
        (lambda: RestorationHead(6, groups=4), "groups=4"),
        (lambda: RestorationHead(8, out_channels=0), "out_channels"),
    ],
)
def test_invalid_arguments(build, word):
    with pytest.raises(ValueError, match=word):
        build()


def test_wrong_feature_channels_rejected():
    with pytest.raises(ValueError, match="shape"):
        SegmentationHead(4, 2)(torch.rand(1, 5, 2, 2, 2))
    with pytest.raises(ValueError, match="shape"):
        ClassificationHead(4, 2)(torch.rand(1, 4, 2))


def test_heads_on_the_backbone_train_it_end_to_end():
    torch.manual_seed(0)
    backbone = UNet3D(features=(4, 8, 16), groups=2)
    seg = SegmentationHead(backbone.local_channels, 3)
    cls = ClassificationHead(backbone.global_channels, 1)
    res = RestorationHead(backbone.local_channels, 1, groups=2)
    x = torch.rand(2, 1, 8, 8, 8)
    feats = backbone(x)
    logits, score, restored = seg(feats), cls(feats), res(feats)
    assert logits.shape == (2, 3, 8, 8, 8)
    assert score.shape == (2, 1)
    assert restored.shape == x.shape
    loss = logits.pow(2).mean() + score.pow(2).mean() + (restored - x).pow(2).mean()
    loss.backward()
    for module in (backbone, seg, cls, res):
        for name, p in module.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name
