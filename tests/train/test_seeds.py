"""Several seeds of one downstream row in one process (medssl.train.downstream.downstream_seeds)."""

from __future__ import annotations

import json

import pytest

from medssl import paths
from medssl.cli import main
from medssl.train import downstream as ds
from medssl.train.pretrain import pretrain


@pytest.fixture(scope="module")
def tiny(tiny_root):
    p = tiny_root("phantom_corpus", "phantom_organs")
    pretrain(p, "ssl3d", "scratch", progress=False)
    return p


def _out(seed: int):
    return paths.downstream_metrics("ssl3d", "phantom_organs", "finetune", "scratch", 1.0, seed)


def test_a_failing_seed_keeps_the_others_and_a_rerun_only_retests_them(tiny, monkeypatch):
    p = tiny
    real = ds.subsample

    def failing(entries, fraction, seed):
        if seed == 1:
            raise ValueError("injected failure of seed 1")
        return real(entries, fraction, seed)

    monkeypatch.setattr(ds, "subsample", failing)
    with pytest.raises(RuntimeError, match=r"1 of 3 seeds failed \(seed 1: injected failure of seed 1\)"):
        ds.downstream_seeds(p, "ssl3d", "phantom_organs", "finetune", "scratch", 1.0, [0, 1, 2], progress=False)
    assert _out(0).is_file() and _out(2).is_file() and not _out(1).exists()  # seed 1 did not stop seed 2
    assert _out(0).with_name("state.pt").is_file()  # kept until the whole row succeeds
    first = json.loads(_out(0).read_text())

    monkeypatch.setattr(ds, "subsample", real)
    _out(0).unlink()  # as Snakemake deletes the outputs of a failed job
    _out(2).unlink()
    calls = []
    real_loader = ds.train_loader
    monkeypatch.setattr(ds, "train_loader", lambda *a, **k: calls.append(k["seed"]) or real_loader(*a, **k))
    results = ds.downstream_seeds(p, "ssl3d", "phantom_organs", "finetune", "scratch", 1.0, [0, 1, 2],
                                  progress=False)
    assert [r["seed"] for r in results] == [0, 1, 2]
    # seeds 0 and 2 resumed from their final state: no training batch drawn, only the test evaluation
    epochs = p.downstream.epochs
    assert sorted(calls) == [1000 + e for e in range(1, epochs + 1)]  # seed 1's epochs only
    again = json.loads(_out(0).read_text())
    assert again["metrics"] == first["metrics"] and again["history"] == first["history"]
    assert not any(_out(s).with_name("state.pt").exists() for s in (0, 1, 2))  # all done: states removed


def test_cli_runs_repeated_seeds_in_one_process(tiny, monkeypatch, tmp_path):
    params = tmp_path / "params.yaml"
    import yaml

    params.write_text(yaml.safe_dump(tiny.model_dump(mode="json")))
    seen = []
    monkeypatch.setattr(ds, "downstream", lambda *a, **k: seen.append((a[6], k["keep_state"])) or {"seed": a[6]})
    assert main(["downstream", "--params", str(params), "ssl3d", "phantom_organs", "linear", "scratch",
                 "--seed", "3", "--seed", "5"]) == 0
    assert seen == [(3, True), (5, True)]
    seen.clear()
    assert main(["downstream", "--params", str(params), "ssl3d", "phantom_organs", "linear", "scratch"]) == 0
    assert seen == [(0, False)]  # one seed: the state goes as soon as metrics.json is written


def test_run_seeds_runs_every_seed_and_names_the_failures():
    from medssl.train.common import run_seeds
    from medssl.train.resume import Preempted

    seen = []

    def one(seed):
        seen.append(seed)
        if seed in (1, 3):
            raise ValueError(f"bad case in seed {seed}")
        return seed * 10

    assert run_seeds(lambda s: s * 10, [0, 2], "stn x") == [0, 20]
    with pytest.raises(RuntimeError, match=r"stn x: 2 of 4 seeds failed \(seed 1: bad case in seed 1; seed 3"):
        run_seeds(one, [0, 1, 2, 3], "stn x")
    assert seen == [0, 1, 2, 3]  # the failures did not stop the other seeds

    def preempted(seed):
        seen.append(seed)
        raise Preempted(15, 7, "state.pt")

    seen.clear()
    with pytest.raises(Preempted):
        run_seeds(preempted, [0, 1], "template y")
    assert seen == [0]  # preemption stops the row at once
