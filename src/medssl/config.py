"""Pydantic models of ``params.yaml``: the one configuration of the benchmark.

Validation is strict: an unknown key, method, dataset, backbone or protocol is
an error that names it. ``workflow/schemas/params.schema.json`` is generated
from :class:`Params` (``medssl schema``) and checked by the test-suite.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from medssl import registry

Triple = tuple[float, float, float]
IntTriple = tuple[int, int, int]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------- sources
class SyntheticSource(_Strict):
    """Built-in phantoms (:mod:`medssl.data.synthetic`), deterministic by seed."""

    kind: Literal["synthetic"]
    generator: Literal["torso", "breast"] = "torso"
    labels: Literal["none", "organs", "heart", "vessels", "lesion", "breast"] = "none"
    n_cases: int = Field(ge=1)
    seed: int = 0
    shape: IntTriple = (64, 64, 32)
    spacing: Triple = (4.0, 4.0, 8.0)
    lesion_fraction: float = Field(0.5, ge=0.0, le=1.0)


class UrlSource(_Strict):
    """A public archive downloaded over HTTP(S) (or ``file://``), checksum-verified."""

    kind: Literal["url"]
    url: str
    md5: str | None = None
    sha256: str | None = None
    layout: Literal["msd"] = "msd"
    subdir: str | None = None  # folder inside the archive that holds the layout

    @model_validator(mode="after")
    def _one_hash(self) -> UrlSource:
        if not (self.md5 or self.sha256):
            raise ValueError(f"url source {self.url!r} needs an md5 or sha256 checksum")
        return self


class ManualSource(_Strict):
    """Gated data the user downloads by hand; medssl checks it is in place."""

    kind: Literal["manual"]
    homepage: str
    instructions: str = ""
    expected: list[str] = Field(min_length=1)  # glob patterns relative to data/raw/<dataset>
    layout: Literal["msd"] = "msd"


Source = Annotated[SyntheticSource | UrlSource | ManualSource, Field(discriminator="kind")]


# --------------------------------------------------------------------- recipes
class Intensity(_Strict):
    """Intensity recipe. ``ct``: clip to ``clip`` then map linearly to [0, 1];
    ``minmax``: per-image min-max to [0, 1]; ``percentile``: clip to the
    ``percentiles`` of the image then min-max; ``none``: unchanged."""

    kind: Literal["ct", "minmax", "percentile", "none"] = "ct"
    clip: tuple[float, float] | None = None
    percentiles: tuple[float, float] = (0.5, 99.5)

    @model_validator(mode="after")
    def _check(self) -> Intensity:
        if self.kind == "ct" and (self.clip is None or self.clip[0] >= self.clip[1]):
            raise ValueError(f"ct intensity needs clip [low, high] with low < high, got {self.clip}")
        lo, hi = self.percentiles
        if not 0 <= lo < hi <= 100:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {self.percentiles}")
        return self


class Recipe(_Strict):
    """Preprocessing recipe: RAS orientation, target spacing (mm), intensity, ROI."""

    spacing: Triple
    intensity: Intensity = Intensity(kind="none")
    roi: IntTriple | None = None  # centre crop / pad to this shape (voxels)


class Splits(_Strict):
    """Seeded fixed splits; a float is a share of the cases, an int a count."""

    validation: float | int = 0.2
    test: float | int = 0.2
    seed: int = 0


class DatasetSpec(_Strict):
    task: Literal["pretrain", "segmentation", "classification"]
    modality: Literal["CT", "MR", "PET"] = "CT"
    classes: list[str] = Field(default_factory=list)
    source: Source
    recipe: Recipe
    splits: Splits = Splits()
    citation: str = ""

    @model_validator(mode="after")
    def _classes(self) -> DatasetSpec:
        if self.task != "pretrain" and len(self.classes) < 2:
            raise ValueError(f"a {self.task} dataset needs at least two classes, got {self.classes}")
        return self


# ----------------------------------------------------------- models / training
class BackboneSpec(_Strict):
    name: str
    args: dict[str, Any] = Field(default_factory=dict)


class MethodSpec(_Strict):
    kind: str
    args: dict[str, Any] = Field(default_factory=dict)
    pretrain: dict[str, Any] = Field(default_factory=dict)  # overrides of the pretrain defaults


class PretrainSpec(_Strict):
    epochs: int = Field(6, ge=0)
    batch_size: int = Field(2, ge=1)
    lr: float = Field(1e-4, gt=0)
    patch: IntTriple = (32, 32, 32)
    steps_per_epoch: int = Field(4, ge=1)
    num_threads: int = Field(1, ge=1)


class DownstreamSpec(PretrainSpec):
    sw_overlap: float = Field(0.5, ge=0.0, lt=1.0)
    val_every: int = Field(1, ge=1)  # validate every k epochs (and always after the last)


Protocol = Literal["linear", "finetune"]


class StudySpec(_Strict):
    title: str = ""
    backbone: str
    pretrain_dataset: str
    methods: list[str] = Field(min_length=1)
    datasets: list[str] = Field(min_length=1)
    protocols: list[Protocol] = Field(default_factory=lambda: ["linear", "finetune"])
    fractions: list[Annotated[float, Field(gt=0, le=1)]] = Field(default_factory=lambda: [1.0])
    seeds: list[int] = Field(default_factory=lambda: [0])


class Params(_Strict):
    seed: int = 0
    datasets: dict[str, DatasetSpec]
    backbones: dict[str, BackboneSpec] = Field(default_factory=dict)
    methods: dict[str, MethodSpec]
    pretrain: PretrainSpec = PretrainSpec()
    downstream: DownstreamSpec = DownstreamSpec()
    studies: dict[str, StudySpec] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _cross_references(self) -> Params:
        for name, spec in self.methods.items():
            if spec.kind not in registry.METHODS:
                raise ValueError(
                    f"method {name!r}: unknown kind {spec.kind!r}; known: {', '.join(registry.names('method'))}"
                )
            unknown = set(spec.pretrain) - set(PretrainSpec.model_fields)
            if unknown:
                raise ValueError(f"method {name!r}: unknown pretrain keys {sorted(unknown)}")
        for name, spec in self.backbones.items():
            if spec.name not in registry.BACKBONES:
                raise ValueError(
                    f"backbone {name!r}: unknown name {spec.name!r}; known: {', '.join(registry.names('backbone'))}"
                )
        for sname, study in self.studies.items():
            _known(f"study {sname!r}: backbone", [study.backbone], self.backbones)
            _known(f"study {sname!r}: method", study.methods, self.methods)
            _known(f"study {sname!r}: dataset", [*study.datasets, study.pretrain_dataset], self.datasets)
            for ds in study.datasets:
                if self.datasets[ds].task == "pretrain":
                    raise ValueError(f"study {sname!r}: dataset {ds!r} has no labels (task: pretrain)")
        return self

    # ------------------------------------------------------------ helpers
    def method_pretrain(self, method: str) -> PretrainSpec:
        """The pretrain settings of ``method``: the defaults with its overrides."""
        return self.pretrain.model_copy(update=self.methods[method].pretrain)


def _known(what: str, names: list[str], table: dict[str, Any]) -> None:
    for n in names:
        if n not in table:
            raise ValueError(f"{what} {n!r} is not defined; defined: {', '.join(sorted(table)) or 'none'}")


class ConfigError(ValueError):
    """params.yaml is missing, unreadable or invalid; the message names the file and fault."""


def parse(data: dict[str, Any], source: str = "params.yaml") -> Params:
    """Validate a loaded params mapping; raise :class:`ConfigError` naming ``source``."""
    try:
        return Params.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            lines.append(f"  {loc}: {msg}")
        raise ConfigError(f"{source}: invalid configuration\n" + "\n".join(lines)) from None


def load(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``path``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: configuration file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return parse(data, str(path))


def json_schema() -> dict[str, Any]:
    """JSON schema of params.yaml (the file in ``workflow/schemas``)."""
    schema = Params.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "medssl params.yaml"
    return schema
