"""Statistics of the evaluation report (the analyses of the clinical comparison paper, Vossough et al., AJNR
2024): descriptive score statistics, Bland-Altman agreement, correlation chosen by a normality test, size
strata and a paired comparison of two predictions. Slicer-free, numpy and ``scipy.stats`` only; the HTML and
the figures are ``pedtumorseg.evaluation.report``.

Conventions used throughout:

* NaN values are left out of every statistic and counted (``n_nan``).
* Quartiles are numpy's linear-interpolation percentiles; IQR = Q3 - Q1; SD is the sample SD (ddof=1).
* Differences are always prediction - ground truth (Bland-Altman) or A - B (paired comparison).
* A test that needs more cases than there are (fewer than ``MIN_CASES``) returns ``note="not enough cases"``
  and NaN statistics instead of raising; a constant series gives ``note="constant data"``.
"""

from __future__ import annotations

import math
import warnings
from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy import stats

from pedtumorseg.conventions import CC, ED, LABEL_NAMES, NET, REGIONS

#: the paper's combined non-enhancing component (its Table 2 row "NET+CC+ED")
COMBINED_REGION = "NET+CC+ED"
COMBINED_LABELS: tuple[int, ...] = (NET, CC, ED)
#: regions of the report, in table order: the six scored regions, then the combined one
REPORT_REGIONS: tuple[str, ...] = tuple(REGIONS) + (COMBINED_REGION,)
#: subregions whose share of the whole tumor is compared (WT / WT would be 1)
FRACTION_REGIONS: tuple[str, ...] = ("ET", "NET", "CC", "ED", "TC", COMBINED_REGION)
#: fewest cases for a normality test, a correlation or a rank test
MIN_CASES = 3
#: significance level of the Shapiro-Wilk choice between Pearson and Spearman
NORMALITY_ALPHA = 0.05
NOT_ENOUGH = "not enough cases"
CONSTANT = "constant data"


def finite(values: Iterable[float]) -> np.ndarray:
    v = np.asarray(list(values), dtype=np.float64)
    return v[np.isfinite(v)]


def finite_pairs(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """The two series restricted to the positions where both are finite."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired series of different lengths ({x.size} and {y.size})")
    ok = np.isfinite(x) & np.isfinite(y)
    return x[ok], y[ok]


# --- descriptive ----------------------------------------------------------------------------------------------

def describe(values: Iterable[float]) -> dict[str, float]:
    """``n`` (finite values), ``n_nan``, ``mean``, ``sd`` (ddof=1), ``median``, ``q1``, ``q3``, ``iqr``; NaN
    statistics when there is no finite value (``sd`` NaN below 2 values)."""
    v = np.asarray(list(values), dtype=np.float64)
    ok = v[np.isfinite(v)]
    out = {"n": int(ok.size), "n_nan": int(v.size - ok.size)}
    if ok.size == 0:
        return {**out, **{k: math.nan for k in ("mean", "sd", "median", "q1", "q3", "iqr")}}
    q1, median, q3 = (float(q) for q in np.percentile(ok, [25, 50, 75]))
    return {**out, "mean": float(ok.mean()), "sd": float(ok.std(ddof=1)) if ok.size > 1 else math.nan,
            "median": median, "q1": q1, "q3": q3, "iqr": q3 - q1}


def values_by_region(rows: Sequence[Mapping], metric: str,
                     regions: Sequence[str] = REPORT_REGIONS) -> dict[str, dict[str, float]]:
    """``{region: {case: value}}`` of one metric from evaluation rows (``case``, ``region``, metrics)."""
    out: dict[str, dict[str, float]] = {r: {} for r in regions}
    for row in rows:
        if row["region"] in out and metric in row:
            v = row[metric]
            out[row["region"]][row["case"]] = math.nan if v is None else float(v)
    return out


def score_table(rows: Sequence[Mapping], metric: str,
                regions: Sequence[str] = REPORT_REGIONS) -> dict[str, dict[str, float]]:
    """``{region: describe(values of metric over cases)}`` for the regions that have rows."""
    by = values_by_region(rows, metric, regions)
    return {r: describe(v.values()) for r, v in by.items() if v}


# --- normality, correlation, agreement --------------------------------------------------------------------------

def normality(values: Iterable[float], alpha: float = NORMALITY_ALPHA) -> dict:
    """Shapiro-Wilk test (``scipy.stats.shapiro``): ``n``, ``statistic``, ``p_value``, ``normal`` (p >= alpha;
    None when the test cannot run) and ``note`` (``not enough cases`` below ``MIN_CASES``, ``constant data``)."""
    v = finite(values)
    out = {"n": int(v.size), "statistic": math.nan, "p_value": math.nan, "normal": None, "note": ""}
    if v.size < MIN_CASES:
        return {**out, "note": NOT_ENOUGH}
    if np.ptp(v) == 0:
        return {**out, "note": CONSTANT}
    res = stats.shapiro(v)
    p = float(res.pvalue)
    return {**out, "statistic": float(res.statistic), "p_value": p, "normal": bool(p >= alpha)}


def correlation(x: Sequence[float], y: Sequence[float], alpha: float = NORMALITY_ALPHA) -> dict:
    """Pearson or Spearman correlation of paired values, chosen as the paper does by the data distribution:
    Pearson when a Shapiro-Wilk test finds neither series non-normal (both p >= ``alpha``), Spearman otherwise.

    Returns ``n`` (pairs with both values finite), ``method`` ("pearson" / "spearman" / ""),
    ``coefficient``, ``p_value``, ``normality_x``, ``normality_y`` (``normality`` results) and ``note``
    (``not enough cases`` below ``MIN_CASES`` pairs, ``constant data`` when either series is constant).
    """
    x, y = finite_pairs(x, y)
    nx, ny = normality(x, alpha), normality(y, alpha)
    out = {"n": int(x.size), "method": "", "coefficient": math.nan, "p_value": math.nan,
           "normality_x": nx, "normality_y": ny, "note": ""}
    if x.size < MIN_CASES:
        return {**out, "note": NOT_ENOUGH}
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return {**out, "note": CONSTANT}
    if nx["normal"] and ny["normal"]:
        res = stats.pearsonr(x, y)
        method = "pearson"
    else:
        res = stats.spearmanr(x, y)
        method = "spearman"
    return {**out, "method": method, "coefficient": float(res.statistic), "p_value": float(res.pvalue)}


def bland_altman(pred: Sequence[float], gt: Sequence[float]) -> dict[str, float]:
    """Bland-Altman agreement of paired measurements: ``n``, ``bias`` = mean(pred - gt), ``sd`` of the
    differences (ddof=1), limits of agreement ``loa_lower`` / ``loa_upper`` = bias -/+ 1.96 SD, and the
    per-pair ``means`` and ``differences`` (for the plot). NaN bias without pairs, NaN SD with one."""
    p, g = finite_pairs(pred, gt)
    d = p - g
    bias = float(d.mean()) if d.size else math.nan
    sd = float(d.std(ddof=1)) if d.size > 1 else math.nan
    return {"n": int(d.size), "bias": bias, "sd": sd, "loa_lower": bias - 1.96 * sd, "loa_upper": bias + 1.96 * sd,
            "means": ((p + g) / 2).tolist(), "differences": d.tolist()}


def agreement(pred: Sequence[float], gt: Sequence[float], alpha: float = NORMALITY_ALPHA) -> dict:
    """``correlation(gt, pred)``, ``bland_altman(pred, gt)`` and the paper's Mann-Whitney U test of the two
    distributions (``compare_groups(pred, gt)``, as the paper compares proportions) on the complete pairs, with
    the medians of both sides: ``{"n", "median_gt", "median_pred", "correlation", "bland_altman",
    "mann_whitney"}``."""
    p, g = finite_pairs(pred, gt)
    return {"n": int(p.size), "median_gt": float(np.median(g)) if g.size else math.nan,
            "median_pred": float(np.median(p)) if p.size else math.nan,
            "correlation": correlation(g, p, alpha), "bland_altman": bland_altman(p, g),
            "mann_whitney": compare_groups(p, g)}


# --- volumes --------------------------------------------------------------------------------------------------

def with_combined(volumes_ml: Mapping[str, float]) -> dict[str, float]:
    """The regions' volumes (e.g. ``metrics.volumes(...)["volumes_ml"]``) plus the combined region's (the sum of
    NET, CC and ED)."""
    out = {r: float(v) for r, v in volumes_ml.items()}
    out[COMBINED_REGION] = sum(out[LABEL_NAMES[label]] for label in COMBINED_LABELS)
    return out


#: the label that carries the combined region in ``combined_labels`` (ED: only the ED and WT rows contain it)
COMBINED_AS = ED


def combined_labels(labels) -> np.ndarray:
    """A label map whose ED label (4) covers the combined region and nothing else: its ED row of the scorer
    scores NET+CC+ED with the scorer's definitions untouched."""
    return np.where(np.isin(np.asarray(labels), COMBINED_LABELS), COMBINED_AS, 0).astype(np.uint8)


def fractions_of_wt(volumes_ml: Mapping[str, float]) -> dict[str, float]:
    """Share of the whole tumor of each region of ``FRACTION_REGIONS``; NaN when WT is empty."""
    wt = float(volumes_ml["WT"])
    return {r: (float(volumes_ml[r]) / wt if wt > 0 else math.nan) for r in FRACTION_REGIONS}


# --- size strata ----------------------------------------------------------------------------------------------

def size_strata(gt_wt_ml: Mapping[str, float], cutoff_ml: float | None = None) -> dict:
    """Split cases by ground-truth WT volume: ``small`` (< cut-off) and ``large`` (>= cut-off).

    The cut-off is ``cutoff_ml`` when given, else the median GT WT volume of the cases (two groups of equal
    size up to the cases at the median, which go to ``large``). Returns ``{"cutoff_ml", "rule", "small":
    [cases], "large": [cases]}``; cases without a finite volume are in neither group."""
    vols = {c: float(v) for c, v in gt_wt_ml.items() if v is not None and math.isfinite(float(v))}
    if cutoff_ml is None:
        cutoff = float(np.median(list(vols.values()))) if vols else math.nan
        rule = "median ground-truth WT volume of the evaluated cases"
    else:
        cutoff = float(cutoff_ml)
        rule = "fixed ground-truth WT volume given on the command line"
    small = sorted(c for c, v in vols.items() if v < cutoff)
    large = sorted(c for c, v in vols.items() if v >= cutoff)
    return {"cutoff_ml": cutoff, "rule": rule, "small": small, "large": large}


def compare_groups(a: Iterable[float], b: Iterable[float]) -> dict:
    """Two-sided Mann-Whitney U test (``scipy.stats.mannwhitneyu``) of two independent groups: ``n_a``, ``n_b``,
    ``statistic`` (U of group a), ``p_value``, ``note`` (``not enough cases`` when a group has fewer than
    ``MIN_CASES`` values, ``constant data`` when all values of both groups are equal)."""
    a, b = finite(a), finite(b)
    out = {"n_a": int(a.size), "n_b": int(b.size), "statistic": math.nan, "p_value": math.nan, "note": ""}
    if a.size < MIN_CASES or b.size < MIN_CASES:
        return {**out, "note": NOT_ENOUGH}
    if np.ptp(np.concatenate([a, b])) == 0:
        return {**out, "note": CONSTANT}
    res = stats.mannwhitneyu(a, b, alternative="two-sided")
    return {**out, "statistic": float(res.statistic), "p_value": float(res.pvalue)}


def stratified_table(rows: Sequence[Mapping], metric: str, strata: Mapping,
                     regions: Sequence[str] = REPORT_REGIONS) -> dict[str, dict]:
    """Per region: ``{"small": describe(...), "large": describe(...), "test": compare_groups(small, large)}``."""
    by = values_by_region(rows, metric, regions)
    out = {}
    for region, values in by.items():
        if not values:
            continue
        small = [values[c] for c in strata["small"] if c in values]
        large = [values[c] for c in strata["large"] if c in values]
        out[region] = {"small": describe(small), "large": describe(large), "test": compare_groups(small, large)}
    return out


# --- paired comparison of two predictions -----------------------------------------------------------------------

def rank_biserial(differences: Iterable[float]) -> float:
    """Matched-pairs rank-biserial correlation (Kerby 2014) of paired differences: (R+ - R-) / (R+ + R-), with
    R+ / R- the sums of the ranks of |d| (average ranks for ties, ``scipy.stats.rankdata``) of the positive /
    negative differences; zero differences are dropped as in the Wilcoxon test. +1: every pair favours the
    first series; NaN without a non-zero difference."""
    d = finite(differences)
    d = d[d != 0]
    if d.size == 0:
        return math.nan
    ranks = stats.rankdata(np.abs(d))
    r_plus, r_minus = float(ranks[d > 0].sum()), float(ranks[d < 0].sum())
    return (r_plus - r_minus) / (r_plus + r_minus)


def paired_comparison(a: Mapping[str, float], b: Mapping[str, float]) -> dict:
    """Wilcoxon signed-rank test (``scipy.stats.wilcoxon``, two-sided, zero differences dropped) of the
    per-case values of two predictions ``a`` and ``b`` ({case: value}) on the cases where both are finite.

    Returns ``n`` (pairs), ``n_zero`` (pairs with equal values), ``median_a``, ``median_b``,
    ``median_difference`` (median of a - b), ``statistic`` (W, scipy's smaller rank sum), ``p_value``,
    ``rank_biserial`` and ``note`` (``not enough cases`` below ``MIN_CASES`` pairs, ``no difference`` when
    every pair is equal).
    """
    cases = sorted(c for c in set(a) & set(b) if math.isfinite(a[c]) and math.isfinite(b[c]))
    x = np.asarray([a[c] for c in cases], dtype=np.float64)
    y = np.asarray([b[c] for c in cases], dtype=np.float64)
    d = x - y
    out = {"n": len(cases), "n_zero": int(np.count_nonzero(d == 0)),
           "median_a": float(np.median(x)) if x.size else math.nan,
           "median_b": float(np.median(y)) if y.size else math.nan,
           "median_difference": float(np.median(d)) if d.size else math.nan,
           "statistic": math.nan, "p_value": math.nan, "rank_biserial": math.nan, "note": ""}
    if len(cases) < MIN_CASES:
        return {**out, "note": NOT_ENOUGH}
    if not np.any(d != 0):
        return {**out, "note": "no difference"}
    with warnings.catch_warnings():  # scipy warns that it falls back to the normal approximation with ties
        warnings.simplefilter("ignore", UserWarning)
        res = stats.wilcoxon(x, y, zero_method="wilcox", alternative="two-sided")
    return {**out, "statistic": float(res.statistic), "p_value": float(res.pvalue),
            "rank_biserial": rank_biserial(d)}
