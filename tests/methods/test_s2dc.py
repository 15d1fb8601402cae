"""S2DC: views and ground truth, gradients, teacher, D.2 dictionary and InfoNCE, size errors, learned matching."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medssl import registry
from medssl.config import SyntheticSource
from medssl.data import synthetic
from medssl.methods.s2dc import S2DC
from medssl.methods.s2dc_dictionary import dictionary_exclusions, info_nce
from medssl.nn.swin import SwinUNETRBackbone
from medssl.nn.unet3d import UNet3D


def _tiny(**kw) -> S2DC:
    torch.manual_seed(0)
    return S2DC(UNet3D(in_channels=1, features=[4, 8, 16], groups=2), seed=0, **kw)


def _grads(m: S2DC) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, p in m.named_parameters():
        if p.requires_grad:
            out[name.split(".")[0]] = out.get(name.split(".")[0], 0.0) + (
                float(p.grad.abs().sum()) if p.grad is not None else 0.0)
    return out


def test_registry_names():
    assert registry.resolve("method", "s2dc") is S2DC
    with pytest.raises(ValueError, match="unknown arguments"):
        _tiny(colour=3)


@pytest.mark.parametrize("operator", ["sinkhorn", "dual_softmax"])
def test_loss_is_finite_and_reaches_backbone_heads_and_dustbin(operator):
    m = _tiny(operator=operator, iterations=20)
    loss, parts = m.loss(torch.rand(2, 1, 32, 32, 32))
    assert torch.isfinite(loss)
    assert {"patch", "global", "match_acc"} <= set(parts)
    assert loss.item() == pytest.approx(0.5 * parts["patch"] + 0.5 * parts["global"], rel=1e-5)
    loss.backward()
    grads = _grads(m)
    assert grads["backbone"] > 0 and grads["patch_head"] > 0 and grads["global_head"] > 0
    if operator == "sinkhorn":
        assert m.matcher.bin_score.grad is not None and m.matcher.bin_score.grad.abs() > 0
    else:
        assert m.matcher.bin_score is None  # dustbin off by default for dual-softmax
    assert all(p.grad is None and not p.requires_grad for p in m.teacher.parameters())


def test_dual_softmax_operator_is_the_published_matching_confidence():
    """D.3: dual-softmax replaces the Sinkhorn plan as the matching operator (no dustbin); published code:
    ``softmax(sim, 1) * softmax(sim, 2)`` of the cosine similarities; medssl divides by lam (1 by default)."""
    m = _tiny(operator="dual_softmax", lam=0.5)
    g = torch.Generator().manual_seed(3)
    ta, tb = (F.normalize(torch.randn(2, 27, 128, generator=g), dim=-1) for _ in range(2))
    sim, log_assign = m.match(ta, tb)
    assert torch.allclose(sim, ta @ tb.transpose(1, 2), atol=1e-6)
    ref = torch.softmax(sim / 0.5, dim=1) * torch.softmax(sim / 0.5, dim=2)
    assert log_assign.shape == (2, 27, 27) and torch.allclose(log_assign.exp(), ref, atol=1e-6)


def test_matching_runs_in_float32_under_bf16_autocast():
    m = _tiny(iterations=10)
    t = torch.nn.functional.normalize(torch.randn(2, 27, 128), dim=-1).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        sim, log_assign = m.match(t, t)
        loss, _ = m.loss(torch.rand(2, 1, 32, 32, 32))
    assert sim.dtype == log_assign.dtype == torch.float32
    assert torch.isfinite(loss)


def test_each_term_reaches_its_parts():
    m = _tiny(w_global=0.0)
    m.loss(torch.rand(2, 1, 32, 32, 32))[0].backward()
    g = _grads(m)
    assert g["backbone"] > 0 and g["patch_head"] > 0 and g["global_head"] == 0
    m = _tiny(w_patch=0.0)
    m.loss(torch.rand(2, 1, 32, 32, 32))[0].backward()
    g = _grads(m)
    assert g["backbone"] > 0 and g["global_head"] > 0 and g["patch_head"] == 0


def test_views_and_ground_truth_agree_with_the_voxels():
    m = _tiny()
    x = torch.rand(3, 1, 32, 40, 32)
    a, b, target = m.make_views(x, generator=torch.Generator().manual_seed(0), augment=False)
    assert a.shape == b.shape == (3, 1, 24, 24, 24) and target.shape == (3, 27)
    pa = a.unfold(2, 8, 8).unfold(3, 8, 8).unfold(4, 8, 8).reshape(3, 27, -1)
    pb = b.unfold(2, 8, 8).unfold(3, 8, 8).unfold(4, 8, 8).reshape(3, 27, -1)
    for i in range(3):
        for n in range(27):
            same = [j for j in range(27) if torch.equal(pa[i, n], pb[i, j])]
            assert same == ([int(target[i, n])] if target[i, n] >= 0 else []), (i, n)
    assert (target >= 0).sum(1).min() >= 8  # views of 24 in 32 always share at least 2x2x2 patches
    # the offsets really vary
    views = {tuple(m.offsets((32, 40, 32))) for _ in range(50)}
    assert len(views) > 4 and all(o % 8 == 0 for v in views for o in v)


def test_queue_is_fifo_of_length_k():
    m = _tiny(queue_size=5, embed_dim=4)
    assert m.queue_keys().shape == (0, 4)
    keys = torch.arange(8 * 4, dtype=torch.float32).reshape(8, 4)
    m.enqueue(keys[:3])
    assert torch.equal(m.queue_keys(), keys[:3])
    m.enqueue(keys[3:7])
    assert torch.equal(m.queue_keys(), keys[2:7])  # 7 pushed, K = 5: the oldest two left
    m.enqueue(keys[7:])
    assert torch.equal(m.queue_keys(), keys[3:8])
    m.enqueue(torch.zeros(6, 4) + 100)  # more than K at once: the last K stay
    assert torch.equal(m.queue_keys(), torch.full((5, 4), 100.0))
    assert "dictionary.queue" in m.state_dict() and "dictionary.queue_ptr" in m.state_dict()
    other = _tiny(queue_size=5, embed_dim=4)
    other.load_state_dict(m.state_dict())
    assert torch.equal(other.queue_keys(), m.queue_keys())


def test_training_steps_fill_the_queue_with_teacher_keys():
    m = _tiny(queue_size=3)
    x = torch.rand(2, 1, 32, 32, 32)
    m.loss(x)
    assert m.queue_keys().shape[0] == 2
    m.loss(x)
    assert m.queue_keys().shape[0] == 3
    assert torch.allclose(m.queue_keys().norm(dim=1), torch.ones(3))
    m.eval()
    before = m.dictionary.queue.clone()
    m.loss(x)
    assert torch.equal(m.dictionary.queue, before)  # evaluation leaves teacher and queue alone


# ------------------------------------------------------------ D.2 dictionary and InfoNCE
def test_info_nce_closed_form_and_cross_entropy():
    """q = e1; keys e1 (positive), e2, -e1; queue -e2; tau 0.5: logits 2, 0, -2, 0."""
    q = torch.tensor([[1.0, 0.0]])
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    queue = torch.tensor([[0.0, -1.0]])
    pos = torch.tensor([0])
    full = -2 + math.log(math.exp(2) + 1 + math.exp(-2) + 1)
    assert float(info_nce(q, keys, pos, queue, 0.5)) == pytest.approx(full, rel=1e-6)
    no_e2 = -2 + math.log(math.exp(2) + math.exp(-2) + 1)  # key 1 left out of the dictionary
    excl = torch.tensor([[False, True, False]])
    assert float(info_nce(q, keys, pos, queue, 0.5, exclude=excl)) == pytest.approx(no_e2, rel=1e-6)
    assert float(info_nce(q, keys, pos, queue[:0], 0.5)) == pytest.approx(-2 + math.log(math.exp(2) + 1 + math.exp(-2)))
    # random case against torch's cross-entropy of the hand-built logits row, temperature included
    g = torch.Generator().manual_seed(0)
    q, keys, queue = (F.normalize(torch.randn(n, 8, generator=g), dim=1) for n in (5, 6, 4))
    pos = torch.tensor([3, 0, 5, 1, 2])
    ref = torch.stack([F.cross_entropy((torch.cat([keys, queue]) @ q[r])[None] / 0.2, pos[r:r + 1])
                       for r in range(5)]).mean()
    assert torch.allclose(info_nce(q, keys, pos, queue, 0.2), ref, atol=1e-6)
    with pytest.raises(ValueError, match="-1"):
        info_nce(q, keys, pos, queue, -1)
    with pytest.raises(ValueError, match="positive"):
        info_nce(q, keys, pos, queue, 0.2, exclude=torch.ones(5, 6, dtype=torch.bool))


def _reference_global(q, k, queue, duplicate, tau):
    """D.2 by hand: query r (sub-volume r of 2n) has positive k[r], negatives every other key of the batch
    (the other sub-volume of its volume unless the two coincide) and the whole queue."""
    n = k.shape[0] // 2
    losses = []
    for r in range(2 * n):
        partner = (r + n) % (2 * n)
        negatives = [j for j in range(2 * n) if j != r and not (j == partner and duplicate[r % n])]
        dictionary = torch.cat([k[[r] + negatives], queue])
        losses.append(-(q[r] @ k[r]) / tau + torch.logsumexp(dictionary @ q[r] / tau, 0))
    return torch.stack(losses).mean()


def test_global_loss_negatives_are_the_d2_set():
    g = torch.Generator().manual_seed(1)
    m = _tiny(temperature=0.7, embed_dim=8, queue_size=3)
    q, k = (F.normalize(torch.randn(6, 8, generator=g), dim=1) for _ in range(2))  # n = 3 volumes
    m.enqueue(F.normalize(torch.randn(2, 8, generator=g), dim=1))
    duplicate = torch.tensor([False, True, False])
    ref = _reference_global(q, k, m.queue_keys(), duplicate, 0.7)
    assert torch.allclose(m.global_loss(q, k, duplicate), ref, atol=1e-6)
    assert torch.equal(dictionary_exclusions(torch.arange(6), 3, duplicate),
                       torch.tensor([[j == (r + 3) % 6 and r % 3 == 1 for j in range(6)] for r in range(6)]))
    # a DDP rank's queries (rows) see the same dictionary as in one process
    rows = torch.tensor([1, 4])
    sub = torch.stack([-(q[r] @ k[r]) / 0.7 + torch.logsumexp(
        torch.cat([k[[r] + [j for j in range(6) if j != r and not (j == (r + 3) % 6 and duplicate[r % 3])]],
                   m.queue_keys()]) @ q[r] / 0.7, 0) for r in (1, 4)]).mean()
    assert torch.allclose(m.global_loss(q[rows], k, duplicate, rows=rows), sub, atol=1e-6)


def _capture(m: S2DC) -> dict:
    store: dict = {}
    m.global_head.register_forward_hook(lambda mod, i, o: store.__setitem__("q", F.normalize(o.detach(), dim=-1)))
    m.teacher["head"].register_forward_hook(lambda mod, i, o: store.__setitem__("k", F.normalize(o, dim=-1)))
    m.backbone.register_forward_hook(lambda mod, i, o: store.__setitem__("student_in", i[0].detach()))
    m.teacher["backbone"].register_forward_hook(lambda mod, i, o: store.__setitem__("teacher_in", i[0]))
    return store


def _same_crops(store: dict, n: int) -> torch.Tensor:
    """Whether the two student views of each volume are the same crop (perfectly correlated voxels)."""
    s = store["student_in"].flatten(1)
    return torch.tensor([bool(torch.corrcoef(torch.stack([s[i], s[i + n]]))[0, 1] > 0.9999) for i in range(n)])


@pytest.mark.parametrize("size", [24, 32])  # 24: both sub-volumes of a volume always coincide
def test_training_step_uses_the_d2_dictionary_and_enqueues_its_keys(size):
    """One step: the teacher sees the student's crops re-augmented (v'), the global term is D.2's InfoNCE
    over the captured embeddings, and the queue then holds one teacher key of each volume, in order."""
    m = _tiny(noise=0.0, queue_size=5, iterations=5)
    store = _capture(m)
    n = 3
    x = torch.rand(n, 1, size, size, size, generator=torch.Generator().manual_seed(2))
    _, parts = m.loss(x)
    s, t = store["student_in"].flatten(1), store["teacher_in"].flatten(1)
    assert not torch.allclose(s, t)  # a second augmentation, not the student's own input
    for i in range(2 * n):  # ... of the same crop: affine in the intensities (noise 0)
        assert torch.corrcoef(torch.stack([s[i], t[i]]))[0, 1] > 0.9999, i
    duplicate = _same_crops(store, n)
    if size == 24:
        assert bool(duplicate.all())
    ref = _reference_global(store["q"], store["k"], torch.zeros(0, store["k"].shape[1]), duplicate, m.temperature)
    assert parts["global"] == pytest.approx(float(ref), rel=1e-5)
    queued, k = m.queue_keys().clone(), store["k"]
    assert queued.shape[0] == n
    for i in range(n):  # FIFO: volume 0's key first; each one of the volume's two sub-volume keys
        assert torch.allclose(queued[i], k[i]) or torch.allclose(queued[i], k[i + n]), i
    _, parts = m.loss(x)  # the second step's dictionary includes the queue of the first
    ref = _reference_global(store["q"], store["k"], queued, _same_crops(store, n), m.temperature)
    assert parts["global"] == pytest.approx(float(ref), rel=1e-5)
    after, k = m.queue_keys(), store["k"]  # K = 5 after 6 pushes: the oldest key has left
    assert after.shape[0] == 5 and torch.equal(after[:2], queued[1:])
    for i in range(n):
        assert torch.allclose(after[2 + i], k[i]) or torch.allclose(after[2 + i], k[i + n]), i


def test_ema_update_follows_its_formula():
    m = _tiny(momentum=0.9)
    student = dict(m.backbone.named_parameters())
    teacher = dict(m.teacher["backbone"].named_parameters())
    name = next(iter(student))
    with torch.no_grad():
        student[name].fill_(2.0)
        teacher[name].fill_(-1.0)
        m.global_head[0].weight.fill_(1.0)
        m.teacher["head"][0].weight.fill_(0.0)
    m.momentum_update()
    assert torch.allclose(teacher[name], torch.full_like(teacher[name], 0.9 * -1.0 + 0.1 * 2.0))  # -0.7
    assert torch.allclose(m.teacher["head"][0].weight, torch.full_like(m.teacher["head"][0].weight, 0.1))
    # loss() performs the same update first, in training mode only
    m.loss(torch.rand(2, 1, 32, 32, 32))
    assert torch.allclose(teacher[name], torch.full_like(teacher[name], 0.9 * -0.7 + 0.1 * 2.0))
    m.eval()
    m.loss(torch.rand(2, 1, 32, 32, 32))
    assert torch.allclose(teacher[name], torch.full_like(teacher[name], 0.9 * -0.7 + 0.1 * 2.0))


def test_dustbin_score_changes_under_training():
    m = _tiny(iterations=20)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    start = float(m.matcher.bin_score.detach())
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        loss, parts = m.loss(torch.rand(2, 1, 32, 32, 32, generator=g))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert abs(float(m.matcher.bin_score.detach()) - start) > 1e-3
    assert parts["bin_score"] == pytest.approx(float(m.matcher.bin_score.detach()), abs=0.05)


def test_impossible_sizes_raise_clear_errors():
    with pytest.raises(ValueError, match=r"multiple of patch p=8"):
        _tiny(view=20)
    with pytest.raises(ValueError, match=r"batch patch \(16, 16, 16\) is smaller than the S2DC view \(24, 24, 24\)"):
        _tiny().loss(torch.rand(2, 1, 16, 16, 16))
    with pytest.raises(ValueError, match="batch size must be >= 2"):
        _tiny().loss(torch.rand(1, 1, 32, 32, 32))
    with pytest.raises(ValueError, match="dustbin needs operator 'sinkhorn'"):
        _tiny(operator="dual_softmax", dustbin=True)
    with pytest.raises(ValueError, match="operator must be one of"):
        _tiny(operator="hungarian")
    swin = SwinUNETRBackbone(feature_size=12)
    with pytest.raises(ValueError, match=r"view \(24, 24, 24\) must be a multiple of 32"):
        S2DC(swin)  # the default views do not fit SwinUNETR
    with pytest.raises(ValueError, match=r"instance norm cannot take \(32, 32, 32\)"):
        S2DC(swin, view=32)


def test_works_with_the_swinunetr_backbone():
    torch.manual_seed(0)
    m = S2DC(SwinUNETRBackbone(feature_size=12, norm_name=["group", {"num_groups": 4}], depths=(1, 1, 1, 1)),
             view=32, patch=8, iterations=10)
    loss, parts = m.loss(torch.rand(2, 1, 40, 40, 40))  # views of 32 at offsets 0 or 8
    assert torch.isfinite(loss)
    loss.backward()
    g = _grads(m)
    assert g["backbone"] > 0 and g["patch_head"] > 0 and g["global_head"] > 0 and g["matcher"] > 0


def _phantoms(n: int, seed: int) -> torch.Tensor:
    src = SyntheticSource(kind="synthetic", labels="organs", n_cases=n, seed=seed, shape=(32, 32, 32),
                          spacing=(10.0, 10.0, 10.0))
    images = [np.clip((synthetic.generate(src, i).image + 1000.0) / 2000.0, 0.0, 1.0) for i in range(n)]
    return torch.tensor(np.stack(images))[:, None].float()


def _accuracy(m: S2DC, x: torch.Tensor, repeats: int = 4) -> float:
    """Top-1 patch matching accuracy over the patches of A that have a true match (fixed held-out views)."""
    g = torch.Generator().manual_seed(123)
    was = m.training
    m.eval()
    hits = total = 0
    for _ in range(repeats):
        a, b, target = m.make_views(x, generator=g)
        pred = m.predict_matches(a, b)
        valid = target >= 0
        hits += int((pred[valid] == target[valid]).sum())
        total += int(valid.sum())
    m.train(was)
    return hits / total


def _train(m: S2DC, x: torch.Tensor, steps: int) -> None:
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        loss, _ = m.loss(x[torch.randperm(len(x), generator=g)[:2]])
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_matching_accuracy_on_held_out_phantoms_rises_with_training(capsys):
    """Train on 16 phantoms, measure top-1 matching on 4 others (views with the training augmentation).

    Chance is 1/27 (27 patches per view). The held-out set has about 250
    matched patches (4 cases x 4 view draws), so the binomial standard error of
    an accuracy is <= 0.03; the asserted margins (+0.25 over the untrained
    network, +0.15 over the same training without the patch term) are more
    than five of them, and well below the measured gains (see the printout).
    """
    x = _phantoms(20, seed=5)
    train, held_out = x[:16], x[16:]
    steps = 45
    torch.manual_seed(0)
    m = S2DC(UNet3D(in_channels=1, features=[8, 16, 32, 64], groups=4), seed=0)
    before = _accuracy(m, held_out)
    _train(m, train, steps)
    after = _accuracy(m, held_out)
    torch.manual_seed(0)
    control = S2DC(UNet3D(in_channels=1, features=[8, 16, 32, 64], groups=4), seed=0, w_patch=0.0)
    _train(control, train, steps)
    global_only = _accuracy(control, held_out)
    with capsys.disabled():
        print(f"\nS2DC held-out top-1 patch matching ({steps} steps, batch 2, 32^3 phantoms, views 24^3, p 8): "
              f"untrained {before:.3f} -> trained {after:.3f}; global term only {global_only:.3f}; "
              f"dustbin score {float(m.matcher.bin_score.detach()):.3f}")
    assert after >= before + 0.25
    assert after >= global_only + 0.15
