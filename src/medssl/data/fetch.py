"""``medssl fetch``: put a dataset's raw files in ``data/raw/<dataset>``.

Three kinds of source (:mod:`medssl.config`):

* ``synthetic``: the phantom generator (:func:`medssl.data.synthetic.write_dataset`)
  writes into a temporary folder that is renamed onto the raw folder.
* ``url``: a public archive is downloaded (MONAI's ``download_url``, with a
  progress bar) into a cache folder, verified against its md5 / sha256,
  safely extracted (:mod:`medssl.data.archive`), and the folder ``subdir``
  of the archive becomes the raw folder.
* ``manual``: gated data the user puts in place; fetch checks it is there and
  says exactly where to put it when it is not.

The raw folder is then checked against the dataset's layout: an MSD layout
needs ``dataset.json`` and ``imagesTr/`` (url and synthetic sources); any other
layout must find at least one case (:func:`medssl.data.layouts.find_cases`,
which also checks every case's label). An extracted archive must also hold
every file its index declares (:func:`medssl.data.validate.missing_declared`:
``dataset.json``'s images and labels, a ``labels_csv`` table's cases), since a
tar cut at a member boundary extracts without error. A manual source is checked
by :func:`medssl.data.validate.validate_dataset` (every image and label opened,
every fault listed at once). Synthetic sources always write the MSD layout.

The last file written is ``manifest.json`` (:func:`medssl.paths.raw_done`):
every file's relative path, size and md5, sorted, so the same data always give
the same bytes. Its presence means the fetch is complete; :func:`fetch` with
a manifest in place returns at once unless ``force`` is set. If files were
added, removed or resized since, it logs a warning naming them and the remedy
instead of "already fetched". A warning, not an error: the data are in place,
a direct ``medssl preprocess`` reads the folder as it is, ``medssl validate``
exits non-zero for the same changes, and an error would stop ``medssl fetch``
of every other dataset while its only remedy for a url source, ``--force``,
deletes the files the researcher added.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlparse

from tqdm import tqdm

from medssl import paths
from medssl.config import DatasetSpec, ManualSource, MsdLayout, SyntheticSource, UrlSource
from medssl.data import archive as archive_mod
from medssl.io import write_json

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"  # the name paths.raw_done() gives
_CHUNK = 1 << 20


class FetchError(RuntimeError):
    """A dataset could not be fetched; the message names the dataset, file and fault."""


# ------------------------------------------------------------------ manifest
def is_fetched(raw_dir: Path) -> bool:
    """True when ``raw_dir`` holds its manifest, i.e. a fetch completed there."""
    return (Path(raw_dir) / MANIFEST).is_file()


def write_manifest(raw_dir: Path, progress: bool = False) -> Path:
    """Write ``raw_dir/manifest.json`` listing every other file with size and md5.

    Paths are relative, POSIX-style and sorted, and the JSON is key-sorted, so
    the same files always give the same bytes. It is written atomically and
    must be the last file written to ``raw_dir``.

    Args:
        raw_dir: an existing folder.
        progress: show a tqdm bar over the bytes hashed.

    Returns:
        The manifest's path.

    Raises:
        ValueError: when ``raw_dir`` is not an existing folder.
    """
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise ValueError(f"raw_dir {str(raw_dir)!r} is not an existing folder")
    files = listed_files(raw_dir)
    total = sum(p.stat().st_size for _, p in files)
    entries = []
    with tqdm(total=total, desc=f"manifest {raw_dir.name}", unit="B", unit_scale=True,
              unit_divisor=1024, disable=not progress) as bar:
        for rel, path in files:
            entries.append({"path": rel, "size": path.stat().st_size, "md5": _digest(path, "md5", bar)})
    manifest = raw_dir / MANIFEST
    write_json(manifest, {"files": entries, "n_files": len(entries), "total_bytes": total})
    return manifest


def listed_files(raw_dir: Path) -> list[tuple[str, Path]]:
    """``(relative POSIX path, path)`` of every file a manifest of ``raw_dir`` lists, sorted."""
    files = []
    for dirpath, dirnames, filenames in os.walk(raw_dir, followlinks=True):
        dirnames.sort()
        for fname in filenames:
            path = Path(dirpath, fname)
            rel = path.relative_to(raw_dir).as_posix()
            if rel == MANIFEST or (rel.startswith(f".{MANIFEST}.") and rel.endswith(".tmp")):
                continue  # the manifest itself, or a leftover of an interrupted write of it
            files.append((rel, path))
    return sorted(files)


def _digest(path: Path, algorithm: str, bar: tqdm | None = None) -> str:
    """Hex digest of a file, read in chunks (``check_hash`` only answers yes / no)."""
    h = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
            if bar is not None:
                bar.update(len(chunk))
    return h.hexdigest()


# --------------------------------------------------------------------- fetch
def default_cache_dir() -> Path:
    """``data/downloads`` under the project root: where archives are kept."""
    return paths.downloads()


def fetch(name: str, spec: DatasetSpec, raw_dir: Path | None = None, force: bool = False,
          progress: bool = True, cache_dir: Path | None = None) -> Path:
    """Fetch dataset ``name`` into ``raw_dir`` and write its manifest last.

    Args:
        name: dataset name (the key in ``params.yaml``).
        spec: its specification; ``spec.source.kind`` selects the fetcher.
        raw_dir: destination; defaults to :func:`medssl.paths.raw` of ``name``.
        force: fetch again even when the manifest is in place (a cached,
            checksum-verified download is reused).
        progress: show tqdm progress bars.
        cache_dir: where downloads are kept; defaults to ``data/downloads``.

    Returns:
        ``raw_dir``.

    Raises:
        ValueError: when ``name`` is empty.
        FetchError: naming the dataset, the file and the fault.
    """
    if not name or not isinstance(name, str):
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    raw_dir = Path(raw_dir) if raw_dir is not None else paths.raw(name)
    if is_fetched(raw_dir) and not force:
        from medssl.data.integrity import manifest_changes
        from medssl.data.validate import changes_message

        changes = manifest_changes(raw_dir)
        if changes:  # a warning, not an error: see the module docstring
            log.warning("%s", changes_message(name, spec, raw_dir, changes))
        else:
            log.info("dataset %r: already fetched in %s", name, raw_dir)
        return raw_dir
    source = spec.source
    if isinstance(source, SyntheticSource):
        _fetch_synthetic(name, source, raw_dir, progress)
    elif isinstance(source, UrlSource):
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        _fetch_url(name, spec, raw_dir, cache, progress)
    elif isinstance(source, ManualSource):
        _fetch_manual(name, spec, raw_dir, progress)
    else:  # pragma: no cover - config.Source is a closed union
        raise FetchError(f"dataset {name!r}: unknown source kind {source.kind!r}")
    return raw_dir


def _fetch_synthetic(name: str, source: SyntheticSource, raw_dir: Path, progress: bool) -> None:
    from medssl.data.synthetic import write_dataset

    def build(tmp: Path) -> None:
        try:
            write_dataset(tmp, source, progress=progress, name=name)
        except Exception as exc:
            raise FetchError(f"dataset {name!r}: the synthetic generator failed "
                             f"({type(exc).__name__}: {exc})") from exc
        _check_msd_layout(name, tmp, "the synthetic generator's output")

    _build_in_place(raw_dir, build, progress)


def _fetch_url(name: str, spec: DatasetSpec, raw_dir: Path, cache_dir: Path, progress: bool) -> None:
    source = spec.source
    url = source.url
    basename = posixpath.basename(unquote(urlparse(url).path))
    if not basename or basename in (".", ".."):
        raise FetchError(f"dataset {name!r}: URL {url} names no file")
    try:
        archive_mod.archive_format(basename)
    except ValueError as exc:
        raise FetchError(f"dataset {name!r}: URL {url}: {exc}") from None
    archive = _download(name, source, cache_dir / basename, progress)

    def build(tmp: Path) -> Path:
        extracted = tmp / "archive"
        try:
            archive_mod.extract(archive, extracted, progress=progress)
        except ValueError as exc:
            raise FetchError(f"dataset {name!r}: {exc}{_bad_archive(source, archive)}") from exc
        layout = extracted
        if source.subdir:
            layout = _subdir(name, archive, extracted, source.subdir)
        where = f"archive {archive}" + (f", folder {source.subdir!r}" if source.subdir else "")
        _check_layout(name, spec, layout, where)
        from medssl.data.validate import declared_message, missing_declared

        missing = missing_declared(layout, name, spec)
        if missing:
            raise FetchError(f"{declared_message(name, missing, where)}; the archive may be truncated"
                             f"{_bad_archive(source, archive)}")
        return layout

    _build_in_place(raw_dir, build, progress)


def _fetch_manual(name: str, spec: DatasetSpec, raw_dir: Path, progress: bool) -> None:
    source = spec.source
    missing = []
    for pattern in source.expected:
        if not pattern or Path(pattern).is_absolute() or ".." in Path(pattern).parts:
            raise FetchError(f"dataset {name!r}: expected pattern {pattern!r} must be relative "
                             f"to {raw_dir} and stay inside it")
        found = raw_dir.is_dir() and any(
            p.is_file() or (p.is_dir() and any(p.iterdir())) for p in raw_dir.glob(pattern)
        )
        if not found:
            missing.append(pattern)
    if missing:
        folder = raw_dir.resolve()
        lines = [f"dataset {name!r} must be downloaded by hand; nothing in {folder} matches:"]
        lines += [f"  - {p}" for p in missing]
        lines.append(f"Register and download it from: {source.homepage}")
        if source.instructions:
            lines.append(f"Instructions: {source.instructions}")
        state = "" if raw_dir.is_dir() else " (it does not exist yet)"
        lines.append(f"Put the files in the folder {folder}{state} so that every pattern above "
                     f"matches, then run `medssl fetch {name}` again.")
        raise FetchError("\n".join(lines))
    from medssl.data.validate import fetch_message, validate_dataset

    report = validate_dataset(name, spec, raw_dir, progress=progress, compare_manifest=False)
    if report.faults:  # a faulty folder is not fetched, even if an earlier (--force) fetch marked it so
        (raw_dir / MANIFEST).unlink(missing_ok=True)
        raise FetchError(fetch_message(report))
    write_manifest(raw_dir, progress=progress)


# ------------------------------------------------------------------ helpers
def _download(name: str, source: UrlSource, archive: Path, progress: bool) -> Path:
    """Download ``source.url`` to ``archive`` (via a temporary name), checksum-verified.

    A file already at ``archive`` with the right checksum is reused; one with
    a wrong checksum is deleted and downloaded again.
    """
    from monai.apps.utils import download_url

    url = source.url
    hashes = [(t, v.lower()) for t, v in (("sha256", source.sha256), ("md5", source.md5)) if v]
    if archive.is_file():
        if not _mismatch(archive, hashes):
            log.info("dataset %r: reusing verified download %s", name, archive)
            return archive
        log.warning("dataset %r: cached %s fails its checksum; downloading again", name, archive)
        archive.unlink()
    archive.parent.mkdir(parents=True, exist_ok=True)
    part = archive.with_name(f".{archive.name}.{uuid.uuid4().hex[:12]}.part")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="No hash value provided")  # we verify below
            download_url(url, part, hash_val=None, progress=progress)
        if not part.is_file():  # MONAI swallows PermissionError / NotADirectoryError
            raise FetchError(f"dataset {name!r}: download of {url} to {archive} produced no file")
        bad = _mismatch(part, hashes)
        if bad:
            kind, expected, actual = bad
            raise FetchError(f"dataset {name!r}: checksum mismatch for {url}: expected {kind} "
                             f"{expected}, got {actual}; the download was deleted")
        os.replace(part, archive)
    except FetchError:
        raise
    except (OSError, RuntimeError, ValueError) as exc:  # URLError, HTTPError, MONAI's RuntimeErrors
        raise FetchError(f"dataset {name!r}: download of {url} failed ({type(exc).__name__}: {exc})") from exc
    finally:
        part.unlink(missing_ok=True)
    return archive


def _bad_archive(source: UrlSource, archive: Path) -> str:
    """The end of the message about a bad archive that passed its checksum (a url source has one)."""
    kinds = " and ".join(k for k in ("sha256", "md5") if getattr(source, k))
    verb = "match" if " and " in kinds else "matches"
    return (f". Its {kinds} {verb} the dataset's source, so the published archive itself (or a checksum taken "
            f"of a truncated file) is at fault; the download is kept at {archive}, and the raw folder was left "
            "as it was")


def _mismatch(path: Path, hashes: list[tuple[str, str]]) -> tuple[str, str, str] | None:
    """First ``(kind, expected, actual)`` whose digest differs, or None."""
    for kind, expected in hashes:
        actual = _digest(path, kind)
        if actual != expected:
            return kind, expected, actual
    return None


def _subdir(name: str, archive: Path, extracted: Path, subdir: str) -> Path:
    rel = Path(subdir)
    if rel.is_absolute() or ".." in rel.parts:
        raise FetchError(f"dataset {name!r}: subdir {subdir!r} must be a relative folder inside the archive")
    folder = extracted / rel
    if not folder.is_dir():
        top = sorted(p.name + ("/" if p.is_dir() else "") for p in extracted.iterdir())
        raise FetchError(f"dataset {name!r}: archive {archive} has no folder {subdir!r}; "
                         f"its top level holds: {', '.join(top[:20]) or 'nothing'}")
    return folder


def _check_layout(name: str, spec: DatasetSpec, folder: Path, what: str) -> None:
    """Raise FetchError unless ``folder`` is in the dataset's layout.

    MSD: :func:`_check_msd_layout`; other layouts: :func:`find_cases` finds at
    least one case (every case with its label, for a labelled task).
    """
    if isinstance(spec.layout, MsdLayout):
        _check_msd_layout(name, folder, what)
        return
    from medssl.data.layouts import PreprocessError, find_cases

    try:
        find_cases(folder, name, spec)
    except PreprocessError as exc:
        raise FetchError(f"dataset {name!r}: {what} is not in its {spec.layout.kind} layout: {exc}") from exc


def _check_msd_layout(name: str, folder: Path, what: str) -> None:
    """Raise FetchError unless ``folder`` has ``dataset.json`` (an object) and ``imagesTr/``."""
    missing = []
    if not (folder / "dataset.json").is_file():
        missing.append("dataset.json")
    if not (folder / "imagesTr").is_dir():
        missing.append("imagesTr/")
    if missing:
        found = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
        raise FetchError(f"dataset {name!r}: {what} is not in the MSD layout: missing "
                         f"{', '.join(missing)} (found: {', '.join(found[:20]) or 'nothing'})")
    try:
        meta = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise FetchError(f"dataset {name!r}: {what}: dataset.json is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise FetchError(f"dataset {name!r}: {what}: dataset.json must hold a JSON object")


def _build_in_place(raw_dir: Path, build: Callable[[Path], Path | None], progress: bool) -> None:
    """Build the raw folder in a temporary folder beside it, manifest last, then rename.

    ``build(tmp)`` fills ``tmp`` and may return a sub-folder of it to use
    instead. A previous (incomplete or forced) ``raw_dir`` is replaced only
    once the new one is complete; on any error nothing is left behind.
    """
    real = raw_dir.resolve()  # a symlinked raw folder is rebuilt where it points
    real.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{real.name}.", suffix=".fetch", dir=real.parent))
    try:
        tmp = work / "new"
        tmp.mkdir()
        built = build(tmp) or tmp
        write_manifest(built, progress=progress)
        if real.exists() or real.is_symlink():
            os.replace(real, work / "old")
        os.replace(built, real)
    finally:
        shutil.rmtree(work, ignore_errors=True)
