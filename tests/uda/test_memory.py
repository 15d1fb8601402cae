"""CPMC memory bank: the supplement's replacement rule and the prototype on a hand case."""

from __future__ import annotations

import math

import pytest
import torch

from medssl.uda.memory import PrototypeMemory


def _unit(*v):
    t = torch.tensor(v, dtype=torch.float32)
    return t / t.norm()


def test_fill_then_replace_the_sample_least_similar_to_the_prototype():
    mem = PrototypeMemory(n_classes=2, dim=2, n_scales=1, size=3)
    v1, v2, v3 = _unit(1.0, 0.0), _unit(0.8, 0.6), _unit(0.0, 1.0)
    assert mem.push(0, 1, torch.stack([v1, v2, v3])) == [0, 1, 2]  # filling: next free slots
    proto = mem.prototype(0)[0][1]
    expected = torch.tensor([1.8, 1.6]) / math.hypot(1.8, 1.6)  # normalised mean of v1, v2, v3
    assert torch.allclose(proto, expected, atol=1e-6)
    # cosines to the prototype: v1 0.747, v2 0.997, v3 0.664 -> slot 2 (v3) goes, whatever v4 is
    v4 = _unit(0.6, 0.8)
    assert mem.push(0, 1, v4[None]) == [2]
    assert torch.allclose(mem.samples[0, 1], torch.stack([v1, v2, v4]))
    assert torch.allclose(mem.prototype(0)[0][1], torch.tensor([2.4, 1.4]) / math.hypot(2.4, 1.4), atol=1e-6)
    # now: v1 0.864, v2 0.993, v4 0.921 -> slot 0; a second sample in the same call uses the updated prototype
    v5, v6 = _unit(0.0, 1.0), _unit(1.0, 1.0)
    slots = mem.push(0, 1, torch.stack([v5, v6]))
    # after v5 replaces v1: bank v5, v2, v4, prototype ~ (1.4, 2.4): cosines 0.864, 0.921, 0.993 -> slot 0 again
    assert slots == [0, 0]
    assert int(mem.count[0, 1]) == 3 and int(mem.count[0, 0]) == 0


def test_inputs_are_normalised_and_stored_lists_every_class():
    mem = PrototypeMemory(n_classes=3, dim=2, n_scales=2, size=4)
    mem.push(1, 0, torch.tensor([[3.0, 4.0]]))
    mem.push(1, 2, torch.tensor([[0.0, 2.0], [0.0, -5.0]]))
    feats, labels = mem.stored(1)
    assert torch.allclose(feats, torch.tensor([[0.6, 0.8], [0.0, 1.0], [0.0, -1.0]]))
    assert labels.tolist() == [0, 2, 2]
    protos, valid = mem.prototype(1)
    assert valid.tolist() == [True, False, True]
    assert torch.allclose(protos[0], torch.tensor([0.6, 0.8]))
    assert torch.allclose(protos[2], torch.zeros(2))  # opposite samples: the mean vanishes
    assert mem.stored(0)[0].shape == (0, 2)  # the other scale is untouched
    assert not mem.samples.requires_grad


def test_bank_is_saved_with_the_state_dict_and_checks_arguments():
    mem = PrototypeMemory(2, 3, 3, 50)
    assert {"samples", "count", "prototypes"} <= set(mem.state_dict())
    assert mem.samples.shape == (3, 2, 50, 3)
    with pytest.raises(ValueError, match="scale must be in 0..2"):
        mem.push(3, 0, torch.ones(1, 3))
    with pytest.raises(ValueError, match="cls must be in 0..1"):
        mem.push(0, 2, torch.ones(1, 3))
    with pytest.raises(ValueError, match=r"feats must be \(k, 3\)"):
        mem.push(0, 0, torch.ones(1, 2))
    with pytest.raises(ValueError, match="size must be an int >= 1"):
        PrototypeMemory(2, 3, 3, 0)
