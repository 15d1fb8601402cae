"""One writer process of the concurrency tests (run as a script, in a fresh interpreter).

    python _writer.py SPEC_JSON

SPEC_JSON holds ``uri``, ``idx``, ``study``, ``n_steps``, ``flush_every``,
``barrier`` (a folder) and ``timeout``. The process imports MLflow, touches
``<barrier>/ready.<idx>``, waits for ``<barrier>/go`` (the parent creates it
once every writer is ready, so all of them hit the store together), then
writes one child run through :func:`medssl.tracking.tracked_run`: params,
``n_steps`` steps of three metrics flushed every ``flush_every`` steps, and a
small artifact. It prints one JSON line: run id, seconds from ``go`` to the
end, and how many lock-error retries :func:`medssl.tracking.retry` made.

The expected content is a pure function of the spec (:func:`expected`), so
the test recomputes it instead of trusting the writer.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

METRICS = ("loss", "dice", "lr")


def pair(idx: int) -> tuple[str, str, str]:
    """(method, dataset, protocol) of writer ``idx``: 3 methods x 1 dataset, both protocols,
    so 8 writers share 3 parents (3 + 3 + 2 children)."""
    return f"m{idx % 3}", "d", ("linear", "finetune")[idx % 2]


def expected(idx: int, n_steps: int) -> dict[str, list[tuple[int, float]]]:
    """Metric histories of writer ``idx``; values are exact binary fractions."""
    return {key: [(s, idx * 1000 + k * 100 + s / 64) for s in range(n_steps)]
            for k, key in enumerate(METRICS)}


def params(idx: int) -> dict:
    return {"seed": idx, "lr": 0.001 * (idx + 1),
            "args": {"width": 4 + idx, "depth": 3, "tags": [idx, "x"]},
            **{f"p{j:02d}": j * idx for j in range(40)}}


def flat_params(idx: int) -> dict[str, str]:
    from medssl.tracking import flatten_params

    return flatten_params(params(idx))


class _Count(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.n = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "retry" in record.getMessage():
            self.n += 1


def main(spec: dict) -> None:
    import mlflow  # noqa: F401  (imported before the barrier: the writers start together)

    from medssl import tracking

    counter = _Count()
    log = logging.getLogger("medssl.tracking")
    log.addHandler(counter)
    log.setLevel(logging.DEBUG)

    idx, n_steps = spec["idx"], spec["n_steps"]
    barrier = Path(spec["barrier"])
    (barrier / f"ready.{idx}").touch()
    deadline = time.monotonic() + spec["timeout"]
    while not (barrier / "go").exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"writer {idx}: no go signal within {spec['timeout']} s")
        time.sleep(0.002)

    start = time.monotonic()
    method, dataset, protocol = pair(idx)
    art = barrier / f"artifact.{idx}.json"
    art.write_text(json.dumps({"idx": idx}))
    history = expected(idx, n_steps)
    with tracking.tracked_run(spec["study"], method, dataset, protocol,
                              tracking.child_name(protocol, 1.0, idx), params=params(idx),
                              tags={"seed": idx}, uri=spec["uri"]) as run:
        for step in range(n_steps):
            run.log_metrics({key: history[key][step][1] for key in METRICS}, step=step)
            if (step + 1) % spec["flush_every"] == 0:
                run.flush()
        run.log_artifact(art)
        run_id = run.run_id
    print(json.dumps({"idx": idx, "run_id": run_id, "seconds": time.monotonic() - start,
                      "retries": counter.n}), flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
