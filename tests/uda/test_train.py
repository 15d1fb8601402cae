"""Training smoke on the cardiac phantoms: the loss falls; seeds reproduce; inputs are checked."""

from __future__ import annotations

import pytest
import torch

from medssl.data.cardiac import CLASSES
from medssl.uda import build, evaluate, fit, phantom_slices

SHAPE, SPACING = (64, 64, 4), (2.25, 2.25, 10.0)
FEATURES = (4, 8, 16, 16, 32)


@pytest.fixture(scope="module")
def domains():
    return (phantom_slices("bssfp", 2, SHAPE, SPACING, seed=0),
            phantom_slices("lge", 2, SHAPE, SPACING, seed=0))


def test_cmevae_loss_decreases_and_uses_every_term(domains):
    src, tgt = domains
    model = build("cmevae", 4, features=FEATURES, embed_dim=8, seed=0, loss={"warmup": 0.5, "pseudo_threshold": 0.5})
    hist = fit(model, src.x, src.y, tgt.x, epochs=10, steps_per_epoch=4, batch_size=4, lr=3e-3, seed=0)
    assert [h["epoch"] for h in hist] == list(range(1, 11))
    assert hist[-1]["loss"] < 0.8 * hist[0]["loss"]
    assert hist[-1]["seg"] < hist[0]["seg"] and hist[-1]["recon"] < hist[0]["recon"]
    assert all(h["kl"] > 0 and h["contrast"] > 0 and h["margin"] > 0 for h in hist[1:])
    assert int(model.memory.count.min()) > 0  # every class at every scale has samples
    res = evaluate(model, tgt.x, tgt.y, CLASSES, tgt.spacing, tgt.groups)
    assert res["mode"] == "3d" and res["n_cases"] == 2
    assert 0.0 <= res["dice"] <= 1.0


def test_source_only_learns_the_source_and_is_reproducible(domains):
    src, _ = domains
    runs = []
    for _ in range(2):
        model = build("source_only", 4, features=FEATURES, seed=1)
        runs.append(fit(model, src.x, src.y, epochs=8, steps_per_epoch=4, batch_size=4, lr=3e-3, seed=2))
    assert runs[0][-1]["seg"] < 0.7 * runs[0][0]["seg"]
    assert [h["loss"] for h in runs[0]] == [h["loss"] for h in runs[1]]
    assert runs[0][-1]["kl"] == runs[0][-1]["recon"] == 0.0


def test_fit_checks_its_inputs(domains):
    src, tgt = domains
    vae = build("vae", 4, features=FEATURES)
    with pytest.raises(ValueError, match="needs target_x"):
        fit(vae, src.x, src.y, None, epochs=1)
    with pytest.raises(ValueError, match="target_x must be"):
        fit(vae, src.x, src.y, tgt.x[:, :, :32], epochs=1)
    with pytest.raises(ValueError, match="source_y must be torch.long"):
        fit(vae, src.x, src.y.float(), tgt.x, epochs=1)
    with pytest.raises(ValueError, match="epochs must be a positive int"):
        fit(vae, src.x, src.y, tgt.x, epochs=0)
    with pytest.raises(ValueError, match="lr must be a positive"):
        fit(vae, src.x, src.y, tgt.x, epochs=1, lr=0.0)
    with pytest.raises(ValueError, match=r"source_y values must lie in \[0, 2\]"):
        fit(build("source_only", 3, features=FEATURES), src.x, src.y, epochs=1)
    with pytest.raises(ValueError, match="must be a CMEVAENet"):
        fit(torch.nn.Linear(2, 2), src.x, src.y, tgt.x)
