"""Safe extraction of downloaded archives (``.tar``, ``.tar.gz``, ``.tgz``, ``.zip``).

An archive is untrusted input. Before anything is written, every member is
checked: a member whose path lands outside the target folder (an absolute
path, a ``..`` that climbs out), a symbolic or hard link (it could point out
of the target), or a device file / fifo is rejected with a :class:`ValueError`
naming the archive and the member, and so is a tar that does not end with its
end-of-archive marker (cut at a member boundary; ``tarfile`` reads such a file
without complaint). A zip cut anywhere loses its central directory and fails
to open. The archive is then extracted into a
temporary folder beside the target and renamed into place, so an error never
leaves a half-extracted target. Python's ``tarfile`` ``"data"`` filter
(PEP 706), where available, is applied as a second line of defence.
"""

from __future__ import annotations

import gzip
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

#: Archive name endings this module extracts, longest first.
SUPPORTED_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")

# what a truncated or corrupt archive raises while it is read (not write errors)
_CORRUPT = (tarfile.TarError, zipfile.BadZipFile, gzip.BadGzipFile, EOFError, zlib.error)


def archive_format(path: str | os.PathLike) -> str:
    """Return ``"tar"`` or ``"zip"`` from the name of ``path``.

    Raises:
        ValueError: when the name ends in none of :data:`SUPPORTED_SUFFIXES`.
    """
    name = Path(path).name.lower()
    for suffix in SUPPORTED_SUFFIXES:
        if name.endswith(suffix):
            return "zip" if suffix == ".zip" else "tar"
    raise ValueError(
        f"archive {str(path)!r}: unsupported archive type; supported: {', '.join(SUPPORTED_SUFFIXES)}"
    )


def extract(archive: str | os.PathLike, target: str | os.PathLike, overwrite: bool = False,
            progress: bool = True) -> Path:
    """Safely extract ``archive`` into the folder ``target``.

    All members are validated before anything is written; extraction goes to a
    temporary folder beside ``target`` that is renamed onto ``target`` at the end.

    Args:
        archive: a ``.tar``, ``.tar.gz``, ``.tgz`` or ``.zip`` file.
        target: folder to create; it holds the archive's members.
        overwrite: replace an existing ``target``; otherwise an existing one is an error.
        progress: show a tqdm bar over the members.

    Returns:
        ``target`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: naming the archive (and the member) when the archive is
            missing, of an unsupported type, corrupt or truncated, or holds an
            unsafe member; or when ``target`` exists and ``overwrite`` is False.
    """
    archive, target = Path(archive), Path(target)
    kind = archive_format(archive)
    if not archive.is_file():
        raise ValueError(f"archive {str(archive)!r}: file not found")
    if target.exists() and not overwrite:
        raise ValueError(f"target {str(target)!r} already exists (pass overwrite=True to replace it)")
    try:
        if kind == "tar":
            with tarfile.open(archive, "r:*") as tar:
                members = tar.getmembers()
                for member in members:
                    _check_tar_member(archive, member)
                _check_tar_end(archive, tar, members)
                _into_place(target, overwrite, lambda tmp: _extract_tar(tar, members, tmp, archive, progress))
        else:
            with zipfile.ZipFile(archive) as zf:
                infos = zf.infolist()
                for info in infos:
                    _check_zip_member(archive, info)
                _into_place(target, overwrite, lambda tmp: _extract_zip(zf, infos, tmp, archive, progress))
    except ValueError:
        raise
    except _CORRUPT as exc:
        raise ValueError(
            f"archive {str(archive)!r}: corrupt or truncated ({type(exc).__name__}: {exc})"
        ) from exc
    return target


# ------------------------------------------------------------------ checks
def _check_name(archive: Path, name: str) -> None:
    """Reject a member name that is absolute or climbs out of the target."""
    where = f"archive {str(archive)!r}: member {name!r}"
    if not name or "\x00" in name:
        raise ValueError(f"{where}: empty or invalid name")
    unified = name.replace("\\", "/")
    if unified.startswith("/") or (len(unified) > 1 and unified[1] == ":"):
        raise ValueError(f"{where}: absolute path")
    normal = posixpath.normpath(unified)
    if normal == ".." or normal.startswith("../"):
        raise ValueError(f"{where}: path lands outside the target folder")


def _check_tar_member(archive: Path, member: tarfile.TarInfo) -> None:
    _check_name(archive, member.name)
    where = f"archive {str(archive)!r}: member {member.name!r}"
    if member.issym():
        raise ValueError(f"{where}: symbolic link (to {member.linkname!r}) is not allowed")
    if member.islnk():
        raise ValueError(f"{where}: hard link (to {member.linkname!r}) is not allowed")
    if member.isdev():  # character / block device or fifo
        raise ValueError(f"{where}: device file or fifo is not allowed")
    if not (member.isreg() or member.isdir()):
        raise ValueError(f"{where}: unsupported member type {member.type!r}")


def _check_tar_end(archive: Path, tar: tarfile.TarFile, members: list[tarfile.TarInfo]) -> None:
    """Reject a tar whose last member is not followed by the end-of-archive marker (a zero block).

    ``tarfile`` stops quietly at the end of the file, or at an unreadable header,
    after the first member, so a tar cut exactly at a member boundary would
    otherwise extract "successfully" with only its first members.
    """
    tar.fileobj.seek(tar.offset)
    block = tar.fileobj.read(tarfile.BLOCKSIZE)
    if block == bytes(tarfile.BLOCKSIZE):
        return
    last = f"after member {members[-1].name!r} ({len(members)} members read)" if members else "at its start"
    if not block:
        raise ValueError(f"archive {str(archive)!r}: truncated at a member boundary: it ends {last} "
                         "without the tar end-of-archive marker")
    raise ValueError(f"archive {str(archive)!r}: corrupt or truncated {last}: no valid header or "
                     f"end-of-archive marker at byte {tar.offset}")


def _check_zip_member(archive: Path, info: zipfile.ZipInfo) -> None:
    _check_name(archive, info.filename)
    where = f"archive {str(archive)!r}: member {info.filename!r}"
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise ValueError(f"{where}: symbolic link is not allowed")
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        raise ValueError(f"{where}: device file, fifo or socket is not allowed")


# -------------------------------------------------------------- extraction
def _into_place(target: Path, overwrite: bool, write: Callable[[Path], None]) -> None:
    """Run ``write(tmp)`` on a fresh folder beside ``target``; rename it onto ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".extract", dir=target.parent))
    try:
        tmp = work / "out"
        tmp.mkdir()
        write(tmp)
        if target.exists() and overwrite:
            old = work / "old"
            os.replace(target, old)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _extract_tar(tar: tarfile.TarFile, members: list[tarfile.TarInfo], out: Path, archive: Path,
                 progress: bool) -> None:
    kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    bar = tqdm(members, desc=f"extract {archive.name}", unit="file", disable=not progress)
    try:
        tar.extractall(out, members=bar, **kwargs)
    except tarfile.FilterError as exc:  # our checks should have caught it first
        raise ValueError(f"archive {str(archive)!r}: unsafe member ({exc})") from exc


def _extract_zip(zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo], out: Path, archive: Path,
                 progress: bool) -> None:
    for info in tqdm(infos, desc=f"extract {archive.name}", unit="file", disable=not progress):
        zf.extract(info, out)
