"""Speed of the synthetic torso phantoms (medssl.data.synthetic), on one core.

Prints seconds per phantom and phantoms per second for a 128^3 phantom and
for every synthetic dataset of ``params.yaml`` (generation alone, and
``write_dataset`` including the deterministic .nii.gz compression).

    python bench/bench_phantoms.py [--params params.yaml] [--repeats 5] [--full]

The target is at most 2 s per 128^3 phantom on one core.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # one core, before numpy is imported

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from medssl import config  # noqa: E402
from medssl.config import SyntheticSource  # noqa: E402
from medssl.data.synthetic import generate, write_dataset  # noqa: E402


def time_generate(source: SyntheticSource, repeats: int) -> tuple[float, float]:
    """Median and best seconds per phantom over ``repeats`` different cases."""
    generate(source, 0)  # warm-up (imports, template cache)
    times = []
    for index in range(repeats):
        start = time.perf_counter()
        generate(source, index)
        times.append(time.perf_counter() - start)
    return float(np.median(times)), float(np.min(times))


def time_write(source: SyntheticSource) -> float:
    """Seconds per phantom of ``write_dataset`` (generation + NIfTI writing)."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        write_dataset(Path(tmp), source, progress=False)
        return (time.perf_counter() - start) / source.n_cases


def report(label: str, source: SyntheticSource, repeats: int, write: bool) -> None:
    median, best = time_generate(source, repeats)
    line = (f"{label:<34} shape {str(tuple(source.shape)):<16} spacing {str(tuple(source.spacing)):<22} "
            f"generate {median:7.3f} s/phantom (best {best:.3f}), {1 / median:7.1f} phantoms/s")
    if write:
        per = time_write(source)
        line += f" | write_dataset {per:.3f} s/phantom, {1 / per:.1f} phantoms/s"
    print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--full", action="store_true",
                        help="also time a full-size 400 x 325 x 128 phantom at 0.8 x 0.8 x 2.5 mm")
    args = parser.parse_args()

    base = {"kind": "synthetic", "n_cases": args.repeats, "lesion_fraction": 0.5}
    report("128^3 (2.5 x 2.03 x 2.5 mm)", SyntheticSource(**base, shape=(128, 128, 128),
                                                          spacing=(2.5, 2.03, 2.5)), args.repeats, False)
    if args.full:
        report("full size (0.8 x 0.8 x 2.5 mm)", SyntheticSource(**{**base, "n_cases": 2}, shape=(400, 325, 128),
                                                                 spacing=(0.8, 0.8, 2.5)), 2, False)
    report("SyntheticSource defaults", SyntheticSource(**base), args.repeats, True)
    params = config.load(args.params)
    for name, spec in params.datasets.items():
        if isinstance(spec.source, SyntheticSource):
            report(f"params.yaml {name}", spec.source, args.repeats, True)


if __name__ == "__main__":
    main()
