"""The committed data.dvc matches what a fresh `medssl fetch` writes, byte for byte."""

from __future__ import annotations

from .conftest import copy_project, run


def test_fresh_fetch_matches_data_dvc(tmp_path):
    project = copy_project(tmp_path)
    run(["git", "init", "-q"], project)
    run(["medssl", "fetch", "--no-progress"], project)
    committed = (project / "data.dvc").read_text()
    status = run(["dvc", "status", "data.dvc"], project)
    assert "modified" not in status.stdout, status.stdout
    # `dvc commit` rewrites data.dvc from the workspace: identical iff the hashes agree.
    run(["dvc", "commit", "-f", "-q", "data.dvc"], project)
    assert (project / "data.dvc").read_text() == committed, (
        "the phantoms changed: run `medssl fetch --force`, then `dvc commit -f data.dvc`, and commit data.dvc")
    assert "up to date" in run(["dvc", "status", "data.dvc"], project).stdout
