"""Every path of the pipeline, derived from names.

No other module joins path strings by hand. Each function accepts real values
or Snakemake wildcard placeholders (``"{dataset}"``), so the same function
gives both a concrete file and a rule's output pattern.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT_ENV = "MEDSSL_ROOT"


def root() -> Path:
    """Project root: ``$MEDSSL_ROOT`` if set, else the current directory."""
    return Path(os.environ.get(ROOT_ENV, "."))


def frac_tag(fraction: float | str) -> str:
    """Folder tag of a label fraction: ``1.0 -> 'frac1.0'``; placeholders pass through."""
    if isinstance(fraction, str) and fraction.startswith("{"):
        return f"frac{fraction}"
    return f"frac{float(fraction)!r}"


def seed_tag(seed: int | str) -> str:
    return f"seed{seed}"


# ------------------------------------------------------------------ data
def raw(dataset: str, base: Path | None = None) -> Path:
    """``data/raw/<dataset>``: the data exactly as fetched."""
    return (base or root()) / "data" / "raw" / dataset


def raw_done(dataset: str, base: Path | None = None) -> Path:
    """Marker written last by ``medssl fetch`` (the manifest of the raw files)."""
    return raw(dataset, base) / "manifest.json"


def downloads(base: Path | None = None) -> Path:
    """``data/downloads``: archives kept after a ``url`` fetch (verified by checksum)."""
    return (base or root()) / "data" / "downloads"


def processed(dataset: str, base: Path | None = None) -> Path:
    return (base or root()) / "data" / "processed" / dataset


def datalist(dataset: str, base: Path | None = None) -> Path:
    """``data/processed/<dataset>/datalist.json`` (MONAI decathlon style, written last)."""
    return processed(dataset, base) / "datalist.json"


# ------------------------------------------------------------- checkpoints
def checkpoint_dir(study: str, method: str, base: Path | None = None) -> Path:
    return (base or root()) / "checkpoints" / study / method


def backbone_weights(study: str, method: str, base: Path | None = None) -> Path:
    return checkpoint_dir(study, method, base) / "backbone.safetensors"


def backbone_config(study: str, method: str, base: Path | None = None) -> Path:
    return checkpoint_dir(study, method, base) / "backbone.json"


def pretext(study: str, method: str, base: Path | None = None) -> Path:
    """``checkpoints/<study>/<method>/pretext.json``: the method's own task on held-out volumes, step 0 and end."""
    return checkpoint_dir(study, method, base) / "pretext.json"


def pretext_table(ext: str, base: Path | None = None) -> Path:
    """``results/pretext.<ext>`` (md, csv): the pretext scores of every ssl study's methods."""
    return (base or root()) / "results" / f"pretext.{ext}"


def claims(ext: str, base: Path | None = None) -> Path:
    """``results/claims.<ext>`` (md, csv): the papers' claims tested on this run (medssl.report.claims)."""
    return (base or root()) / "results" / f"claims.{ext}"


def train_state(study: str, method: str, base: Path | None = None) -> Path:
    return checkpoint_dir(study, method, base) / "state.pt"


# ----------------------------------------------------------------- results
def study_results(study: str, base: Path | None = None) -> Path:
    return (base or root()) / "results" / study


def runs(study: str, base: Path | None = None) -> Path:
    """``results/<study>/runs``: every run's ``metrics.json`` (one DVC output per study).

    The runs sit one level below the study folder, not beside the tables, because
    DVC cannot track a folder from one stage and files inside it from another.
    """
    return study_results(study, base) / "runs"


def downstream_dir(study: str, dataset: str, protocol: str, method: str,
                   fraction: float | str, seed: int | str, base: Path | None = None) -> Path:
    return (runs(study, base) / dataset / protocol / method
            / frac_tag(fraction) / seed_tag(seed))


def downstream_metrics(study: str, dataset: str, protocol: str, method: str,
                       fraction: float | str, seed: int | str, base: Path | None = None) -> Path:
    """``results/<study>/runs/<dataset>/<protocol>/<method>/frac<f>/seed<s>/metrics.json``."""
    return downstream_dir(study, dataset, protocol, method, fraction, seed, base) / "metrics.json"


def downstream_predictions(study: str, dataset: str, protocol: str, method: str,
                           fraction: float | str, seed: int | str, base: Path | None = None) -> Path:
    """``<run dir>/predictions``: one ``<case>.nii.gz`` label map per test case (``downstream.save_predictions``)."""
    return downstream_dir(study, dataset, protocol, method, fraction, seed, base) / "predictions"


def downstream_weights(study: str, dataset: str, protocol: str, method: str,
                       fraction: float | str, seed: int | str, base: Path | None = None) -> Path:
    """``<run dir>/weights``: the tested (best-epoch) model, safetensors + JSON (``downstream.keep_weights``)."""
    return downstream_dir(study, dataset, protocol, method, fraction, seed, base) / "weights"


def method_metrics(study: str, dataset: str, method: str, seed: int | str,
                   base: Path | None = None) -> Path:
    """``results/<study>/runs/<dataset>/<method>/seed<s>/metrics.json`` (uda / template studies)."""
    return runs(study, base) / dataset / method / seed_tag(seed) / "metrics.json"


def table(study: str, ext: str, base: Path | None = None) -> Path:
    """``results/<study>/table.<ext>`` for ext in md, tex, csv."""
    return study_results(study, base) / f"table.{ext}"


def figures(study: str, base: Path | None = None) -> Path:
    return study_results(study, base) / "figures"


def logs(base: Path | None = None) -> Path:
    return (base or root()) / "logs"


def mlflow_uri(base: Path | None = None) -> str:
    """Default tracking URI: ``$MLFLOW_TRACKING_URI`` or sqlite at the project root."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{((base or root()) / 'mlflow.db').resolve()}"
