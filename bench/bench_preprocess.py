"""Preprocessing throughput (SimpleITK reorient + resample + intensity + crop, NIfTI write).

Generates phantoms into a temporary folder, then times ``preprocess_dataset``
on them at the default params.yaml size and at a larger, full-resolution-like
size, and prints cases per second.

    python bench/bench_preprocess.py [--cases 8]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import yaml

from medssl import config
from medssl.data.preprocess import preprocess_dataset
from medssl.data.synthetic import write_dataset

ROOT = Path(__file__).resolve().parents[1]


def bench(spec: config.DatasetSpec, label: str, work: Path) -> None:
    raw, out = work / f"raw_{label}", work / f"processed_{label}"
    write_dataset(raw, spec.source, progress=False)
    t0 = time.perf_counter()
    preprocess_dataset(label, spec, raw_dir=raw, out_dir=out, progress=False)
    dt = time.perf_counter() - t0
    n = spec.source.n_cases
    print(f"{label}: raw {spec.source.shape} @ {spec.source.spacing} mm -> {spec.recipe.spacing} mm, "
          f"roi {spec.recipe.roi}: {n} cases in {dt:.2f} s = {n / dt:.1f} cases/s ({dt / n * 1000:.0f} ms/case)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=8)
    args = ap.parse_args()
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    organs = raw["datasets"]["phantom_organs"]
    default = dict(organs, source=dict(organs["source"], n_cases=args.cases))
    large = dict(organs,
                 source=dict(organs["source"], n_cases=args.cases, shape=[256, 208, 128], spacing=[1.25, 1.25, 2.5]),
                 recipe=dict(organs["recipe"], spacing=[1.5, 1.5, 1.5], roi=[160, 160, 160]))
    with tempfile.TemporaryDirectory() as tmp:
        for label, spec in (("default", default), ("large", large)):
            bench(config.DatasetSpec.model_validate(spec), label, Path(tmp))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
