"""The catalog of the real datasets of the four papers (``catalog.yaml`` beside this file).

Every entry is a :class:`medssl.config.DatasetSpec`. A study in ``params.yaml``
(or a paper preset) may name a catalog dataset without defining it; an entry
of the same name under ``datasets`` replaces the catalog's. ``medssl datasets``
lists them with their state on disk.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

from medssl.yamlfile import loads

CATALOG_FILE = "catalog.yaml"


@functools.lru_cache(maxsize=1)
def _load_text() -> str:
    return resources.files("medssl.data").joinpath(CATALOG_FILE).read_text(encoding="utf-8")


def raw_catalog() -> dict[str, dict[str, Any]]:
    """The catalog as plain mappings (a fresh copy), keyed by dataset name."""
    data = loads(_load_text(), f"medssl/data/{CATALOG_FILE}") or {}
    datasets = data.get("datasets", {})
    if not isinstance(datasets, dict):
        raise ValueError(f"medssl/data/{CATALOG_FILE}: `datasets` must be a mapping")
    return datasets


def catalog() -> dict[str, Any]:
    """The catalog validated: ``{name: DatasetSpec}``."""
    from medssl.config import DatasetSpec

    out = {}
    for name, entry in raw_catalog().items():
        try:
            out[name] = DatasetSpec.model_validate(entry)
        except Exception as exc:  # a broken catalog entry is our bug: name it
            raise ValueError(f"medssl/data/{CATALOG_FILE}: dataset {name!r}: {exc}") from exc
    return out


def resolve(params: Any, name: str) -> Any:
    """The spec of dataset ``name``: ``params.datasets`` first, then the catalog.

    Raises:
        ValueError: naming the dataset and listing what is defined in either place.
    """
    if name in params.datasets:
        return params.datasets[name]
    specs = catalog()
    if name in specs:
        return specs[name]
    raise ValueError(f"unknown dataset {name!r}; in params: {', '.join(sorted(params.datasets))}; "
                     f"in the catalog: {', '.join(sorted(specs))}")
