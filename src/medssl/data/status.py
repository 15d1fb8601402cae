"""``medssl datasets``: every dataset (params.yaml and the catalog), its source and
its state on disk: raw files present, fetched (manifest written), preprocessed
(datalist written)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medssl import paths
from medssl.config import DatasetSpec, ManualSource, Params, SyntheticSource, UrlSource


def _present(raw: Path, spec: DatasetSpec) -> bool:
    """Raw files are in place: every expected pattern of a manual source matches, or the
    raw folder holds anything (url, synthetic)."""
    if not raw.is_dir():
        return False
    if isinstance(spec.source, ManualSource):
        return all(any(raw.glob(p)) for p in spec.source.expected)
    return any(raw.iterdir())


def _count_cases(datalist: Path) -> int | None:
    import json

    try:
        doc = json.loads(datalist.read_text())
    except (OSError, ValueError):
        return None
    return sum(len(doc.get(s, [])) for s in ("training", "validation", "test"))


def source_text(spec: DatasetSpec) -> str:
    """A short description of where a dataset comes from."""
    src = spec.source
    if isinstance(src, SyntheticSource):
        return f"synthetic ({src.generator}, {src.n_cases} cases)"
    if isinstance(src, UrlSource):
        return f"url {src.url}"
    return f"manual {src.homepage}"


def dataset_rows(params: Params, include_catalog: bool = True) -> list[dict[str, Any]]:
    """One row per dataset: name, defined in (params / catalog), task, modality, classes,
    layout, source, used by (studies), present, fetched, preprocessed, cases."""
    from medssl.data.catalog import catalog

    used: dict[str, list[str]] = {}
    for study in params.studies:
        for d in params.study_datasets(study):
            used.setdefault(d, []).append(study)
    specs: dict[str, tuple[str, DatasetSpec]] = {n: ("params", s) for n, s in params.datasets.items()}
    if include_catalog:
        for n, s in catalog().items():
            specs.setdefault(n, ("catalog", s))
    rows = []
    for name in sorted(specs):
        where, spec = specs[name]
        raw, dl = paths.raw(name), paths.datalist(name)
        rows.append({
            "dataset": name, "defined in": where, "task": spec.task, "modality": spec.modality,
            "classes": max(len(spec.classes), 0), "layout": spec.layout.kind, "source": source_text(spec),
            "used by": ", ".join(used.get(name, [])), "present": _present(raw, spec),
            "fetched": paths.raw_done(name).is_file(), "preprocessed": dl.is_file(),
            "cases": _count_cases(dl) if dl.is_file() else None,
        })
    return rows
