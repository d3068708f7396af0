"""Metrics: BraTS PED lesion-wise scores, whole-region scores, surface distances, volumes, proportion agreement.

Hand-built cases for each rule of the official scorer (see ``pedtumorseg.evaluation.metrics``); the official values on
generated pairs are pinned in ``test_metrics_official.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from pedtumorseg.evaluation.metrics import _weighted_percentile, evaluate_case, lesion_wise, proportion_agreement, surface_scores, surfel_distances, voxel_wise
from pedtumorseg.arrays import volumes

SHAPE = (20, 40, 60)
ISO = (1.0, 1.0, 1.0)
EMPTY_SCORES = (1.0, 0.0, 1.0, 1.0)
MISS_SCORES = (0.0, 374.0, 0.0, 0.0)


def cube(labels, z, y, x, size=3, value=1):
    labels[z:z + size, y:y + size, x:x + size] = value
    return labels


def empty():
    return np.zeros(SHAPE, np.uint8)


def scores(s):
    return (s["lesion_dice"], s["lesion_hd95"], s["lesion_nsd_0.5"], s["lesion_nsd_1.0"])


def counts(s):
    return (s["num_gt_lesions"], s["num_tp_lesions"], s["num_fn_lesions"], s["num_fp_lesions"])


def test_both_empty_is_perfect():
    for region, s in lesion_wise(empty(), empty(), ISO).items():
        assert scores(s) == EMPTY_SCORES and counts(s) == (0, 0, 0, 0)
    v = voxel_wise(empty(), empty(), ISO)["WT"]
    assert v == {"dice": 1.0, "hd95": 0.0, "nsd_0.5": 1.0, "nsd_1.0": 1.0, "sensitivity": 1.0, "specificity": 1.0}


def test_false_positive_only_scores_zero_and_374():
    pred = cube(empty(), 5, 5, 5)
    s = lesion_wise(pred, empty(), ISO)["ET"]
    assert scores(s) == MISS_SCORES and counts(s) == (0, 0, 0, 1)
    assert scores(lesion_wise(pred, empty(), ISO)["NET"]) == EMPTY_SCORES  # other regions empty in both
    n = pred.size
    assert voxel_wise(pred, empty(), ISO)["ET"] == {"dice": 0.0, "hd95": 374.0, "nsd_0.5": 0.0, "nsd_1.0": 0.0,
                                                    "sensitivity": 0.0, "specificity": (n - 27) / n}


def test_false_negative_only_and_an_unrelated_prediction():
    gt = cube(empty(), 5, 5, 5)
    s = lesion_wise(empty(), gt, ISO)["ET"]
    assert scores(s) == MISS_SCORES and counts(s) == (1, 0, 1, 0)
    far = cube(empty(), 5, 5, 40)  # 32 voxels away: outside the lesion's 5-voxel extent
    s = lesion_wise(far, gt, ISO)["ET"]
    assert scores(s) == MISS_SCORES and counts(s) == (1, 0, 1, 1)


def test_one_perfect_lesion_plus_one_fp_averages_to_half():
    gt = cube(empty(), 5, 5, 5)
    pred = cube(gt.copy(), 5, 25, 40)
    s = lesion_wise(pred, gt, ISO)["ET"]
    # (1 + 0) / 2 for Dice and NSD, (0 + 374) / 2 for HD95
    assert scores(s) == (pytest.approx(0.5), pytest.approx(187.0), pytest.approx(0.5), pytest.approx(0.5))
    assert counts(s) == (1, 1, 0, 1)


def test_gt_blobs_three_voxels_apart_are_one_lesion():
    gt = cube(cube(empty(), 5, 5, 5), 5, 5, 11)  # x 5..7 and 11..13: three empty voxels between
    pred = cube(empty(), 5, 5, 5)  # finds only the first blob
    s = lesion_wise(pred, gt, ISO)["ET"]
    assert counts(s) == (1, 1, 0, 0)
    # one lesion of 54 voxels against 27 predicted: 2*27/(54+27); as two lesions it would be (1 + 0)/2
    assert s["lesion_dice"] == pytest.approx(2 * 27 / 81)
    far = cube(cube(empty(), 5, 5, 5), 5, 5, 25)  # 17 voxels apart: separate lesions
    s = lesion_wise(pred, far, ISO)["ET"]
    assert counts(s) == (2, 1, 1, 0) and s["lesion_dice"] == pytest.approx(0.5)


def test_nearby_predicted_pieces_merge_into_one_lesion():
    # two 27-voxel FP blobs 2 voxels apart are one lesion: one FP (plain components would give two)
    pred = cube(cube(empty(), 5, 25, 30), 5, 25, 35)
    assert counts(lesion_wise(pred, empty(), ISO)["ET"]) == (0, 0, 0, 1)
    # two 8-voxel pieces 3 voxels apart: one 16-voxel lesion, kept; 12 voxels apart: two 8-voxel lesions, dropped
    near = cube(cube(empty(), 5, 25, 30, size=2), 5, 25, 35, size=2)
    assert counts(lesion_wise(near, empty(), ISO)["ET"]) == (0, 0, 0, 1)
    apart = cube(cube(empty(), 5, 25, 30, size=2), 5, 25, 44, size=2)
    assert scores(lesion_wise(apart, empty(), ISO)["ET"]) == EMPTY_SCORES
    # a predicted lesion matched through one of its pieces enters the match whole
    gt = cube(empty(), 5, 5, 5, size=4)
    pred = cube(cube(empty(), 5, 5, 5, size=4), 5, 5, 17)  # second piece: 8 voxels away, outside the extent
    s = lesion_wise(pred, gt, ISO)["ET"]
    assert counts(s) == (1, 1, 0, 0) and s["lesion_dice"] == pytest.approx(2 * 64 / (64 + 64 + 27))


def test_predicted_lesions_of_ten_voxels_or_fewer_are_deleted():
    gt = cube(empty(), 5, 5, 5)
    single = gt.copy()
    single[10, 30, 50] = 1  # a one-voxel FP: deleted, so Dice stays 1
    assert scores(lesion_wise(single, gt, ISO)["ET"]) == (1.0, 0.0, 1.0, 1.0)
    ten, eleven = empty(), empty()
    ten[10, 30, 40:50] = 1
    eleven[10, 30, 40:51] = 1
    assert counts(lesion_wise(ten, empty(), ISO)["ET"]) == (0, 0, 0, 0)
    assert counts(lesion_wise(eleven, empty(), ISO)["ET"]) == (0, 0, 0, 1)
    # the whole-region scores use the filtered prediction as well
    assert voxel_wise(single, gt, ISO)["ET"]["dice"] == 1.0
    assert voxel_wise(ten, empty(), ISO)["ET"]["hd95"] == 0.0
    # a deleted prediction cannot match: the GT lesion it touches is missed
    touch = empty()
    touch[6, 6, 6] = 1
    s = lesion_wise(touch, gt, ISO)["ET"]
    assert scores(s) == MISS_SCORES and counts(s) == (1, 0, 1, 0)


def test_gt_lesions_of_ten_mm3_or_less_are_left_out_by_volume():
    gt10, gt11 = empty(), empty()
    gt10[5, 5, 5:15] = 1
    gt11[5, 5, 5:16] = 1
    s = lesion_wise(empty(), gt10, ISO)["ET"]
    assert scores(s) == EMPTY_SCORES and counts(s) == (0, 0, 0, 0)
    assert counts(lesion_wise(empty(), gt11, ISO)["ET"]) == (1, 0, 1, 0)
    # a prediction of a left-out lesion is matched, so it is no false positive either
    big = cube(empty(), 4, 4, 4, size=4)
    s = lesion_wise(big, gt10, ISO)["ET"]
    assert scores(s) == EMPTY_SCORES and counts(s) == (0, 0, 0, 0)
    # the threshold is on mm^3: with 2 mm slices 6 voxels (12 mm^3) count, 5 voxels (10 mm^3) do not
    gt5, gt6 = empty(), empty()
    gt5[5, 5, 5:10] = 1
    gt6[5, 5, 5:11] = 1
    assert counts(lesion_wise(empty(), gt5, (2.0, 1.0, 1.0))["ET"])[0] == 0
    assert counts(lesion_wise(empty(), gt6, (2.0, 1.0, 1.0))["ET"])[0] == 1


def test_surface_element_areas_by_hand():
    a = np.zeros((3, 3, 3), bool)
    a[1, 1, 1] = True
    b = a.copy()
    # one voxel: 8 corner elements, each a marching-cubes triangle of area sqrt(3)/8 (sides sqrt(2)/2)
    _, area, _, _ = surfel_distances(a, b, ISO)
    assert area.size == 8 and area == pytest.approx(np.full(8, math.sqrt(3) / 8))
    # with a 2 mm z spacing the triangle's area vector (1, 1, 1)/8 scales to (2, 2, 1)/8 (x, y, z): area 3/8
    _, area, _, _ = surfel_distances(a, b, (2.0, 1.0, 1.0))
    assert area == pytest.approx(np.full(8, 3 / 8))


def test_hd95_is_the_area_weighted_percentile():
    assert _weighted_percentile(np.array([1.0, 2.0, 3.0]), np.array([0.9, 0.04, 0.06])) == 3.0
    assert _weighted_percentile(np.array([3.0, 1.0, 2.0]), np.array([0.04, 0.95, 0.01])) == 1.0
    # lines of 10 and 11 voxels: only the 11-voxel line's end cap (4 triangles of sqrt(3)/8) is 1 mm from the
    # other surface; its area share is sqrt(3)/2 / (sqrt(3) + 10 * 4 * sqrt(2)/2) = 2.9 % < 5 %: HD95 = 0
    a = np.zeros((3, 3, 14), bool)
    b = a.copy()
    a[1, 1, 1:11] = True
    b[1, 1, 1:12] = True
    assert surface_scores(a, b, ISO)[0] == 0.0
    # 4 and 5 voxels: share sqrt(3)/2 / (sqrt(3) + 4 * 4 * sqrt(2)/2) = 6.6 % > 5 %: HD95 = 1 mm
    c = np.zeros((3, 3, 8), bool)
    d = c.copy()
    c[1, 1, 1:5] = True
    d[1, 1, 1:6] = True
    assert surface_scores(c, d, ISO)[0] == 1.0
    assert surface_scores(c, d, (1.0, 1.0, 2.5))[0] == 2.5


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the package imports scipy.ndimage.filters
def test_hd95_equals_deepminds_surface_distance_package():
    import surface_distance as sd  # a dependency: its area table is what metrics uses

    rng = np.random.default_rng(7)
    for spacing in [(1.0, 1.0, 1.0), (2.5, 0.9, 1.2)]:
        a = ndimage.gaussian_filter(rng.random((24, 30, 26)), 2.5) > 0.52
        b = ndimage.gaussian_filter(rng.random((24, 30, 26)), 2.5) > 0.52
        # the package takes arrays in the official code's (x, y, z) order
        ref = sd.compute_surface_distances(a.transpose(2, 1, 0).copy(), b.transpose(2, 1, 0).copy(),
                                           spacing[::-1])
        d_ab, area_a, d_ba, area_b = surfel_distances(a, b, spacing)
        np.testing.assert_allclose(np.sort(d_ab), ref["distances_gt_to_pred"])
        np.testing.assert_allclose(area_a.sum(), ref["surfel_areas_gt"].sum())
        np.testing.assert_allclose(np.sort(d_ba), ref["distances_pred_to_gt"])
        assert surface_scores(a, b, spacing)[0] == pytest.approx(sd.compute_robust_hausdorff(ref, 95))


def test_nsd_is_the_mean_of_the_two_directed_shares():
    a = np.zeros((3, 3, 14), bool)
    b = a.copy()
    a[1, 1, 1:11] = True  # every voxel of a line is a boundary voxel
    b[1, 1, 1:12] = True
    # a -> b: 10 of 10 within 0.5 mm; b -> a: 10 of 11; mean (1 + 10/11) / 2 (the pooled share would be 20/21)
    _, nsd = surface_scores(a, b, ISO, (0.5, 1.0))
    assert nsd == {0.5: pytest.approx((1 + 10 / 11) / 2), 1.0: 1.0}


def test_nsd_tolerance_with_anisotropic_spacing():
    a = np.zeros((5, 5, 8), bool)
    b = np.zeros((5, 5, 8), bool)
    a[1:3, 1:3, 1:3] = True
    b[1:3, 1:3, 3:5] = True  # two columns further in x, x spacing 0.5 mm: distances 0.5 and 1.0 mm
    _, nsd = surface_scores(a, b, (1.0, 1.0, 0.5), (0.4, 0.5, 1.0))
    assert nsd == {0.4: 0.0, 0.5: 0.5, 1.0: 1.0}
    # lesion-wise: 3x3x3 cubes (26 boundary voxels) three columns apart at 0.5 mm: boundary distances are
    # 9 x 0.5 (facing faces), 8 x 1.0 (middle rings), 9 x 1.5 (far faces), both ways
    gt = cube(empty(), 5, 5, 5)
    pred = cube(empty(), 5, 5, 8)
    s = lesion_wise(pred, gt, (1.0, 1.0, 0.5))["ET"]
    assert s["lesion_nsd_0.5"] == pytest.approx(9 / 26) and s["lesion_nsd_1.0"] == pytest.approx(17 / 26)
    assert s["lesion_dice"] == 0.0 and counts(s) == (1, 1, 0, 0)  # matched (inside the extent), no overlap


def test_regions_and_evaluate_case_rows():
    gt = cube(empty(), 5, 5, 5, size=4, value=1)
    pred = cube(empty(), 5, 5, 5, size=4, value=3)  # right place, wrong label: ET and CC wrong, TC/WT right
    rows = {r["region"]: r for r in evaluate_case(pred, gt, ISO)}
    assert list(rows) == ["ET", "NET", "CC", "ED", "TC", "WT"]
    assert rows["ET"]["dice"] == 0.0 and rows["ET"]["lesion_dice"] == 0.0 and rows["ET"]["sensitivity"] == 0.0
    assert rows["CC"]["num_fp_lesions"] == 1
    assert rows["TC"]["dice"] == 1.0 and rows["TC"]["lesion_dice"] == 1.0 and rows["WT"]["hd95"] == 0.0
    assert {"lesion_dice", "lesion_hd95", "lesion_nsd_0.5", "lesion_nsd_1.0", "num_gt_lesions", "num_tp_lesions",
            "num_fn_lesions", "num_fp_lesions", "dice", "hd95", "nsd_0.5", "nsd_1.0", "sensitivity",
            "specificity"} == set(rows["WT"]) - {"region"}
    half = pred.copy()
    half[5:7] = 0  # half of the cube predicted: sensitivity 0.5, specificity 1
    v = voxel_wise(half, cube(empty(), 5, 5, 5, size=4, value=3), ISO)["CC"]
    assert v["sensitivity"] == 0.5 and v["specificity"] == 1.0
    shifted = cube(empty(), 6, 5, 5, size=4, value=3)  # 16 voxels outside the GT cube
    n = shifted.size
    assert voxel_wise(shifted, pred, ISO)["CC"]["specificity"] == pytest.approx((n - 80) / (n - 64))


def _naive_lesion_scores(pred, gt, spacing):
    """Full-volume reference of the lesion-wise rules (no bounding boxes): Dice and counts."""
    st = ndimage.generate_binary_structure(3, 2)

    def lesions(mask):
        lab, n = ndimage.label(ndimage.binary_dilation(mask, st, iterations=5), np.ones((3, 3, 3)))
        lab[~mask] = 0
        return lab, n

    gl, ng = lesions(gt)
    pl, npr = lesions(pred)
    for k in range(1, npr + 1):
        if (pl == k).sum() <= 10:
            pl[pl == k] = 0
    kept_pred = set(np.unique(pl)) - {0}
    matched, dices = set(), []
    for k in range(1, ng + 1):
        les = gl == k
        hits = set(np.unique(pl[ndimage.binary_dilation(les, st, iterations=5)])) - {0}
        matched |= hits
        if les.sum() * np.prod(spacing) <= 10:
            continue
        p = np.isin(pl, list(hits))
        dices.append(2 * (les & p).sum() / (les.sum() + p.sum()))
    fp = len(kept_pred - matched)
    n = len(dices) + fp
    return (1.0 if n == 0 else sum(dices) / n), len(dices), fp


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
    d, kept, fp = _naive_lesion_scores(pred, gt, spacing)
    assert s["lesion_dice"] == pytest.approx(d) and (s["num_gt_lesions"], s["num_fp_lesions"]) == (kept, fp)
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
    assert volumes(np.zeros((3, 3, 3), np.uint8), ISO)["fraction_of_wt"]["ET"] is None  # empty WT: undefined


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
