"""Reading YAML files strictly: a key repeated in one mapping is an error naming the file and both lines.

PyYAML (like YAML 1.1 loaders generally) keeps the last of two equal keys
without a word, so ``epochs: 50`` followed later in the same block by
``epochs: 2`` trains 2 epochs while the file reads 50. medssl's configuration
files (``params.yaml``, every ``--configfile`` layer, the dataset catalog) go
through :func:`read_yaml`, which refuses that. Uses libyaml's parser when
PyYAML has it (``CSafeLoader``; the mapping check runs in the Python
constructor either way).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

_BASE = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class DuplicateKeyError(ValueError):
    """A mapping of a YAML file repeats a key."""


class _StrictLoader(_BASE):  # type: ignore[misc, valid-type]
    """Safe loader whose mappings refuse a repeated key (line numbers 1-based)."""

    source = "<string>"

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: its keys may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: let the base constructor say so
                break
            if first is not None:
                raise DuplicateKeyError(f"{self.source}: key {key!r} appears twice in one mapping, "
                                        f"at line {first} and at line {line} (YAML keeps only the last)")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def loads(text: str, source: str = "<string>") -> Any:
    """Parse ``text``; ``source`` names it in errors.

    Raises:
        DuplicateKeyError: a mapping repeats a key (both line numbers given).
        yaml.YAMLError: the text is not valid YAML.
    """
    loader = _StrictLoader(text)
    loader.source = source
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_yaml(path: str | Path) -> Any:
    """Parse the YAML file ``path`` (see :func:`loads`)."""
    path = Path(path)
    return loads(path.read_text(encoding="utf-8"), str(path))


def dumps(data: Any) -> str:
    """``data`` as block YAML, keys in their order (row order matters: template models), via libyaml
    when present -- the same text common.smk writes for the jobs' run configuration."""
    return yaml.dump(data, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False)
