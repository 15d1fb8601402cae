"""The catalog of real datasets: every entry is valid, documented, and finds, maps and
preprocesses the cases of a miniature copy of its published layout."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from miniatures import BUILDERS, write_miniature  # noqa: E402

from medssl.config import ManualSource, Splits, UrlSource  # noqa: E402
from medssl.data.catalog import catalog, raw_catalog  # noqa: E402

SPECS = catalog()

# the datasets the seeds name (issue 7): every one must be in the catalog
NAMED = {
    "GVSL": ["mmwhs_ct", "asoca", "candi", "stoic2021"],
    "S2DC": ["btcv", "msd_liver", "msd_lung", "msd_spleen", "brats2021", "autopet", "cc_ccii", "adni_pet",
             "brats2023", "udpet", "tcia_covid19", "flare23", "hnscc", "lidc_idri", "luna16",
             "totalsegmentator", "stoic2021_ct", "oasis3"],
    "CMEVAE": ["mscmrseg_bssfp", "mscmrseg_lge", "mscmrseg_t2", "myops2020_bssfp", "myops2020_lge",
               "ctmr2d_ct", "ctmr2d_mr"],
}


def test_every_named_dataset_is_registered_and_documented():
    for paper, names in NAMED.items():
        for name in names:
            assert name in SPECS, f"{paper}: {name} missing from the catalog"
    for name, spec in SPECS.items():
        assert spec.citation, name
        src = spec.source
        if isinstance(src, UrlSource):
            assert src.md5 or src.sha256, name
        else:
            assert isinstance(src, ManualSource), name
            assert src.homepage.startswith("http") and src.instructions and src.expected, name
        if spec.task != "pretrain":
            assert len(spec.classes) >= 2, name
    assert set(BUILDERS) == set(SPECS), "every catalog dataset has a miniature"


def test_paper_splits_and_recipes():
    """The splits and recipes the papers state (GVSL Table 1, CMEVAE, S2DC 2:8)."""
    def counts(name):
        sp = SPECS[name].splits
        return sp.validation, sp.test

    assert counts("asoca") == (5, 20)          # 15 / 5 / 20
    assert counts("candi") == (20, 43)         # 40 / 20 / 43
    assert counts("stoic2021") == (400, 600)   # 1000 / 400 / 600 of the 2000 public cases
    assert counts("myops2020_bssfp") == (0, 5)  # 20 train / 5 held out
    for name in ("msd_liver", "msd_lung", "autopet", "cc_ccii", "adni_pet"):
        assert SPECS[name].splits.test == 0.2, name  # 2:8
    assert SPECS["adni_pet"].splits.group_by  # subject-level
    for name in ("mmwhs_ct", "asoca", "stoic2021", "gvsl_cardiac_ct"):
        r = SPECS[name].recipe
        assert r.spacing == (1.0, 1.0, 1.0) and r.intensity.kind == "ct" and r.intensity.clip == (-1024.0, 1024.0)
    assert SPECS["candi"].recipe.roi == (160, 160, 128) and SPECS["candi"].recipe.intensity.kind == "minmax"
    assert SPECS["stoic2021"].recipe.crop == "lung"
    for name in ("mscmrseg_bssfp", "mscmrseg_lge"):
        r = SPECS[name].recipe
        assert r.spacing[:2] == (1.0, 1.0) and r.roi[:2] == (192, 192)
    assert SPECS["mmwhs_ct"].label_values == {"205": 1, "420": 2, "500": 3, "550": 4, "600": 5, "820": 6,
                                              "850": 7}


def test_raw_catalog_is_a_fresh_copy():
    a = raw_catalog()
    a["btcv"]["task"] = "changed"
    assert raw_catalog()["btcv"]["task"] == "segmentation"


def _expected_labels(name: str, raw: Path, cases: list) -> dict[str, int]:
    """Class of each classification case, read independently from the miniature."""
    spec = SPECS[name]
    lv = spec.label_values
    if name == "stoic2021":
        rows = list(csv.DictReader(open(raw / "metadata/reference.csv")))
        return {r["PatientID"]: lv[r["probCOVID"]] for r in rows}
    if name == "adni_pet":
        rows = list(csv.DictReader(open(raw / "labels.csv")))
        return {r["Image Data ID"]: lv[r["Group"]] for r in rows}
    if name == "cc_ccii":
        return {c.case: lv[Path(c.image).parent.parent.name] for c in cases}
    raise AssertionError(name)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_miniature_is_found_mapped_and_preprocessed(tmp_path, name):
    from medssl.data.layouts import find_cases
    from medssl.data.preprocess import preprocess_dataset

    spec = SPECS[name]
    n = 4 if name != "adni_pet" else 6
    raw = write_miniature(name, tmp_path / "raw" / name, n)
    if isinstance(spec.source, ManualSource):  # the registration page's instructions match the layout
        for pattern in spec.source.expected:
            assert any(raw.glob(pattern)), (name, pattern)
    cases = find_cases(raw, name, spec)
    per_case = 2 if name == "oasis3" else 1  # T1w and T2w sessions are separate volumes
    assert len(cases) == n * per_case, [c.case for c in cases]
    assert len({c.case for c in cases}) == len(cases)

    # small and fast: one validation and one test case, the entry's own ROI dropped
    small = spec.model_copy(update={
        "splits": Splits(validation=1, test=1, seed=0, group_by=spec.splits.group_by),
        "recipe": spec.recipe.model_copy(update={"roi": None}),
    })
    out = preprocess_dataset(name, small, raw_dir=raw, out_dir=tmp_path / "processed" / name, progress=False)
    doc = json.loads((out / "datalist.json").read_text())
    entries = doc["training"] + doc["validation"] + doc["test"]
    assert len(entries) == len(cases)
    n_classes = len(spec.classes)
    if spec.task == "segmentation":
        seen = set()
        for e in entries:
            lab = np.asarray(nib.load(out / e["label"]).dataobj)
            img = nib.load(out / e["image"])
            assert lab.shape == img.shape
            assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
            values = set(np.unique(lab).tolist())
            assert values <= set(range(n_classes)), (e["case"], values)
            seen |= values
        assert len(seen) >= 2, seen  # the published values were mapped, not all zeroed
    elif spec.task == "classification":
        expected = _expected_labels(name, raw, cases)
        for e in entries:
            key = e["case"] if e["case"] in expected else next(k for k in expected if k in e["case"])
            assert e["label"] == expected[key], e
    spacing = [s for s in spec.recipe.spacing]
    aff = nib.load(out / entries[0]["image"]).affine
    got = np.sqrt((aff[:3, :3] ** 2).sum(axis=0))
    for axis, want in enumerate(spacing):
        if want is not None:
            assert got[axis] == pytest.approx(want, rel=1e-4), (name, got)
