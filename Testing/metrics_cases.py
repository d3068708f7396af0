"""Deterministic prediction / ground-truth pairs that exercise every rule of the BraTS PED scorer.

Used by ``Testing/test_metrics_official.py`` (our scores against the official scorer's values pinned there) and
by ``benchmarks/official_scorer_compare.py`` (which runs the official code on the same pairs). Only numpy and
scipy, so that the official scorer's own environment can import it.

Arrays are (z, y, x) uint8 label maps (1 ET, 2 NET, 3 CC, 4 ED), spacings ``spacing_zyx`` in mm.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def _ball(shape, center, radius, spacing=(1.0, 1.0, 1.0)) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    d2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, center, spacing))
    return d2 <= radius ** 2


def _blobs(rng, shape, level, sigma=2.5) -> np.ndarray:
    return ndimage.gaussian_filter(rng.random(shape), sigma) > level


def _tumor(shape, center, radius, spacing=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Nested tumor: ED shell, NET layer, CC core, an ET rim piece."""
    labels = np.zeros(shape, np.uint8)
    labels[_ball(shape, center, radius, spacing)] = 4
    labels[_ball(shape, center, 0.7 * radius, spacing)] = 2
    labels[_ball(shape, center, 0.35 * radius, spacing)] = 3
    rim = _ball(shape, center, 0.7 * radius, spacing) & ~_ball(shape, center, 0.5 * radius, spacing)
    rim &= np.indices(shape)[2] > center[2]
    labels[rim] = 1
    return labels


def _perturb(labels, rng, shift=(0, 0, 0), flip_fraction=0.0) -> np.ndarray:
    out = np.roll(labels, shift, axis=(0, 1, 2))
    if flip_fraction:
        edge = ndimage.binary_dilation(out > 0) & ~ndimage.binary_erosion(out > 0)
        flip = edge & (rng.random(out.shape) < flip_fraction)
        out = out.copy()
        out[flip & (out > 0)] = 0
    return out


def _case_perfect(rng):
    shape, spacing = (48, 48, 48), (1.0, 1.0, 1.0)
    gt = _tumor(shape, (24, 24, 24), 14)
    return gt.copy(), gt, spacing


def _case_shifted_boundary_noise(rng):
    shape, spacing = (48, 52, 44), (1.0, 1.0, 1.0)
    gt = _tumor(shape, (24, 26, 22), 15)
    return _perturb(gt, rng, (1, -2, 1), 0.3), gt, spacing


def _case_nearby_predicted_pieces_merge(rng):
    """Two predicted pieces of 8 voxels each, 3 voxels apart: one 16-voxel lesion (not dropped); plus a
    predicted pair 4 voxels apart far from any GT: one FP lesion."""
    shape, spacing = (40, 40, 40), (1.0, 1.0, 1.0)
    gt = np.zeros(shape, np.uint8)
    gt[10:14, 10:14, 10:14] = 1
    pred = np.zeros(shape, np.uint8)
    pred[10:12, 10:12, 10:12] = 1
    pred[10:12, 10:12, 15:17] = 1
    pred[30:33, 30:33, 5:8] = 1
    pred[30:33, 30:33, 12:15] = 1
    return pred, gt, spacing


def _case_small_predicted_lesions_dropped(rng):
    """Predicted lesions of 1, 8 and 10 voxels (dropped) and 12 voxels (kept: an FP); a single predicted voxel
    touching a GT lesion is dropped too, so that lesion is missed."""
    shape, spacing = (44, 44, 44), (1.0, 1.0, 1.0)
    gt = np.zeros(shape, np.uint8)
    gt[5:10, 5:10, 5:10] = 2
    gt[30:35, 30:35, 30:35] = 2
    pred = np.zeros(shape, np.uint8)
    pred[5:10, 5:10, 6:11] = 2
    pred[31, 31, 31] = 2
    pred[20:22, 20:22, 36:38] = 2  # 8 voxels
    pred[36:38, 5:10, 5] = 2  # 10 voxels
    pred[5:7, 36:38, 30:33] = 2  # 12 voxels
    return pred, gt, spacing


def _case_both_empty_regions(rng):
    """Only ET and ED present: NET and CC are empty on both sides."""
    shape, spacing = (40, 44, 48), (1.0, 1.0, 1.0)
    gt = np.zeros(shape, np.uint8)
    gt[_ball(shape, (20, 22, 24), 10)] = 4
    gt[_ball(shape, (20, 22, 24), 5)] = 1
    pred = np.zeros(shape, np.uint8)
    pred[_ball(shape, (21, 22, 23), 9)] = 4
    pred[_ball(shape, (20, 21, 24), 6)] = 1
    return pred, gt, spacing


def _case_false_positive_only(rng):
    """CC predicted where the GT has none; ET in the GT only (FN-only for ET)."""
    shape, spacing = (40, 40, 40), (1.0, 1.0, 1.0)
    gt = np.zeros(shape, np.uint8)
    gt[_ball(shape, (15, 15, 15), 7)] = 4
    gt[_ball(shape, (15, 15, 15), 3)] = 1
    pred = np.zeros(shape, np.uint8)
    pred[_ball(shape, (15, 16, 15), 7)] = 4
    pred[_ball(shape, (30, 30, 30), 4)] = 3
    return pred, gt, spacing


def _case_prediction_empty(rng):
    shape, spacing = (40, 40, 40), (1.0, 1.0, 1.0)
    gt = _tumor(shape, (20, 20, 20), 10)
    return np.zeros(shape, np.uint8), gt, spacing


def _case_anisotropic_tumor(rng):
    spacing = (2.5, 0.9, 1.2)
    shape = (28, 60, 48)
    gt = _tumor(shape, (14, 30, 24), 18, spacing)
    return _perturb(gt, rng, (1, 2, -1), 0.25), gt, spacing


def _case_small_gt_lesion_mm3_rule(rng):
    """Anisotropic spacing: GT lesions of 4 voxels (12 mm^3, kept) and 3 voxels (9 mm^3, left out); a 2-voxel
    GT lesion with a matching prediction far bigger than it."""
    spacing = (3.0, 1.0, 1.0)
    shape = (20, 48, 48)
    gt = np.zeros(shape, np.uint8)
    gt[5:10, 10:20, 10:20] = 1
    gt[15, 40:42, 40:42] = 1  # 4 voxels = 12 mm^3
    gt[15, 5:8, 40] = 1  # 3 voxels = 9 mm^3
    gt[2, 40, 5:7] = 1  # 2 voxels = 6 mm^3
    pred = np.zeros(shape, np.uint8)
    pred[5:10, 11:21, 10:20] = 1
    pred[2:4, 38:43, 3:9] = 1  # matches the 2-voxel lesion: not an FP
    pred[15, 5:9, 40:43] = 1  # matches the 3-voxel lesion
    return pred, gt, spacing


def _case_random_multi_lesion(rng):
    shape, spacing = (56, 56, 56), (1.0, 1.0, 1.0)
    field = ndimage.gaussian_filter(rng.random(shape), 2.0)
    gt = np.zeros(shape, np.uint8)
    gt[field > 0.51] = 4
    gt[field > 0.525] = 2
    gt[field > 0.535] = 3
    gt[(field > 0.515) & (field < 0.52)] = 1
    noise = ndimage.gaussian_filter(rng.random(shape), 1.0) - 0.5
    pfield = field + 0.03 * noise
    pred = np.zeros(shape, np.uint8)
    pred[pfield > 0.51] = 4
    pred[pfield > 0.526] = 2
    pred[pfield > 0.534] = 3
    pred[(pfield > 0.514) & (pfield < 0.52)] = 1
    return pred, gt, spacing


def _case_border_touching_anisotropic(rng):
    """Lesions touching the volume's faces; spacing 0.8 x 1.0 x 2.0."""
    spacing = (0.8, 1.0, 2.0)
    shape = (50, 44, 30)
    gt = np.zeros(shape, np.uint8)
    gt[_ball(shape, (0, 20, 15), 12, spacing)] = 4
    gt[_ball(shape, (0, 20, 15), 6, spacing)] = 2
    gt[_ball(shape, (45, 43, 0), 8, spacing)] = 1
    pred = np.zeros(shape, np.uint8)
    pred[_ball(shape, (0, 21, 15), 11, spacing)] = 4
    pred[_ball(shape, (1, 20, 14), 7, spacing)] = 2
    pred[_ball(shape, (46, 43, 0), 7, spacing)] = 1
    return pred, gt, spacing


def _case_all_empty(rng):
    shape = (40, 40, 40)
    return np.zeros(shape, np.uint8), np.zeros(shape, np.uint8), (1.0, 1.0, 1.0)


def _case_one_prediction_two_gt_lesions(rng):
    """Two GT lesions 14 voxels apart (separate lesions) bridged by one predicted lesion; a GT pair 6 voxels
    apart (one lesion after merging) matched by a prediction covering one half only."""
    shape, spacing = (48, 48, 48), (1.0, 1.2, 1.0)
    gt = np.zeros(shape, np.uint8)
    gt[10:16, 10:16, 5:11] = 3
    gt[10:16, 10:16, 25:31] = 3
    gt[35:40, 30:35, 10:15] = 3
    gt[35:40, 30:35, 21:26] = 3
    pred = np.zeros(shape, np.uint8)
    pred[10:16, 10:16, 6:30] = 3
    pred[35:40, 30:35, 10:15] = 3
    return pred, gt, spacing


def _case_random_blobs_anisotropic(rng):
    spacing = (1.5, 1.0, 0.75)
    shape = (40, 56, 64)
    gt = np.zeros(shape, np.uint8)
    gt[_blobs(rng, shape, 0.53)] = 4
    gt[_blobs(rng, shape, 0.54) & (gt == 0)] = 1
    pred = gt.copy()
    pred[_blobs(rng, shape, 0.545)] = 2
    pred[_blobs(rng, shape, 0.55)] = 0
    return pred, gt, spacing


CASES = {
    "perfect": _case_perfect,
    "shifted_boundary_noise": _case_shifted_boundary_noise,
    "nearby_predicted_pieces_merge": _case_nearby_predicted_pieces_merge,
    "small_predicted_lesions_dropped": _case_small_predicted_lesions_dropped,
    "both_empty_regions": _case_both_empty_regions,
    "false_positive_only": _case_false_positive_only,
    "prediction_empty": _case_prediction_empty,
    "anisotropic_tumor": _case_anisotropic_tumor,
    "small_gt_lesion_mm3_rule": _case_small_gt_lesion_mm3_rule,
    "random_multi_lesion": _case_random_multi_lesion,
    "border_touching_anisotropic": _case_border_touching_anisotropic,
    "all_empty": _case_all_empty,
    "one_prediction_two_gt_lesions": _case_one_prediction_two_gt_lesions,
    "random_blobs_anisotropic": _case_random_blobs_anisotropic,
}


def make_case(name: str) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """(prediction, ground truth, spacing_zyx) of the case ``name`` of :data:`CASES`; the same on every call."""
    rng = np.random.default_rng(sorted(CASES).index(name) + 1000)
    pred, gt, spacing = CASES[name](rng)
    return np.ascontiguousarray(pred, np.uint8), np.ascontiguousarray(gt, np.uint8), tuple(float(s) for s in spacing)
