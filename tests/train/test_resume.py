"""Preemption-safe training: a killed or signalled job, rerun, ends bit-identical to one never stopped.

Each test runs ``medssl pretrain`` (or ``medssl downstream``) in a subprocess
on the tiny phantoms (3-level width-4 U-Net, 16³ patches, 3 epochs x 4 steps,
a state saved after every step), stops it part-way, reruns it and compares the
exported backbone, the full saved state and the loss history (downstream: the
whole ``metrics.json``) with an uninterrupted run, with ``torch.equal`` /
``==`` (no tolerance).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from medssl import config, paths
from medssl.train.pretrain import pretrain
from medssl.train.resume import PREEMPTED_EXIT_CODE

EPOCHS, STEPS = 3, 4
TOTAL = EPOCHS * STEPS
SAVED = re.compile(r"saved state at epoch \d+ step \d+ \(global step (\d+)\)")
TIMEOUT = 120


def _mapping(tiny_params) -> dict:
    p = tiny_params()
    p["pretrain"].update(epochs=EPOCHS, steps_per_epoch=STEPS, checkpoint_every=1)
    # a warm-up + cosine schedule: a resume that dropped the scheduler's state would train at another lr
    p["downstream"].update(epochs=EPOCHS, steps_per_epoch=STEPS, checkpoint_every=1, val_every=1,
                           schedule="warmup_cosine", warmup_fraction=0.25)
    return p


@pytest.fixture(scope="module")
def corpus(tiny_root, tiny_params, tmp_path_factory):
    """``(params, params file)`` of a tiny root with the phantom corpus and organs preprocessed."""
    tiny_root("phantom_corpus", "phantom_organs")
    mapping = _mapping(tiny_params)
    path = tmp_path_factory.mktemp("params") / "params.yaml"
    path.write_text(yaml.safe_dump(mapping))
    return config.parse(mapping), path


def _outputs(method: str) -> dict:
    """What a finished run leaves: backbone tensors, its record, the full state."""
    record = json.loads(paths.backbone_config("ssl3d", method).read_text())
    return {"backbone": load_file(paths.backbone_weights("ssl3d", method)),
            "backbone_bytes": paths.backbone_weights("ssl3d", method).read_bytes(),
            "record": record,
            "state": torch.load(paths.train_state("ssl3d", method), weights_only=False)}


_reference: dict[str, dict] = {}


def _reference_run(corpus, method: str) -> dict:
    """The uninterrupted run (in this process), once per method; its checkpoint folder is then removed."""
    if method not in _reference:
        p, _ = corpus
        shutil.rmtree(paths.checkpoint_dir("ssl3d", method), ignore_errors=True)
        summary = pretrain(p, "ssl3d", method, progress=False)
        _reference[method] = {**_outputs(method), "summary": summary}
        shutil.rmtree(paths.checkpoint_dir("ssl3d", method))
    return _reference[method]


DOWNSTREAM = ["downstream", "ssl3d", "phantom_organs", "finetune", "scratch", "--seed", "0"]


def _command(params_file: Path, method: str, stage: list[str] | None = None) -> list[str]:
    stage = stage or ["pretrain", "ssl3d", method]
    return [sys.executable, "-m", "medssl.cli", *stage, "--params", str(params_file), "--device", "cpu"]


def _start(params_file: Path, method: str, stage: list[str] | None = None) -> subprocess.Popen:
    env = {**os.environ, "MEDSSL_TRACKING": "off", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(_command(params_file, method, stage), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True, env=env)


def _run_until_saved(proc: subprocess.Popen, step: int) -> list[str]:
    """Read the job's log until it reports a state saved at global step >= ``step``."""
    lines = []
    for line in proc.stderr:
        lines.append(line)
        m = SAVED.search(line)
        if m and int(m.group(1)) >= step:
            return lines
    proc.wait(TIMEOUT)
    raise AssertionError(f"job ended (status {proc.returncode}) before saving step {step}:\n{''.join(lines)}")


def _sigterm_after_save(proc: subprocess.Popen, step: int) -> str:
    """Send SIGTERM once the job has saved step ``step``; wait for it to stop; its remaining log."""
    try:
        _run_until_saved(proc, step)
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    return rest


def _finish(params_file: Path, method: str, stage: list[str] | None = None) -> str:
    """Rerun the job to the end; its log."""
    env = {**os.environ, "MEDSSL_TRACKING": "off", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(_command(params_file, method, stage), capture_output=True, text=True, env=env,
                          timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    return done.stderr


def _assert_same_tree(a, b, where: str = "state") -> None:
    """Nested dicts / lists / tuples with tensors and numpy arrays equal exactly."""
    import numpy as np

    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same_tree(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_tree(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def _assert_identical(ref: dict, method: str) -> None:
    got = _outputs(method)
    assert got["backbone"].keys() == ref["backbone"].keys()
    for k, v in ref["backbone"].items():
        assert torch.equal(got["backbone"][k], v), k
    assert got["backbone_bytes"] == ref["backbone_bytes"]
    assert got["record"]["final_loss"] == ref["record"]["final_loss"] == ref["summary"]["final_loss"]
    assert got["record"]["weights_sha256"] == ref["record"]["weights_sha256"]
    assert got["state"]["history"] == ref["summary"]["history"]
    assert len(got["state"]["history"]) == EPOCHS and got["state"]["global_step"] == TOTAL
    _assert_same_tree(got["state"], ref["state"])  # weights, optimizer, every random stream, position


@pytest.mark.parametrize("method", ["gvsl", "s2dc"])
def test_kill_9_then_rerun_is_bit_identical(corpus, method):
    ref = _reference_run(corpus, method)
    _, params_file = corpus
    step = random.randint(1, TOTAL - 3)  # a random step with at least one save before and steps after it
    proc = _start(params_file, method)
    try:
        _run_until_saved(proc, step)
        proc.kill()  # SIGKILL: no handler runs
        proc.wait(TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, f"kill at step {step}"
    saved = torch.load(paths.train_state("ssl3d", method), weights_only=False)
    assert step <= saved["global_step"] < TOTAL, f"kill at step {step}"
    assert not paths.backbone_weights("ssl3d", method).exists()
    log = _finish(params_file, method)
    assert f"global step {saved['global_step']})" in log and "resuming from" in log
    _assert_identical(ref, method)
    shutil.rmtree(paths.checkpoint_dir("ssl3d", method))


def test_sigterm_saves_exits_75_and_rerun_is_bit_identical(corpus):
    ref = _reference_run(corpus, "gvsl")
    _, params_file = corpus
    proc = _start(params_file, "gvsl")
    rest = _sigterm_after_save(proc, 2)
    assert proc.returncode == PREEMPTED_EXIT_CODE, rest
    assert "stopped by SIGTERM" in rest
    saved = torch.load(paths.train_state("ssl3d", "gvsl"), weights_only=False)
    assert f"after step {saved['global_step']};" in rest  # the state it saved on the way out
    assert 2 <= saved["global_step"] < TOTAL
    assert not paths.backbone_weights("ssl3d", "gvsl").exists()
    _finish(params_file, "gvsl")
    _assert_identical(ref, "gvsl")
    shutil.rmtree(paths.checkpoint_dir("ssl3d", "gvsl"))


def test_state_of_another_configuration_is_not_resumed(corpus, tiny_params, caplog):
    p, _ = corpus
    mapping = _mapping(tiny_params)
    mapping["pretrain"].update(epochs=1, steps_per_epoch=2)
    short = config.parse(mapping)
    pretrain(short, "ssl3d", "genesis", progress=False)
    first = paths.train_state("ssl3d", "genesis").read_bytes()
    mapping["pretrain"]["checkpoint_every"] = 0  # only the cadence differs: resumed (nothing left to do)
    pretrain(config.parse(mapping), "ssl3d", "genesis", progress=False)
    assert paths.train_state("ssl3d", "genesis").read_bytes() == first
    mapping["pretrain"]["lr"] = 2e-3  # the numbers differ: start over
    with caplog.at_level("WARNING", logger="medssl"):
        pretrain(config.parse(mapping), "ssl3d", "genesis", progress=False)
    assert "configuration changed" in caplog.text
    assert torch.load(paths.train_state("ssl3d", "genesis"), weights_only=False)["global_step"] == 2
    assert paths.train_state("ssl3d", "genesis").read_bytes() != first
    shutil.rmtree(paths.checkpoint_dir("ssl3d", "genesis"))


def test_downstream_sigterm_then_rerun_is_bit_identical(corpus):
    from medssl.train.downstream import downstream

    p, params_file = corpus
    pretrain(p, "ssl3d", "scratch", progress=False)  # the backbone to fine-tune (no training)
    out = paths.downstream_metrics("ssl3d", "phantom_organs", "finetune", "scratch", 1.0, 0)
    ref = downstream(p, "ssl3d", "phantom_organs", "finetune", "scratch", 1.0, 0, progress=False)
    assert not out.with_name("state.pt").exists()  # removed once metrics.json is written
    out.unlink()
    proc = _start(params_file, "scratch", DOWNSTREAM)
    rest = _sigterm_after_save(proc, 2)
    assert proc.returncode == PREEMPTED_EXIT_CODE, rest
    saved = torch.load(out.with_name("state.pt"), weights_only=False)
    assert 2 <= saved["global_step"] < TOTAL and not out.exists()
    assert saved["scheduler"]["last_epoch"] == saved["global_step"]  # the schedule's position travels too
    log = _finish(params_file, "scratch", DOWNSTREAM)
    assert "downstream: resuming from" in log
    got = json.loads(out.read_text())
    for timed in ("seconds", "timing"):  # wall-clock, not results
        ref.pop(timed), got.pop(timed)
    assert got == json.loads(json.dumps(ref))  # metrics, per-case rows, history, best epoch: exactly
    assert not out.with_name("state.pt").exists()


def test_transform_random_states_round_trip():
    from monai import transforms as T

    from medssl.train.resume import randomizable_states, randomizables, set_randomizable_states

    def chain():
        c = T.Compose([T.RandSpatialCropd(keys=["image"], roi_size=[4, 4, 4], random_size=False),
                       T.RandFlipd(keys=["image"], prob=0.5, spatial_axis=0)])
        c.set_random_state(7)
        return c

    item = {"image": torch.arange(8 ** 3, dtype=torch.float32).view(1, 8, 8, 8)}
    a, b = chain(), chain()
    assert len(randomizables(a)) >= 3  # the Compose, the crop's inner cropper, the flip
    for _ in range(3):
        a(dict(item))
    states = randomizable_states(a)
    set_randomizable_states(b, states)
    assert all(torch.equal(a(dict(item))["image"], b(dict(item))["image"]) for _ in range(5))
    with pytest.raises(ValueError, match="random transforms"):
        set_randomizable_states(b, states[:-1])


def test_preemption_flag_and_handlers_restored():
    from medssl.train.resume import Preemption

    before = signal.getsignal(signal.SIGUSR1)
    with Preemption() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGUSR1)  # delivered to the main thread before kill() returns
        assert stop.requested and stop.signum == signal.SIGUSR1
    assert signal.getsignal(signal.SIGUSR1) is before


def test_checkpoint_cadence():
    from medssl.train.resume import due

    assert [s for s in range(1, 9) if due(s, (s - 1) % 4 + 1, 4, 0)] == [4, 8]  # epoch ends only
    assert [s for s in range(1, 9) if due(s, (s - 1) % 4 + 1, 4, 3)] == [3, 4, 6, 8]
