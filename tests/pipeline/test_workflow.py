"""Static checks of the workflow: lint, the SLURM profile's DAG, DVC's stage list."""

from __future__ import annotations

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
        assert f"medssl pretrain --params .medssl/params.yaml s2dc_ablation {method}" in out, out[-3000:]
    assert "medssl pretrain --params .medssl/params.yaml ssl3d" not in out  # only the target's DAG


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
