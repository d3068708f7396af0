"""The T1CE/T1 ratio relabel (paper §2.6): normalization statistics in the brain mask, the ratio map, NET <-> ET."""

from __future__ import annotations

import math

import numpy as np

from pedtumorseg.arrays import nonzero_mask as brain_mask  # noqa: F401  ((C, z, y, x) -> channels != 0, holes filled)
from pedtumorseg.conventions import ET, NET
from pedtumorseg.postprocess.params import NORMALIZATIONS, PostprocessParams

def normalization_stats(t1, t1ce, mask, normalization) -> tuple[float, float, float, float] | None:
    """(offset_t1, scale_t1, offset_t1ce, scale_t1ce) so that norm = (x - offset) / scale; None if undefined."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization={normalization!r}: expected one of {', '.join(NORMALIZATIONS)}")
    if not mask.any():
        return None
    stats = []
    for image in (t1, t1ce):
        values = np.asarray(image)[mask].astype(np.float64)
        mean = float(values.mean())
        if normalization == "mean":
            offset, scale = 0.0, mean
        else:
            offset, scale = mean, float(values.std())
        if scale == 0 or not math.isfinite(scale):
            return None
        stats += [offset, scale]
    return tuple(stats)


def ratio_with_stats(t1, t1ce, mask, stats) -> np.ndarray:
    """Element-wise ratio (identical results on a crop and on the full volume)."""
    ratio = np.full(np.shape(t1), np.nan, dtype=np.float32)
    if stats is None:
        return ratio
    o1, s1, o2, s2 = stats
    n1 = (np.asarray(t1)[mask].astype(np.float64) - o1) / s1
    n2 = (np.asarray(t1ce)[mask].astype(np.float64) - o2) / s2
    with np.errstate(divide="ignore", invalid="ignore"):
        values = np.where(n1 != 0, n2 / np.where(n1 != 0, n1, 1.0), np.nan)
    ratio[mask] = values.astype(np.float32)
    return ratio


def ratio_map(t1, t1ce, mask, normalization: str = "zscore") -> np.ndarray:
    """T1CE/T1 ratio of the normalized intensities, float32; NaN outside ``mask`` or where norm(T1) == 0."""
    mask = np.asarray(mask, dtype=bool)
    return ratio_with_stats(t1, t1ce, mask, normalization_stats(t1, t1ce, mask, normalization))


def relabel_by_ratio(labels, ratio, params: PostprocessParams) -> np.ndarray:
    """NET -> ET where ratio > ratio_high, ET -> NET where ratio < ratio_low, inside [ratio_min, ratio_max]."""
    labels = np.asarray(labels)
    out = labels.astype(np.uint8, copy=True)
    if not params.ratio_enabled:
        return out
    ratio = np.asarray(ratio)
    with np.errstate(invalid="ignore"):
        window = (ratio >= params.ratio_min) & (ratio <= params.ratio_max)  # False for NaN
        out[window & (labels == NET) & (ratio > params.ratio_high)] = ET
        out[window & (labels == ET) & (ratio < params.ratio_low)] = NET
    return out

