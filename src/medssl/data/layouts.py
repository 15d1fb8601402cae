"""Raw-data layouts ("adapters by format family"): the cases of a raw folder.

:func:`find_cases` turns ``data/raw/<dataset>`` into a sorted list of
:class:`RawCase` according to the dataset's ``layout`` (:mod:`medssl.config`):

* ``msd``: the Medical Segmentation Decathlon ``dataset.json`` (:func:`read_msd_layout`);
* ``files``: one image file per case found by a file-name pattern (NIfTI flat or
  in per-case folders, MHA, MHD, NRRD: anything SimpleITK reads), optionally one
  sequence of a multi-sequence case;
* ``dicom``: one folder per case holding DICOM series, one of which is read
  (:func:`medssl.data.readers.read_dicom_series`);
* ``png_stack``: one folder of 2-D slices per case, stacked into a volume
  (:func:`medssl.data.readers.read_png_stack`).

Patterns are relative to the raw folder with ``/`` separators. ``*`` and ``?``
match within one path component, ``**`` (a whole component) any number of
folders. Placeholders match one path component or part of one (non-empty,
shortest match first): ``{case}`` (required) is the case id, ``{sequence}`` is
replaced by the layout's ``sequence``, ``{label}`` is the class of a
classification case, and any other ``{word}`` is an extra part of the case id:
the parts (``{case}`` and the extras) are joined with ``_`` in their order of
first appearance (``{label}/{case}/{scan}`` gives ``<case>_<scan>``,
``{subject}/{case}.nii.gz`` gives ``<subject>_<case>``). A placeholder used twice must match the same text twice.
Names starting with ``.`` (``.DS_Store``, macOS ``._x`` files, hidden folders)
are never matched.

A segmentation label pattern may use the image pattern's placeholders; for each
case they are replaced by the case's values and the result must match exactly
one file (or folder, for a ``label_stack``). A file that is another case's label
is never a case itself, so ``{case}.nii.gz`` beside ``{case}_seg.nii.gz`` works.

Class labels (classification) come from ``{label}`` in the path or from a CSV
table (``labels_csv``, read with pandas, every cell as a string). A case is
looked up in the table by its full id, then by its ``{case}`` part (so a
per-patient table serves a patient's several scans). The raw class value is
mapped to a class index by ``label_values`` (string keys; ``"1"`` also matches
``1.0``), or else must be an int in ``0..n_classes-1``. For a ``pretrain``
dataset the labels (pattern, table, ``{label}``) are ignored.

Every fault raises :class:`PreprocessError` with a message naming the file or
folder and the fault.
"""

from __future__ import annotations

import bisect
import json
import os
import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from medssl.config import DatasetSpec, DicomLayout, FilesLayout, LabelTable, MsdLayout, PngStackLayout

ImageKind = Literal["file", "dicom", "png_stack"]
_ROLES = ("case", "sequence", "label")  # placeholders that are not extra id parts
_TOKEN = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}|\*+|\?")
_SHOWN = 10  # files / values listed in an error


class PreprocessError(ValueError):
    """Bad raw input; the message names the file (or dataset) and the fault.

    Defined here (and re-exported by :mod:`medssl.data.preprocess`) so that the
    layouts need nothing from the preprocessing module.
    """


@dataclass(frozen=True)
class RawCase:
    """One case of a raw dataset.

    Attributes:
        case: the case id (also the output file name).
        image: the image: a file (``image_kind="file"``), the folder holding a
            DICOM series (``"dicom"``) or the folder of a slice stack (``"png_stack"``).
        label: a segmentation label (file, or slice folder when ``label_kind`` is
            ``"png_stack"``), a class index (classification) or ``None``.
        image_kind: how ``image`` is read (:func:`medssl.data.preprocess.read_raw_case`).
        label_kind: how a label path is read: ``"file"`` or ``"png_stack"``.
        series_description: DICOM: read the series whose description contains this.
        slices: slice stacks: glob of the slice files in the folder.
        spacing: slice stacks: voxel spacing (mm) of the stacked volume.
    """

    case: str
    image: Path
    label: Path | int | None = None
    image_kind: ImageKind = "file"
    label_kind: ImageKind = "file"
    series_description: str | None = None
    slices: str = "*.png"
    spacing: tuple[float, float, float] | None = None


# ------------------------------------------------------------------ msd layout
def case_id(path: str | Path) -> str:
    """Case id of an image file: its name without ``.nii.gz`` / ``.nii``."""
    name = Path(path).name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def inside(raw_dir: Path, rel: str, where: str) -> Path:
    """``raw_dir / rel``, refused when ``rel`` leaves the dataset folder.

    The rule: ``rel`` must be relative and, with ``.`` and ``..`` removed
    lexically (``os.path.normpath``), stay inside ``raw_dir``. Symbolic links
    inside the folder are followed: whoever placed one there chose its target
    (e.g. a link to data on another disk); ``..`` in an index or a layout is
    refused, since nobody needs it to name a file of the dataset.

    Raises:
        PreprocessError: naming ``where`` (the index or setting) and the path.
    """
    norm = os.path.normpath(rel)
    if os.path.isabs(rel) or norm == ".." or norm.startswith(".." + os.sep):
        raise PreprocessError(f"{where}: path {rel!r} leaves the dataset folder {raw_dir}; "
                              "paths must be relative and inside it")
    return Path(raw_dir) / norm


def read_msd_layout(raw_dir: Path, name: str, task: str, n_classes: int | None) -> list[RawCase]:
    """Cases listed in the ``training`` list of ``raw_dir/dataset.json`` (MSD layout).

    Args:
        raw_dir: the raw dataset folder.
        name: dataset name (for the ``medssl fetch`` hint).
        task: ``segmentation`` (label files), ``classification`` (int labels)
            or ``pretrain`` (labels ignored).
        n_classes: number of classes (checks class labels).

    Returns:
        The cases sorted by id, every listed file checked to exist.

    Raises:
        PreprocessError: naming the path when ``dataset.json`` or a listed file
            is missing (suggesting ``medssl fetch``), the file is invalid, a
            label has the wrong kind or value, or case ids repeat.
    """
    hint = f"; run `medssl fetch {name}` first"
    raw_dir = Path(raw_dir)
    index = raw_dir / "dataset.json"
    if not index.is_file():
        raise PreprocessError(f"{index}: raw dataset index not found{hint}")
    try:
        training = json.loads(index.read_text())["training"]
        if not isinstance(training, list) or not training:
            raise TypeError("'training' must be a non-empty list")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise PreprocessError(f"{index}: not a valid MSD dataset.json ({type(exc).__name__}: {exc})") from exc
    cases: dict[str, RawCase] = {}
    for item in training:
        if not isinstance(item, dict) or not isinstance(item.get("image"), str):
            raise PreprocessError(f"{index}: training entry without an image path: {item!r}")
        image = inside(raw_dir, item["image"], str(index))
        label = item.get("label")
        if task == "segmentation":
            if not isinstance(label, str):
                raise PreprocessError(f"{index}: segmentation entry {item['image']!r} needs a label file, got {label!r}")
            label = inside(raw_dir, label, str(index))
        elif task == "classification":
            if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < (n_classes or 0):
                raise PreprocessError(f"{index}: entry {item['image']!r} has class label {label!r}; "
                                      f"expected an int in 0..{(n_classes or 0) - 1}")
        else:
            label = None
        for f in (image, label):
            if isinstance(f, Path) and not f.is_file():
                raise PreprocessError(f"{f}: raw file listed in {index} not found{hint}")
        cid = case_id(image)
        if cid in cases:
            raise PreprocessError(f"{index}: case id {cid!r} appears more than once")
        cases[cid] = RawCase(cid, image, label)
    return [cases[c] for c in sorted(cases)]


# -------------------------------------------------------------------- patterns
def placeholders(pattern: str) -> list[str]:
    """The placeholder names of ``pattern`` in order of first appearance."""
    out: list[str] = []
    for m in _TOKEN.finditer(pattern):
        if m.group(1) and m.group(1) not in out:
            out.append(m.group(1))
    return out


def check_pattern(pattern: str, what: str = "pattern") -> None:
    """Raise ValueError naming ``pattern`` unless it is a relative ``/``-separated
    pattern that stays inside the raw folder and does not end in ``**``."""
    parts = pattern.split("/")
    if not pattern or pattern.startswith("/") or "\\" in pattern or "" in parts or ".." in parts:
        raise ValueError(f"{what} {pattern!r} must be a relative path with '/' separators, "
                         f"no empty, '..' or backslash parts")
    if parts[-1] == "**":
        raise ValueError(f"{what} {pattern!r} must not end in '**' (name the file or folder)")


def compile_pattern(pattern: str, fixed: Mapping[str, str] | None = None) -> re.Pattern[str]:
    """Regular expression of a layout pattern, matched with ``fullmatch`` on
    ``/``-separated paths relative to the raw folder.

    Args:
        pattern: the pattern (see the module docstring).
        fixed: placeholder values to match literally (e.g. ``{"sequence": "t1ce"}``);
            the other placeholders become named groups.

    Raises:
        ValueError: naming ``pattern`` when it is not a valid relative pattern.
    """
    check_pattern(pattern)
    fixed = fixed or {}
    parts = pattern.split("/")
    seen: set[str] = set()
    out = []
    for n, comp in enumerate(parts):
        last = n == len(parts) - 1
        if comp == "**":
            out.append("(?:[^/]+/)*")
            continue
        rx, pos = "", 0
        for m in _TOKEN.finditer(comp):
            rx += re.escape(comp[pos:m.start()])
            token, pos = m.group(0), m.end()
            if token == "?":
                rx += "[^/]"
            elif token.startswith("*"):
                rx += "[^/]*"
            elif m.group(1) in fixed:
                rx += re.escape(str(fixed[m.group(1)]))
            elif m.group(1) in seen:
                rx += f"(?P={m.group(1)})"
            else:
                seen.add(m.group(1))
                rx += f"(?P<{m.group(1)}>[^/]+?)"
        rx += re.escape(comp[pos:])
        out.append(rx if last else rx + "/")
    return re.compile("".join(out))


def resolve_pattern(pattern: str, values: Mapping[str, str]) -> str:
    """``pattern`` with the placeholders of ``values`` replaced (for messages and prefixes)."""
    return _TOKEN.sub(lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0), pattern)


def _literal_prefix(pattern: str, values: Mapping[str, str]) -> str:
    """The leading components of ``pattern`` that hold no wildcard once ``values`` are in."""
    parts = []
    for comp in pattern.split("/"):
        if any(m.group(1) not in values for m in _TOKEN.finditer(comp)):
            return "".join(p + "/" for p in parts)
        parts.append(resolve_pattern(comp, values))
    return "/".join(parts)  # no wildcard at all: the path itself


class _Tree:
    """Every file and folder under a raw folder (relative POSIX paths, sorted; hidden ones skipped)."""

    def __init__(self, root: Path):
        self.root = root
        files: list[str] = []
        dirs: list[str] = []
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel = Path(dirpath).relative_to(root).as_posix()
            base = "" if rel == "." else rel + "/"
            dirs += [base + d for d in dirnames]
            files += [base + f for f in filenames if not f.startswith(".")]
        self.files, self.dirs = sorted(files), sorted(dirs)

    def match(self, regex: re.Pattern[str], folders: bool, prefix: str = "") -> list[re.Match[str]]:
        """Full matches of ``regex`` among the files (or folders) whose path starts with ``prefix``."""
        items = self.dirs if folders else self.files
        out = []
        for i in range(bisect.bisect_left(items, prefix), len(items)):
            if not items[i].startswith(prefix):
                break
            m = regex.fullmatch(items[i])
            if m:
                out.append(m)
        return out

    def sample(self) -> str:
        """A few of the files, for an error message."""
        shown = ", ".join(self.files[:_SHOWN]) or "no files"
        return shown + (f" (and {len(self.files) - _SHOWN} more)" if len(self.files) > _SHOWN else "")


# ---------------------------------------------------------------- find cases
def find_cases(raw_dir: str | Path, name: str, spec: DatasetSpec) -> list[RawCase]:
    """The cases of the raw folder of dataset ``name``, read by ``spec.layout``.

    Args:
        raw_dir: the raw folder (``data/raw/<name>``).
        name: the dataset name (for messages).
        spec: the dataset's spec: layout, task, classes and ``label_values``.

    Returns:
        The cases sorted by id: images (and labels) checked to exist, class
        labels mapped to class indices.

    Raises:
        PreprocessError: naming the folder / file and the fault: no raw folder,
            an invalid pattern, no case found (listing files that are there),
            a missing sequence, an image without its label or with several,
            duplicate case ids, a CSV without the case, an unknown class value.
    """
    raw_dir = Path(raw_dir)
    layout = spec.layout
    n_classes = len(spec.classes) if spec.task != "pretrain" else None
    if isinstance(layout, MsdLayout):
        return read_msd_layout(raw_dir, name, spec.task, n_classes)
    if not raw_dir.is_dir():
        raise PreprocessError(f"{raw_dir}: raw folder of dataset {name!r} not found; run `medssl fetch {name}` first")
    return _Finder(raw_dir, name, spec).cases()


class _Finder:
    """:func:`find_cases` for the pattern layouts (files, dicom, png_stack)."""

    def __init__(self, raw_dir: Path, name: str, spec: DatasetSpec):
        self.raw_dir, self.name, self.spec = raw_dir, name, spec
        layout = spec.layout
        self.sequence: str | None = None
        if isinstance(layout, FilesLayout):
            self.image, self.label, self.kind = layout.image, layout.label, "file"
            self.sequence = layout.sequence
        elif isinstance(layout, DicomLayout):
            self.image, self.label, self.kind = layout.series, layout.label, "dicom"
        elif isinstance(layout, PngStackLayout):
            self.image, self.label, self.kind = layout.stack, layout.label_stack, "png_stack"
        else:  # pragma: no cover - config.Layout is a closed union
            raise PreprocessError(f"dataset {name!r}: unknown layout kind {layout.kind!r}")
        self.label_kind: ImageKind = "png_stack" if self.kind == "png_stack" else "file"
        self.table: LabelTable | None = layout.labels_csv
        self._check_config()
        self.id_parts = [n for n in placeholders(self.image) if n == "case" or n not in _ROLES]
        self.tree = _Tree(raw_dir)

    # ---------------------------------------------------------------- config
    def _fail(self, msg: str) -> PreprocessError:
        return PreprocessError(f"dataset {self.name!r} ({self.spec.layout.kind} layout in {self.raw_dir}): {msg}")

    def _check_config(self) -> None:
        task = self.spec.task
        for what, pattern in (("image pattern", self.image), ("label pattern", self.label)):
            if pattern is None:
                continue
            try:
                check_pattern(pattern, what)
            except ValueError as exc:
                raise self._fail(str(exc)) from None
        names = placeholders(self.image)
        if "case" not in names:
            raise self._fail(f"the image pattern {self.image!r} needs a {{case}} placeholder")
        label_names = placeholders(self.label) if self.label else []
        for pattern, has in ((self.image, "sequence" in names), (self.label, "sequence" in label_names)):
            if has and self.sequence is None:
                raise self._fail(f"pattern {pattern!r} has {{sequence}} but the layout names no `sequence`")
        if self.sequence is not None and "sequence" not in names:
            raise self._fail(f"the layout picks sequence {self.sequence!r} but the image pattern "
                             f"{self.image!r} has no {{sequence}} placeholder")
        unknown = [n for n in label_names if n not in names and n != "sequence"]
        if unknown:
            raise self._fail(f"the label pattern {self.label!r} uses placeholders {unknown} "
                             f"that the image pattern {self.image!r} does not")
        if task == "segmentation" and self.label is None:
            raise self._fail("a segmentation dataset needs a label pattern "
                             f"(`{'label_stack' if self.kind == 'png_stack' else 'label'}`)")
        if task == "segmentation" and self.table is not None:
            raise self._fail("`labels_csv` gives class labels; a segmentation dataset needs label files")
        if task == "classification":
            if ("label" in names) == (self.table is not None):
                raise self._fail("a classification dataset takes its classes from exactly one of "
                                 f"{{label}} in the image pattern or `labels_csv`; got "
                                 f"{'both' if self.table is not None else 'neither'}")

    # ----------------------------------------------------------------- cases
    def _ident(self, m: re.Match[str]) -> str:
        groups = m.groupdict()
        return "_".join(groups[n] for n in self.id_parts if groups.get(n) is not None)

    def cases(self) -> list[RawCase]:
        folders = self.kind != "file"
        fixed = {"sequence": self.sequence} if self.sequence is not None else {}
        regex = compile_pattern(self.image, fixed)
        matches = self.tree.match(regex, folders, _literal_prefix(self.image, fixed))
        if not matches:
            what = "folder" if folders else "file"
            raise PreprocessError(
                f"{self.raw_dir}: no case found for dataset {self.name!r}: no {what} matches the pattern "
                f"{resolve_pattern(self.image, fixed)!r}; the folder holds: {self.tree.sample()}")
        labels = [self._label_matches(m) for m in matches] if self.label else [[] for _ in matches]
        label_files = {p for ms in labels for p in ms}
        found: dict[str, re.Match[str]] = {}
        label_of: dict[str, list[str]] = {}
        for m, lab in zip(matches, labels):
            if m.group(0) in label_files:  # another case's label, not a case
                continue
            cid = self._ident(m)
            if cid in found:
                raise PreprocessError(f"{self.raw_dir / m.group(0)}: case id {cid!r} also given by "
                                      f"{self.raw_dir / found[cid].group(0)} (pattern {self.image!r})")
            found[cid], label_of[cid] = m, lab
        if not found:
            raise PreprocessError(f"{self.raw_dir}: no case found for dataset {self.name!r}: every match of "
                                  f"{self.image!r} is a label file ({self.label!r})")
        if self.sequence is not None:
            self._check_sequences(found, label_files)
        classes = self._classes(found) if self.spec.task == "classification" else {}
        out = []
        for cid in sorted(found):
            m = found[cid]
            label: Path | int | None = None
            if self.spec.task == "segmentation":
                label = self._one_label(m, label_of[cid])
            elif self.spec.task == "classification":
                label = classes[cid]
            out.append(self._raw_case(cid, self.raw_dir / m.group(0), label))
        return out

    def _raw_case(self, cid: str, image: Path, label: Path | int | None) -> RawCase:
        layout = self.spec.layout
        if isinstance(layout, DicomLayout):
            return RawCase(cid, image, label, "dicom", series_description=layout.series_description)
        if isinstance(layout, PngStackLayout):
            return RawCase(cid, image, label, "png_stack", "png_stack", slices=layout.slices,
                           spacing=tuple(float(s) for s in layout.spacing))
        return RawCase(cid, image, label)

    def _values(self, m: re.Match[str]) -> dict[str, str]:
        values = {k: v for k, v in m.groupdict().items() if v is not None}
        if self.sequence is not None:
            values["sequence"] = self.sequence
        return values

    # ---------------------------------------------------------------- labels
    def _label_matches(self, m: re.Match[str]) -> list[str]:
        values = self._values(m)
        regex = compile_pattern(self.label, values)
        return [x.group(0) for x in self.tree.match(regex, self.label_kind == "png_stack",
                                                    _literal_prefix(self.label, values))]

    def _one_label(self, m: re.Match[str], paths: list[str]) -> Path:
        image = self.raw_dir / m.group(0)
        tried = resolve_pattern(self.label, self._values(m))
        if not paths:
            raise PreprocessError(f"{image}: segmentation case without a label: nothing matches the "
                                  f"label pattern {tried!r} in {self.raw_dir}")
        if len(paths) > 1:
            raise PreprocessError(f"{image}: the label pattern {tried!r} matches {len(paths)} files, "
                                  f"expected one: {', '.join(paths[:_SHOWN])}")
        return self.raw_dir / paths[0]

    def _check_sequences(self, found: dict[str, re.Match[str]], label_files: set[str]) -> None:
        """Cases that have other sequences but not the chosen one are an error."""
        others: dict[str, dict[str, str]] = defaultdict(dict)  # case -> {sequence: path}
        for m in self.tree.match(compile_pattern(self.image), self.kind != "file"):
            cid = self._ident(m)
            if cid not in found and m.group(0) not in label_files:
                others[cid][m.group("sequence")] = m.group(0)
        if not others:
            return
        lines = []
        for cid in sorted(others)[:_SHOWN]:
            paths = list(others[cid].values())
            folder = self.raw_dir / os.path.commonpath([str(Path(p).parent) for p in paths])
            some = compile_pattern(self.image).fullmatch(paths[0])
            expected = resolve_pattern(self.image, {**some.groupdict(), "sequence": self.sequence})
            lines.append(f"{folder}: case {cid!r} has no {self.sequence!r} sequence (no {expected}); "
                         f"sequences found: {', '.join(sorted(others[cid]))}")
        more = f"\n(and {len(others) - _SHOWN} more cases)" if len(others) > _SHOWN else ""
        raise PreprocessError("\n".join(lines) + more)

    def _classes(self, found: dict[str, re.Match[str]]) -> dict[str, int]:
        if self.table is None:  # {label} in the path
            return {cid: class_index(m.group("label"), self.spec, f"{self.raw_dir / m.group(0)}")
                    for cid, m in found.items()}
        path = inside(self.raw_dir, self.table.path, f"dataset {self.name!r}: layout labels table")
        table = read_label_table(path, self.table.id_column, self.table.label_column)
        out = {}
        for cid, m in found.items():
            value = table.get(cid, table.get(m.group("case")))
            if not value:
                fault = "is not in the" if value is None else f"has an empty {self.table.label_column!r} cell in the"
                raise PreprocessError(f"{path}: case {cid!r} ({self.raw_dir / m.group(0)}) {fault} "
                                      f"{self.table.id_column!r} column")
            out[cid] = class_index(value, self.spec, f"{path}, case {cid!r}")
        return out


# -------------------------------------------------------------- class labels
def read_label_table(path: str | Path, id_column: str, label_column: str) -> dict[str, str]:
    """``{id: class value}`` of a CSV table, every cell read as a stripped string.

    Rows with an empty id are skipped; an empty class value is kept as ``""``
    (an error only for a case that needs it, see :func:`find_cases`).

    Raises:
        PreprocessError: naming ``path`` when it is missing or unreadable, lacks a
            column, or gives one id two different values.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise PreprocessError(f"{path}: label table not found")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise PreprocessError(f"{path}: unreadable CSV ({type(exc).__name__}: {exc})") from exc
    missing = [c for c in (id_column, label_column) if c not in df.columns]
    if missing:
        raise PreprocessError(f"{path}: no column {', '.join(map(repr, missing))}; "
                              f"its columns: {', '.join(map(str, df.columns))}")
    out: dict[str, str] = {}
    for cid, value in zip(df[id_column].str.strip(), df[label_column].str.strip()):
        if not cid:
            continue
        if out.get(cid, value) != value:
            raise PreprocessError(f"{path}: id {cid!r} has two labels: {out[cid]!r} and {value!r}")
        out[cid] = value
    return out


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def class_index(value: str, spec: DatasetSpec, where: str) -> int:
    """Class index of a raw class value (a path part or a CSV cell).

    With ``spec.label_values`` the value is looked up there (as a string, else as
    a number: ``"1.0"`` matches the key ``"1"``); without it, it must be an int in
    ``0..n_classes-1``.

    Raises:
        PreprocessError: starting with ``where`` when the value is not mapped.
    """
    mapping = spec.label_values
    n = len(spec.classes)
    if mapping is not None:
        if value in mapping:
            return mapping[value]
        num = _number(value)
        for key, idx in mapping.items():
            if num is not None and _number(key) == num:
                return idx
        raise PreprocessError(f"{where}: class value {value!r} is not in label_values "
                              f"({', '.join(map(repr, mapping))})")
    num = _number(value)
    if num is None or not num.is_integer() or not 0 <= num < n:
        raise PreprocessError(f"{where}: class value {value!r} is not a class index in 0..{n - 1}; "
                              f"map the dataset's values with `label_values`")
    return int(num)


def map_label_values(array: np.ndarray, mapping: Mapping[str, int], where: str) -> np.ndarray:
    """Map label voxel values to class indices (vectorised), ``0 -> 0`` unless given.

    Args:
        array: label voxels (any numeric dtype).
        mapping: ``label_values``: published value (string key) -> class index.
        where: the label file, for the message.

    Returns:
        A uint8 array of class indices, same shape.

    Raises:
        PreprocessError: starting with ``where`` and listing the voxel values that
            the mapping lacks.
    """
    table: dict[float, int] = {0.0: 0}
    for key, idx in mapping.items():
        num = _number(key)
        if num is not None:
            table[num] = idx
    a = np.asarray(array)
    if a.dtype == bool:
        a = a.view(np.uint8)
    lo = int(a.min()) if a.size and a.dtype.kind in "iub" else 0
    if a.size and a.dtype.kind in "iub" and int(a.max()) - lo < 1 << 24:  # small int range: bincount + LUT
        shifted = (a - a.dtype.type(lo)).astype(np.int32, copy=False)
        values = np.flatnonzero(np.bincount(shifted.ravel())) + lo
        index = None
    else:
        values, index = np.unique(a, return_inverse=True)
    bad = [v for v in values.tolist() if float(v) not in table]
    if bad:
        shown = ", ".join(f"{v:g}" for v in bad[:20]) + (f" (and {len(bad) - 20} more)" if len(bad) > 20 else "")
        raise PreprocessError(f"{where}: label values not in label_values: {shown} "
                              f"(mapped: {', '.join(f'{k:g}' for k in sorted(table))})")
    lut = np.array([table[float(v)] for v in values.tolist()], dtype=np.uint8)
    if index is None:
        full = np.zeros(int(values[-1]) - lo + 1, dtype=np.uint8)
        full[values - lo] = lut
        return full[shifted]
    return lut[index.reshape(-1)].reshape(a.shape)
