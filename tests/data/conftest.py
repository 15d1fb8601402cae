"""Shared fixtures of the data tests: a tiny MSD Task09 archive, a local HTTP server."""

from __future__ import annotations

import functools
import http.server
import io
import json
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from medssl.io import save_nifti

MSD_DATASET_JSON = {
    "name": "Spleen",
    "description": "Spleen Segmentation",
    "reference": "Memorial Sloan Kettering Cancer Center",
    "licence": "CC-BY-SA 4.0",
    "release": "1.0 06/08/2018",
    "tensorImageSize": "3D",
    "modality": {"0": "CT"},
    "labels": {"0": "background", "1": "spleen"},
    "numTraining": 1,
    "numTest": 0,
    "training": [{"image": "./imagesTr/spleen_1.nii.gz", "label": "./labelsTr/spleen_1.nii.gz"}],
    "test": [],
}


def write_msd_tree(root: Path, task: str = "Task09_Spleen") -> Path:
    """Write ``root/<task>/`` with one tiny 8x8x4 case in the MSD layout; return ``root``."""
    base = root / task
    rng = np.random.default_rng(0)
    image = rng.integers(-1000, 1000, size=(8, 8, 4)).astype(np.int16)
    label = np.zeros((8, 8, 4), dtype=np.uint8)
    label[2:5, 2:5, 1:3] = 1
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    save_nifti(base / "imagesTr" / "spleen_1.nii.gz", image, affine)
    save_nifti(base / "labelsTr" / "spleen_1.nii.gz", label, affine)
    (base / "imagesTs").mkdir()
    (base / "dataset.json").write_text(json.dumps(MSD_DATASET_JSON, indent=4))
    return root


def pack(src_root: Path, archive: Path) -> Path:
    """Pack every file and folder under ``src_root`` into ``archive`` (tar family or zip)."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    paths = sorted(src_root.rglob("*"))
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for p in paths:
                zf.write(p, p.relative_to(src_root).as_posix())
    else:
        mode = "w:gz" if archive.name.endswith((".tar.gz", ".tgz")) else "w"
        with tarfile.open(archive, mode) as tar:
            for p in paths:
                tar.add(p, p.relative_to(src_root).as_posix(), recursive=False)
    return archive


def add_tar_member(tar: tarfile.TarFile, name: str, data: bytes = b"x", **attrs) -> None:
    """Add a member ``name`` with ``data`` (regular file unless ``attrs`` say otherwise)."""
    info = tarfile.TarInfo(name)
    info.size = len(data) if "type" not in attrs else 0
    for key, value in attrs.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data) if info.size else None)


@pytest.fixture(scope="session")
def pack_archive():
    """The :func:`pack` helper, as a fixture (test modules do not import conftest)."""
    return pack


@pytest.fixture(scope="session")
def tar_member():
    """The :func:`add_tar_member` helper, as a fixture."""
    return add_tar_member


@pytest.fixture(scope="session")
def msd_tree(tmp_path_factory) -> Path:
    """A folder holding ``Task09_Spleen/`` (imagesTr, labelsTr, imagesTs, dataset.json)."""
    return write_msd_tree(tmp_path_factory.mktemp("msd_tree"))


@pytest.fixture(scope="session")
def msd_archive(msd_tree, tmp_path_factory) -> Path:
    """``Task09_Spleen.tar`` built from :func:`msd_tree` (the format MSD publishes)."""
    return pack(msd_tree, tmp_path_factory.mktemp("msd_archive") / "Task09_Spleen.tar")


class _Server:
    """A ThreadingHTTPServer on 127.0.0.1 serving ``folder``, counting GET requests."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                outer.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        handler = functools.partial(Handler, directory=str(folder))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def http_server(tmp_path, monkeypatch):
    """Serve ``tmp_path / "www"`` over HTTP on 127.0.0.1; bypass any proxy settings."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    www = tmp_path / "www"
    www.mkdir()
    server = _Server(www)
    yield server
    server.close()
