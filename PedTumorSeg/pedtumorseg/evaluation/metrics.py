"""Segmentation metrics: the BraTS 2024/2025 PED scores, volumes and the volume-proportion agreement
statistics of the clinical paper (Pearson, Spearman, Bland-Altman).

The scores equal those of the PED scorer the BraTS 2024 and 2025 challenges used (``metrics_PED.py`` of the
public BraTS-2024-Metrics code; ``Testing/test_metrics_official.py`` pins its values on generated pairs). Per
region of :data:`pedtumorseg.conventions.REGIONS` (ET = 1, NET = 2, CC = 3, ED = 4, TC = 1-3, WT = 1-4):

Lesions (the same rule on both sides)
    26-connected components of the mask dilated ``DILATION_ITERATIONS`` (5) times with the 18-connected 3x3x3
    structure, each restricted to the mask's own voxels: pieces closer than about ten voxels form one lesion.
    Predicted lesions of <= ``MIN_PRED_LESION_VOXELS`` (10) voxels are then deleted from the prediction; every
    score below, the whole-region ones included, uses this filtered prediction.

Matching
    A ground-truth (GT) lesion's match is the union of the predicted lesions that intersect the GT lesion dilated
    5 times (18-connected structure). Predicted lesions matching no GT lesion are false positives (FP).

Lesion-wise scores
    Per GT lesion: Dice, HD95 and NSD between the lesion and its match; with no match Dice 0, HD95 374 mm,
    NSD 0. GT lesions of <= ``MIN_GT_LESION_MM3`` (10 mm^3: the official code compares the volume in mm^3,
    not the voxel count) are left out of the average, but what they match is not an FP. Region score =
    (sum over kept GT lesions + 0 per FP; for HD95 + 374 per FP) / (kept GT lesions + FPs); with neither:
    Dice 1, HD95 0, NSD 1.

Whole-region ("legacy") scores
    Dice (1 when both are empty), HD95 (0 when both are empty, 374 when one is), NSD (1 / 0 likewise),
    sensitivity TP / |GT| (1 when both are empty, 0 for an empty GT with a prediction) and specificity
    TN / (TN + FP) over the whole volume. The official code computes its legacy HD95, sensitivity and
    specificity on images of lesion numbers rather than masks, so its values differ from these definitions
    when a region holds more than one lesion; Dice and NSD do not depend on that.

Surface distances (anisotropic spacing throughout)
    HD95 is the surface-area-weighted 95th percentile of DeepMind's surface-distance method: surface elements
    sit on the voxel-corner grid, each weighted by the area of its marching-cubes patch (the area table of the
    ``surface-distance`` package), distances to the other surface's elements; HD95 = max over the two
    directions of the smallest distance whose cumulative area share reaches 95 %.
    NSD(tau) is nnU-Net's surface Dice: boundary voxels = voxels of the mask with a face neighbour
    (6-connectivity) outside it, distances from one boundary's voxels to the other's; NSD = mean of the two
    directed shares within tau mm.

Everything runs on bounding boxes (with margins that leave the results unchanged), and each pair's distance
maps are computed once.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage, stats

from pedtumorseg.arrays import bounding_box, voxel_volume_mm3
from pedtumorseg.conventions import LABEL_NAMES, REGIONS

DILATION_ITERATIONS = 5
MIN_PRED_LESION_VOXELS = 10  # predicted lesions with <= this many voxels are deleted
MIN_GT_LESION_MM3 = 10.0  # GT lesions with <= this volume (mm^3) are left out of the lesion-wise average
HD95_MISS = 374.0
NSD_TOLERANCES_MM: tuple[float, ...] = (0.5, 1.0)
HD_PERCENTILE = 95.0

#: per-region keys of the lesion-wise part and of the whole-region part of :func:`evaluate_case`
LESION_KEYS: tuple[str, ...] = ("lesion_dice", "lesion_hd95", "lesion_nsd_0.5", "lesion_nsd_1.0",
                                "num_gt_lesions", "num_tp_lesions", "num_fn_lesions", "num_fp_lesions")
LEGACY_KEYS: tuple[str, ...] = ("dice", "hd95", "nsd_0.5", "nsd_1.0", "sensitivity", "specificity")

_STRUCT_18 = ndimage.generate_binary_structure(3, 2)
_STRUCT_26 = np.ones((3, 3, 3), dtype=bool)
_STRUCT_6 = ndimage.generate_binary_structure(3, 1)
_MARGIN = DILATION_ITERATIONS + 1


# --- masks and lesions ---------------------------------------------------------------------------------------

def region_mask(labels: np.ndarray, region: str) -> np.ndarray:
    return np.isin(labels, REGIONS[region])


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks; 1 when both are empty."""
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(a & b)) / total


def dilation_lesions(mask: np.ndarray, iterations: int = DILATION_ITERATIONS) -> tuple[np.ndarray, int]:
    """Lesion ids (int32, 0 = none) of ``mask``: 26-connected components of the ``iterations``-fold 18-connected
    dilation, restricted to the mask's voxels; and the number of lesions."""
    mask = np.asarray(mask, dtype=bool)
    lesions = np.zeros(mask.shape, dtype=np.int32)
    box = bounding_box(mask, iterations + 1)
    if box is None:
        return lesions, 0
    crop = mask[box]
    dilated = ndimage.binary_dilation(crop, structure=_STRUCT_18, iterations=iterations)
    components, n = ndimage.label(dilated, structure=_STRUCT_26)
    components[~crop] = 0
    lesions[box] = components
    return lesions, n


def predicted_lesions(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """:func:`dilation_lesions` of a prediction without the lesions of <= ``MIN_PRED_LESION_VOXELS`` voxels,
    renumbered 1..n."""
    lesions, n = dilation_lesions(mask)
    if n == 0:
        return lesions, 0
    keep = np.bincount(lesions.ravel(), minlength=n + 1) > MIN_PRED_LESION_VOXELS
    keep[0] = False
    renumber = np.zeros(n + 1, dtype=np.int32)
    renumber[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return renumber[lesions], int(keep.sum())


# --- surface distances ---------------------------------------------------------------------------------------

def _spacing(spacing_zyx) -> tuple[float, float, float]:
    return tuple(float(s) for s in spacing_zyx)


def border_distances(a: np.ndarray, b: np.ndarray, spacing_zyx) -> tuple[np.ndarray, np.ndarray]:
    """Directed boundary-voxel distances (mm) for NSD: from a's boundary voxels to b's and from b's to a's.

    Boundary voxel = voxel of the mask with a face neighbour outside it (the array's edge counts as outside).
    Both masks must be non-empty.
    """
    box = bounding_box(a | b, 1)
    a, b = a[box], b[box]
    sa = a & ~ndimage.binary_erosion(a, structure=_STRUCT_6, border_value=0)
    sb = b & ~ndimage.binary_erosion(b, structure=_STRUCT_6, border_value=0)
    spacing = _spacing(spacing_zyx)
    d_ab = ndimage.distance_transform_edt(~sb, sampling=spacing)[sa]
    d_ba = ndimage.distance_transform_edt(~sa, sampling=spacing)[sb]
    return d_ab, d_ba


_AREA_TABLES: dict[tuple[float, float, float], np.ndarray] = {}


def _surfel_areas(spacing_xyz: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """(area of the surface element of each of the 256 2x2x2 neighbour codes in mm^2, the code kernel)."""
    from surface_distance import lookup_tables

    if spacing_xyz not in _AREA_TABLES:
        _AREA_TABLES[spacing_xyz] = np.asarray(
            lookup_tables.create_table_neighbour_code_to_surface_area(spacing_xyz), dtype=np.float64)
    return _AREA_TABLES[spacing_xyz], np.asarray(lookup_tables.ENCODE_NEIGHBOURHOOD_3D_KERNEL)


def surfel_distances(a: np.ndarray, b: np.ndarray, spacing_zyx
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Surface elements of DeepMind's method: (distances a -> b, areas of a's elements, distances b -> a, areas
    of b's elements), distances in mm, areas in mm^2. Both masks must be non-empty.

    The element of a voxel corner is coded by the 8 voxels around it (the ``surface-distance`` package's kernel,
    applied in ITK (x, y, z) axis order like the official code on NIfTI arrays); corners whose code is neither
    0 nor 255 lie on the surface.
    """
    box = bounding_box(a | b, 0)
    spacing_xyz = _spacing(spacing_zyx)[::-1]
    areas, kernel = _surfel_areas(spacing_xyz)
    codes = []
    for m in (a, b):
        padded = np.pad(m[box].transpose(2, 1, 0), 1).astype(np.uint8)
        n = tuple(s - 1 for s in padded.shape)  # corners per axis
        code = np.zeros(n, dtype=np.uint8)
        for i in (0, 1):
            for j in (0, 1):
                for k in (0, 1):
                    code += padded[i:i + n[0], j:j + n[1], k:k + n[2]] * np.uint8(kernel[i, j, k])
        codes.append(code)
    surface = [(c != 0) & (c != 255) for c in codes]
    dist_to = [ndimage.distance_transform_edt(~s, sampling=spacing_xyz) for s in surface]
    return (dist_to[1][surface[0]], areas[codes[0][surface[0]]],
            dist_to[0][surface[1]], areas[codes[1][surface[1]]])


def _weighted_percentile(distances: np.ndarray, areas: np.ndarray, percent: float = HD_PERCENTILE) -> float:
    """Smallest distance whose cumulative area share (distances ascending) reaches ``percent`` %."""
    order = np.argsort(distances, kind="stable")
    cumulative = np.cumsum(areas[order]) / np.sum(areas)
    idx = min(int(np.searchsorted(cumulative, percent / 100.0)), distances.size - 1)
    return float(distances[order][idx])


def surface_scores(a: np.ndarray, b: np.ndarray, spacing_zyx,
                   tolerances_mm: Sequence[float] = NSD_TOLERANCES_MM) -> tuple[float, dict[float, float]]:
    """(HD95 in mm, {tolerance: NSD}) of two boolean masks; both empty: (0, 1s), one empty: (374, 0s)."""
    a_any, b_any = bool(a.any()), bool(b.any())
    if not a_any and not b_any:
        return 0.0, {t: 1.0 for t in tolerances_mm}
    if not a_any or not b_any:
        return HD95_MISS, {t: 0.0 for t in tolerances_mm}
    d_ab, area_a, d_ba, area_b = surfel_distances(a, b, spacing_zyx)
    hd95 = max(_weighted_percentile(d_ab, area_a), _weighted_percentile(d_ba, area_b))
    nsd = {}
    if tolerances_mm:
        v_ab, v_ba = border_distances(a, b, spacing_zyx)
        for t in tolerances_mm:
            nsd[t] = (np.count_nonzero(v_ab <= t) / v_ab.size + np.count_nonzero(v_ba <= t) / v_ba.size) / 2.0
    return hd95, {t: float(v) for t, v in nsd.items()}


# --- one region ----------------------------------------------------------------------------------------------

def _grown(box: tuple[slice, ...], margin: int, shape) -> tuple[slice, ...]:
    return tuple(slice(max(s.start - margin, 0), min(s.stop + margin, n)) for s, n in zip(box, shape))


def _union(*boxes: tuple[slice, ...]) -> tuple[slice, ...]:
    return tuple(slice(min(b[d].start for b in boxes), max(b[d].stop for b in boxes)) for d in range(len(boxes[0])))


def _lesion_part(pred_lesions, n_pred, gt, spacing_zyx, whole=None) -> dict:
    """``whole``: the (HD95, NSD) of the whole filtered prediction against the whole GT when already computed;
    reused for a single GT lesion matched by every predicted lesion (the same pair of masks)."""
    gt_lesions, n_gt = dilation_lesions(gt)
    voxel_mm3 = voxel_volume_mm3(spacing_zyx)
    gt_sizes = np.bincount(gt_lesions.ravel(), minlength=n_gt + 1)
    gt_boxes = ndimage.find_objects(gt_lesions)
    pred_boxes = ndimage.find_objects(pred_lesions, max_label=n_pred)
    matched = np.zeros(n_pred + 1, dtype=bool)
    tol = NSD_TOLERANCES_MM
    sums = np.zeros(2 + len(tol))
    kept = tp = 0
    for k in range(1, n_gt + 1):
        lbox = _grown(gt_boxes[k - 1], DILATION_ITERATIONS, gt.shape)
        extent = ndimage.binary_dilation(gt_lesions[lbox] == k, structure=_STRUCT_18,
                                         iterations=DILATION_ITERATIONS)
        hits = np.unique(pred_lesions[lbox][extent])
        hits = hits[hits != 0]
        matched[hits] = True
        if gt_sizes[k] * voxel_mm3 <= MIN_GT_LESION_MM3:
            continue
        kept += 1
        if hits.size == 0:
            sums += [0.0, HD95_MISS] + [0.0] * len(tol)
            continue
        tp += 1
        box = _grown(_union(gt_boxes[k - 1], *(pred_boxes[h - 1] for h in hits)), 1, gt.shape)
        lesion = gt_lesions[box] == k
        match = np.isin(pred_lesions[box], hits)
        if whole is not None and n_gt == 1 and hits.size == n_pred:
            hd95, nsd = whole
        else:
            hd95, nsd = surface_scores(lesion, match, spacing_zyx, tol)
        sums += [dice(lesion, match), hd95] + [nsd[t] for t in tol]
    num_fp = int(np.count_nonzero(~matched[1:]))
    sums[1] += HD95_MISS * num_fp
    count = kept + num_fp
    values = sums / count if count else np.array([1.0, 0.0] + [1.0] * len(tol))
    out = dict(zip(LESION_KEYS[:2 + len(tol)], (float(v) for v in values)))
    out.update(num_gt_lesions=kept, num_tp_lesions=tp, num_fn_lesions=kept - tp, num_fp_lesions=num_fp)
    return out


def _legacy_part(pred, gt, spacing_zyx, total_voxels: int) -> tuple[dict, tuple]:
    hd95, nsd = surface_scores(pred, gt, spacing_zyx)
    n_pred, n_gt = int(np.count_nonzero(pred)), int(np.count_nonzero(gt))
    tp = int(np.count_nonzero(pred & gt))
    if n_gt == 0:
        sensitivity = 1.0 if n_pred == 0 else 0.0
    else:
        sensitivity = tp / n_gt
    fp = n_pred - tp
    tn = total_voxels - (n_pred + n_gt - tp)
    specificity = tn / (tn + fp) if tn + fp else 0.0
    return ({"dice": dice(pred, gt), "hd95": hd95, **{f"nsd_{t}": nsd[t] for t in NSD_TOLERANCES_MM},
             "sensitivity": float(sensitivity), "specificity": float(specificity)}, (hd95, nsd))


def region_scores(pred: np.ndarray, gt: np.ndarray, spacing_zyx, total_voxels: int | None = None,
                  lesion: bool = True, legacy: bool = True) -> dict:
    """Scores of one region from two boolean masks (keys :data:`LESION_KEYS` and/or :data:`LEGACY_KEYS`).

    ``total_voxels``: size of the whole volume when the masks are a crop of it (for specificity).
    """
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    total = pred.size if total_voxels is None else int(total_voxels)
    box = bounding_box(pred | gt, _MARGIN)
    if box is None:
        box = (slice(0, 1),) * pred.ndim
    pred, gt = pred[box], gt[box]
    pred_lesions, n_pred = predicted_lesions(pred)
    out, whole = {}, None
    if legacy:
        scores, whole = _legacy_part(pred_lesions > 0, gt, spacing_zyx, total)
        out.update(scores)
    if lesion:
        out = {**_lesion_part(pred_lesions, n_pred, gt, spacing_zyx, whole), **out}
    return out


# --- whole cases ---------------------------------------------------------------------------------------------

def _case_scores(pred, gt, spacing_zyx, lesion: bool, legacy: bool) -> dict[str, dict]:
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth shape {gt.shape}")
    if pred.ndim != 3:
        raise ValueError(f"label maps must be 3-D, got shape {pred.shape}")
    total = pred.size
    box = bounding_box((pred > 0) | (gt > 0), _MARGIN)
    if box is None:
        box = (slice(0, 1),) * 3
    pred, gt = pred[box], gt[box]
    return {region: region_scores(region_mask(pred, region), region_mask(gt, region), spacing_zyx, total,
                                  lesion=lesion, legacy=legacy)
            for region in REGIONS}


def lesion_wise(pred, gt, spacing_zyx) -> dict[str, dict]:
    """Region name -> {lesion_dice, lesion_hd95, lesion_nsd_0.5, lesion_nsd_1.0, num_gt_lesions, num_tp_lesions,
    num_fn_lesions, num_fp_lesions}.

    ``num_gt_lesions`` counts the GT lesions that enter the average (more than 10 mm^3), split into matched
    (``num_tp_lesions``) and missed (``num_fn_lesions``) ones.
    """
    return _case_scores(pred, gt, spacing_zyx, lesion=True, legacy=False)


def voxel_wise(pred, gt, spacing_zyx) -> dict[str, dict]:
    """Region name -> whole-region {dice, hd95, nsd_0.5, nsd_1.0, sensitivity, specificity} (module docstring:
    computed on the prediction without its lesions of <= 10 voxels, as the official code does)."""
    return _case_scores(pred, gt, spacing_zyx, lesion=False, legacy=True)


def evaluate_case(pred, gt, spacing_zyx) -> list[dict]:
    """One row per region: ``region``, the lesion-wise scores with lesion counts, the whole-region scores."""
    scores = _case_scores(pred, gt, spacing_zyx, lesion=True, legacy=True)
    return [{"region": region, **scores[region]} for region in REGIONS]


# --- volumes and proportions ---------------------------------------------------------------------------------

def _by_region(values) -> dict[str, np.ndarray]:
    if isinstance(values, Mapping):
        return {k: np.asarray(v, dtype=np.float64) for k, v in values.items()}
    rows = list(values)
    keys = set(rows[0]) if rows else set()
    return {k: np.asarray([row[k] for row in rows], dtype=np.float64) for k in keys}


def proportion_agreement(pred_fractions, gt_fractions,
                         regions: Sequence[str] = tuple(LABEL_NAMES.values())) -> dict[str, dict[str, float]]:
    """Agreement of predicted and reference volume proportions (subregion / WT) over cases.

    Inputs: a list of per-case mappings (e.g. ``volumes(...)["fraction_of_wt"]``) or a mapping region ->
    sequence over cases, same case order in both. Per region in ``regions`` present in both: ``n``,
    ``pearson_r``, ``spearman_rho`` (NaN with fewer than 2 cases or a constant series), Bland-Altman
    ``mean_difference`` (pred - gt), ``sd_difference`` (ddof=1), ``loa_lower``/``loa_upper`` = mean -/+ 1.96 SD.
    """
    pred, gt = _by_region(pred_fractions), _by_region(gt_fractions)
    out = {}
    for region in regions:
        if region not in pred or region not in gt:
            continue
        p, g = pred[region], gt[region]
        if p.shape != g.shape:
            raise ValueError(f"{region}: {p.size} predicted values but {g.size} reference values")
        n = int(p.size)
        diff = p - g
        mean_diff = float(diff.mean()) if n else float("nan")
        sd = float(diff.std(ddof=1)) if n >= 2 else float("nan")
        constant = n < 2 or np.ptp(p) == 0 or np.ptp(g) == 0
        r = float("nan") if constant else float(stats.pearsonr(p, g)[0])
        rho = float("nan") if constant else float(stats.spearmanr(p, g)[0])
        out[region] = {"n": n, "pearson_r": r, "spearman_rho": rho, "mean_difference": mean_diff,
                       "sd_difference": sd, "loa_lower": mean_diff - 1.96 * sd, "loa_upper": mean_diff + 1.96 * sd}
    return out
