"""``--scorer brats2026``: the BraTS 2026 scores delegated to the challenge package brats-evaluation (optional)."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

HAVE_PACKAGE = importlib.util.find_spec("brats_evaluation") is not None


def _write(array, path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(np.asarray(array, np.uint8)), str(path))


@pytest.fixture
def pair(tmp_path):
    """GT: one ED block with an ET block inside; prediction: the same plus a far ED block (one extra instance)."""
    gt = np.zeros((24, 32, 32), np.uint8)
    gt[4:14, 4:14, 4:14] = 4
    gt[7:11, 7:11, 7:11] = 1
    pred = gt.copy()
    pred[18:22, 24:28, 24:28] = 4
    _write(gt, tmp_path / "gt" / "PED-00001-000-seg.nii.gz")
    _write(pred, tmp_path / "pred" / "PED-00001-000.nii.gz")
    return tmp_path / "pred", tmp_path / "gt", tmp_path / "out" / "scores.csv"


def test_brats2026_rows_come_from_brats_evaluation(pair):
    pytest.importorskip("brats_evaluation")
    from pedtumorseg.evaluation.folder import evaluate_folder
    from pedtumorseg.evaluation.brats2026 import COLUMNS

    pred_dir, gt_dir, out_csv = pair
    evaluate_folder(pred_dir, gt_dir, out_csv, scorer="brats2026")
    with open(out_csv, newline="") as f:
        rows = {r["region"]: r for r in csv.DictReader(f)}
    assert list(rows["WT"]) == ["case", "region", *COLUMNS]
    et, ed, cc = rows["ET"], rows["ED"], rows["CC"]
    assert float(et["lesion_dice"]) == pytest.approx(1.0) and float(et["dice"]) == pytest.approx(1.0)
    assert (float(et["num_tp_lesions"]), float(et["num_fp_lesions"])) == (1.0, 0.0)
    # ED: the shell is matched exactly, the far block is one unmatched predicted instance
    assert (float(ed["num_tp_lesions"]), float(ed["num_fp_lesions"]), float(ed["num_fn_lesions"])) == (1.0, 1.0, 0.0)
    assert float(ed["lesion_dice"]) == pytest.approx(1.0) and float(ed["dice"]) < 1.0
    assert float(cc["num_tp_lesions"]) == 0.0  # empty on both sides


def test_brats2026_cli_flag(pair, capsys):
    pytest.importorskip("brats_evaluation")
    from pedtumorseg.cli import main

    pred_dir, gt_dir, out_csv = pair
    assert main(["evaluate", "--pred", str(pred_dir), "--gt", str(gt_dir), "--out", str(out_csv),
                 "--scorer", "brats2026"]) == 0
    assert "lesion_nsd" in out_csv.read_text().splitlines()[0]


@pytest.mark.skipif(HAVE_PACKAGE, reason="brats-evaluation is installed")
def test_brats2026_without_the_package_is_one_clear_error(pair, capsys):
    from pedtumorseg.cli import main

    pred_dir, gt_dir, out_csv = pair
    code = main(["evaluate", "--pred", str(pred_dir), "--gt", str(gt_dir), "--out", str(out_csv),
                 "--scorer", "brats2026"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "pedtumorseg[brats2026]" in err[0]
    assert not out_csv.exists()


def test_default_scorer_is_brats2025(pair):
    from pedtumorseg.evaluation.folder import METRICS, evaluate_folder

    pred_dir, gt_dir, out_csv = pair
    evaluate_folder(pred_dir, gt_dir, out_csv)
    assert out_csv.read_text().splitlines()[0].split(",") == ["case", "region", *METRICS]
