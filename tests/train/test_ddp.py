"""Data-parallel pre-training: ``torchrun --nproc_per_node 2`` (gloo, CPU) against one process.

Both runs train 3 steps on global batches of 4 tiny 16³ phantom patches
(each DDP rank trains on 2 of them). Tolerance: every weight, buffer (S2DC's
teacher and queue) and the logged loss agree to ``ATOL = 1e-5`` (weights move
by ~3e-3 in these 3 Adam steps at lr 1e-3). Not bit-identical, because DDP
averages the two ranks' gradients of their half-batch means, while one
process differentiates the mean of the whole batch: the same sum in another
order, ~1e-7 apart, which Adam's normalised step carries into the weights.

One exception, stated and bounded: a conv bias followed directly by a
GroupNorm (MONAI ``Convolution`` with a group norm) has a zero gradient in
exact arithmetic (the norm subtracts every per-group constant), so its
computed gradient is rounding noise and Adam turns noise of either sign into
a step of about ±lr. Those biases are only held to Adam's bound
``2 · lr · steps`` (they do not change any output).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml
from torch import nn

from medssl import config, paths, registry
from medssl.methods.base import PretrainMethod
from medssl.train import distributed
from medssl.train.common import build_backbone, setup
from medssl.train.pretrain import pretrain

ATOL = 1e-5
STEPS, BATCH = 3, 4


@pytest.fixture(scope="module")
def corpus(tiny_root, tiny_params, tmp_path_factory):
    tiny_root("phantom_corpus")
    mapping = tiny_params()
    mapping["pretrain"].update(epochs=1, steps_per_epoch=STEPS, batch_size=BATCH, checkpoint_every=0)
    path = tmp_path_factory.mktemp("params") / "params.yaml"
    path.write_text(yaml.safe_dump(mapping))
    return config.parse(mapping), path


def _zero_gradient_biases(model: nn.Module) -> set[str]:
    """Names of conv biases that feed a GroupNorm / InstanceNorm directly (zero exact gradient)."""
    out = set()
    for name, mod in model.named_modules():
        conv, adn = getattr(mod, "conv", None), getattr(mod, "adn", None)
        norm = getattr(adn, "N", None) if adn is not None else None
        if isinstance(conv, nn.Conv3d) and conv.bias is not None and isinstance(norm, (nn.GroupNorm, nn.InstanceNorm3d)):
            out.add(f"{name}.conv.bias" if name else "conv.bias")
    return out


def _initial(p, method: str) -> dict[str, torch.Tensor]:
    """The method's weights before training, built as pretrain() builds them."""
    cfg = p.method_pretrain(method)
    setup(p.seed, cfg.num_threads)
    spec = p.methods[method]
    return registry.resolve("method", spec.kind)(build_backbone(p.backbones[p.studies["ssl3d"].backbone]),
                                                 seed=p.seed, **spec.args)


@pytest.mark.parametrize("method", ["gvsl", "genesis", "s2dc"])
def test_torchrun_two_ranks_match_one_process(corpus, method):
    p, params_file = corpus
    shutil.rmtree(paths.checkpoint_dir("ssl3d", method), ignore_errors=True)
    single = pretrain(p, "ssl3d", method, progress=False)
    ref = torch.load(paths.train_state("ssl3d", method), weights_only=False)
    shutil.rmtree(paths.checkpoint_dir("ssl3d", method))

    env = {**os.environ, "MEDSSL_TRACKING": "off", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "medssl.cli", "pretrain", "--params", str(params_file), "--device", "cpu", "ssl3d", method]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "rank 0 of 2" in done.stderr and "backend gloo" in done.stderr
    got = torch.load(paths.train_state("ssl3d", method), weights_only=False)
    assert got["world_size"] == 2 and got["global_step"] == STEPS and paths.backbone_weights("ssl3d", method).is_file()
    assert got["history"][0]["loss"] == pytest.approx(single["history"][0]["loss"], rel=1e-6, abs=ATOL)

    model = _initial(p, method)
    init = model.state_dict()
    loose = _zero_gradient_biases(model)
    lr = p.method_pretrain(method).lr
    moved = 0.0
    for k, v in ref["model"].items():
        if not isinstance(v, torch.Tensor) or not v.is_floating_point():
            assert _equal(v, got["model"][k]), k  # queue pointer / count, generator states
            continue
        diff = float((v - got["model"][k]).abs().max())
        bound = 2 * lr * STEPS if k in loose else ATOL
        assert diff <= bound, f"{k}: max |single - ddp| = {diff:.3g} > {bound:.3g}"
        if k in init and init[k].is_floating_point():
            moved = max(moved, float((v - init[k]).abs().max()))
    assert moved > 100 * ATOL  # the weights did move: the comparison is not vacuous
    shutil.rmtree(paths.checkpoint_dir("ssl3d", method))


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return bool(a == b) if not hasattr(a, "shape") else bool((a == b).all())


def test_local_slices_and_rejects_uneven_batches():
    m = PretrainMethod(nn.Identity())
    x = torch.arange(6).view(6, 1)
    assert m.local(x) is x
    m.set_data_parallel(1, 3)
    assert torch.equal(m.local(x), torch.tensor([[2], [3]]))
    with pytest.raises(ValueError, match="does not split over 3"):
        m.local(x[:4])
    with pytest.raises(ValueError, match="rank must be in"):
        m.set_data_parallel(3, 3)


@pytest.mark.parametrize("kind", ["gvsl", "genesis"])
def test_ranks_train_on_their_slice_and_average_to_the_global_loss(kind):
    """Two simulated ranks (same random streams, no process group): the backbone sees half the batch,
    and the mean of the two slice losses and gradients is the global-batch loss and gradient."""
    from medssl.nn.unet3d import UNet3D

    def build():
        torch.manual_seed(0)
        return registry.resolve("method", kind)(UNet3D(in_channels=1, features=(4, 8, 16), groups=2), seed=3)

    x = torch.rand(4, 1, 16, 16, 16, generator=torch.Generator().manual_seed(1))
    single = build()
    loss, _ = single(x)
    loss.backward()
    losses, grads = [], []
    for rank in range(2):
        m = build()
        m.set_data_parallel(rank, 2)
        seen = []
        m.backbone.register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape[0]))
        part, _ = m(x)
        part.backward()
        assert seen and set(seen) == {2}, seen
        losses.append(float(part.detach()))
        grads.append({k: p.grad for k, p in m.named_parameters()})
    assert sum(losses) / 2 == pytest.approx(float(loss.detach()), rel=1e-5)
    for k, p in single.named_parameters():
        if p.grad is None:  # not trained (e.g. GVSL's fixed Gaussian pre-smoothing)
            assert grads[0][k] is None and grads[1][k] is None, k
            continue
        assert torch.allclose((grads[0][k] + grads[1][k]) / 2, p.grad, rtol=1e-4, atol=1e-6), k


def test_single_process_needs_no_process_group(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert distributed.env_world() == (0, 1, 0)
    d = distributed.init(torch.device("cpu"))
    assert not d.enabled and d.is_main
    assert distributed.wrap(nn.Linear(1, 1), d, torch.device("cpu")).__class__ is nn.Linear
    assert distributed.reduce_step(d, torch.tensor(2.5), True) == (2.5, True)


def test_device_choice(monkeypatch):
    monkeypatch.setenv(distributed.DEVICE_ENV, "cpu")
    assert distributed.resolve_device() == torch.device("cpu")
    assert distributed.resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        monkeypatch.delenv(distributed.DEVICE_ENV)
        assert distributed.resolve_device() == torch.device("cpu")
        with pytest.raises(ValueError, match="CUDA is not available"):
            distributed.resolve_device("cuda")
