"""Segmentation metrics (DESIGN §8): BraTS 2024/2025 PED lesion-wise scores, plain voxel scores, volumes and
the volume-proportion agreement statistics of the clinical paper (Pearson, Spearman, Bland-Altman).

Regions are those of :data:`pedtumorseg.conventions.REGIONS` (ET, NET, CC, ED, TC, WT).

Lesion-wise definition (as the BraTS lesion-wise reference code does it, dilation factor 5 for PED):

* ground-truth lesions = 26-connected components of the GT mask dilated ``DILATION_ITERATIONS`` times with the
  18-connected 3x3x3 structure (``generate_binary_structure(3, 2)``), each restricted back to the GT's own
  voxels. Predicted components are plain 26-connected components of the prediction, as in the reference code
  (the dilation only serves to decide which GT pieces form one lesion and which predictions match it).
* for each GT lesion, the matched prediction = union of the predicted components that intersect the GT lesion
  dilated ``DILATION_ITERATIONS`` times; lesion Dice, HD95 and NSD are computed between the GT lesion and that
  union. A GT lesion with no match scores Dice 0, HD95 374, NSD 0.
* GT lesions of <= ``MIN_LESION_VOXELS`` (10) voxels are left out of the average (the reference applies the
  threshold to GT lesions only). Predicted lesions that touch such a small GT lesion's extent are matched, so
  they are not false positives either. False positives (predicted lesions matching no GT lesion) count with
  Dice 0, HD95 374, NSD 0 whatever their size.
* region score = sum over (kept GT lesions + FP lesions) / their count; with no GT lesion and no FP:
  Dice 1, HD95 0, NSD 1.

Surface distances: boundary voxels = voxels of the mask with a face neighbour (6-connectivity) outside it;
distances (mm, anisotropic spacing) from each boundary voxel of one mask to the nearest boundary voxel of the
other, by a Euclidean distance transform on the bounding box of both. HD95 = max of the two directed 95th
percentiles (numpy linear interpolation); NSD(tau) = share of both boundaries' voxels within tau mm of the
other boundary. Everything runs on bounding boxes, so a 240x240x155 case takes a fraction of a second per
region.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage, stats

from .conventions import FOREGROUND_LABELS, LABEL_NAMES, REGIONS
from .postprocess import bounding_box

DILATION_ITERATIONS = 5
MIN_LESION_VOXELS = 10  # GT lesions with <= this many voxels are ignored
HD95_MISS = 374.0
NSD_TOLERANCES_MM: tuple[float, ...] = (0.5, 1.0)

_STRUCT_18 = ndimage.generate_binary_structure(3, 2)
_STRUCT_26 = np.ones((3, 3, 3), dtype=bool)
_STRUCT_6 = ndimage.generate_binary_structure(3, 1)


# --- helpers ------------------------------------------------------------------------------------------------

def region_mask(labels: np.ndarray, region: str) -> np.ndarray:
    return np.isin(labels, REGIONS[region])


def _boundary(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, structure=_STRUCT_6, border_value=0)


def surface_distances(a: np.ndarray, b: np.ndarray, spacing_zyx) -> tuple[np.ndarray, np.ndarray]:
    """Directed boundary distances (mm): from a's boundary voxels to b's boundary, and from b's to a's.

    Both masks must be non-empty. Computed on the bounding box of ``a | b`` plus one voxel.
    """
    box = bounding_box(a | b, 1)
    a, b = a[box], b[box]
    sa, sb = _boundary(a), _boundary(b)
    spacing = tuple(float(s) for s in spacing_zyx)
    d_ab = ndimage.distance_transform_edt(~sb, sampling=spacing)[sa]
    d_ba = ndimage.distance_transform_edt(~sa, sampling=spacing)[sb]
    return d_ab, d_ba


def surface_scores(a: np.ndarray, b: np.ndarray, spacing_zyx,
                   tolerances_mm: Sequence[float] = NSD_TOLERANCES_MM) -> tuple[float, dict[float, float]]:
    """(HD95 in mm, {tolerance: NSD}) of two boolean masks; empty cases follow the BraTS conventions."""
    a_any, b_any = bool(a.any()), bool(b.any())
    if not a_any and not b_any:
        return 0.0, {t: 1.0 for t in tolerances_mm}
    if not a_any or not b_any:
        return HD95_MISS, {t: 0.0 for t in tolerances_mm}
    d_ab, d_ba = surface_distances(a, b, spacing_zyx)
    hd95 = max(float(np.percentile(d_ab, 95)), float(np.percentile(d_ba, 95)))
    total = d_ab.size + d_ba.size
    nsd = {t: float((np.count_nonzero(d_ab <= t) + np.count_nonzero(d_ba <= t)) / total) for t in tolerances_mm}
    return hd95, nsd


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks; 1 when both are empty."""
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(a & b)) / total


def dilation_lesions(mask: np.ndarray, iterations: int = DILATION_ITERATIONS) -> tuple[np.ndarray, int]:
    """Lesion ids (int32, 0 = none) of ``mask``: 26-connected components of the ``iterations``-fold 18-connected
    dilation, restricted to the mask's voxels; and the number of lesions."""
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


# --- lesion-wise ---------------------------------------------------------------------------------------------

def _lesion_scores(pred: np.ndarray, gt: np.ndarray, spacing_zyx) -> dict:
    """Lesion-wise scores of one region (boolean masks)."""
    keys = ["lesion_dice", "lesion_hd95"] + [f"lesion_nsd_{t}" for t in NSD_TOLERANCES_MM]
    box = bounding_box(pred | gt, 2 * DILATION_ITERATIONS + 1)
    if box is None:
        return dict(zip(keys, [1.0, 0.0] + [1.0] * len(NSD_TOLERANCES_MM)), num_gt_lesions=0, num_fp_lesions=0)
    pred, gt = pred[box], gt[box]
    gt_lesions, n_gt = dilation_lesions(gt)
    pred_lesions, n_pred = ndimage.label(pred, structure=_STRUCT_26)
    gt_sizes = np.bincount(gt_lesions.ravel(), minlength=n_gt + 1)
    matched = np.zeros(n_pred + 1, dtype=bool)
    sums = np.zeros(len(keys))
    kept = 0
    objects = ndimage.find_objects(gt_lesions)
    for k in range(1, n_gt + 1):
        # the lesion's dilated extent only needs its own box grown by the dilation
        lbox = tuple(slice(max(s.start - DILATION_ITERATIONS, 0), min(s.stop + DILATION_ITERATIONS, n))
                     for s, n in zip(objects[k - 1], gt.shape))
        lesion_local = gt_lesions[lbox] == k
        extent = ndimage.binary_dilation(lesion_local, structure=_STRUCT_18, iterations=DILATION_ITERATIONS)
        hits = np.unique(pred_lesions[lbox][extent])
        hits = hits[hits != 0]
        matched[hits] = True
        if gt_sizes[k] <= MIN_LESION_VOXELS:
            continue
        kept += 1
        if hits.size == 0:
            sums += [0.0, HD95_MISS] + [0.0] * len(NSD_TOLERANCES_MM)
            continue
        lesion = gt_lesions == k
        matched_pred = np.isin(pred_lesions, hits)
        hd95, nsd = surface_scores(lesion, matched_pred, spacing_zyx)
        sums += [dice(lesion, matched_pred), hd95] + [nsd[t] for t in NSD_TOLERANCES_MM]
    num_fp = int(np.count_nonzero(~matched[1:]))
    sums += [0.0, HD95_MISS * num_fp] + [0.0] * len(NSD_TOLERANCES_MM)
    count = kept + num_fp
    if count == 0:
        values = [1.0, 0.0] + [1.0] * len(NSD_TOLERANCES_MM)
    else:
        values = list(sums / count)
    return dict(zip(keys, (float(v) for v in values)), num_gt_lesions=kept, num_fp_lesions=num_fp)


def lesion_wise(pred, gt, spacing_zyx) -> dict[str, dict]:
    """Region name -> {lesion_dice, lesion_hd95, lesion_nsd_0.5, lesion_nsd_1.0, num_gt_lesions, num_fp_lesions}.

    ``num_gt_lesions`` counts the GT lesions that enter the average (more than 10 voxels).
    """
    pred, gt = _check_pair(pred, gt)
    return {region: _lesion_scores(region_mask(pred, region), region_mask(gt, region), spacing_zyx)
            for region in REGIONS}


# --- voxel-wise ----------------------------------------------------------------------------------------------

def voxel_wise(pred, gt, spacing_zyx) -> dict[str, dict]:
    """Region name -> {dice, hd95, sensitivity} on whole masks.

    dice: 1 when both are empty. hd95: 0 when both are empty, 374 when one is. sensitivity = TP / |GT|; with
    an empty GT it is 1 if the prediction is empty too, else 0 (the BraTS reference's convention).
    """
    pred, gt = _check_pair(pred, gt)
    out = {}
    for region in REGIONS:
        p, g = region_mask(pred, region), region_mask(gt, region)
        hd95, _ = surface_scores(p, g, spacing_zyx, ())
        n_gt = int(np.count_nonzero(g))
        if n_gt == 0:
            sensitivity = 0.0 if p.any() else 1.0
        else:
            sensitivity = int(np.count_nonzero(p & g)) / n_gt
        out[region] = {"dice": dice(p, g), "hd95": hd95, "sensitivity": float(sensitivity)}
    return out


def evaluate_case(pred, gt, spacing_zyx) -> list[dict]:
    """One row per region: region, lesion-wise scores (with lesion counts), dice, hd95, sensitivity."""
    lesion = lesion_wise(pred, gt, spacing_zyx)
    voxel = voxel_wise(pred, gt, spacing_zyx)
    return [{"region": region, **lesion[region], **voxel[region]} for region in REGIONS]


def _check_pair(pred, gt) -> tuple[np.ndarray, np.ndarray]:
    """Validated pair, cropped to the box of all foreground plus the lesion margin (results are unchanged:
    every computation already works on boxes with that margin, clipped at the volume's border)."""
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth shape {gt.shape}")
    box = bounding_box((pred > 0) | (gt > 0), 2 * DILATION_ITERATIONS + 1)
    if box is None:
        return pred[:1, :1, :1] * 0, gt[:1, :1, :1] * 0
    return pred[box], gt[box]


# --- volumes and proportions ---------------------------------------------------------------------------------

def volumes(labels, spacing_zyx) -> dict[str, dict[str, float]]:
    """{"volumes_ml": {ET, NET, CC, ED, TC, WT}, "fraction_of_wt": same keys}.

    Volumes in mL (1 mL = 1000 mm^3) from the voxel spacing. Fractions are volume / WT volume, all 0 when WT
    is empty. Values other than 1-4 are ignored.
    """
    labels = np.asarray(labels)
    voxel_ml = float(np.prod([float(s) for s in spacing_zyx])) / 1000.0
    counts = {label: int(np.count_nonzero(labels == label)) for label in FOREGROUND_LABELS}
    vol = {}
    for region, members in REGIONS.items():
        vol[region] = sum(counts[m] for m in members) * voxel_ml
    wt_voxels = sum(counts.values())
    fractions = {}
    for region, members in REGIONS.items():
        fractions[region] = (sum(counts[m] for m in members) / wt_voxels) if wt_voxels else 0.0
    return {"volumes_ml": vol, "fraction_of_wt": fractions}


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
