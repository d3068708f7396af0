"""Fitting the post-processing parameters: ratio thresholds (paper §2.6 95th percentiles) and the cut-off sweep.

Expected values are computed by hand in the comments.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from pedtumorseg.errors import InputError
from pedtumorseg_train.fit_postprocessing import (best_cutoff, collect_ratios, find_cv_predictions, fit,
                                                  fit_ratio_thresholds, nnunet_training_cases, sweep_min_volumes,
                                                  valid_ratios)


# --- thresholds -------------------------------------------------------------------------------------------

def test_valid_ratios_drops_non_finite_and_outside_window():
    v = valid_ratios(np.array([0.1, 0.2, 1.0, 5.0, 5.01, np.nan, np.inf, -np.inf, 0.19999]))
    assert v.tolist() == [0.2, 1.0, 5.0]


def test_ratio_high_is_95th_percentile_of_net_and_low_is_5th_of_et():
    # NET ratios 0.50, 0.51, ..., 1.50 (101 values): the 95th percentile with linear interpolation sits at
    # rank 0.95 * 100 = 95 -> exactly the 96th value 0.50 + 0.95 = 1.45.
    net = np.round(np.arange(50, 151) / 100.0, 2)
    # ET ratios 1.0, 1.1, ..., 2.9 (20 values): 5th percentile at rank 0.05 * 19 = 0.95 -> 1.0 + 0.95 * 0.1 = 1.095
    et = np.round(np.arange(10, 30) / 10.0, 1)
    high, low = fit_ratio_thresholds(et, net)
    assert high == pytest.approx(1.45, abs=1e-12)
    assert low == pytest.approx(1.095, abs=1e-12)


def test_thresholds_exclude_values_that_would_change_the_answer():
    net = np.round(np.arange(50, 151) / 100.0, 2)
    et = np.round(np.arange(10, 30) / 10.0, 1)
    # 20 NET ratios of 7.0 (> 5) and NaNs; 20 ET ratios of 0.1 (< 0.2) and infs: all excluded
    net_dirty = np.concatenate([net, np.full(20, 7.0), [np.nan, np.inf]])
    et_dirty = np.concatenate([et, np.full(20, 0.1), [np.nan, -np.inf]])
    high, low = fit_ratio_thresholds(et_dirty, net_dirty)
    assert (high, low) == pytest.approx((1.45, 1.095), abs=1e-12)
    # had they been kept, the 95th NET percentile would be 7.0 and the 5th ET percentile 0.1
    assert np.percentile(net_dirty[np.isfinite(net_dirty)], 95) == 7.0
    assert np.percentile(et_dirty[np.isfinite(et_dirty)], 5) == pytest.approx(0.1)


def test_thresholds_percentile_argument_and_refusals():
    net = np.arange(1, 6, dtype=float)  # 1..5: 80th percentile at rank 0.8 * 4 = 3.2 -> 4.2
    et = np.array([0.5, 1.5])  # 20th percentile at rank 0.2 -> 0.5 + 0.2 * 1.0 = 0.7
    assert fit_ratio_thresholds(et, net, percentile=80) == pytest.approx((4.2, 0.7))
    with pytest.raises(InputError, match="ET"):
        fit_ratio_thresholds(np.array([np.nan, 9.0]), net)
    with pytest.raises(ValueError):
        fit_ratio_thresholds(et, net, percentile=40)


# --- ratios of a constructed case --------------------------------------------------------------------------

def _ratio_case(et_low=120.0):
    """(images, gt): a 10^3 volume, brain = the inner 8^3 block (512 voxels), T1 = 100 in the brain.

    T1CE = 100 in the brain except: 8 ET voxels, 4 at 120 and 4 at 300; NET voxels: 4 at 100, 4 at 150, one at
    2000, one at 10. Brain means: T1 100; T1CE (512*100 + 4*20 + 4*200 + 4*50 + 1900 - 90) / 512 = 54090 / 512.
    ``mean`` normalization: ratio = (t1ce / mean_t1ce) / (t1 / mean_t1) = t1ce * 512 / 54090.
    """
    images = np.zeros((4, 10, 10, 10), np.float32)
    images[:, 1:9, 1:9, 1:9] = 100.0
    gt = np.zeros((10, 10, 10), np.uint8)
    t1ce = images[1]
    gt[2:4, 2:4, 2:4] = 1
    t1ce[2:4, 2:4, 2:4] = 300.0
    t1ce[2, 2:4, 2:4] = et_low
    net = [(6, 6, x) for x in range(1, 9)] + [(7, 7, 1), (7, 7, 2)]
    for z, y, x in net:
        gt[z, y, x] = 2
    for (z, y, x), v in zip(net, [100] * 4 + [150] * 4 + [2000, 10]):
        t1ce[z, y, x] = v
    return images, gt


def test_collect_ratios_on_a_constructed_case():
    images, gt = _ratio_case()
    et, net = collect_ratios([(images, gt)], "mean")
    k = 512 / 54090
    assert np.allclose(np.sort(et), [120 * k] * 4 + [300 * k] * 4, rtol=1e-5)
    # 2000 * k = 18.7 (> 5) and 10 * k = 0.093 (< 0.2) are excluded
    assert np.allclose(np.sort(net), [100 * k] * 4 + [150 * k] * 4, rtol=1e-5)
    # streaming two cases concatenates; a cap subsamples per case and label
    et2, net2 = collect_ratios([(images, gt), (images, gt)], "mean", max_per_case=3)
    assert et2.size == 6 and net2.size == 6
    assert np.all(np.isclose(et2, 120 * k, rtol=1e-5) | np.isclose(et2, 300 * k, rtol=1e-5))


# --- cut-off sweep -----------------------------------------------------------------------------------------

def test_best_cutoff_maximises_and_breaks_ties_to_the_smaller():
    assert best_cutoff([0, 50, 150, 250], [0.5, 0.5, 1.0, 1.0]) == 150
    assert best_cutoff([250, 150, 0], [1.0, 1.0, 0.2]) == 150  # order of candidates does not matter
    assert best_cutoff([0, 50], [1.0, 1.0]) == 0
    with pytest.raises(ValueError):
        best_cutoff([0], [float("nan")])


def _sweep_case():
    """30^3 at 1 mm: a true 300 mm^3 ET lesion predicted exactly, a spurious 100 mm^3 ET blob far from it, and a
    true 40 mm^3 CC lesion predicted exactly."""
    gt = np.zeros((30, 30, 30), np.uint8)
    gt[2:5, 2:12, 2:12] = 1  # 3 * 10 * 10 = 300 voxels
    gt[22:24, 2:6, 2:7] = 3  # 2 * 4 * 5 = 40 voxels
    pred = gt.copy()
    pred[20:24, 20:25, 20:25] = 1  # 4 * 5 * 5 = 100 voxels, no true counterpart
    t1 = np.full(gt.shape, 100.0, np.float32)
    t1ce = np.full(gt.shape, 100.0, np.float32)
    return pred, t1, t1ce, gt


def test_sweep_picks_cutoff_between_spurious_blob_and_real_lesion():
    import pedtumorseg.postprocess as pp
    pred, t1, t1ce, gt = _sweep_case()
    base = dataclasses.replace(pp.PostprocessParams(), ratio_enabled=False)
    res = sweep_min_volumes([(pred, t1, t1ce, gt)], (1.0, 1.0, 1.0), candidates={1: [0, 50, 150, 250, 400], 3: [0, 25, 50, 100]}, base_params=base)
    et = [row["mean_lesion_dice"] for row in res["table"]["ET"]]
    # blob kept: (1 matched lesion Dice 1 + 1 false positive 0) / 2 = 0.5; blob removed: 1; lesion removed too: 0
    assert et == pytest.approx([0.5, 0.5, 1.0, 1.0, 0.0])
    assert res["min_volume_et"] == 150  # tie between 150 and 250 -> the smaller
    # the 40 mm^3 CC lesion is real: every cut-off above 40 removes it (a missed lesion, Dice 0) -> best is 0
    cc = [row["mean_lesion_dice"] for row in res["table"]["CC"]]
    assert cc == pytest.approx([1.0, 1.0, 0.0, 0.0])
    assert res["min_volume_cc"] == 0
    assert res["n_cases"] == 1


def test_sweep_averages_over_cases_and_uses_per_pair_spacing():
    import pedtumorseg.postprocess as pp
    pred, t1, t1ce, gt = _sweep_case()
    base = dataclasses.replace(pp.PostprocessParams(), ratio_enabled=False)
    clean = gt.copy()  # a second case predicted perfectly: ET Dice 1 up to cut-off 300, 0 beyond
    # spacing 2 x 1 x 1 mm: voxel = 2 mm^3; the blob is 200 mm^3, the ET lesion 600 mm^3, the CC lesion 80 mm^3
    res = sweep_min_volumes([(pred, t1, t1ce, gt, (2.0, 1.0, 1.0)), (clean, t1, t1ce, gt, (2.0, 1.0, 1.0))],
                            candidates={1: [0, 150, 250, 700], 3: [0, 50, 100]}, base_params=base)
    # ET: 0 -> (0.5 + 1) / 2; 150 -> (0.5 + 1) / 2 (blob of 200 kept); 250 -> 1; 700 -> 0
    assert [r["mean_lesion_dice"] for r in res["table"]["ET"]] == pytest.approx([0.75, 0.75, 1.0, 0.0])
    assert res["min_volume_et"] == 250
    assert [r["mean_lesion_dice"] for r in res["table"]["CC"]] == pytest.approx([1.0, 1.0, 0.0])
    assert res["min_volume_cc"] == 0


def test_sweep_refuses_bad_input():
    with pytest.raises(InputError):
        sweep_min_volumes([], (1.0, 1.0, 1.0))
    with pytest.raises(ValueError):
        sweep_min_volumes([], (1.0, 1.0, 1.0), candidates={1: [-5]})
    with pytest.raises(ValueError, match="unknown label"):
        sweep_min_volumes([], (1.0, 1.0, 1.0), candidates={5: [0]})


def test_sweep_other_labels_when_asked():
    """ED (or NET) cut-offs are swept like ET's when requested: a spurious 100 mm^3 ED blob in a case without
    edema is removed by any cut-off above 100 mm^3 (lesion-wise Dice of an absent region: 0 -> 1), and only the
    requested labels appear in the result."""
    import pedtumorseg.postprocess as pp
    gt = np.zeros((30, 30, 30), np.uint8)
    gt[2:5, 2:12, 2:12] = 2  # NET, no ED
    pred = gt.copy()
    pred[20:24, 20:25, 20:25] = 4  # 100 voxels of ED
    flat = np.full(gt.shape, 100.0, np.float32)
    base = dataclasses.replace(pp.PostprocessParams(), ratio_enabled=False)
    res = sweep_min_volumes([(pred, flat, flat, gt)], (1.0, 1.0, 1.0), candidates={4: [0, 50, 150, 300]},
                            base_params=base)
    assert [r["mean_lesion_dice"] for r in res["table"]["ED"]] == pytest.approx([0.0, 0.0, 1.0, 1.0])
    assert res["min_volume_ed"] == 150
    assert set(res["table"]) == {"ED"} and "min_volume_et" not in res


# --- nnU-Net layout and the whole fit ---------------------------------------------------------------------

def _write(array, path: Path, spacing=(1.0, 1.0, 1.0)):
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(spacing)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))


def _write_raw_dataset(root: Path, cases: dict[str, tuple[np.ndarray, np.ndarray]]) -> Path:
    for cid, (images, gt) in cases.items():
        for ch in range(4):  # T2 and FLAIR scaled: identical modalities are refused as a mix-up (io.load_case)
            _write(images[ch] * max(1, ch), root / "imagesTr" / f"{cid}_{ch:04d}.nii.gz")
        _write(gt, root / "labelsTr" / f"{cid}.nii.gz")
    return root


def test_nnunet_layout_discovery_and_refusals(tmp_path):
    images, gt = _ratio_case()
    raw = _write_raw_dataset(tmp_path / "raw", {"P_002": (images, gt), "P_001": (images, gt)})
    cases = nnunet_training_cases(raw)
    assert [c.case_id for c in cases] == ["P_001", "P_002"]
    assert cases[0].images["t1"].name == "P_001_0000.nii.gz" and cases[0].images["flair"].name == "P_001_0003.nii.gz"
    assert cases[0].seg.name == "P_001.nii.gz"
    (raw / "imagesTr" / "P_002_0002.nii.gz").unlink()
    with pytest.raises(InputError, match="P_002_0002"):
        nnunet_training_cases(raw)

    preds = tmp_path / "cv"
    _write(gt, preds / "fold_0" / "validation" / "P_001.nii.gz")
    _write(gt, preds / "fold_1" / "validation" / "P_002.nii.gz")
    found = find_cv_predictions(preds)
    assert sorted(found) == ["P_001", "P_002"]
    _write(gt, preds / "P_001.nii.gz")
    with pytest.raises(InputError, match="two predictions"):
        find_cv_predictions(preds)


def test_fit_end_to_end_with_a_missing_prediction(tmp_path):
    images, gt = _ratio_case()
    raw = _write_raw_dataset(tmp_path / "raw", {"P_001": (images, gt), "P_002": (images, gt)})
    _write(gt, tmp_path / "cv" / "fold_0" / "validation" / "P_001.nii.gz")
    params, report = fit(raw, tmp_path / "cv", normalization="mean", candidates={1: [0, 100], 3: [0, 100]})
    k = 512 / 54090
    # NET ratios (both cases): 8 x 100k and 8 x 150k -> 95th percentile at rank 0.95 * 15 = 14.25 of the sorted
    # values, 150k there; ET ratios 8 x 120k and 8 x 300k -> 5th percentile at rank 0.75: 120k
    assert params.ratio_high == pytest.approx(150 * k, rel=1e-5)
    assert params.ratio_low == pytest.approx(120 * k, rel=1e-5)
    assert report["n_et_ratios"] == 16 and report["n_net_ratios"] == 16 and not report["thresholds_swapped"]
    assert report["cases_without_prediction"] == ["P_002"] and report["n_cases_with_prediction"] == 1
    assert report["sweep"]["n_cases"] == 1
    # the only ET lesion has 8 voxels (<= 10: ignored by the lesion-wise metric), so every ET cut-off scores the
    # same and the smallest wins; no CC anywhere -> both empty, Dice 1 -> 0
    assert params.min_volume_et == 0 and params.min_volume_cc == 0
    import json

    json.dumps(report)  # JSON-serializable


def test_fit_swaps_thresholds_when_et_and_net_are_separated(tmp_path):
    images, gt = _ratio_case(et_low=300.0)  # all ET at 300: T1CE sum 54090 + 4 * 180 = 54810
    raw = _write_raw_dataset(tmp_path / "raw", {"P_001": (images, gt)})
    _write(gt, tmp_path / "cv" / "P_001.nii.gz")
    params, report = fit(raw, tmp_path / "cv", normalization="mean", candidates={1: [0], 3: [0]})
    k = 512 / 54810
    # paper rule: NET p95 = 150k (rank 0.95 * 7 = 6.65 among 4 x 100k, 4 x 150k), ET p5 = 300k > 150k -> swapped
    assert report["thresholds_swapped"] is True
    assert report["net_percentile_ratio"] == pytest.approx(150 * k, rel=1e-5)
    assert report["et_percentile_ratio"] == pytest.approx(300 * k, rel=1e-5)
    assert (params.ratio_high, params.ratio_low) == pytest.approx((300 * k, 150 * k), rel=1e-5)
    assert report["cases_without_prediction"] == []
