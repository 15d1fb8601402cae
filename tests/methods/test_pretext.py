"""The pretext scores (medssl.methods.pretext) against closed forms and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import dice as dice_dissimilarity
from torch import nn

from medssl.methods.pretext import PRETEXT_SEED, match_accuracy, restoration_psnr, warped_label_dice
from medssl.methods.s2dc import S2DC
from medssl.nn.unet3d import UNet3D
from medssl.transforms.genesis import GenesisDamage


class _Offset(nn.Module):
    """A 'backbone' whose local map is the logit of the damaged input plus ``shift``."""

    def __init__(self, target: torch.Tensor, shift: float) -> None:
        super().__init__()
        self.target, self.shift = target, shift

    def forward(self, x):
        return {"local": torch.logit(self.target + self.shift)}


def test_restoration_psnr_closed_form_and_damage_baseline():
    x = torch.rand(3, 1, 8, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.25
    damage = GenesisDamage(local_shuffle_prob=0.0)
    damage.set_random_state(5)
    got = restoration_psnr(_Offset(x, 0.1), nn.Identity(), damage, x)
    # every voxel restored 0.1 off: PSNR = 10 log10(1 / 0.01) = 20 dB
    assert got.values == pytest.approx([20.0] * 3, abs=1e-3) and got.unit == "dB"
    # the baseline is the damaged input's PSNR, damaged with the pretext seed (the method's own stream untouched)
    ref = GenesisDamage(local_shuffle_prob=0.0)
    ref.set_random_state(PRETEXT_SEED)
    damaged = ref.batch(x).numpy()
    mse = ((damaged - x.numpy()) ** 2).reshape(3, -1).mean(1)
    assert got.baseline_values == pytest.approx(10 * np.log10(1 / mse), rel=1e-4)
    again = restoration_psnr(_Offset(x, 0.1), nn.Identity(), damage, x)
    assert np.array_equal(again.baseline_values, got.baseline_values)  # the same draws every time
    fresh = GenesisDamage(local_shuffle_prob=0.0)
    fresh.set_random_state(5)
    assert torch.equal(damage.batch(x), fresh.batch(x))  # the method's own damage stream was not advanced


def _boxes() -> tuple[torch.Tensor, torch.Tensor]:
    """Two label maps: one box of class 1, the second shifted by 2 voxels along axis 0, and a fixed class 2."""
    labels = torch.zeros(2, 16, 16, 16, dtype=torch.int64)
    labels[0, 4:10, 4:12, 4:12] = 1
    labels[1, 6:12, 4:12, 4:12] = 1
    labels[:, 12:15, 12:15, 12:15] = 2
    return labels.float()[:, None], labels


def _scipy_dice(a: np.ndarray, b: np.ndarray, classes=(1, 2)) -> float:
    return float(np.mean([1 - dice_dissimilarity((a == c).ravel(), (b == c).ravel()) for c in classes]))


def test_warped_label_dice_identity_and_known_shift():
    images, labels = _boxes()
    lab = labels.numpy()
    unwarped_01 = _scipy_dice(lab[0], lab[1])  # class 1: 4 of 6 slices overlap (2/3), class 2: 1
    assert unwarped_01 == pytest.approx((2 / 3 + 1) / 2)

    zero = warped_label_dice(lambda a, b: torch.zeros(a.shape[0], 3, *a.shape[2:]), images, labels, 3)
    assert zero.over == "pairs" and len(zero.values) == 2  # ordered pairs (0, 1) and (1, 0)
    assert zero.values == pytest.approx(zero.baseline_values)
    assert zero.baseline_values == pytest.approx([unwarped_01, _scipy_dice(lab[1], lab[0])])

    def shift_class1(a, b):
        # warp samples the moving image at p + u: case 0 moved onto case 1 needs u = -2 along axis 0 where
        # class 1 is, and 0 at class 2 (which does not move); case 1 onto case 0 the opposite
        u = torch.zeros(a.shape[0], 3, *a.shape[2:])
        sign = torch.tensor([-2.0 if x[0, 5, 8, 8] > 0 else 2.0 for x in a])  # case 0 has its box at slice 5
        u[:, 0, :, :12, :12] = sign.view(-1, 1, 1, 1)
        return u

    got = warped_label_dice(shift_class1, images, labels, 3)
    assert got.values == pytest.approx([1.0, 1.0])
    assert warped_label_dice(shift_class1, images, None, 3) is None
    assert warped_label_dice(shift_class1, images[:1], labels[:1], 3) is None


def test_match_accuracy_perfect_and_chance_and_own_streams():
    m = S2DC(UNet3D(in_channels=1, features=[4, 8, 16], groups=2), seed=0, view=12, patch=4)
    x = torch.rand(3, 1, 16, 16, 16)
    seen = {}

    def views(images, generator):
        a, b, t = m.make_views(images, generator=generator)
        seen["target"] = t
        return a, b, t

    perfect = match_accuracy(views, lambda a, b: seen["target"], x)
    assert perfect.values == pytest.approx([1.0, 1.0, 1.0])
    wrong = match_accuracy(views, lambda a, b: torch.full_like(seen["target"], -5), x)
    assert wrong.values == pytest.approx([0.0, 0.0, 0.0])
    n_patches = (12 // 4) ** 3
    assert wrong.baseline == f"chance ({1 / n_patches:.3f})"

    before = m.generator.get_state().clone()
    m.eval()
    one = m.pretext_scores(x, None, 2)
    two = m.pretext_scores(x, None, 2)
    assert torch.equal(m.generator.get_state(), before)  # the training stream is not advanced
    assert np.array_equal(one.values, two.values) and all(0 <= v <= 1 for v in one.values)
    assert not math.isnan(float(one.values.mean()))
