"""predictions.png: each row's prediction on one fixed test case and slice (issue 17 item 1)."""

from __future__ import annotations

import nibabel as nib
import numpy as np

from medssl import paths
from medssl.report import figures as F
from medssl.report.panels import fixed_case, fixed_slice


def test_fixed_slice_is_the_axial_slice_with_most_foreground_lowest_on_a_tie():
    lab = np.zeros((4, 4, 5), np.uint8)
    lab[:2, :2, 1] = 1          # 4 voxels on slice 1
    lab[:, :1, 3] = 2           # 4 voxels on slice 3: a tie, the lower index wins
    assert fixed_slice(lab) == 1
    lab[3, 3, 3] = 1            # now slice 3 has 5
    assert fixed_slice(lab) == 3
    # against an independent count per slice
    rng = np.random.default_rng(0)
    rand = (rng.random((6, 7, 8)) > 0.7).astype(np.uint8)
    assert fixed_slice(rand) == int(np.argmax([rand[:, :, k].sum() for k in range(8)]))
    assert fixed_slice(np.zeros((3, 3, 7))) == 3  # empty label: the middle slice


def test_fixed_case_is_the_first_test_case_by_id(synthetic):
    params, base = synthetic
    case = fixed_case(paths.datalist("phantom_organs", base))
    assert case["case"] == "case_a" and case["image"].is_file() and case["label"].is_file()


def test_the_panel_shows_the_predictions_it_reads(synthetic):
    """The figure changes when one method's prediction of the fixed case changes, and not when a
    prediction of another case (not shown) changes; a run without predictions still renders."""
    params, base = synthetic
    study, spec = "ssl3d", params.studies["ssl3d"]
    first = F.write_study_figures(params, study, base)["predictions"].read_bytes()
    d, prot, m, f, s = "phantom_organs", spec.protocols[0], spec.methods[-1], spec.fractions[0], spec.seeds[0]
    pred_dir = paths.downstream_predictions(study, d, prot, m, f, s, base)
    other = pred_dir / "case_b.nii.gz"
    img = nib.load(str(other))
    nib.save(nib.Nifti1Image(np.zeros(img.shape, np.uint8), img.affine), other)
    assert F.write_study_figures(params, study, base)["predictions"].read_bytes() == first
    shown = pred_dir / "case_a.nii.gz"
    img = nib.load(str(shown))
    nib.save(nib.Nifti1Image(np.zeros(img.shape, np.uint8), img.affine), shown)
    changed = F.write_study_figures(params, study, base)["predictions"].read_bytes()
    assert changed != first
    shown.unlink()  # save_predictions: false for this run
    missing = F.write_study_figures(params, study, base)["predictions"].read_bytes()
    assert missing not in (first, changed) and missing[:8] == b"\x89PNG\r\n\x1a\n"
