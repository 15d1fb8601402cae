"""One writer of the store-creation tests (run as a script, in a fresh interpreter).

    python _store_writer.py SPEC_JSON

SPEC_JSON holds ``uris`` (one fresh sqlite store per round), ``idx``, ``barrier``
(a folder) and ``timeout``. For each round ``r`` the process touches
``<barrier>/ready.<r>.<idx>`` and waits for ``<barrier>/go.<r>``, so all writers
meet the missing store together, as jobs started without ``medssl init-tracking``
do. Writer 0 then runs :func:`medssl.tracking.init_store` (a concurrent
``medssl init-tracking``); the others write one child run through
:func:`medssl.tracking.tracked_run`. A failure is reported, not raised, and the
process goes on to the next round; it prints one JSON line per round.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path


def pair(idx: int) -> tuple[str, str]:
    """(method, child name) of writer ``idx`` (>= 1): 3 parents over writers 1..7."""
    return f"m{idx % 3}", f"linear/frac1.0/seed{idx}"


def main(spec: dict) -> None:
    # imported before the barrier, so the writers reach the store together
    import alembic.command  # noqa: F401  (what MLflow imports to build a store)
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401

    from medssl import tracking

    idx, barrier = spec["idx"], Path(spec["barrier"])
    for r, uri in enumerate(spec["uris"]):
        (barrier / f"ready.{r}.{idx}").touch()
        deadline = time.monotonic() + spec["timeout"]
        while not (barrier / f"go.{r}").exists():
            if time.monotonic() > deadline:
                raise SystemExit(f"writer {idx}: no go signal for round {r} within {spec['timeout']} s")
            time.sleep(0.002)
        start = time.monotonic()
        error = None
        try:
            if idx == 0:
                tracking.init_store(uri)
            else:
                method, child = pair(idx)
                with tracking.tracked_run("fresh", method, "d", "linear", child, params={"idx": idx},
                                          uri=uri) as run:
                    run.log_metrics({"dice": idx / 8}, step=0)
        except Exception:
            error = traceback.format_exc()[-2000:]
        print(json.dumps({"round": r, "idx": idx, "error": error, "seconds": time.monotonic() - start}),
              flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
