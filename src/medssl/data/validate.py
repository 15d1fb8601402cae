"""``medssl validate``: every fault of a raw dataset in one run, and what changed since fetch.

:func:`validate_dataset` finds the cases of ``data/raw/<dataset>`` as
:func:`medssl.data.layouts.find_cases` does, but records the fault of a single
case (a missing label, a case missing from the label table, a file listed in
``dataset.json`` that is not there) and goes on. It then opens every case's
image and label (:mod:`medssl.data.integrity`: NIfTI header and voxel count,
other formats through SimpleITK, DICOM series, slice stacks), compares image
and label grid sizes, and lists the files added, removed or changed in size
since ``medssl fetch`` wrote ``manifest.json``. The :class:`Report` holds one
line per fault (path and fault).

:func:`missing_declared` is the check ``medssl fetch`` makes of an extracted
archive before its manifest is written: every file (or case) the layout's index
declares (an MSD ``dataset.json``'s ``training`` / ``test`` images and labels,
the ids of a ``labels_csv`` table) must be there, else the archive is likely
truncated.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from medssl import paths
from medssl.config import DatasetSpec, FilesLayout, ManualSource, MsdLayout, PngStackLayout
from medssl.data import integrity
from medssl.data.layouts import (_SHOWN, PreprocessError, RawCase, _Finder, case_id, class_index, compile_pattern,
                                 find_cases, inside, read_label_table)


@dataclass(frozen=True)
class Fault:
    """One fault: the file (or folder) and what is wrong with it."""

    path: Path
    fault: str

    def __str__(self) -> str:
        return f"{self.path}: {self.fault}"


@dataclass
class Report:
    """What :func:`validate_dataset` found. ``changes`` is ``None`` when there is no manifest."""

    name: str
    raw_dir: Path
    n_cases: int = 0
    n_files: int = 0
    faults: list[Fault] = field(default_factory=list)
    changes: list[Fault] | None = None

    @property
    def ok(self) -> bool:
        return not self.faults and not self.changes

    def lines(self) -> list[str]:
        """One line per fault, then one per file changed since fetch."""
        return [str(f) for f in self.faults + (self.changes or [])]

    def summary(self) -> str:
        head = f"{self.name}: {self.n_cases} cases, {self.n_files} files checked, "
        if self.ok:
            note = " (not fetched yet: no manifest.json to compare)" if self.changes is None else ""
            return head + "no fault" + note
        parts = [f"{len(self.faults)} fault{'s' * (len(self.faults) != 1)}"] if self.faults else []
        if self.changes:
            parts.append(f"{len(self.changes)} file{'s' * (len(self.changes) != 1)} changed since fetch "
                         f"(`medssl fetch --force {self.name}` or re-preprocess, see `medssl fetch {self.name}`)")
        return head + ", ".join(parts)


# ------------------------------------------------------------------- cases
def _msd_entries(index: Path) -> list[tuple[str, dict | str]]:
    """``(section, entry)`` of ``dataset.json``'s ``training`` and ``test`` lists."""
    doc = json.loads(index.read_text(encoding="utf-8"))
    if not isinstance(doc, dict):
        raise TypeError("dataset.json must hold a JSON object")
    training, test = doc.get("training"), doc.get("test", [])
    if not isinstance(training, list) or not training:
        raise TypeError("'training' must be a non-empty list")
    if not isinstance(test, list):
        raise TypeError("'test' must be a list")
    return [("training", e) for e in training] + [("test", e) for e in test]


def _entry_paths(entry: dict | str) -> tuple[object, object]:
    """The image and label of an MSD entry (a test entry may be a bare path)."""
    if isinstance(entry, str):
        return entry, None
    if isinstance(entry, dict):
        return entry.get("image"), entry.get("label")
    return None, None


def _msd_cases(raw_dir: Path, spec: DatasetSpec) -> tuple[list[RawCase], int, list[Fault]]:
    index = raw_dir / "dataset.json"
    if not index.is_file():
        return [], 0, [Fault(index, "raw dataset index not found")]
    try:
        entries = _msd_entries(index)
    except (OSError, UnicodeDecodeError, ValueError, TypeError) as exc:
        return [], 0, [Fault(index, f"not a valid MSD dataset.json ({type(exc).__name__}: {exc})")]
    n_classes = len(spec.classes)
    cases, faults, seen = [], [], {}
    for section, entry in entries:
        image_rel, label_rel = _entry_paths(entry)
        if not isinstance(image_rel, str):
            faults.append(Fault(index, f"{section} entry without an image path: {entry!r}"))
            continue
        label: Path | int | None = None
        try:
            image = inside(raw_dir, image_rel, str(index))
            if section == "training" and spec.task == "segmentation":
                if not isinstance(label_rel, str):
                    raise PreprocessError(f"{index}: segmentation entry {image_rel!r} needs a label file, "
                                          f"got {label_rel!r}")
                label = inside(raw_dir, label_rel, str(index))
            elif section == "training" and spec.task == "classification":
                if isinstance(label_rel, bool) or not isinstance(label_rel, int) or not 0 <= label_rel < n_classes:
                    raise PreprocessError(f"{index}: entry {image_rel!r} has class label {label_rel!r}; "
                                          f"expected an int in 0..{n_classes - 1}")
                label = label_rel
        except PreprocessError as exc:
            faults.append(Fault(index, integrity._reason(exc, index)))
            continue
        cid = case_id(image)
        if cid in seen:
            faults.append(Fault(index, f"case id {cid!r} appears more than once ({seen[cid]}, {image_rel})"))
            continue
        seen[cid] = image_rel
        missing = [p for p in (image, label) if isinstance(p, Path) and not p.is_file()]
        faults += [Fault(p, f"listed in {index.name}, not found") for p in missing]
        if image not in missing:
            cases.append(RawCase(cid, image, label if label not in missing else None))
    return cases, len(seen), faults


class _EveryFault(_Finder):
    """The finder of :func:`find_cases` that records the fault of a single case and goes on."""

    def __init__(self, raw_dir: Path, name: str, spec: DatasetSpec):
        self.faults: list[Fault] = []
        self.table_ids: set[str] | None = None
        super().__init__(raw_dir, name, spec)

    def record(self, exc: PreprocessError, default: Path) -> None:
        for line in str(exc).splitlines():
            head, sep, tail = line.partition(": ")
            path_like = sep and head.startswith(str(self.raw_dir))
            self.faults.append(Fault(Path(head), tail) if path_like else Fault(default, line))

    def _one_label(self, m, paths):
        try:
            return super()._one_label(m, paths)
        except PreprocessError as exc:
            self.record(exc, self.raw_dir / m.group(0))
            return None

    def _check_sequences(self, found, label_files) -> None:
        try:
            super()._check_sequences(found, label_files)
        except PreprocessError as exc:
            self.record(exc, self.raw_dir)

    def _classes(self, found):
        out: dict[str, int | None] = defaultdict(lambda: None)
        table = None
        if self.table is not None:
            try:
                path = inside(self.raw_dir, self.table.path, f"dataset {self.name!r}: layout labels table")
                table = read_label_table(path, self.table.id_column, self.table.label_column)
            except PreprocessError as exc:
                self.record(exc, self.raw_dir)
                return out
            self.table_ids = set(table)
        for cid, m in found.items():
            where = self.raw_dir / m.group(0)
            try:
                if table is None:
                    out[cid] = class_index(m.group("label"), self.spec, str(where))
                    continue
                value = table.get(cid, table.get(m.group("case")))
                if not value:
                    fault = "is not in" if value is None else f"has an empty {self.table.label_column!r} cell in"
                    raise PreprocessError(f"{where}: case {cid!r} {fault} the {self.table.id_column!r} "
                                          f"column of {path}")
                out[cid] = class_index(value, self.spec, f"{path}, case {cid!r}")
            except PreprocessError as exc:
                self.record(exc, where)
        return out


def collect_cases(raw_dir: Path, name: str, spec: DatasetSpec) -> tuple[list[RawCase], int, list[Fault]]:
    """The cases of a raw folder to check, how many the layout declares, and the faults found on the way."""
    if isinstance(spec.layout, MsdLayout):
        return _msd_cases(raw_dir, spec)
    try:
        finder = _EveryFault(raw_dir, name, spec)
        cases = finder.cases()
    except PreprocessError as exc:
        return [], 0, [Fault(raw_dir, str(exc))]
    faults = finder.faults
    if finder.table_ids is not None:
        faults += [Fault(raw_dir / finder.table.path, f"case {i!r} is listed, but no image of it matches "
                                                       f"{_image_pattern(spec)!r}")
                   for i in sorted(finder.table_ids - _ids(raw_dir, spec, cases))]
    return cases, len(cases), faults


def _image_pattern(spec: DatasetSpec) -> str:
    layout = spec.layout
    return layout.image if isinstance(layout, FilesLayout) else (
        layout.stack if isinstance(layout, PngStackLayout) else layout.series)


def _ids(raw_dir: Path, spec: DatasetSpec, cases: list[RawCase]) -> set[str]:
    """Every id a label table may give a case by: its full id and its ``{case}`` part."""
    layout = spec.layout
    fixed = {"sequence": layout.sequence} if isinstance(layout, FilesLayout) and layout.sequence else {}
    regex = compile_pattern(_image_pattern(spec), fixed)
    out = set()
    for rc in cases:
        out.add(rc.case)
        m = regex.fullmatch(Path(rc.image).relative_to(raw_dir).as_posix())
        if m:
            out.add(m.group("case"))
    return out


# ---------------------------------------------------------------- declared
@dataclass
class Declared:
    """Files (or cases) an index declares that the folder lacks."""

    index: Path
    what: str  # "files" or "cases"
    total: int
    missing: list[str]


def missing_declared(raw_dir: Path, name: str, spec: DatasetSpec) -> Declared | None:
    """What the layout's index (``dataset.json``, a ``labels_csv`` table) declares and ``raw_dir``
    lacks, or ``None`` when nothing is missing (or there is no index to go by)."""
    raw_dir = Path(raw_dir)
    if isinstance(spec.layout, MsdLayout):
        index = raw_dir / "dataset.json"
        try:
            entries = _msd_entries(index)
        except (OSError, UnicodeDecodeError, ValueError, TypeError):
            return None  # a missing or broken index is reported by the layout check / preprocess
        declared: dict[str, Path] = {}
        for _, entry in entries:
            for rel in _entry_paths(entry):
                if isinstance(rel, str):
                    try:
                        declared.setdefault(os.path.normpath(rel), inside(raw_dir, rel, str(index)))
                    except PreprocessError:
                        continue  # refused when the cases are read
        missing = [rel for rel, p in declared.items() if not p.is_file()]
        return Declared(index, "files", len(declared), missing) if missing else None
    table = getattr(spec.layout, "labels_csv", None)
    if table is None or spec.task != "classification":
        return None
    try:
        index = inside(raw_dir, table.path, "labels_csv")
        ids = set(read_label_table(index, table.id_column, table.label_column))
        found = _ids(raw_dir, spec, find_cases(raw_dir, name, spec))
    except PreprocessError:
        return None
    missing = sorted(ids - found)
    return Declared(index, "cases", len(ids), missing) if missing else None


def declared_message(name: str, declared: Declared, where: str) -> str:
    """``dataset 'x': <where>: 4 of the 6 files that dataset.json declares are missing: a, b, ...``."""
    d = declared
    more = len(d.missing) - _SHOWN
    shown = ", ".join(d.missing[:_SHOWN]) + (f" (and {more} more)" if more > 0 else "")
    verb = "are missing" if d.what == "files" else "have no image"
    return (f"dataset {name!r}: {where}: {len(d.missing)} of the {d.total} {d.what} that {d.index.name} "
            f"declares {verb}: {shown}")


# ---------------------------------------------------------------- validate
def _check_case(rc: RawCase, full: bool) -> integrity.Checked:
    def one(path: Path, kind: str) -> integrity.Checked:
        if kind == "dicom":
            return integrity.check_dicom_folder(path, rc.series_description, full)
        if kind == "png_stack":
            return integrity.check_slice_stack(path, rc.slices, full)
        return integrity.check_image_file(path, full)

    image = one(Path(rc.image), rc.image_kind)
    if not isinstance(rc.label, Path):
        return image
    label = one(rc.label, rc.label_kind)
    image.n_files += label.n_files
    image.faults += label.faults
    if image.size and label.size and _squeeze(image.size) != _squeeze(label.size):
        image.faults.append((rc.label, f"label grid {'x'.join(map(str, label.size))} differs from its image's "
                                       f"{'x'.join(map(str, image.size))} ({rc.image})"))
    return image


def _squeeze(size: tuple[int, ...]) -> tuple[int, ...]:
    while len(size) > 3 and size[-1] == 1:
        size = size[:-1]
    return size


def validate_dataset(name: str, spec: DatasetSpec, raw_dir: Path | None = None, full: bool = True,
                     progress: bool = False, compare_manifest: bool = True, workers: int | None = None) -> Report:
    """Check every case of raw dataset ``name`` and report every fault at once.

    Args:
        name: the dataset name (for messages).
        spec: its spec (layout, task, classes, source).
        raw_dir: the raw folder; defaults to ``data/raw/<name>``.
        full: read every voxel (a truncated compressed file is caught); ``False``: headers only.
        progress: a tqdm bar over the cases.
        compare_manifest: also list the files changed since ``manifest.json`` was written.
        workers: threads reading files (default: up to 4); zlib and ITK read outside the GIL.

    Returns:
        The :class:`Report`; nothing is raised for a fault of the data.
    """
    import SimpleITK as sitk

    raw_dir = Path(raw_dir) if raw_dir is not None else paths.raw(name)
    report = Report(name, raw_dir)
    if not raw_dir.is_dir():
        report.faults.append(Fault(raw_dir, f"raw folder of dataset {name!r} not found; run `medssl fetch {name}` "
                                            "first"))
        return report
    if isinstance(spec.source, ManualSource):
        report.faults += [Fault(raw_dir, f"nothing matches the manual source's expected pattern {p!r}")
                          for p in spec.source.expected if not any(raw_dir.glob(p))]
    cases, report.n_cases, faults = collect_cases(raw_dir, name, spec)
    report.faults += faults
    workers = workers or max(1, min(4, os.cpu_count() or 1))
    warn = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        with ThreadPoolExecutor(workers) as pool:
            results = list(tqdm(pool.map(lambda rc: _check_case(rc, full), cases), total=len(cases),
                                desc=f"validate {name}", unit="case", disable=not progress))
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warn)
    for res in results:
        report.n_files += res.n_files
        report.faults += [Fault(p, f) for p, f in res.faults]
    if compare_manifest:
        changes = integrity.manifest_changes(raw_dir)
        report.changes = None if changes is None else [Fault(raw_dir / rel, what) for rel, what in changes]
    return report


# ---------------------------------------------------------------- messages
def fetch_message(report: Report) -> str:
    """The FetchError of a manual source whose files have faults."""
    n = len(report.faults)
    lines = [f"dataset {report.name!r}: {n} fault{'s' * (n != 1)} in {report.raw_dir.resolve()} "
             f"({report.n_cases} cases, {report.n_files} files checked); no manifest.json was written:"]
    lines += [f"  {f}" for f in report.faults]
    lines.append(f"Replace, add or remove these files, then run `medssl fetch {report.name}` again "
                 f"(`medssl validate {report.name}` lists the faults without fetching).")
    return "\n".join(lines)


def changes_message(name: str, spec: DatasetSpec, raw_dir: Path, changes: list[tuple[str, str]]) -> str:
    """What ``medssl fetch`` says instead of "already fetched" when the folder changed since its manifest."""
    n = len(changes)
    lines = [f"dataset {name!r}: {raw_dir} changed since `medssl fetch` wrote its manifest.json "
             f"({n} file{'s' * (n != 1)}):"]
    lines += [f"  {raw_dir / rel}: {what}" for rel, what in changes[:2 * _SHOWN]]
    if n > 2 * _SHOWN:
        lines.append(f"  (and {n - 2 * _SHOWN} more; `medssl validate {name}` lists them all)")
    if isinstance(spec.source, ManualSource):
        lines.append(f"Run `medssl fetch --force {name}` to check the folder again and record it in a new "
                     f"manifest.json, then `medssl preprocess {name}`. Until the manifest changes, Snakemake "
                     "(whose preprocess rule depends on it) does not preprocess the dataset again.")
    else:
        lines.append(f"This dataset is rebuilt from its {spec.source.kind} source: `medssl fetch --force {name}` "
                     f"restores the fetched files and deletes any others (files added by hand included), then "
                     f"`medssl preprocess {name}`. To use cases of your own, give the dataset a `manual` source.")
    return "\n".join(lines)
