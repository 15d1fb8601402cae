"""Strict YAML reading (medssl.yamlfile): repeated keys are refused with the file and both lines."""

from __future__ import annotations

import pytest
import yaml

from medssl import cli
from medssl.yamlfile import DuplicateKeyError, loads, read_yaml


def test_same_result_as_pyyaml_without_duplicates(tmp_path):
    text = "a: 1\nb:\n  c: [1, 2.5, x]\n  d: null\nlist:\n  - {k: 1}\n  - {k: 2}\nx: &A {k: 1}\ny:\n  <<: *A\n  k: 2\n"
    f = tmp_path / "ok.yaml"
    f.write_text(text)
    assert read_yaml(f) == yaml.safe_load(text)
    assert read_yaml(f)["y"] == {"k": 2}  # a merge key's value may be overridden


def test_repeated_key_names_file_and_both_lines():
    with pytest.raises(DuplicateKeyError, match=r"p.yaml: key 'epochs' appears twice in one mapping, at line 2 "
                                                r"and at line 4"):
        loads("downstream:\n  epochs: 50\n  lr: 0.1\n  epochs: 2\n", "p.yaml")
    assert loads("a: {epochs: 1}\nb: {epochs: 2}\n") == {"a": {"epochs": 1}, "b": {"epochs": 2}}  # other mappings


def test_medssl_check_refuses_a_repeated_key(tmp_path, capsys):
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "params.yaml").read_text()
    bad = tmp_path / "params.yaml"
    bad.write_text(text.replace("downstream:                  # defaults for every downstream protocol\n",
                                "downstream:                  # defaults for every downstream protocol\n  epochs: 50\n",
                                1))
    assert cli.main(["check", "--params", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: key 'epochs' appears twice" in err and "at line" in err
