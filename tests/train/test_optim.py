"""Optimiser and schedule builder: closed-form learning rates, Adam vs AdamW decay, state round trip."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from medssl.config import PretrainSpec, parse
from medssl.train.optim import build_optimizer, build_schedule, total_steps, warmup_steps


def _lrs(cfg: PretrainSpec) -> list[float]:
    """The learning rate of every optimiser step 0 .. T-1 and after the last one, stepping as pretrain does."""
    p = torch.nn.Parameter(torch.zeros(3))
    opt = build_optimizer([p], cfg)
    sched = build_schedule(opt, cfg)
    out = []
    for _ in range(total_steps(cfg)):
        out.append(opt.param_groups[0]["lr"])
        p.grad = torch.ones_like(p)
        opt.step()
        sched.step()
    return out + [opt.param_groups[0]["lr"]]


def test_warmup_cosine_follows_its_closed_form():
    """lr(t) = lr t / W for t < W, then lr (1 + cos(pi (t - W) / (T - W))) / 2; W = 10, T = 50."""
    cfg = PretrainSpec(lr=2e-3, epochs=5, steps_per_epoch=10, optimizer="adamw", weight_decay=0.1,
                       schedule="warmup_cosine", warmup_fraction=0.2)
    lr, w, t = 2e-3, 10, 50
    assert warmup_steps(cfg) == w and total_steps(cfg) == t
    got = _lrs(cfg)
    assert got[0] == 0.0  # first step: the start of the warm-up
    assert got[w // 2] == pytest.approx(lr / 2, rel=1e-9)  # half-way up
    assert got[w] == pytest.approx(lr, rel=1e-9)  # end of the warm-up: the peak
    assert got[w + (t - w) // 2] == pytest.approx(lr / 2, rel=1e-9)  # half-way down the cosine
    assert got[t] == pytest.approx(0.0, abs=1e-12)  # after the last step
    for step, value in enumerate(got):
        ref = lr * step / w if step < w else lr * 0.5 * (1 + math.cos(math.pi * (step - w) / (t - w)))
        assert value == pytest.approx(ref, rel=1e-9, abs=1e-15), step
    # the published S2DC setting: 500 warm-up steps of 100 000
    paper = PretrainSpec(epochs=100, steps_per_epoch=1000, schedule="warmup_cosine", warmup_fraction=0.005)
    assert warmup_steps(paper) == 500


def test_default_is_adam_at_a_constant_rate():
    cfg = PretrainSpec(lr=1e-3, epochs=2, steps_per_epoch=3)
    assert cfg.optimizer == "adam" and cfg.schedule == "constant" and cfg.weight_decay == 0.0
    p = torch.nn.Parameter(torch.zeros(2))
    assert type(build_optimizer([p], cfg)) is torch.optim.Adam
    assert _lrs(cfg) == [1e-3] * 7


def test_adamw_decays_the_weights_and_adam_adds_l2_to_the_gradient():
    """A zero gradient: AdamW shrinks p to p (1 - lr wd); Adam's gradient wd p gives a first step of lr."""
    lr, wd = 1e-2, 0.1
    for name, expected in (("adamw", 2.0 * (1 - lr * wd)), ("adam", 2.0 - lr)):
        p = torch.nn.Parameter(torch.full((4,), 2.0))
        opt = build_optimizer([p], PretrainSpec(lr=lr, optimizer=name, weight_decay=wd))
        assert opt.param_groups[0]["betas"][0] == 0.9  # S2DC Sec. C: momentum 0.9
        p.grad = torch.zeros_like(p)
        opt.step()
        assert torch.allclose(p.detach(), torch.full((4,), expected), rtol=1e-6), name


def test_frozen_parameters_are_left_out():
    frozen = torch.nn.Parameter(torch.ones(2), requires_grad=False)
    trained = torch.nn.Parameter(torch.ones(2))
    opt = build_optimizer([frozen, trained], PretrainSpec(optimizer="adamw", weight_decay=0.5))
    assert opt.param_groups[0]["params"] == [trained]


def test_schedule_state_round_trip_continues_identically():
    cfg = PretrainSpec(lr=1e-3, epochs=4, steps_per_epoch=5, optimizer="adamw", schedule="warmup_cosine",
                       warmup_fraction=0.25)
    ref = _lrs(cfg)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer([p], cfg)
    sched = build_schedule(opt, cfg)
    for _ in range(7):
        opt.step()
        sched.step()
    state = {"opt": opt.state_dict(), "sched": sched.state_dict()}
    opt2 = build_optimizer([torch.nn.Parameter(torch.zeros(1))], cfg)
    sched2 = build_schedule(opt2, cfg)
    opt2.load_state_dict(state["opt"])
    sched2.load_state_dict(state["sched"])
    got = []
    for _ in range(total_steps(cfg) - 7):
        got.append(opt2.param_groups[0]["lr"])
        opt2.step()
        sched2.step()
    assert got == ref[7:-1]


def test_bad_names_raise_value_errors():
    base = PretrainSpec().model_dump()
    with pytest.raises(ValueError, match="'sgd'"):
        build_optimizer([torch.nn.Parameter(torch.zeros(1))], SimpleNamespace(**{**base, "optimizer": "sgd"}))
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(1))], PretrainSpec())
    with pytest.raises(ValueError, match="'step'"):
        build_schedule(opt, SimpleNamespace(**{**base, "schedule": "step"}))
    with pytest.raises(ValueError, match="1.5"):
        warmup_steps(SimpleNamespace(**{**base, "warmup_fraction": 1.5}))
    with pytest.raises(ValueError, match="warmup_fraction"):
        PretrainSpec(warmup_fraction=1.0)


def test_s2dc_pretrains_with_adamw_and_warmup_cosine_by_default():
    """params.yaml: S2DC overrides the Adam / constant defaults (supplement Sec. C); GVSL keeps them."""
    from pathlib import Path

    import yaml

    p = parse(yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text(encoding="utf-8")))
    s2dc = p.method_pretrain("s2dc")
    assert (s2dc.optimizer, s2dc.schedule) == ("adamw", "warmup_cosine")
    assert s2dc.weight_decay == 0.1 and 0 < warmup_steps(s2dc) < total_steps(s2dc)
    gvsl = p.method_pretrain("gvsl")
    assert (gvsl.optimizer, gvsl.schedule, gvsl.weight_decay) == ("adam", "constant", 0.0)


def test_downstream_takes_the_optimiser_and_the_schedule(tiny_params):
    """downstream.optimizer / weight_decay / schedule build what the downstream loop uses: with
    warmup_cosine the lr climbs linearly over the warm-up and reaches 0 at the last step."""
    from medssl import config

    raw = tiny_params()
    raw["downstream"].update(optimizer="adamw", weight_decay=0.05, schedule="warmup_cosine", warmup_fraction=0.25,
                             epochs=2, steps_per_epoch=4, lr=0.01)
    cfg = config.parse(raw).downstream
    opt = build_optimizer([torch.nn.Parameter(torch.ones(2))], cfg)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["weight_decay"] == 0.05
    lrs = _lrs(cfg)  # W = 2, T = 8
    expected = [0.01 * t / 2 for t in range(2)] + [0.01 * (1 + math.cos(math.pi * (t - 2) / 6)) / 2
                                                   for t in range(2, 9)]
    assert lrs == pytest.approx(expected, abs=1e-12)
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)
