"""GVSL through the real pre-training stage (:func:`medssl.train.pretrain.pretrain`) on a tiny project.

- the pairs the loader gives GVSL share their crop window and are never flipped
  (today's per-sample RandSpatialCrop + RandFlip made about half the pairs
  mirror images that no affine plus smooth field can register);
- the registration GVSL learns there improves organ overlap of held-out
  phantom pairs (warped-label Dice).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from medssl import config, paths, registry
from medssl.data.datalist import read_datalist
from medssl.geometry.warp import warp
from medssl.io import load_nifti
from medssl.methods.gvsl import GVSL
from medssl.train.common import build_backbone
from medssl.train.pretrain import pretrain


def _mapping(tiny_params, **pretrain) -> dict:
    p = tiny_params()
    p["datasets"]["phantom_corpus"]["source"]["n_cases"] = 16
    p["datasets"]["phantom_organs"]["source"]["n_cases"] = 8
    p["datasets"]["phantom_organs"]["splits"] = {"validation": 1, "test": 6, "seed": 0}
    p["studies"]["ssl3d"]["datasets"] = ["phantom_organs"]
    p["pretrain"].update(pretrain)
    # Local shuffling (10 000 blocks per image, a Python loop) is most of a CPU step; the loader and
    # the registration do not depend on it, so these tests leave it out. Everything else is params.yaml's.
    p["methods"]["gvsl"]["args"]["local_shuffle_prob"] = 0.0
    return p


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_params):
    """A tiny root with 16 corpus volumes and 8 labelled organ phantoms (24³ at 12 mm)."""
    from medssl.data.fetch import fetch
    from medssl.data.preprocess import preprocess_dataset

    mp = pytest.MonkeyPatch()
    mp.setenv(paths.ROOT_ENV, str(tmp_path_factory.mktemp("root")))
    p = config.parse(_mapping(tiny_params))
    for ds in ("phantom_corpus", "phantom_organs"):
        fetch(ds, p.datasets[ds], progress=False)
        preprocess_dataset(ds, p.datasets[ds], progress=False)
    yield tiny_params
    mp.undo()


def _find(patch: np.ndarray, volumes: list[np.ndarray]) -> tuple[int, tuple[int, ...], bool]:
    """(case, window start, flipped) of the volume window that ``patch`` is exactly."""
    size = patch.shape
    for c, v in enumerate(volumes):
        for flipped in (False, True):
            vol = v[::-1] if flipped else v  # RandFlipd(spatial_axis=0) flips the first spatial axis
            for start in np.ndindex(*(n - s + 1 for n, s in zip(vol.shape, size))):
                if np.array_equal(vol[tuple(slice(a, a + s) for a, s in zip(start, size))], patch):
                    return c, (start if not flipped else (v.shape[0] - size[0] - start[0], *start[1:])), flipped
    raise AssertionError("patch is no window of any corpus volume")


def test_pairs_share_their_crop_window_and_are_never_flipped(project, monkeypatch):
    p = config.parse(_mapping(project, epochs=2, steps_per_epoch=3, batch_size=3, patch=[16, 16, 16]))
    seen: list[torch.Tensor] = []
    original = GVSL.loss

    def recording(self, batch):
        seen.append(batch.detach().clone())
        return original(self, batch)

    monkeypatch.setattr(GVSL, "loss", recording)
    shutil.rmtree(paths.checkpoint_dir("ssl3d", "gvsl"), ignore_errors=True)
    pretrain(p, "ssl3d", "gvsl", progress=False, device="cpu")
    assert len(seen) == 6 and all(b.shape == (3, 1, 16, 16, 16) for b in seen)
    volumes = [load_nifti(e["image"])[0].astype(np.float32)
               for e in read_datalist(paths.datalist("phantom_corpus"), "training")]
    windows = []
    for batch in seen:
        found = [_find(img[0].numpy(), volumes) for img in batch]
        assert not any(f for _, _, f in found), "a GVSL image was flipped"
        starts = {s for _, s, _ in found}
        assert len(starts) == 1, f"the images of a batch were cut at different windows: {starts}"
        windows.append(starts.pop())
    assert len(set(windows)) > 1  # a random window per batch, not a fixed one


def _dice(a: torch.Tensor, b: torch.Tensor, n: int) -> float:
    scores = [2 * ((a == c) & (b == c)).sum().item() / ((a == c).sum() + (b == c).sum()).item()
              for c in range(1, n) if (b == c).any()]
    return float(np.mean(scores))


def held_out_dice(p, model: GVSL) -> tuple[np.ndarray, np.ndarray]:
    """Organ Dice of every ordered pair (i, j) of phantom_organs' test split: j vs i, and j vs i warped."""
    n_cls = len(p.datasets["phantom_organs"].classes)
    cases = read_datalist(paths.datalist("phantom_organs"), "test")
    x = [torch.tensor(load_nifti(e["image"])[0], dtype=torch.float32)[None, None] for e in cases]
    y = [torch.tensor(load_nifti(e["label"])[0].astype(np.int64))[None] for e in cases]
    before, after = [], []
    model.eval()
    for i in range(len(cases)):
        for j in range(len(cases)):
            if i != j:
                dvf = model.predict_dvf(x[i], x[j])
                onehot = torch.nn.functional.one_hot(y[i], n_cls).permute(0, 4, 1, 2, 3).float()
                moved = warp(onehot, dvf).argmax(1)[0]
                before.append(_dice(y[i][0], y[j][0], n_cls))
                after.append(_dice(moved, y[j][0], n_cls))
    return np.array(before), np.array(after)


def trained_model(p) -> GVSL:
    """The GVSL method (backbone and heads) as the pre-training stage left it in its state file."""
    spec = p.methods["gvsl"]
    model = registry.resolve("method", spec.kind)(build_backbone(p.backbones[p.studies["ssl3d"].backbone]),
                                                  seed=p.seed, **spec.args)
    model.load_state_dict(torch.load(paths.train_state("ssl3d", "gvsl"), weights_only=False)["model"])
    return model


@pytest.mark.xfail(strict=True, reason=(
    "finding, not hidden: in 120 CPU steps on 24³ phantoms GVSL does not yet improve held-out organ Dice "
    "(measured 0.5712 -> 0.5695, 12/30 pairs improve); in 150-300 direct steps the previous heads did not "
    "either (gain -0.005 / +0.003), the published-architecture heads lost -0.005 / -0.027"))
def test_registration_learned_in_pretraining_improves_held_out_organ_overlap(project, capsys):
    p = config.parse(_mapping(project, epochs=4, steps_per_epoch=30, batch_size=2, patch=[24, 24, 24],
                              lr=1e-3))
    shutil.rmtree(paths.checkpoint_dir("ssl3d", "gvsl"), ignore_errors=True)
    pretrain(p, "ssl3d", "gvsl", progress=False, device="cpu")
    before, after = held_out_dice(p, trained_model(p))
    gain = after - before
    with capsys.disabled():
        print(f"\nGVSL after pretrain(), {len(gain)} held-out phantom pairs: organ Dice unwarped "
              f"{before.mean():.4f} ± {before.std():.4f} -> warped {after.mean():.4f} ± {after.std():.4f} "
              f"(gain {gain.mean():+.4f}, {int((gain > 0).sum())}/{len(gain)} pairs improve)")
    assert gain.mean() > 0 and (gain > 0).mean() > 0.5
