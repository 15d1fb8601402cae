"""Pydantic models of ``params.yaml``: the one configuration of the benchmark.

Validation is strict: an unknown key, method, dataset, backbone or protocol is
an error that names it. ``workflow/schemas/params.schema.json`` is generated
from :class:`Params` (``medssl schema``) and checked by the test-suite.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Discriminator, Field, PositiveFloat, Tag, ValidationError,
                      model_validator)

from medssl import registry
from medssl.yamlfile import DuplicateKeyError, read_yaml

Triple = tuple[float, float, float]
IntTriple = tuple[int, int, int]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------- sources
class SyntheticSource(_Strict):
    """Built-in phantoms (:mod:`medssl.data.synthetic`), deterministic by seed."""

    kind: Literal["synthetic"]
    generator: Literal["torso", "breast", "cardiac"] = "torso"
    labels: Literal["none", "organs", "heart", "vessels", "lesion", "breast", "cardiac"] = "none"
    n_cases: int = Field(ge=1)
    seed: int = 0
    shape: IntTriple = (64, 64, 32)
    spacing: Triple = (4.0, 4.0, 8.0)
    lesion_fraction: float = Field(0.5, ge=0.0, le=1.0)
    # radius range (template mm) of a lung lesion; bigger lesions are easier to see at coarse spacing
    lesion_mm: tuple[PositiveFloat, PositiveFloat] = (10.0, 16.0)
    contrast: Literal["bssfp", "lge"] = "bssfp"  # MR sequence of the cardiac generator


    @model_validator(mode="after")
    def _lesion_range(self) -> SyntheticSource:
        if self.lesion_mm[0] > self.lesion_mm[1]:
            raise ValueError(f"lesion_mm must be [low, high] with low <= high, got {list(self.lesion_mm)}")
        return self


class UrlSource(_Strict):
    """A public archive downloaded over HTTP(S) (or ``file://``), checksum-verified."""

    kind: Literal["url"]
    url: str
    md5: str | None = None
    sha256: str | None = None
    subdir: str | None = None  # folder inside the archive that holds the raw layout

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


Source = Annotated[SyntheticSource | UrlSource | ManualSource, Field(discriminator="kind")]


# --------------------------------------------------------------------- layouts
# How the cases of a raw folder are found (:mod:`medssl.data.layouts`). Patterns
# are relative to ``data/raw/<dataset>``, with ``/`` separators, and may hold
# the shell wildcards ``*``, ``?`` and ``**`` (any number of folders) and
# placeholders: ``{case}`` (required: the case id), ``{sequence}`` (replaced by
# the layout's ``sequence``), ``{label}`` (the class of a classification case,
# read from the path, e.g. ``NCP/{case}/*.png``) and any other ``{name}`` (an
# extra part of the case id, joined to it with ``_``, e.g. a visit folder).
class LabelTable(_Strict):
    """Class labels of a classification dataset in a CSV file (e.g. STOIC's ``reference.csv``)."""

    path: str  # relative to the raw folder
    id_column: str
    label_column: str


class MsdLayout(_Strict):
    """Medical Segmentation Decathlon: ``dataset.json`` lists the ``training`` cases."""

    kind: Literal["msd"] = "msd"


class FilesLayout(_Strict):
    """Cases found by file-name patterns: NIfTI flat or in per-case folders, MHA, MHD, NRRD
    (anything SimpleITK reads). ``sequence`` picks one sequence of a multi-sequence case
    (BraTS ``t1ce``, MS-CMRSeg ``C0`` / ``DE`` / ``T2``)."""

    kind: Literal["files"]
    image: str
    label: str | None = None  # segmentation label pattern (same placeholders as image)
    sequence: str | None = None
    labels_csv: LabelTable | None = None


class DicomLayout(_Strict):
    """One DICOM series per case: ``series`` is the pattern of the case's folder; the
    series whose description contains ``series_description`` (or else the one with the
    most slices) is read."""

    kind: Literal["dicom"]
    series: str
    series_description: str | None = None
    label: str | None = None  # segmentation label file pattern (NIfTI / NRRD / ...)
    labels_csv: LabelTable | None = None


class PngStackLayout(_Strict):
    """A case is a folder of 2-D slices (PNG / JPEG / TIFF) stacked in natural file-name
    order; the files carry no geometry, so ``spacing`` (mm, in-plane x, y, slice) is given."""

    kind: Literal["png_stack"]
    stack: str  # pattern of a case's slice folder
    slices: str = "*.png"  # glob of the slice files inside it
    spacing: Triple = (1.0, 1.0, 1.0)
    label_stack: str | None = None  # pattern of the folder of label slices (segmentation)
    labels_csv: LabelTable | None = None


Layout = Annotated[MsdLayout | FilesLayout | DicomLayout | PngStackLayout, Field(discriminator="kind")]


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


OptTriple = tuple[Annotated[float, Field(gt=0)] | None, Annotated[float, Field(gt=0)] | None,
                  Annotated[float, Field(gt=0)] | None]
OptIntTriple = tuple[Annotated[int, Field(ge=1)] | None, Annotated[int, Field(ge=1)] | None,
                     Annotated[int, Field(ge=1)] | None]


class Recipe(_Strict):
    """Preprocessing recipe: RAS orientation, target spacing (mm), intensity, ROI.

    ``null`` in ``spacing`` keeps an axis's own spacing (2-D stacks: MS-CMRSeg is
    resampled to 1 mm in-plane only); ``null`` in ``roi`` keeps that axis's size.
    ``crop: lung`` first crops the image to an intensity-based lung mask
    (:mod:`medssl.data.lung`, STOIC in GVSL) plus ``crop_margin`` mm.
    """

    spacing: OptTriple
    intensity: Intensity = Intensity(kind="none")
    roi: OptIntTriple | None = None  # centre crop / pad to this shape (voxels)
    crop: Literal["lung"] | None = None
    crop_margin: float = Field(10.0, ge=0)


class Splits(_Strict):
    """Seeded fixed splits; a float is a share of the cases, an int a count."""

    validation: float | int = 0.2
    test: float | int = 0.2
    seed: int = 0
    # keep cases of one subject in one split: a regex whose group `group` (or first
    # group) is the subject in the case id, e.g. ADNI's "^(?P<group>\d+_S_\d+)"
    group_by: str | None = None

    @model_validator(mode="after")
    def _regex(self) -> Splits:
        if self.group_by is not None:
            import re

            try:
                rx = re.compile(self.group_by)
            except re.error as exc:
                raise ValueError(f"group_by {self.group_by!r} is not a valid regex ({exc})") from None
            if rx.groups < 1:
                raise ValueError(f"group_by {self.group_by!r} needs a capture group (the subject)")
        return self


class DatasetSpec(_Strict):
    task: Literal["pretrain", "segmentation", "classification"]
    modality: Literal["CT", "MR", "PET"] = "CT"
    classes: list[str] = Field(default_factory=list)
    source: Source
    layout: Layout = MsdLayout()
    # published label value -> class index: voxel values of segmentation labels
    # (MM-WHS 500 -> 1, ...) or class values of classification cases ("NCP" -> 2);
    # keys are strings (YAML ints are accepted), 0 -> 0 is implied for segmentation.
    label_values: dict[str, int] | None = None
    recipe: Recipe
    splits: Splits = Splits()
    citation: str = ""
    notes: str = ""

    @model_validator(mode="before")
    @classmethod
    def _label_keys(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("label_values"), dict):
            data = {**data, "label_values": {str(k): v for k, v in data["label_values"].items()}}
        return data

    @model_validator(mode="after")
    def _classes(self) -> DatasetSpec:
        if self.task != "pretrain" and len(self.classes) < 2:
            raise ValueError(f"a {self.task} dataset needs at least two classes, got {self.classes}")
        if self.label_values is not None:
            n = max(len(self.classes), 1)
            bad = {k: v for k, v in self.label_values.items() if not 0 <= v < n}
            if bad:
                raise ValueError(f"label_values map to class indices outside 0..{n - 1}: {bad}")
        if isinstance(self.source, SyntheticSource) and not isinstance(self.layout, MsdLayout):
            raise ValueError("a synthetic source writes the msd layout; remove `layout`")
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
    batch_size: int = Field(2, ge=1)  # the global batch: split over the processes of a DDP run
    lr: float = Field(1e-4, gt=0)
    patch: IntTriple = (32, 32, 32)
    steps_per_epoch: int = Field(4, ge=1)
    num_threads: int = Field(1, ge=1)
    # save the full training state every k steps (0: only at the end of each epoch); also at every
    # epoch end and on SIGTERM / SIGUSR1 (medssl.train.resume). Not part of the resume fingerprint.
    checkpoint_every: int = Field(100, ge=0)
    amp: bool = False  # bf16 autocast of the networks, CUDA or CPU; losses stay fp32 (medssl.nn.precision)
    # optimiser and learning-rate schedule (medssl.train.optim); the defaults keep Adam at a constant lr.
    # S2DC (supplement Sec. C, published code): adamw, weight_decay 0.1, warmup_cosine, 500 of 100k steps.
    optimizer: Literal["adam", "adamw"] = "adam"
    weight_decay: float = Field(0.0, ge=0)  # Adam: L2 added to the gradient; AdamW: decoupled decay
    schedule: Literal["constant", "warmup_cosine"] = "constant"
    # warmup_cosine: linear warm-up over round(warmup_fraction * epochs * steps_per_epoch) steps, then a
    # half cosine to 0 at the last step (a fraction, so one setting fits runs of any length; S2DC: 0.005)
    warmup_fraction: float = Field(0.0, ge=0, lt=1)


class DownstreamSpec(PretrainSpec):
    # optimiser and schedule as for pre-training (medssl.train.optim); warmup_cosine decays the lr to 0 at
    # the last step, so the validation curve flattens where a run ends (issue 14: converged references)
    sw_overlap: float = Field(0.5, ge=0.0, lt=1.0)
    val_every: int = Field(1, ge=1)  # validate every k epochs (and always after the last)
    save_predictions: bool = True  # test label maps in <run>/predictions/ (segmentation; medssl.train.outputs)
    keep_weights: bool = False  # keep the tested (best-epoch) model in <run>/weights/ (safetensors + json)


Protocol = Literal["linear", "finetune"]


class StudySpec(_Strict):
    """A pre-training study (``kind: ssl``, the default): pre-train every method on
    ``pretrain_dataset``, then run every protocol x dataset x label fraction x seed."""

    kind: Literal["ssl"] = "ssl"
    title: str = ""
    backbone: str
    # one corpus, or several pooled (S2DC's 10k CT collection of Table 1)
    pretrain_dataset: str | Annotated[list[str], Field(min_length=1)]
    methods: list[str] = Field(min_length=1)
    datasets: list[str] = Field(min_length=1)
    protocols: list[Protocol] = Field(default_factory=lambda: ["linear", "finetune"])
    fractions: list[Annotated[float, Field(gt=0, le=1)]] = Field(default_factory=lambda: [1.0])
    seeds: list[int] = Field(default_factory=lambda: [0])

    @property
    def pretrain_datasets(self) -> list[str]:
        """The pre-training corpus as a list of dataset names (pooled when several)."""
        return [self.pretrain_dataset] if isinstance(self.pretrain_dataset, str) else list(self.pretrain_dataset)

    @property
    def pretrain_name(self) -> str:
        """One name for the corpus (``a+b+c`` when pooled): the MLflow dataset tag."""
        return "+".join(self.pretrain_datasets)


class _RowStudy(_Strict):
    """A study whose rows are the keys of its ``models`` mapping (template, stn, uda)."""

    @property
    def methods(self) -> list[str]:
        return list(self.models)  # type: ignore[attr-defined]


# --------------------------------------------- template transformer study (kind: template)
class TemplateModelSpec(_Strict):
    """One row of the template study: a model of :func:`medssl.template.models.build`.

    ``args`` override the row's defaults, e.g. ``{train_mu: true}`` for the
    Table 3 ablation rows, or ``covariance: isotropic``.
    """

    kind: Literal["unet", "stt", "diffeo_fixed", "diffeo_trained"]
    args: dict[str, Any] = Field(default_factory=dict)


class TemplateTrainSpec(_Strict):
    """Training of every template-study row (paper Sec. 5.1: Adam, lr 2e-4, batch 1, 40k steps,
    T = 4, alpha = 256, 2nd-order BCH, U-Net widths 16..256; the defaults are the CPU size)."""

    steps: int = Field(60, ge=1)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(1, ge=1)
    features: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [8, 16, 32, 64], min_length=2)
    T: int = Field(4, ge=1)
    alpha: float = Field(8.0, gt=0)  # paper: 256 (voxels, at 128x128x64); see params.yaml
    bch_order: Literal[1, 2, 3] = 2
    num_threads: int = Field(1, ge=1)


class TemplateStudySpec(_RowStudy):
    """Diffeomorphic template transformers, Tables 2 and 3 (``kind: template``): every
    model of ``models`` is trained on the training cases of ``dataset`` (a binary
    segmentation task) and evaluated on its test cases, once per seed."""

    kind: Literal["template"]
    title: str = ""
    dataset: str
    models: dict[str, TemplateModelSpec] = Field(min_length=1)
    train: TemplateTrainSpec = TemplateTrainSpec()
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)

    @property
    def datasets(self) -> list[str]:
        return [self.dataset]


# --------------------------------------------------- spatial transformer study (kind: stn)
class StnModelSpec(_Strict):
    """One row of Table 1: a classifier of :func:`medssl.stn.models.build`.

    ``penalty_weight`` is lambda of the ``||grad v||^2`` penalty (10 in the paper's
    penalised row); ``args`` go to the STN (``grid``, ``alpha``, ``width``).
    """

    kind: Literal["cnn", "stn_affine", "stn_nondiffeo", "stn_diffeo"]
    penalty_weight: float = Field(0.0, ge=0)
    args: dict[str, Any] = Field(default_factory=dict)


class StnStudySpec(_RowStudy):
    """Spatial transformers on rotated digits, Table 1 (``kind: stn``): scikit-learn's
    bundled 8x8 digits up-sampled to ``size`` and rotated uniformly in
    ``[-max_angle, max_angle]`` degrees; train/test drawn from disjoint source digits."""

    kind: Literal["stn"]
    title: str = ""
    models: dict[str, StnModelSpec] = Field(min_length=1)
    size: int = Field(32, ge=8)
    max_angle: float = Field(90.0, ge=0, le=180)
    n_train: int = Field(2000, ge=1)
    n_test: int = Field(400, ge=1)
    epochs: int = Field(8, ge=1)
    lr: float = Field(3e-3, gt=0)
    batch_size: int = Field(64, ge=1)
    num_threads: int = Field(1, ge=1)
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)

    dataset_name: ClassVar[str] = "rotated_digits"

    @property
    def datasets(self) -> list[str]:
        return [self.dataset_name]


# ------------------------------------------------ cross-modality adaptation study (kind: uda)
class UdaMethodSpec(_Strict):
    """One row of the uda study: a network of :func:`medssl.uda.models.build`.

    ``kind``: ``source_only`` (U-Net trained on the source only), ``vae`` (the
    VAE without the contrastive and margin terms, UDA-VAE-like) or ``cmevae``.
    ``args`` are network arguments and ``loss`` overrides (see ``build``).
    """

    kind: Literal["source_only", "vae", "cmevae"]
    args: dict[str, Any] = Field(default_factory=dict)


class UdaDirection(_Strict):
    """One adaptation direction: labelled ``source`` -> unlabelled ``target``, with its epochs."""

    source: str
    target: str
    epochs: int = Field(ge=1)
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_\-]+$")  # column / folder name

    @property
    def label(self) -> str:
        return self.name or f"{self.source}_to_{self.target}"


class UdaTrainSpec(_Strict):
    """Training of every uda row (CMEVAE supplement: Adam; 30 / 10 epochs for the two directions)."""

    steps_per_epoch: int | None = Field(None, ge=1)  # None: one pass over the source slices
    batch_size: int = Field(8, ge=1)
    lr: float = Field(1e-3, gt=0)
    num_threads: int = Field(1, ge=1)


class UdaStudySpec(_RowStudy):
    """Cross-modality unsupervised domain adaptation (``kind: uda``): every method is
    trained on the labelled ``training`` slices of the source and the unlabelled
    ``training`` slices of the target, and scored on the target's ``test`` cases
    (Dice per class and mean, ASSD), once per direction and seed."""

    kind: Literal["uda"]
    title: str = ""
    models: dict[str, UdaMethodSpec] = Field(min_length=1)
    net: dict[str, Any] = Field(default_factory=dict)  # network arguments shared by every row
    directions: list[UdaDirection] = Field(min_length=1)
    train: UdaTrainSpec = UdaTrainSpec()
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)

    @property
    def datasets(self) -> list[str]:
        """The direction labels: the table's column groups."""
        return [d.label for d in self.directions]

    def direction(self, label: str) -> UdaDirection:
        for d in self.directions:
            if d.label == label:
                return d
        known = ", ".join(d.label for d in self.directions)
        raise ValueError(f"direction {label!r} is not in the study; its directions: {known}")


def _study_kind(value: Any) -> str:
    if isinstance(value, dict):
        return value.get("kind", "ssl")
    return getattr(value, "kind", "ssl")


Study = Annotated[
    Annotated[StudySpec, Tag("ssl")] | Annotated[TemplateStudySpec, Tag("template")]
    | Annotated[StnStudySpec, Tag("stn")] | Annotated[UdaStudySpec, Tag("uda")],
    Discriminator(_study_kind),
]


class Params(_Strict):
    seed: int = 0
    datasets: dict[str, DatasetSpec]
    backbones: dict[str, BackboneSpec] = Field(default_factory=dict)
    methods: dict[str, MethodSpec]
    pretrain: PretrainSpec = PretrainSpec()
    downstream: DownstreamSpec = DownstreamSpec()
    studies: dict[str, Study] = Field(default_factory=dict)
    # the studies the default target builds (paper presets name theirs); None: every study
    targets: list[str] | None = None
    # Snakemake: one job (one process) per row of an ssl study runs all its seeds, saving the import and
    # start-up cost per seed; the SLURM profile sets it false (one job per seed, in parallel)
    group_seeds: bool = True

    @model_validator(mode="before")
    @classmethod
    def _from_catalog(cls, data: Any) -> Any:
        """Datasets a study names but ``datasets`` does not define come from the catalog
        of real datasets (:mod:`medssl.data.catalog`); an entry in ``datasets`` wins."""
        if not isinstance(data, dict) or not isinstance(data.get("studies"), dict):
            return data
        from medssl.data.catalog import raw_catalog

        defined = data.get("datasets") if isinstance(data.get("datasets"), dict) else {}
        catalog = raw_catalog()
        wanted = [n for st in data["studies"].values() if isinstance(st, dict) for n in _named_datasets(st)]
        extra = {n: catalog[n] for n in wanted if n not in defined and n in catalog}
        if extra:
            data = {**data, "datasets": {**defined, **extra}}
        return data

    @model_validator(mode="after")
    def _cross_references(self) -> Params:
        if self.targets is not None:
            _known("targets: study", self.targets, self.studies)
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
            if isinstance(study, TemplateStudySpec):
                _known(f"study {sname!r}: dataset", [study.dataset], self.datasets)
                ds = self.datasets[study.dataset]
                if ds.task != "segmentation" or len(ds.classes) != 2:
                    raise ValueError(f"study {sname!r}: template dataset {study.dataset!r} must be a binary "
                                     f"segmentation task (two classes), got task {ds.task} with classes {ds.classes}")
                continue
            if isinstance(study, StnStudySpec):
                continue
            if isinstance(study, UdaStudySpec):
                labels = [d.label for d in study.directions]
                if len(set(labels)) != len(labels):
                    raise ValueError(f"study {sname!r}: direction names repeat: {labels}")
                for d in study.directions:
                    _known(f"study {sname!r}: direction {d.label!r}: dataset", [d.source, d.target], self.datasets)
                    src, tgt = self.datasets[d.source], self.datasets[d.target]
                    for name, ds in ((d.source, src), (d.target, tgt)):
                        if ds.task != "segmentation":
                            raise ValueError(f"study {sname!r}: dataset {name!r} must be a segmentation task, "
                                             f"got {ds.task}")
                    if src.classes != tgt.classes:
                        raise ValueError(f"study {sname!r}: direction {d.label!r}: source classes {src.classes} "
                                         f"differ from target classes {tgt.classes}")
                continue
            _known(f"study {sname!r}: backbone", [study.backbone], self.backbones)
            _known(f"study {sname!r}: method", study.methods, self.methods)
            _known(f"study {sname!r}: dataset", [*study.datasets, *study.pretrain_datasets], self.datasets)
            for ds in study.datasets:
                if self.datasets[ds].task == "pretrain":
                    raise ValueError(f"study {sname!r}: dataset {ds!r} has no labels (task: pretrain)")
        return self

    # ------------------------------------------------------------ helpers
    def study_datasets(self, study: str) -> list[str]:
        """The datasets (from ``datasets``) that ``study`` needs on disk, sorted."""
        st = self.studies[study]
        if isinstance(st, StudySpec):
            return sorted({*st.pretrain_datasets, *st.datasets})
        if isinstance(st, TemplateStudySpec):
            return [st.dataset]
        if isinstance(st, UdaStudySpec):
            return sorted({n for d in st.directions for n in (d.source, d.target)})
        return []  # stn: digits bundled with scikit-learn

    def study_row(self, study: str, kind: str, row: str, what: str = "model") -> tuple[Any, Any]:
        """``(study spec, row spec)`` of row ``row`` of the ``kind`` study ``study``.

        Raises:
            ValueError: naming the study when it is missing or of another kind, and
                the row (called ``what``) with the study's rows when it is not one of them.
        """
        st = self.studies.get(study)
        if st is None or st.kind != kind:
            raise ValueError(f"study {study!r} is not a study of kind {kind!r}")
        if row not in st.models:
            raise ValueError(f"{what} {row!r} is not in study {study!r}; its {what}s: {', '.join(st.models)}")
        return st, st.models[row]

    def target_studies(self) -> list[str]:
        """The studies the default target builds: ``targets``, or every study."""
        return list(self.targets) if self.targets is not None else list(self.studies)

    def studies_of_kind(self, kind: str) -> list[str]:
        """Names of the studies of ``kind`` (``ssl``, ``template``, ``stn``, ``uda``) in file order."""
        return [name for name, st in self.studies.items() if st.kind == kind]

    def method_pretrain(self, method: str) -> PretrainSpec:
        """The pretrain settings of ``method``: the defaults with its overrides."""
        return self.pretrain.model_copy(update=self.methods[method].pretrain)


def _known(what: str, names: list[str], table: dict[str, Any]) -> None:
    for n in names:
        if n not in table:
            hint = ""
            if "dataset" in what:
                hint = " (nor in the catalog of real datasets: `medssl datasets` lists both)"
            raise ValueError(f"{what} {n!r} is not defined{hint}; defined: {', '.join(sorted(table)) or 'none'}")


def _named_datasets(study: dict[str, Any]) -> list[str]:
    """Dataset names a raw (unvalidated) study mapping refers to, of any study kind."""
    pre = study.get("pretrain_dataset")
    names = [*(pre if isinstance(pre, list) else [pre]), study.get("dataset"), *(study.get("datasets") or [])]
    for d in study.get("directions") or []:
        if isinstance(d, dict):
            names += [d.get("source"), d.get("target")]
    return [n for n in names if isinstance(n, str)]


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
    return parse(read(path), str(path))


def read(path: str | Path) -> dict[str, Any]:
    """The mapping of configuration file ``path``; a ConfigError names the file and fault."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: configuration file not found")
    try:
        data = read_yaml(path) or {}
    except DuplicateKeyError as exc:
        raise ConfigError(str(exc)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return data


def json_schema() -> dict[str, Any]:
    """JSON schema of params.yaml (the file in ``workflow/schemas``)."""
    schema = Params.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "medssl params.yaml"
    return schema
