"""Preemption-safe training state: every random stream, atomic saves, signal-driven stops.

A training job can be killed at any moment (``kill -9``, a node failure, a
SLURM preemption). The training loops (:mod:`medssl.train.pretrain`,
:mod:`medssl.train.downstream`) save their whole state with :func:`save_state`
(``torch.save`` to a temporary file beside the target, then ``os.replace``:
a reader never sees half a file) at step boundaries, so a rerun of the same
command with the same configuration continues *bit-identically* where the last
save left off. What makes the continuation exact:

* model (including each method's own generators, through
  :meth:`medssl.methods.base.PretrainMethod.get_extra_state`), optimizer and
  LR scheduler state;
* every random stream: torch (CPU and CUDA), numpy, python ``random``
  (:func:`capture_rng`), and the numpy ``RandomState`` of every MONAI random
  transform of the training dataset (:func:`randomizable_states`);
* the loader position: epoch and step within the epoch (the sampler is seeded
  per epoch and skips the consumed batches, :func:`medssl.data.loaders.train_loader`);
* the loss history and the losses of the unfinished epoch.

Stopping on request: :class:`Preemption` installs handlers for ``SIGTERM``
and ``SIGUSR1`` that only set a flag; the loop checks it at every step
boundary, saves, and raises :class:`Preempted`; the CLI turns that into exit
status :data:`PREEMPTED_EXIT_CODE` (75, ``EX_TEMPFAIL``: "try again"), which a
SLURM wrapper or Snakemake's ``--retries`` can use to requeue the job.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import signal
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medssl.io import atomic_path

log = logging.getLogger("medssl")

PREEMPTED_EXIT_CODE = 75  # sysexits.h EX_TEMPFAIL: a temporary failure, the job may be retried
STATE_VERSION = 2  # 1: epoch-granular states without the transforms' and methods' random streams
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(Exception):
    """Raised by a training loop after it saved its state on a stop signal.

    ``medssl`` (the CLI) exits with :attr:`exit_status` when a stage raises it.

    Attributes:
        signum: the signal that asked for the stop.
        step: the global step the saved state continues from.
        path: the state file.
    """

    exit_status = PREEMPTED_EXIT_CODE

    def __init__(self, signum: int, step: int, path: Path | None) -> None:
        self.signum = int(signum)
        self.step = int(step)
        self.path = path
        name = signal.Signals(self.signum).name if self.signum in {s.value for s in signal.Signals} else self.signum
        super().__init__(f"stopped by {name} after step {step}; state saved to {path}")


class Preemption:
    """Context manager: while active, ``SIGTERM``/``SIGUSR1`` set :attr:`signum` instead of killing.

    The previous handlers come back on exit. Outside the main thread (where
    Python cannot install handlers) it does nothing and never requests a stop.
    A second signal of the same kind while a stop is pending is ignored: the
    loop stops at its next step boundary anyway.

    Args:
        signals: the signals to catch (default ``SIGTERM`` and ``SIGUSR1``).
    """

    def __init__(self, signals: Iterable[int] = STOP_SIGNALS) -> None:
        self.signals = tuple(signals)
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        """True once a stop signal arrived."""
        return self.signum is not None

    def _handler(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
            log.warning("received %s: saving the training state at the next step boundary",
                        signal.Signals(signum).name)

    def __enter__(self) -> Preemption:
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


# ------------------------------------------------------------------ random streams
def capture_rng() -> dict[str, Any]:
    """The global random streams: torch CPU (and every CUDA device once CUDA is initialised), numpy, python."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                             "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Set the global random streams saved by :func:`capture_rng` (CUDA only where both have it)."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            log.warning("saved CUDA random state is for %d devices, this job sees %d: not restored",
                        len(cuda), torch.cuda.device_count())


def randomizables(obj: Any, max_depth: int = 8) -> list[Any]:
    """Every MONAI ``Randomizable`` reachable from ``obj``, in a deterministic order.

    Walks lists, tuples, dicts and the attributes of MONAI transforms (a
    ``Compose`` and its transforms, a dictionary transform's inner array
    transform such as ``RandSpatialCropd.cropper``), depth first, each object
    once. The order depends only on how the objects were built, so two
    processes that build the same pipeline list the same transforms.
    """
    from monai.transforms import Randomizable, Transform

    out: list[Any] = []
    seen: set[int] = set()

    def visit(o: Any, depth: int) -> None:
        if depth > max_depth or id(o) in seen:
            return
        if isinstance(o, (list, tuple)):
            children: Iterable[Any] = o
        elif isinstance(o, dict):
            children = o.values()
        elif isinstance(o, (Randomizable, Transform)):
            seen.add(id(o))
            if isinstance(o, Randomizable):
                out.append(o)
            children = vars(o).values()
        else:
            return
        for child in children:
            visit(child, depth + 1)

    visit(obj, 0)
    return out


def randomizable_states(obj: Any) -> list[tuple]:
    """The numpy ``RandomState`` state of every :func:`randomizables` of ``obj`` (a list of tuples)."""
    return [t.R.get_state() for t in randomizables(obj)]


def set_randomizable_states(obj: Any, states: list[tuple]) -> None:
    """Restore states from :func:`randomizable_states` onto the same kind of pipeline.

    Raises:
        ValueError: if ``obj`` has a different number of random transforms.
    """
    found = randomizables(obj)
    if len(found) != len(states):
        raise ValueError(f"the pipeline has {len(found)} random transforms, the saved state {len(states)}")
    for t, s in zip(found, states, strict=True):
        t.R.set_state(s)


# ------------------------------------------------------------------ state files
def fingerprint(config: dict[str, Any]) -> str:
    """A short stable hash of a JSON-able configuration (what must match for a resume)."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_state(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` ``state`` atomically: a temporary file beside ``path``, then ``os.replace``."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state(path: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The state saved at ``path`` if it was written by this state version for ``config``, else None.

    An unreadable file, an older format or another configuration is logged
    and ignored (the job starts over and overwrites it at its first save).
    """
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated file from outside this module, or an incompatible torch
        log.warning("%s: ignoring unreadable training state (%s)", path, exc)
        return None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        log.warning("%s: ignoring a training state of another format (version %s, this is %d)", path,
                    state.get("version") if isinstance(state, dict) else None, STATE_VERSION)
        return None
    if state.get("fingerprint") != fingerprint(config):
        log.warning("%s: the configuration changed since this state was saved: starting over", path)
        return None
    return state


def epoch_batches(make_loader: Callable[[], Iterable[Any]], pending_rng: dict[str, Any] | None,
                  start: int) -> Iterator[Any]:
    """The batch iterator of an epoch, with saved random streams restored where they were saved.

    A state saved at an epoch start (``start == 0``) holds the streams before the
    epoch's loader started; one saved inside an epoch holds them after (the
    DataLoader draws from torch's generator when it starts). ``pending_rng`` is
    the saved :func:`capture_rng` state of a resume, or None.
    """
    if pending_rng is not None and start == 0:
        restore_rng(pending_rng)
        return iter(make_loader())
    batches = iter(make_loader())
    if pending_rng is not None:
        restore_rng(pending_rng)
    return batches


def to_cpu(obj: Any) -> Any:
    """A copy of a nested state (dicts, lists, tuples of tensors) with every tensor on the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_cpu(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(to_cpu(v) for v in obj)
    return obj


def due(global_step: int, step_in_epoch: int, steps_per_epoch: int, every: int) -> bool:
    """Whether the checkpoint cadence asks for a save after this step.

    Always at the end of an epoch; also every ``every`` global steps when
    ``every > 0``.
    """
    return step_in_epoch == steps_per_epoch or (every > 0 and global_step % every == 0)

