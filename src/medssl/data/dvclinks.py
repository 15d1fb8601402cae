"""Symbolic links to folders below ``data/raw``, which DVC does not version.

DVC 3 follows a link to a *file* inside a tracked folder but does not descend into a
link to a *folder*: with ``data/raw/<dataset>`` linked to the user's storage,
``dvc add data/raw`` (or ``dvc commit data.dvc``) records none of its files and
rewrites ``data.dvc`` to that hash without a word, and the ``data`` stage of
``dvc.yaml`` never sees the linked data change (``tests/data/test_dvclinks.py``
shows both with the installed DVC).

A link whose target lies inside ``data/raw`` (two datasets of one release sharing a
folder) loses nothing but the link itself: the target is versioned, and after a
``dvc checkout`` in another clone the link is re-made by hand. A link that leaves
``data/raw`` loses the data: :func:`check` refuses it when ``data.dvc`` tracks
``data/raw``, naming the link and the ways to version such data.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

ALTERNATIVES = """DVC does not follow links to folders: `dvc add data/raw` / `dvc commit data.dvc` would record none of \
its files, and `dvc repro` would not see them change. Version the data in one of these ways:
  1. copy it in: rm {link} && cp -r --reflink=auto {target} {link}
  2. move it in, with DVC's cache on the data's file system so that nothing is stored twice:
     dvc cache dir <a folder on that file system> && dvc config cache.type reflink,hardlink,symlink,
     then move the folder to {link} and run `dvc commit data.dvc`
  3. keep it where it is and let DVC record its origin: stop tracking data/raw as a whole \
(`dvc remove data.dvc`) and run `dvc import-url {target} {link}` for each dataset (DVC then holds a copy)
  4. if the data is versioned elsewhere: stop tracking data/raw with DVC (`dvc remove data.dvc`)"""


@dataclass(frozen=True)
class Link:
    """A link to a folder at ``path`` (below data/raw) pointing to ``target``."""

    path: Path
    target: Path
    inside: bool  # the target lies inside data/raw: versioned there, only the link is lost


def folder_links(raw_root: Path, datasets: Sequence[str] | None = None) -> list[Link]:
    """Every symbolic link to a folder at or below ``raw_root`` (only below ``raw_root/<dataset>``
    for the given ``datasets``), sorted, without following them."""
    raw_root = Path(raw_root)
    tops = [raw_root] if datasets is None else [raw_root / d for d in datasets]
    candidates = [t for t in tops if t.is_symlink()]
    for top in tops:
        if top.is_dir():
            for dirpath, dirnames, _ in os.walk(top):
                candidates += [Path(dirpath) / d for d in dirnames if (Path(dirpath) / d).is_symlink()]
    real_root = raw_root.resolve()
    out = []
    for p in sorted(set(candidates)):
        if p.is_dir():  # a dangling link is not a folder DVC would skip
            target = p.resolve()
            out.append(Link(p, target, p != raw_root and target.is_relative_to(real_root)))
    return out


def tracks_raw(project: Path) -> bool:
    """True when the project versions data/raw with DVC (its ``data.dvc``)."""
    return (Path(project) / "data.dvc").is_file()


def check(project: Path, datasets: Sequence[str] | None = None) -> list[str]:
    """The faults of ``project``'s data/raw (of ``datasets`` only, if given) for DVC: one message
    per link that leaves data/raw.

    Links inside data/raw are logged as warnings (nothing is lost but the link).
    Nothing is checked when the project does not track data/raw with DVC.
    """
    project = Path(project).absolute()
    if not tracks_raw(project):
        return []
    faults = []
    for link in folder_links(project / "data" / "raw", datasets):
        rel = link.path.relative_to(project) if link.path.is_relative_to(project) else link.path
        if link.inside:
            log.warning("%s is a link to %s inside data/raw: DVC versions the target but not the link; after "
                        "`dvc checkout` or `dvc pull` in another clone, re-create it (ln -s)", rel, link.target)
        else:
            faults.append(f"{rel} is a symbolic link to {link.target}, outside data/raw.\n"
                          + ALTERNATIVES.format(link=rel, target=link.target))
    return faults
