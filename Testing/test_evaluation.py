"""Folder evaluation: pairing, CSV, summary, volume-proportion agreement and the Bland-Altman plot.

Two tiny constructed cases on disk; expected values computed by hand in the comments.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from pedtumorseg.errors import InputError
from pedtumorseg.evaluation.folder import CSV_COLUMNS, case_id_of, evaluate_folder, label_files, proportion_rows, summarize, write_bland_altman_png, wt_fractions


def _write(array, path: Path, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)):
    img = sitk.GetImageFromArray(np.asarray(array, np.uint8))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))


def _case_a():
    """GT = prediction: ET 20, NET 20, CC 20, ED 40 voxels (fractions 0.2, 0.2, 0.2, 0.4)."""
    gt = np.zeros((16, 16, 16), np.uint8)
    gt[2:4, 2:4, 2:7] = 1
    gt[2:4, 5:7, 2:7] = 2
    gt[2:4, 8:10, 2:7] = 3
    gt[2:4, 11:15, 2:7] = 4
    return gt, gt.copy()


def _case_b():
    """GT: ET z2:4 y2:4 x2:7 (20), ED 20 elsewhere. Prediction: ET shifted to x4:9 (20, overlap x4:7 = 12 voxels)
    -> ET Dice 2*12/40 = 0.6; ED identical."""
    gt = np.zeros((16, 16, 16), np.uint8)
    gt[2:4, 2:4, 2:7] = 1
    gt[8:10, 8:10, 2:7] = 4
    pred = np.zeros_like(gt)
    pred[2:4, 2:4, 4:9] = 1
    pred[8:10, 8:10, 2:7] = 4
    return gt, pred


# --- pure helpers ----------------------------------------------------------------------------------------

def test_case_ids_of_nnunet_and_brats_names():
    assert case_id_of("P_001.nii.gz") == "P_001"
    assert case_id_of("BraTS-PED-00001-000-seg.nii.gz") == "BraTS-PED-00001-000"
    assert case_id_of("X_seg.nii") == "X"
    assert case_id_of("X-seg-raw.nii.gz") is None
    assert case_id_of("X-stats.json") is None
    assert case_id_of(".X.tmp.nii.gz") is None


def test_label_files_refuses_two_files_for_one_case(tmp_path):
    _write(np.zeros((2, 2, 2)), tmp_path / "A.nii.gz")
    _write(np.zeros((2, 2, 2)), tmp_path / "B-seg.nii.gz")
    (tmp_path / "notes.txt").write_text("x")
    assert sorted(label_files(tmp_path)) == ["A", "B"]
    _write(np.zeros((2, 2, 2)), tmp_path / "A-seg.nii.gz")
    with pytest.raises(InputError, match="two label files for case A"):
        label_files(tmp_path)


def test_label_files_in_case_folders_with_dotted_ids(tmp_path):
    case = tmp_path / "sub.01"
    case.mkdir()
    for suffix in ("t1n", "t1c", "t2w", "t2f"):  # images beside the segmentation are not label files
        _write(np.zeros((2, 2, 2)), case / f"sub.01-{suffix}.nii.gz")
    _write(np.zeros((2, 2, 2)), case / "sub.01-seg.nii.gz")
    assert label_files(tmp_path) == {"sub.01": case / "sub.01-seg.nii.gz"}


def test_wt_fractions():
    gt, _ = _case_a()
    assert wt_fractions(gt, (2.0, 1.0, 1.0)) == pytest.approx({"ET": 0.2, "NET": 0.2, "CC": 0.2, "ED": 0.4})
    empty = wt_fractions(np.zeros((2, 2, 2), np.uint8))
    assert all(math.isnan(v) for v in empty.values())


def test_summarize_mean_std_median_ignore_nan():
    rows = [{"case": c, "region": "ET", **{m: v for m in CSV_COLUMNS[2:]}} for c, v in
            (("a", 1.0), ("b", 0.5), ("c", 0.0), ("d", math.nan))]
    s = summarize(rows)["ET"]["dice"]
    # values 1, 0.5, 0: mean 0.5, population std sqrt((0.25 + 0 + 0.25) / 3) = sqrt(1/6), median 0.5
    assert s["mean"] == pytest.approx(0.5) and s["median"] == pytest.approx(0.5)
    assert s["std"] == pytest.approx(math.sqrt(1 / 6))
    assert (s["n"], s["n_nan"]) == (3, 1)


def test_proportion_agreement_bland_altman_by_hand():
    fr = {"ET": [0.2, 0.4, 0.6], "NET": [0.1, 0.2, 0.3], "CC": [0.3, 0.2, 0.0], "ED": [0.4, 0.2, 0.1]}
    gt = dict(fr, ET=[0.1, 0.4, 0.5])
    rows = proportion_rows(fr, gt)
    et = rows["ET"]
    # d = 0.1, 0, 0.1: bias 1/15; SD (ddof 1) = sqrt((1/900 + 4/900 + 1/900) / 2) = sqrt(1/300)
    assert et["n"] == 3
    assert et["mean_difference"] == pytest.approx(1 / 15)
    assert et["sd_difference"] == pytest.approx(math.sqrt(1 / 300))
    assert et["loa_lower"] == pytest.approx(1 / 15 - 1.96 * math.sqrt(1 / 300))
    assert et["loa_upper"] == pytest.approx(1 / 15 + 1.96 * math.sqrt(1 / 300))
    # ranks of (0.2, 0.4, 0.6) and (0.1, 0.4, 0.5) agree: Spearman 1; Pearson: centred (-0.2, 0, 0.2) and
    # (-7/30, 2/30, 5/30): r = (0.2 * 12/30) / sqrt(0.08 * 78/900) = 0.08 / sqrt(0.08 * 78/900) = 0.9608
    assert et["spearman_rho"] == pytest.approx(1.0)
    assert et["pearson_r"] == pytest.approx(0.08 / math.sqrt(0.08 * 78 / 900))


def test_proportion_agreement_perfect():
    fr = {"ET": [0.1, 0.3, 0.2, 0.5], "NET": [0.2, 0.1, 0.3, 0.25], "CC": [0.0, 0.1, 0.05, 0.2],
          "ED": [0.7, 0.5, 0.45, 0.05]}
    rows = proportion_rows(fr, {k: list(v) for k, v in fr.items()})
    assert list(rows) == ["ET", "NET", "CC", "ED"]
    for stats in rows.values():
        assert stats["n"] == 4
        assert stats["pearson_r"] == pytest.approx(1.0) and stats["spearman_rho"] == pytest.approx(1.0)
        assert stats["mean_difference"] == 0.0 and stats["loa_lower"] == 0.0 and stats["loa_upper"] == 0.0


def test_bland_altman_png(tmp_path):
    fr = {"ET": [0.1, 0.3, 0.2], "NET": [0.2, 0.2, 0.3], "CC": [0.0, 0.1, 0.1], "ED": [0.7, 0.4, 0.4]}
    gt = {k: [v + 0.01 * i for i, v in enumerate(vals)] for k, vals in fr.items()}
    path = write_bland_altman_png(fr, gt, tmp_path / "ba.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    assert [p.name for p in tmp_path.iterdir()] == ["ba.png"]  # no temporary file left


# --- the folder --------------------------------------------------------------------------------------------

@pytest.fixture
def two_cases(tmp_path):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    for cid, (gt, pred) in (("P_A", _case_a()), ("P_B", _case_b())):
        _write(gt, gt_dir / f"{cid}-seg.nii.gz")  # BraTS names on the ground-truth side
        _write(pred, pred_dir / f"{cid}.nii.gz")  # nnU-Net names on the prediction side
    _write(np.zeros((16, 16, 16)), gt_dir / "P_C-seg.nii.gz")  # no prediction for P_C
    return pred_dir, gt_dir, tmp_path / "out" / "metrics.csv"


def test_evaluate_folder(two_cases):
    pred_dir, gt_dir, out_csv = two_cases
    res = evaluate_folder(pred_dir, gt_dir, out_csv)
    assert res.missing == ["P_C"]

    with open(out_csv, newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        rows = list(reader)
    assert {r["case"] for r in rows} == {"P_A", "P_B"}
    by = {(r["case"], r["region"]): r for r in rows}
    assert {"ET", "NET", "CC", "ED", "TC", "WT"} <= {r["region"] for r in rows}
    assert float(by["P_A", "ET"]["dice"]) == pytest.approx(1.0)
    assert float(by["P_B", "ET"]["dice"]) == pytest.approx(0.6)  # 2 * 12 / (20 + 20)
    assert float(by["P_B", "ET"]["lesion_dice"]) == pytest.approx(0.6)  # one matched lesion of > 10 voxels
    assert float(by["P_B", "ED"]["dice"]) == pytest.approx(1.0)

    summary = json.loads(res.summary_path.read_text())
    assert res.summary_path == out_csv.parent / "metrics-summary.json"
    et = summary["metrics"]["ET"]["dice"]
    assert et["mean"] == pytest.approx(0.8) and et["median"] == pytest.approx(0.8)  # (1 + 0.6) / 2
    assert et["std"] == pytest.approx(0.2)  # population SD of {1, 0.6}
    assert summary["missing_predictions"] == ["P_C"] and summary["n_cases"] == 2
    vp = summary["volume_proportions"]
    # P_A: 0.2/0.2/0.2/0.4 both sides; P_B: ET 0.5 / ED 0.5 both sides (the shift keeps the volumes)
    assert vp["fractions"]["prediction"]["ET"] == pytest.approx([0.2, 0.5])
    assert vp["fractions"]["ground_truth"]["ED"] == pytest.approx([0.4, 0.5])
    assert set(vp["agreement"]) == {"ET", "NET", "CC", "ED"}

    png = res.plot_path.read_bytes()
    assert res.plot_path.name == "metrics-bland-altman.png" and png[:4] == b"\x89PNG" and len(png) > 1000
    assert any("P_C" in line for line in res.summary_lines())


def test_evaluate_folder_with_workers_gives_the_same_rows(two_cases):
    pred_dir, gt_dir, out_csv = two_cases
    one = evaluate_folder(pred_dir, gt_dir, out_csv)
    two = evaluate_folder(pred_dir, gt_dir, out_csv.with_name("m2.csv"), workers=2)
    assert [(r["case"], r["region"], r["dice"]) for r in one.rows] == [(r["case"], r["region"], r["dice"])
                                                                      for r in two.rows]


@pytest.mark.parametrize("workers", [1, 2])
def test_evaluate_folder_refuses_a_grid_mismatch_and_writes_nothing(tmp_path, workers):
    gt, pred = _case_b()
    for cid in ("P_A", "P_B"):
        _write(gt, tmp_path / "gt" / f"{cid}.nii.gz")
    _write(pred, tmp_path / "pred" / "P_A.nii.gz")
    _write(pred, tmp_path / "pred" / "P_B.nii.gz", spacing=(1.0, 1.0, 2.0))
    out = tmp_path / "out" / "m.csv"
    with pytest.raises(InputError, match="P_B.nii.gz: prediction grid .* differs from the ground-truth grid"):
        evaluate_folder(tmp_path / "pred", tmp_path / "gt", out, workers=workers)
    assert not out.parent.exists() or not list(out.parent.iterdir())


def test_evaluate_folder_refuses_when_nothing_pairs(tmp_path):
    gt, pred = _case_b()
    _write(gt, tmp_path / "gt" / "P_B.nii.gz")
    _write(pred, tmp_path / "pred" / "OTHER.nii.gz")
    with pytest.raises(InputError, match="no prediction for any"):
        evaluate_folder(tmp_path / "pred", tmp_path / "gt", tmp_path / "m.csv")
    with pytest.raises(InputError, match="no ground-truth"):
        evaluate_folder(tmp_path / "pred", tmp_path / "pred" / "..", tmp_path / "m.csv")
