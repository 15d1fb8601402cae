"""Static checks of the workflow: lint, the SLURM profile's DAG, DVC's stage list."""

from __future__ import annotations

import hashlib

import yaml

from .conftest import copy_project, run


def test_snakemake_lint_is_clean(tmp_path):
    project = copy_project(tmp_path)
    res = run(["snakemake", "--lint"], project)
    assert "Congratulations, your workflow is in a good condition" in res.stdout + res.stderr


def test_slurm_profile_dry_run(tmp_path):
    project = copy_project(tmp_path)
    res = run(["snakemake", "--profile", "workflow/profiles/slurm", "--dry-run"], project)
    out = res.stdout + res.stderr
    assert "downstream" in out and "pretrain" in out and "This was a dry-run" in out
    for rule in ("template", "stn", "uda"):  # every study kind reaches the cluster
        assert f"rule {rule}:" in out, rule


def test_dvc_stages_cover_the_studies(tmp_path):
    project = copy_project(tmp_path)
    run(["git", "init", "-q"], project)
    out = run(["dvc", "stage", "list"], project).stdout
    for stage in ("data", "pretrain", "downstream@ssl3d", "report@ssl3d", "downstream@template",
                  "report@template", "downstream@stn", "report@stn", "downstream@uda2d", "report@uda2d"):
        assert stage in out, out


def test_s2dc_ablation_preset_dry_run(tmp_path):
    project = copy_project(tmp_path)
    # the target first: --configfile takes every following word as a config file
    res = run(["snakemake", "results/s2dc_ablation/table.md", "--dry-run", "-p", "--configfile",
               "workflow/presets/s2dc_ablation.yaml"], project)
    out = res.stdout + res.stderr
    for method in ("s2dc_sinkhorn10", "s2dc_sinkhorn100", "s2dc_dual_softmax"):
        assert f"medssl pretrain s2dc_ablation {method} 2>" in out, out[-3000:]
    assert "medssl pretrain ssl3d" not in out  # only the target's DAG


def test_snakemake_refuses_a_repeated_key_in_a_configfile_layer(tmp_path):
    project = copy_project(tmp_path)
    (project / "layer.yaml").write_text("downstream:\n  epochs: 50\n  lr: 0.001\n  epochs: 2\n")
    res = run(["snakemake", "--dry-run", "--configfile", "layer.yaml"], project, check=False)
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "layer.yaml: key 'epochs' appears twice in one mapping, at line 2 and at line 4" in out, out[-3000:]


def test_snakemake_names_the_configfile_layer_that_breaks_the_configuration(tmp_path):
    project = copy_project(tmp_path)
    (project / "fine.yaml").write_text("downstream:\n  epochs: 3\n")
    (project / "broken.yaml").write_text("studies:\n  ssl3d:\n    methods: [mae]\n")
    res = run(["snakemake", "--dry-run", "--configfile", "fine.yaml", "broken.yaml"], project, check=False)
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "'mae' is not defined" in out, out[-3000:]
    assert f"(the configuration becomes invalid in {project / 'broken.yaml'})" in out, out[-3000:]


def _n_cases(path):
    return yaml.safe_load(path.read_text())["datasets"]["phantom_organs"]["source"]["n_cases"]


def test_jobs_read_the_configuration_file_of_their_run(tmp_path):
    """Each parse writes its merged configuration to .medssl/run/params-<sha256[:16]>.yaml and hands
    the jobs that path in $MEDSSL_PARAMS: a second parse with another --configfile never changes the
    file the first run's jobs read, and no job's command line (Snakemake's `code` rerun trigger)
    names a configuration file, so the same configuration again has nothing to rerun."""
    project = copy_project(tmp_path)
    (project / "a.yaml").write_text("datasets:\n  phantom_organs:\n    source: {n_cases: 3}\n")
    (project / "b.yaml").write_text("datasets:\n  phantom_organs:\n    source: {n_cases: 5}\n")
    target = "data/raw/phantom_organs/manifest.json"
    res = run(["snakemake", target, "--cores", "1", "-p", "--configfile", "a.yaml"], project)
    assert "Shell command: medssl fetch phantom_organs 2> " in res.stdout + res.stderr
    # the job read the merged configuration (params.yaml alone says 24 cases) with no --params: $MEDSSL_PARAMS
    assert len(list((project / "data/raw/phantom_organs/imagesTr").iterdir())) == 3
    runs = project / ".medssl/run"
    [a_file] = runs.iterdir()
    a_text = a_file.read_text()
    assert a_file.name == f"params-{hashlib.sha256(a_text.encode()).hexdigest()[:16]}.yaml"
    assert _n_cases(a_file) == 3

    res = run(["snakemake", "--dry-run", "-p", "--configfile", "b.yaml"], project)
    out = res.stdout + res.stderr
    assert "This was a dry-run" in out and "--params" not in out and ".medssl/" not in out
    assert a_file.read_text() == a_text  # untouched by the second parse
    [b_file] = set(runs.iterdir()) - {a_file}
    assert _n_cases(b_file) == 5
    last = (project / ".medssl/params.yaml").read_text()  # the last configuration parsed, for people
    assert last.startswith(f"# the configuration Snakemake parsed last; its jobs read .medssl/run/{b_file.name}\n")

    res = run(["snakemake", target, "--dry-run", "--configfile", "a.yaml"], project)
    assert "Nothing to be done" in res.stdout + res.stderr
    assert sorted(runs.iterdir()) == sorted([a_file, b_file]) and a_file.read_text() == a_text
