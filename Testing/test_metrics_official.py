"""Our BraTS PED scores equal the official scorer's on the generated pairs of ``metrics_cases.py``.

The golden values in ``data/official_ped_scores.json`` were printed by the official scorer, ``metrics_PED.py`` of
the public BraTS-2024-Metrics code at commit f1131e340e155908553c226675644a6363b998b7 (the PED scorer of BraTS
2024/2025), run in its own environment with its pinned requirements by
``benchmarks/official_scorer_compare.py --write-goldens`` (which also regenerates them).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metrics_cases import CASES, make_case
from pedtumorseg.conventions import REGIONS
from pedtumorseg.evaluation.metrics import evaluate_case

GOLDEN = json.loads((Path(__file__).parent / "data" / "official_ped_scores.json").read_text())
OFFICIAL = GOLDEN["cases"]
SCORES = ("lesion_dice", "lesion_nsd_0.5", "lesion_nsd_1.0", "dice", "nsd_0.5", "nsd_1.0")
COUNTS = ("num_tp_lesions", "num_fn_lesions", "num_fp_lesions")
#: the official code computes these on images of lesion numbers: equal to ours with <= 1 lesion per side only
SINGLE_LESION_ONLY = ("hd95", "sensitivity", "specificity")


def test_goldens_name_the_scorer_commit_and_cover_every_case():
    assert "f1131e340e155908553c226675644a6363b998b7" in GOLDEN["scorer"]
    assert sorted(OFFICIAL) == sorted(CASES) and len(CASES) >= 10
    assert all(sorted(OFFICIAL[c]) == sorted(REGIONS) for c in OFFICIAL)


def test_the_cases_exercise_every_rule():
    rows = [r for case in OFFICIAL.values() for r in case.values()]
    assert any(r["num_fp_lesions"] > 0 and r["num_tp_lesions"] > 0 for r in rows)  # FP next to a match
    assert any(r["num_fp_lesions"] > 0 and r["num_tp_lesions"] + r["num_fn_lesions"] == 0 for r in rows)  # FP only
    assert any(r["num_fn_lesions"] > 0 and r["pred_lesions"] == 0 for r in rows)  # FN only
    assert any(r["pred_lesions"] == 0 and r["gt_lesions"] == 0 for r in rows)  # both empty
    assert any(r["gt_lesions"] >= 3 and r["pred_lesions"] >= 3 for r in rows)  # many lesions
    # merging of nearby predicted pieces: two 8-voxel pieces form one kept 16-voxel lesion
    merged = OFFICIAL["nearby_predicted_pieces_merge"]["ET"]
    assert (merged["num_tp_lesions"], merged["num_fp_lesions"], merged["pred_lesions"]) == (1, 1, 2)
    # <= 10-voxel predicted lesions dropped: only the 12-voxel one is an FP; the GT lesion touched by a single
    # predicted voxel is missed
    small = OFFICIAL["small_predicted_lesions_dropped"]["NET"]
    assert (small["num_tp_lesions"], small["num_fn_lesions"], small["num_fp_lesions"]) == (1, 1, 1)
    assert any(make_case(c)[2] != (1.0, 1.0, 1.0) for c in CASES)  # anisotropic spacing


@pytest.mark.parametrize("case", sorted(CASES))
def test_scores_equal_the_official_scorer(case):
    pred, gt, spacing = make_case(case)
    ours = {row["region"]: row for row in evaluate_case(pred, gt, spacing)}
    for region, official in OFFICIAL[case].items():
        mine = ours[region]
        for key in SCORES:
            assert mine[key] == pytest.approx(official[key], abs=1e-4), (region, key)
        assert abs(mine["lesion_hd95"] - official["lesion_hd95"]) <= 0.5, region
        for key in COUNTS:
            assert mine[key] == official[key], (region, key)
        if official["pred_lesions"] <= 1 and official["gt_lesions"] <= 1:
            assert abs(mine["hd95"] - official["hd95"]) <= 0.5, region
            assert mine["sensitivity"] == pytest.approx(official["sensitivity"], abs=1e-4), region
            assert mine["specificity"] == pytest.approx(official["specificity"], abs=1e-4), region
