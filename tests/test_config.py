from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from medssl import config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def raw():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_default_params_valid(raw):
    p = config.parse(raw)
    assert "ssl3d" in p.studies
    assert p.method_pretrain("genesis").epochs == raw["pretrain"]["epochs"]


def test_study_kinds(raw):
    p = config.parse(raw)
    assert p.studies["ssl3d"].kind == "ssl"  # no `kind` key: the pre-training study
    assert isinstance(p.studies["template"], config.TemplateStudySpec)
    assert isinstance(p.studies["stn"], config.StnStudySpec)
    assert p.studies_of_kind("template") == ["template"]
    assert p.study_datasets("template") == ["phantom_breast"]
    assert p.study_datasets("stn") == []
    assert p.study_datasets("ssl3d") == sorted({"phantom_corpus", *raw["studies"]["ssl3d"]["datasets"]})
    assert p.studies["template"].methods == list(raw["studies"]["template"]["models"])


def test_schema_accepts_every_study_kind(raw):
    import jsonschema  # a dependency of snakemake
    jsonschema.validate(raw, config.json_schema())
    bad = copy.deepcopy(raw)
    bad["studies"]["stn"]["epochs"] = 0
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, config.json_schema())


def test_committed_schema_is_generated():
    committed = json.loads((ROOT / "workflow/schemas/params.schema.json").read_text())
    assert committed == json.loads(json.dumps(config.json_schema())), "run: medssl schema -o workflow/schemas/params.schema.json"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r["studies"]["ssl3d"]["methods"].append("simclr"), "method 'simclr' is not defined"),
        (lambda r: r["studies"]["ssl3d"]["datasets"].append("nih"), "dataset 'nih' is not defined"),
        (lambda r: r.__setitem__("epochz", 3), "epochz: unknown key"),
        (lambda r: r["datasets"]["phantom_organs"]["recipe"].__setitem__("spacingg", 1), "spacingg: unknown key"),
        (lambda r: r["methods"].__setitem__("byol", {"kind": "byol"}), "unknown kind 'byol'"),
        (lambda r: r["studies"]["ssl3d"]["protocols"].append("knn"), "protocols.2"),
        (lambda r: r["studies"]["ssl3d"]["datasets"].append("phantom_corpus"), "has no labels"),
        (lambda r: r["datasets"]["msd_spleen"]["source"].pop("md5"), "needs an md5 or sha256"),
        (lambda r: r["studies"]["ssl3d"].__setitem__("backbone", "vit"), "backbone 'vit' is not defined"),
        (lambda r: r["studies"]["template"].__setitem__("kind", "templat"), "Input tag 'templat'"),
        (lambda r: r["studies"]["template"].__setitem__("dataset", "phantom_organs"),
         "must be a binary segmentation task"),
        (lambda r: r["studies"]["template"].__setitem__("dataset", "nope"), "dataset 'nope' is not defined"),
        (lambda r: r["studies"]["template"]["models"]["unet"].__setitem__("kind", "vnet"), "models.unet.kind"),
        (lambda r: r["studies"]["template"]["train"].__setitem__("bch_order", 4), "bch_order"),
        (lambda r: r["studies"]["stn"]["models"]["cnn"].__setitem__("kind", "tps"), "models.cnn.kind"),
        (lambda r: r["studies"]["stn"].__setitem__("max_angle", 270), "max_angle"),
        (lambda r: r["studies"]["stn"]["models"]["cnn"].__setitem__("penalty_weight", -1), "penalty_weight"),
    ],
)
def test_bad_params_name_the_fault(raw, mutate, message):
    bad = copy.deepcopy(raw)
    mutate(bad)
    with pytest.raises(config.ConfigError, match=message) as info:
        config.parse(bad, "my.yaml")
    assert str(info.value).startswith("my.yaml: invalid configuration")


def test_load_errors(tmp_path):
    with pytest.raises(config.ConfigError, match="not found"):
        config.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(config.ConfigError, match="bad.yaml: not valid YAML"):
        config.load(bad)


def test_pooled_pretrain_corpus_and_catalog_datasets():
    """A study may pool several pre-training corpora and name catalog datasets it does not define."""
    raw = yaml.safe_load(open(ROOT / "params.yaml", encoding="utf-8"))
    raw["studies"]["pool"] = {"backbone": "unet3d_tiny", "pretrain_dataset": ["phantom_corpus", "luna16"],
                              "methods": ["scratch"], "datasets": ["phantom_organs", "btcv"]}
    raw["targets"] = ["pool"]
    p = config.parse(raw)
    st = p.studies["pool"]
    assert st.pretrain_datasets == ["phantom_corpus", "luna16"] and st.pretrain_name == "phantom_corpus+luna16"
    assert p.study_datasets("pool") == ["btcv", "luna16", "phantom_corpus", "phantom_organs"]
    assert p.datasets["btcv"].layout.kind == "files"  # filled in from the catalog
    assert "totalsegmentator" not in p.datasets  # only what a study names
    assert p.target_studies() == ["pool"]
    raw["targets"] = ["nope"]
    with pytest.raises(config.ConfigError, match="targets: study 'nope' is not defined"):
        config.parse(raw)
    raw["targets"] = None
    raw["studies"]["pool"]["datasets"] = ["no_such_set"]
    with pytest.raises(config.ConfigError, match="nor in the catalog"):
        config.parse(raw)
