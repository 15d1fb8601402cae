"""Safe archive extraction: normal archives extract, unsafe or corrupt ones leave nothing."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile

import pytest

from medssl.data.archive import archive_format, extract


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _beside(parent, keep):
    """Names in ``parent`` other than ``keep`` (temporary folders would show up here)."""
    return sorted(p.name for p in parent.iterdir() if p.name not in keep)


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz", ".tgz", ".zip"])
def test_extracts_normal_archive(msd_tree, pack_archive, tmp_path, suffix):
    archive = pack_archive(msd_tree, tmp_path / f"a{suffix}")
    target = tmp_path / "out"
    assert extract(archive, target, progress=False) == target
    expected = _files(msd_tree)
    assert len(expected) == 3
    assert _files(target) == expected
    assert (target / "Task09_Spleen" / "imagesTs").is_dir()  # empty folders survive
    assert _beside(tmp_path, {archive.name, "out"}) == []


@pytest.mark.parametrize("name,attrs,fault", [
    ("../evil", {}, "outside the target"),
    ("sub/../../evil", {}, "outside the target"),
    ("/tmp/abs_evil", {}, "absolute path"),
    ("link", {"type": tarfile.SYMTYPE, "linkname": "/etc/passwd"}, "symbolic link"),
    ("inner_link", {"type": tarfile.SYMTYPE, "linkname": "ok.txt"}, "symbolic link"),
    ("hard", {"type": tarfile.LNKTYPE, "linkname": "ok.txt"}, "hard link"),
    ("fifo", {"type": tarfile.FIFOTYPE}, "fifo"),
    ("dev", {"type": tarfile.CHRTYPE}, "device"),
])
def test_rejects_unsafe_tar_member(tar_member, tmp_path, name, attrs, fault):
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar_member(tar, "ok.txt", b"fine")  # a safe member first: validation must precede extraction
        tar_member(tar, name, **attrs)
    target = tmp_path / "out"
    with pytest.raises(ValueError) as err:
        extract(archive, target, progress=False)
    msg = str(err.value)
    assert repr(name) in msg and "evil.tar.gz" in msg and fault in msg
    assert not target.exists()
    assert _beside(tmp_path, {archive.name}) == []
    assert not (tmp_path.parent / "evil").exists()


@pytest.mark.parametrize("name,mode,fault", [
    ("../evil", 0o100644, "outside the target"),
    ("/abs_evil", 0o100644, "absolute path"),
    ("C:/evil", 0o100644, "absolute path"),
    ("..\\evil", 0o100644, "outside the target"),
    ("link", stat.S_IFLNK | 0o777, "symbolic link"),
])
def test_rejects_unsafe_zip_member(tmp_path, name, mode, fault):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok.txt", "fine")
        info = zipfile.ZipInfo(name)
        info.external_attr = mode << 16
        zf.writestr(info, "/etc/passwd")
    target = tmp_path / "out"
    with pytest.raises(ValueError) as err:
        extract(archive, target, progress=False)
    msg = str(err.value)
    assert repr(name) in msg and "evil.zip" in msg and fault in msg
    assert not target.exists()
    assert _beside(tmp_path, {archive.name}) == []


@pytest.mark.parametrize("suffix,damage", [
    (".tar.gz", "truncate"),
    (".tar", "truncate"),
    (".zip", "truncate"),
    (".tgz", "garbage"),
    (".zip", "garbage"),
])
def test_corrupt_archive_is_a_clear_error(msd_tree, pack_archive, tmp_path, suffix, damage):
    good = pack_archive(msd_tree, tmp_path / "src" / f"Task09_Spleen{suffix}")
    data = good.read_bytes()
    archive = tmp_path / good.name
    archive.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"not an archive" * 50)
    target = tmp_path / "out"
    with pytest.raises(ValueError, match="corrupt or truncated") as err:
        extract(archive, target, progress=False)
    assert archive.name in str(err.value)
    assert not target.exists()
    assert _beside(tmp_path, {archive.name, "src"}) == []


def test_argument_errors(msd_tree, pack_archive, tmp_path):
    with pytest.raises(ValueError, match="unsupported archive type"):
        archive_format(tmp_path / "data.rar")
    with pytest.raises(ValueError, match="file not found"):
        extract(tmp_path / "missing.tar", tmp_path / "out", progress=False)
    archive = pack_archive(msd_tree, tmp_path / "a.zip")
    target = tmp_path / "out"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    with pytest.raises(ValueError, match="already exists"):
        extract(archive, target, progress=False)
    assert (target / "stale.txt").exists()
    extract(archive, target, overwrite=True, progress=False)
    assert not (target / "stale.txt").exists()
    assert _files(target) == _files(msd_tree)
    assert _beside(tmp_path, {archive.name, "out"}) == []


def _cut_after(data: bytes, n_members: int) -> bytes:
    """``data`` (a tar) cut exactly at the end of its ``n_members``-th member (a member boundary)."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
    nxt = members[n_members].offset if n_members < len(members) else None
    assert nxt is not None and nxt < len(data)
    return data[:nxt]


@pytest.mark.parametrize("gzipped", [False, True])
def test_tar_cut_at_a_member_boundary_is_truncated(msd_tree, pack_archive, tmp_path, gzipped):
    """tarfile itself reads such a file without complaint; extract must not."""
    import gzip

    good = pack_archive(msd_tree, tmp_path / "src" / "Task09_Spleen.tar").read_bytes()
    cut = _cut_after(good, 3)  # the task folder, dataset.json, imagesTr/: no image, no label
    with tarfile.open(fileobj=io.BytesIO(cut)) as tar:
        assert len(tar.getmembers()) == 3  # what the check guards against
    archive = tmp_path / ("Task09_Spleen.tar.gz" if gzipped else "Task09_Spleen.tar")
    archive.write_bytes(gzip.compress(cut) if gzipped else cut)  # a whole gzip stream of a cut tar
    target = tmp_path / "out"
    with pytest.raises(ValueError) as err:
        extract(archive, target, progress=False)
    msg = str(err.value)
    assert archive.name in msg and "truncated at a member boundary" in msg
    assert "after member 'Task09_Spleen/imagesTr' (3 members read)" in msg and "end-of-archive marker" in msg
    assert not target.exists()
    assert _beside(tmp_path, {archive.name, "src"}) == []


def test_tar_with_garbage_after_a_member_is_refused(msd_tree, pack_archive, tmp_path):
    good = pack_archive(msd_tree, tmp_path / "src" / "a.tar").read_bytes()
    cut = _cut_after(good, 2)
    archive = tmp_path / "a.tar"
    archive.write_bytes(cut + b"\x01" * 512 + bytes(1024))  # not a header, not the end marker
    with pytest.raises(ValueError, match=r"corrupt or truncated after member 'Task09_Spleen/dataset\.json'"):
        extract(archive, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    archive.write_bytes(cut + bytes(1024))  # the end marker right there: a valid, shorter archive
    extract(archive, tmp_path / "out", progress=False)
    assert sorted(_files(tmp_path / "out")) == ["Task09_Spleen/dataset.json"]
