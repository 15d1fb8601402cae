"""Bad input through the workflow: a clear error, the other jobs' outputs intact, nothing partial."""

from __future__ import annotations

import yaml

from .conftest import copy_project, run


def _project(tmp_path, params):
    project = copy_project(tmp_path)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return project


def test_unknown_method_or_dataset_stops_before_any_job(tmp_path, tiny_params):
    p = tiny_params()
    p["studies"]["ssl3d"]["methods"].append("simclr")
    project = _project(tmp_path, p)
    res = run(["snakemake", "-n"], project, check=False)
    assert res.returncode != 0
    assert "method 'simclr' is not defined" in res.stdout + res.stderr
    p = tiny_params()
    p["studies"]["ssl3d"]["datasets"].append("brats")
    (project / "params.yaml").write_text(yaml.safe_dump(p))
    res = run(["snakemake", "-n"], project, check=False)
    assert "dataset 'brats' is not defined" in res.stdout + res.stderr
    p = tiny_params()
    p["downstream"]["epoch"] = 3
    (project / "params.yaml").write_text(yaml.safe_dump(p))
    res = run(["snakemake", "-n"], project, check=False)
    assert res.returncode != 0 and "epoch" in res.stdout + res.stderr


def test_corrupt_nifti_fails_its_job_only(tmp_path, tiny_params):
    project = _project(tmp_path, tiny_params())
    run(["medssl", "fetch", "--no-progress"], project)
    victim = project / "data/raw/phantom_organs/imagesTr/phantom_002.nii.gz"
    victim.write_bytes(victim.read_bytes()[:300])  # truncated
    res = run(["snakemake", "--cores", "2", "data"], project, check=False)
    assert res.returncode != 0
    log = (project / "logs/preprocess/phantom_organs.log").read_text()
    assert "phantom_002.nii.gz" in log
    # the other datasets finished; the failing one left nothing behind
    assert (project / "data/processed/phantom_lesion/datalist.json").is_file()
    assert (project / "data/processed/phantom_corpus/datalist.json").is_file()
    leftovers = [p.name for p in (project / "data/processed").iterdir()
                 if p.name.startswith(".") or (p.name == "phantom_organs" and any(p.iterdir()))]
    assert leftovers == []


def test_missing_raw_files_name_the_file(tmp_path, tiny_params):
    project = _project(tmp_path, tiny_params())
    run(["medssl", "fetch", "phantom_organs", "--no-progress"], project)
    (project / "data/raw/phantom_organs/labelsTr/phantom_001.nii.gz").unlink()
    res = run(["medssl", "preprocess", "phantom_organs", "--no-progress"], project, check=False)
    assert res.returncode == 1
    assert "phantom_001.nii.gz" in res.stderr and "medssl fetch phantom_organs" in res.stderr
    assert not (project / "data/processed/phantom_organs").exists()


def test_a_leaking_corpus_stops_the_workflow_before_any_job(tmp_path, leaky_params):
    """Snakemake's validation runs the leakage check over the preprocessed datalists: a corpus that
    holds phantom_organs' own raw images under another name is rejected, naming the study, both
    datasets and the number of held-out cases it shares."""
    p = leaky_params()
    project = _project(tmp_path, p)
    names = ["phantom_corpus", "dup_corpus", "phantom_organs"]
    run(["medssl", "fetch", "--no-progress", *names], project)
    run(["medssl", "preprocess", "--no-progress", *names], project)
    res = run(["snakemake", "-n", "results/ssl3d/table.md"], project, check=False)
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "test-set leakage" in out
    assert "'ssl3d'" in out and "'dup_corpus'" in out and "'phantom_organs'" in out and "3 case(s)" in out
