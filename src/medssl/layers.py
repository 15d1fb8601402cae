"""Configuration layers outside Snakemake: ``params.yaml`` with ``--configfile`` overlays.

Snakemake merges each ``--configfile`` over the Snakefile's ``params.yaml`` with
:func:`snakemake.utils.update_config` (nested mappings merge key by key; any other
value, lists included, is replaced). Every ``medssl`` command gives the same merge
(``--configfile FILE``, repeatable), so ``medssl check``, ``datasets`` and ``table``
see the configuration a Snakemake run with the same overlays sees, and an invalid
result names the first layer after which it stops being valid.

DVC reads only ``params.yaml``: :func:`materialise` writes the merged configuration
(optionally only its target studies, which is what ``dvc.yaml``'s ``foreach`` over
``studies`` then runs) for ``medssl config -o params.yaml``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medssl import config


def merge(layers: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The layers merged in order, as Snakemake merges ``--configfile`` over its configfile."""
    from snakemake.utils import update_config  # Snakemake's own merge, so the two never differ

    merged: dict[str, Any] = {}
    for layer in layers:
        update_config(merged, layer)
    return merged


def load(params: str | Path, configfiles: Sequence[str | Path] = ()) -> config.Params:
    """``params`` with each of ``configfiles`` merged over it, validated.

    Raises:
        ConfigError: naming the unreadable file, or, when the merge is invalid, the
            fault and the first layer after which the configuration becomes invalid.
    """
    if not configfiles:
        return config.load(params)
    names = [str(params), *map(str, configfiles)]
    layers = [(n, config.read(n)) for n in names]
    try:
        return config.parse(merge([d for _, d in layers]), f"{names[0]} with --configfile {' '.join(names[1:])}")
    except config.ConfigError as exc:
        raise config.ConfigError(f"{exc}\n(the configuration becomes invalid in {first_invalid(layers)})") from None


def first_invalid(layers: Sequence[tuple[str, dict[str, Any]]], otherwise: str | None = None) -> str:
    """The name of the first of ``(name, mapping)`` layers after which their merge stops being valid
    (the file to blame); ``otherwise`` (default: the last name) when every prefix is valid."""
    for i in range(1, len(layers) + 1):
        try:
            config.parse(merge([d for _, d in layers[:i]]), layers[i - 1][0])
        except config.ConfigError:
            return layers[i - 1][0]
    return otherwise if otherwise is not None else layers[-1][0]


def materialise(params: str | Path, configfiles: Sequence[str | Path] = (),
                only_targets: bool = False) -> dict[str, Any]:
    """The merged configuration as a plain mapping, validated; with ``only_targets``,
    the studies that ``targets`` does not name are dropped (and ``targets`` with them),
    so that a tool iterating over ``studies`` (DVC's ``foreach``) runs the targets only."""
    merged = merge([config.read(n) for n in [params, *configfiles]]) if configfiles else config.read(params)
    p = load(params, configfiles)
    if only_targets:
        keep = set(p.target_studies())
        merged["studies"] = {k: v for k, v in merged.get("studies", {}).items() if k in keep}
        merged.pop("targets", None)
        config.parse(merged, "the target studies of the merged configuration")
    return merged
