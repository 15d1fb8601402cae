"""The paper presets (GVSL, S2DC, CMEVAE) dry-run through the SLURM profile with the
miniature copies of their real datasets in place and fetched (`medssl fetch` checks the
manual data's expected files and that the layout finds cases)."""

from __future__ import annotations

import re
import sys
import zlib
from pathlib import Path

import pytest
import yaml

from .conftest import copy_project, run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from miniatures import n_cases, write_miniature  # noqa: E402

from medssl import config  # noqa: E402
from medssl.data.catalog import catalog  # noqa: E402
from medssl.data.fetch import write_manifest  # noqa: E402

PRESETS = {
    # preset: (studies, jobs per rule expected in the DAG)
    "gvsl": (["gvsl_paper"], {"preprocess": 5, "pretrain": 3, "downstream": 4 * 2 * 3, "table": 1}),
    "s2dc": (["s2dc_ct", "s2dc_mri", "s2dc_pet"],
             {"preprocess": 17, "pretrain": 3 * 2, "downstream": (5 + 1 + 2) * 2, "table": 3}),
    "cmevae": (["cmevae_paper"], {"preprocess": 6, "uda": 5 * 3, "table": 1}),
}


def _merged(project: Path, preset: str) -> config.Params:
    from snakemake.utils import update_config

    base = yaml.safe_load((project / "params.yaml").read_text())
    update_config(base, yaml.safe_load((project / f"workflow/presets/{preset}.yaml").read_text()))
    return config.parse(base, preset)


def _job_counts(out: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run: {rule: count}."""
    stats = out[out.index("Job stats:"):]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", stats, re.M)}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_dry_run_with_miniatures(tmp_path, preset):
    project = copy_project(tmp_path / "project")
    studies, expected = PRESETS[preset]
    p = _merged(project, preset)
    assert p.target_studies() == studies
    names = sorted({d for s in studies for d in p.study_datasets(s)})
    specs = catalog()
    manual = []
    for name in names:
        assert name in specs, f"{preset}: {name} is not a catalog dataset"
        raw = project / "data" / "raw" / name
        write_miniature(name, raw, n_cases(specs[name]))
        if specs[name].source.kind == "url":
            write_manifest(raw)  # stands for a completed download (tests/data/test_fetch.py covers it)
        else:
            manual.append(name)
    run(["medssl", "fetch", "--no-progress", *manual], project, timeout=600)
    for name in names:
        assert (project / "data" / "raw" / name / "manifest.json").is_file(), name

    res = run(["snakemake", "--dry-run", "--configfile", f"workflow/presets/{preset}.yaml",
               "--profile", "workflow/profiles/slurm"], project)
    out = res.stdout + res.stderr
    assert "This was a dry-run" in out
    counts = _job_counts(out)
    assert "fetch" not in counts, "the miniature data are in place: nothing to fetch"
    for rule, n in expected.items():
        assert counts.get(rule) == n, (rule, counts)
    for study in studies:
        assert f"results/{study}/table.md" in out
    assert "results/ssl3d/" not in out  # targets: only the preset's studies are built


def test_fetch_names_what_is_missing(tmp_path):
    """A preset's gated dataset that is not in place: fetch lists the missing files and the page."""
    project = copy_project(tmp_path / "project")
    res = run(["medssl", "fetch", "--no-progress", "mmwhs_ct"], project, check=False)
    assert res.returncode != 0
    err = res.stderr
    assert "ct_train/ct_train_*_image.nii.gz" in err and "mmwhs" in err
    assert str((project / "data/raw/mmwhs_ct").resolve()) in err


def test_s2dc_preset_pretrains_on_training_cases_only(tmp_path, monkeypatch):
    """S2DC Sec. B: BTCV and ADNI are pre-trained on and evaluated; pre-training sees their
    training cases only (ADNI split by subject), and the whole preset has no leak."""
    from medssl import paths
    from medssl.data.datalist import read_datalist
    from medssl.data.fetch import fetch
    from medssl.data.leakage import find_leaks, pretrain_entries
    from medssl.data.preprocess import preprocess_dataset

    project = tmp_path / "project"
    monkeypatch.setenv(paths.ROOT_ENV, str(project))
    p = _merged(copy_project(project), "s2dc")
    specs = catalog()
    for name in sorted({d for s in PRESETS["s2dc"][0] for d in p.study_datasets(s)}):
        # a seed per dataset: with one seed the miniatures of two datasets are the same files, which the
        # check rightly reports as leaks (e.g. btcv's 0001 is tcia_covid19's first volume)
        write_miniature(name, paths.raw(name), n_cases(specs[name]), seed=zlib.crc32(name.encode()))
        if specs[name].source.kind == "url":
            write_manifest(paths.raw(name))
        else:
            fetch(name, p.datasets[name], progress=False)
        preprocess_dataset(name, p.datasets[name], progress=False)
    assert find_leaks(p, PRESETS["s2dc"][0]) == ([], [])

    def cases(name, *sections):
        return {e["case"] for s in sections for e in read_datalist(paths.datalist(name), s)}

    ct = {e["case"] for e in pretrain_entries(p, "s2dc_ct") if e["dataset"] == "btcv"}
    assert ct == cases("btcv", "training") and not ct & cases("btcv", "validation", "test")
    pet = {e["case"] for e in pretrain_entries(p, "s2dc_pet") if e["dataset"] == "adni_pet"}

    def subject(c):  # ADNI image ids are <site>_S_<subject>_<image>: the subject by hand, not the catalog regex
        return "_".join(c.split("_")[:3])

    held_out = {subject(c) for c in cases("adni_pet", "validation", "test")}
    assert pet and held_out and not {subject(c) for c in pet} & held_out


def test_quick_preset_is_the_short_run_of_every_study(tmp_path):
    """workflow/presets/quick.yaml keeps every study and seed of the default but trains 50 constant-lr
    steps per downstream run (the default: 800 with a cosine decay), and adds the lesion task back."""
    project = copy_project(tmp_path / "project")
    default = config.parse(yaml.safe_load((project / "params.yaml").read_text()), "params.yaml")
    quick = _merged(project, "quick")
    assert quick.target_studies() == default.target_studies()
    for name, study in default.studies.items():
        assert quick.studies[name].seeds == study.seeds and len(study.seeds) >= 3, name
    d, q = default.downstream, quick.downstream
    assert (d.epochs * d.steps_per_epoch, d.schedule) == (800, "warmup_cosine")
    assert (q.epochs * q.steps_per_epoch, q.schedule) == (50, "constant")
    assert quick.studies["ssl3d"].datasets == ["phantom_organs", "phantom_lesion"]
    assert default.datasets["phantom_corpus"].source.n_cases >= 64
    res = run(["snakemake", "--dry-run", "--configfile", "workflow/presets/quick.yaml"], project)
    counts = _job_counts(res.stdout + res.stderr)
    # 4 methods x 2 protocols x 2 fractions x 2 datasets rows; all seeds of a row in one job (template too)
    assert counts["downstream_ssl3d"] == 32 and counts["template_template"] == 9, counts  # 9 models x 3 seeds
