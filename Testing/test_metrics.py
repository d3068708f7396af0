"""Metrics: BraTS PED lesion-wise scores, voxel scores, surface distances, volumes, proportion agreement."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from pedtumorseg.metrics import (
    evaluate_case,
    lesion_wise,
    proportion_agreement,
    surface_scores,
    volumes,
    voxel_wise,
)

SHAPE = (20, 40, 60)
ISO = (1.0, 1.0, 1.0)


def cube(labels, z, y, x, size=3, value=1):
    labels[z:z + size, y:y + size, x:x + size] = value
    return labels


def empty():
    return np.zeros(SHAPE, np.uint8)


def test_both_empty_is_perfect():
    scores = lesion_wise(empty(), empty(), ISO)
    for region, s in scores.items():
        assert (s["lesion_dice"], s["lesion_hd95"], s["lesion_nsd_0.5"], s["lesion_nsd_1.0"]) == (1.0, 0.0, 1.0, 1.0)
        assert s["num_gt_lesions"] == 0 and s["num_fp_lesions"] == 0
    v = voxel_wise(empty(), empty(), ISO)["WT"]
    assert v == {"dice": 1.0, "hd95": 0.0, "sensitivity": 1.0}


def test_false_positive_only_scores_zero_and_374():
    pred = cube(empty(), 5, 5, 5)
    s = lesion_wise(pred, empty(), ISO)["ET"]
    assert (s["lesion_dice"], s["lesion_hd95"], s["lesion_nsd_1.0"], s["num_fp_lesions"]) == (0.0, 374.0, 0.0, 1)
    assert lesion_wise(pred, empty(), ISO)["NET"]["lesion_dice"] == 1.0  # other regions empty in both
    assert voxel_wise(pred, empty(), ISO)["ET"] == {"dice": 0.0, "hd95": 374.0, "sensitivity": 0.0}


def test_miss_scores_374_and_counts_the_unrelated_prediction_as_fp():
    gt = cube(empty(), 5, 5, 5)
    s = lesion_wise(empty(), gt, ISO)["ET"]
    assert (s["lesion_dice"], s["lesion_hd95"], s["lesion_nsd_0.5"], s["num_gt_lesions"]) == (0.0, 374.0, 0.0, 1)
    far = cube(empty(), 5, 5, 40)  # 32 voxels away: outside the lesion's 5-voxel extent
    s = lesion_wise(far, gt, ISO)["ET"]
    assert (s["lesion_dice"], s["lesion_hd95"], s["num_gt_lesions"], s["num_fp_lesions"]) == (0.0, 374.0, 1, 1)


def test_one_perfect_lesion_plus_one_fp_averages_to_half():
    gt = cube(empty(), 5, 5, 5)
    pred = cube(gt.copy(), 5, 25, 40)
    s = lesion_wise(pred, gt, ISO)["ET"]
    # (1 + 0) / 2 for Dice and NSD, (0 + 374) / 2 for HD95
    assert s["lesion_dice"] == pytest.approx(0.5)
    assert s["lesion_hd95"] == pytest.approx(187.0)
    assert s["lesion_nsd_0.5"] == pytest.approx(0.5) and s["lesion_nsd_1.0"] == pytest.approx(0.5)
    assert (s["num_gt_lesions"], s["num_fp_lesions"]) == (1, 1)


def test_gt_blobs_three_voxels_apart_are_one_lesion():
    gt = cube(cube(empty(), 5, 5, 5), 5, 5, 11)  # x 5..7 and 11..13: three empty voxels between
    pred = cube(empty(), 5, 5, 5)  # finds only the first blob
    s = lesion_wise(pred, gt, ISO)["ET"]
    assert s["num_gt_lesions"] == 1
    # one lesion of 54 voxels against 27 predicted: 2*27/(54+27); as two lesions it would be (1 + 0)/2
    assert s["lesion_dice"] == pytest.approx(2 * 27 / 81)
    far = cube(cube(empty(), 5, 5, 5), 5, 5, 25)  # 17 voxels apart: separate lesions
    s = lesion_wise(pred, far, ISO)["ET"]
    assert s["num_gt_lesions"] == 2 and s["lesion_dice"] == pytest.approx(0.5)


def test_predicted_fragment_within_the_gt_extent_is_matched_and_fp_blobs_count_separately():
    gt = cube(empty(), 5, 5, 5, size=4)
    pred = cube(gt.copy(), 5, 5, 13)  # a fragment 4 voxels beside the lesion: within its 5-voxel extent
    s = lesion_wise(pred, gt, ISO)["ET"]
    assert s["num_fp_lesions"] == 0 and s["lesion_dice"] == pytest.approx(2 * 64 / (64 + 64 + 27))
    # predictions are split into plain 26-connected components (reference code): two FP blobs 2 voxels apart
    # are two false positives; touching blobs are one
    pred2 = cube(cube(empty(), 5, 25, 30), 5, 25, 35)
    assert lesion_wise(pred2, empty(), ISO)["ET"]["num_fp_lesions"] == 2
    pred3 = cube(cube(empty(), 5, 25, 30), 5, 25, 33)
    assert lesion_wise(pred3, empty(), ISO)["ET"]["num_fp_lesions"] == 1


def test_ten_voxel_gt_lesion_ignored_eleven_kept():
    gt10 = empty()
    gt10[5, 5, 5:15] = 1
    s = lesion_wise(empty(), gt10, ISO)["ET"]
    assert (s["num_gt_lesions"], s["lesion_dice"], s["lesion_hd95"]) == (0, 1.0, 0.0)
    gt11 = empty()
    gt11[5, 5, 5:16] = 1
    s = lesion_wise(empty(), gt11, ISO)["ET"]
    assert (s["num_gt_lesions"], s["lesion_dice"], s["lesion_hd95"]) == (1, 0.0, 374.0)
    # a prediction of the ignored lesion is matched, so it is no false positive either
    s = lesion_wise(gt10, gt10, ISO)["ET"]
    assert (s["num_gt_lesions"], s["num_fp_lesions"], s["lesion_dice"]) == (0, 0, 1.0)
    # small predicted FPs count whatever their size
    fp = empty()
    fp[10, 30, 50] = 1
    assert lesion_wise(fp, empty(), ISO)["ET"]["num_fp_lesions"] == 1


def test_hd95_of_offset_cubes_with_anisotropic_spacing():
    a = np.zeros((8, 6, 6), bool)
    b = np.zeros((8, 6, 6), bool)
    a[1:3, 1:3, 1:3] = True  # 2x2x2: every voxel is a boundary voxel
    b[3:5, 1:3, 1:3] = True  # two slices further in z
    # z spacing 2 mm: from a's z=2 voxels the nearest b voxel is 1 slice = 2 mm away, from z=1 it is 4 mm:
    # distances [2]*4 + [4]*4 both ways; the 95th percentile (index 6.65 of 8 sorted) is 4
    hd95, nsd = surface_scores(a, b, (2.0, 1.0, 1.0), (1.0, 2.0, 4.0))
    assert hd95 == pytest.approx(4.0)
    assert nsd == {1.0: 0.0, 2.0: 0.5, 4.0: 1.0}
    assert surface_scores(a, b, (1.0, 1.0, 1.0))[0] == pytest.approx(2.0)
    assert voxel_wise(b.astype(np.uint8), a.astype(np.uint8), (2.0, 1.0, 1.0))["ET"]["hd95"] == pytest.approx(4.0)


def test_hd95_percentile_by_hand():
    a = np.zeros((4, 4, 14), bool)
    b = np.zeros((4, 4, 14), bool)
    a[1, 1, 1:11] = True  # a line of 10 voxels, x 1..10
    b[1, 1, 1:12] = True  # the same line one voxel longer
    # a -> b: all 0; b -> a: ten 0s and one 1 (x=11): sorted index 0.95*10 = 9.5 -> 0 + 0.5*(1-0) = 0.5
    hd95, nsd = surface_scores(a, b, ISO, (0.5, 1.0))
    assert hd95 == pytest.approx(0.5)
    assert nsd == {0.5: pytest.approx(20 / 21), 1.0: 1.0}


def test_nsd_tolerance_with_anisotropic_spacing():
    a = np.zeros((5, 5, 8), bool)
    b = np.zeros((5, 5, 8), bool)
    a[1:3, 1:3, 1:3] = True
    b[1:3, 1:3, 3:5] = True  # two columns further in x, x spacing 0.5 mm: distances 0.5 and 1.0 mm
    hd95, nsd = surface_scores(a, b, (1.0, 1.0, 0.5), (0.4, 0.5, 1.0))
    assert nsd == {0.4: 0.0, 0.5: 0.5, 1.0: 1.0}
    assert hd95 == pytest.approx(1.0)
    # lesion-wise: 3x3x3 cubes (26 boundary voxels) three columns apart at 0.5 mm: boundary distances are
    # 9 x 0.5 (facing faces), 8 x 1.0 (middle rings), 9 x 1.5 (far faces), both ways
    gt = cube(empty(), 5, 5, 5)
    pred = cube(empty(), 5, 5, 8)
    s = lesion_wise(pred, gt, (1.0, 1.0, 0.5))["ET"]
    assert s["lesion_nsd_0.5"] == pytest.approx(9 / 26) and s["lesion_nsd_1.0"] == pytest.approx(17 / 26)
    assert s["lesion_hd95"] == pytest.approx(1.5)  # sorted index 0.95 * 25 = 23.75 lies among the 1.5s
    assert s["lesion_dice"] == 0.0 and s["num_fp_lesions"] == 0  # matched (inside the extent), no overlap


def test_regions_and_evaluate_case_rows():
    gt = cube(empty(), 5, 5, 5, size=4, value=1)
    pred = cube(empty(), 5, 5, 5, size=4, value=3)  # right place, wrong label: ET and CC wrong, TC/WT right
    rows = {r["region"]: r for r in evaluate_case(pred, gt, ISO)}
    assert list(rows) == ["ET", "NET", "CC", "ED", "TC", "WT"]
    assert rows["ET"]["dice"] == 0.0 and rows["ET"]["lesion_dice"] == 0.0 and rows["ET"]["sensitivity"] == 0.0
    assert rows["CC"]["num_fp_lesions"] == 1
    assert rows["TC"]["dice"] == 1.0 and rows["TC"]["lesion_dice"] == 1.0 and rows["WT"]["hd95"] == 0.0
    assert {"lesion_dice", "lesion_hd95", "lesion_nsd_0.5", "lesion_nsd_1.0", "dice", "hd95",
            "sensitivity"} <= set(rows["WT"])
    half = pred.copy()
    half[5:7] = 0  # half of the cube predicted: sensitivity 0.5
    assert voxel_wise(half, cube(empty(), 5, 5, 5, size=4, value=3), ISO)["CC"]["sensitivity"] == 0.5


def _naive_lesion_scores(pred, gt, spacing):
    """Full-volume reference of the lesion-wise rule (no bounding boxes), Dice and HD95 only."""
    st = ndimage.generate_binary_structure(3, 2)

    def lesions(mask):
        lab, n = ndimage.label(ndimage.binary_dilation(mask, st, iterations=5), np.ones((3, 3, 3)))
        lab[~mask] = 0
        return lab, n

    gl, ng = lesions(gt)
    pl, npr = ndimage.label(pred, np.ones((3, 3, 3)))  # predictions: plain 26-connected components
    matched, dices, hds = set(), [], []
    for k in range(1, ng + 1):
        les = gl == k
        hits = set(np.unique(pl[ndimage.binary_dilation(les, st, iterations=5)])) - {0}
        matched |= hits
        if les.sum() <= 10:
            continue
        p = np.isin(pl, list(hits))
        dices.append(2 * (les & p).sum() / (les.sum() + p.sum()))
        if not p.any():
            hds.append(374.0)
            continue
        edge = lambda m: m & ~ndimage.binary_erosion(m, ndimage.generate_binary_structure(3, 1))  # noqa: E731
        d1 = ndimage.distance_transform_edt(~edge(p), sampling=spacing)[edge(les)]
        d2 = ndimage.distance_transform_edt(~edge(les), sampling=spacing)[edge(p)]
        hds.append(max(np.percentile(d1, 95), np.percentile(d2, 95)))
    fp = len(set(range(1, npr + 1)) - matched)
    n = len(dices) + fp
    return (1.0, 0.0) if n == 0 else (sum(dices) / n, (sum(hds) + 374.0 * fp) / n)


def _random_blobs(rng, shape, n):
    mask = np.zeros(shape, bool)
    for _ in range(n):
        size = rng.integers(1, 6, size=3)
        corner = [int(rng.integers(0, d - s + 1)) for d, s in zip(shape, size)]  # may touch the volume edge
        mask[tuple(slice(c, c + s) for c, s in zip(corner, size))] = True
    return mask


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_bounding_box_computation_equals_full_volume_reference(seed):
    rng = np.random.default_rng(seed)
    shape = (24, 60, 64)
    gt = _random_blobs(rng, shape, 8)
    pred = gt.copy()
    pred[: int(rng.integers(0, 24))] = False  # loses some lesions / parts of them
    pred = np.roll(pred, int(rng.integers(-2, 3)), axis=2) | _random_blobs(rng, shape, 3)  # shifted, plus FPs
    spacing = (2.0, 1.0, 0.8)
    s = lesion_wise(pred.astype(np.uint8), gt.astype(np.uint8), spacing)["ET"]
    d, h = _naive_lesion_scores(pred, gt, spacing)
    assert s["lesion_dice"] == pytest.approx(d) and s["lesion_hd95"] == pytest.approx(h)
    assert s["num_gt_lesions"] + s["num_fp_lesions"] >= 2  # a case with several lesions


def test_volumes_in_ml_with_spacing():
    labels = np.zeros((5, 10, 10), np.uint8)
    labels.flat[:10] = 1
    labels.flat[10:30] = 2
    labels.flat[30:35] = 3
    labels.flat[35:50] = 4
    v = volumes(labels, (2.0, 1.5, 1.0))  # 3 mm^3 per voxel = 0.003 mL
    expect = {"ET": 0.030, "NET": 0.060, "CC": 0.015, "ED": 0.045, "TC": 0.105, "WT": 0.150}
    assert v["volumes_ml"] == pytest.approx(expect)
    assert v["fraction_of_wt"] == pytest.approx({"ET": 0.2, "NET": 0.4, "CC": 0.1, "ED": 0.3, "TC": 0.7, "WT": 1.0})
    assert volumes(np.zeros((3, 3, 3), np.uint8), ISO)["fraction_of_wt"]["ET"] == 0.0  # empty WT -> 0


def test_proportion_agreement_by_hand():
    gt = {"ET": [0.1, 0.2, 0.3, 0.4], "NET": [1, 2, 3], "CC": [0.1, 0.2, 0.3, 0.4]}
    pred = {"ET": [0.1, 0.2, 0.3, 0.4], "NET": [1, 3, 2], "CC": [0.25, 0.15, 0.45, 0.35]}
    out = proportion_agreement(pred, gt)
    assert set(out) == {"ET", "NET", "CC"}
    et = out["ET"]  # perfect agreement
    assert et["pearson_r"] == pytest.approx(1.0) and et["spearman_rho"] == pytest.approx(1.0)
    assert (et["mean_difference"], et["loa_lower"], et["loa_upper"], et["n"]) == (pytest.approx(0.0),
                                                                                 pytest.approx(0.0),
                                                                                 pytest.approx(0.0), 4)
    # x = y = [1, 2, 3] up to a swap: deviations [-1, 0, 1] and [-1, 1, 0] -> r = 1 / sqrt(2 * 2) = 0.5
    assert out["NET"]["pearson_r"] == pytest.approx(0.5) and out["NET"]["spearman_rho"] == pytest.approx(0.5)
    # differences [0.15, -0.05, 0.15, -0.05]: mean 0.05, SD sqrt(4 * 0.01 / 3)
    sd = math.sqrt(0.04 / 3)
    cc = out["CC"]
    assert cc["mean_difference"] == pytest.approx(0.05) and cc["sd_difference"] == pytest.approx(sd)
    assert cc["loa_lower"] == pytest.approx(0.05 - 1.96 * sd) and cc["loa_upper"] == pytest.approx(0.05 + 1.96 * sd)
    # list-of-cases input (as volumes()["fraction_of_wt"] rows) gives the same
    rows = lambda d: [dict(zip(d, vals)) for vals in zip(*d.values())]  # noqa: E731
    same = proportion_agreement(rows({"ET": gt["ET"], "CC": gt["CC"]}), rows({"ET": pred["ET"], "CC": pred["CC"]}))
    assert same["CC"]["mean_difference"] == pytest.approx(-0.05)  # arguments swapped: pred - gt flips sign
    assert math.isnan(proportion_agreement({"ET": [0.2, 0.2]}, {"ET": [0.1, 0.3]})["ET"]["pearson_r"])
