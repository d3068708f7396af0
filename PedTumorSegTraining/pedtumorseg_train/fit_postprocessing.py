"""Fit the post-processing parameters of a bundle from training data (paper §2.6).

Two steps:

1. **Ratio thresholds.** The paper "conservatively selected the 95-th percentile values" of the T1CE/T1 ratio
   (ratios outside [0.2, 5] excluded). We read this as follows, and this is what the code does:

   - ``ratio_high`` = the 95th percentile of the ratios at ground-truth **NET** voxels. A predicted NET voxel
     whose ratio is above it is more enhancing than 95 % of true NET, so the post-processing relabels it ET.
   - ``ratio_low`` = the 5th percentile of the ratios at ground-truth **ET** voxels (i.e. 95 % of true ET lie
     above it). A predicted ET voxel below it is less enhancing than 95 % of true ET and is relabelled NET.

   With a ratio of normalized intensities near 1 where nothing enhances, this gives ``ratio_high > 1 >
   ratio_low``, consistent with the paper's 1.388 and 0.766. When ET and NET ratios are so well separated that
   the ET 5th percentile lies above the NET 95th (seen on synthetic phantoms), ``fit`` swaps the two values
   (``ratio_high`` = the ET 5th percentile, ``ratio_low`` = the NET 95th; the report says
   ``thresholds_swapped``): a NET voxel is then relabelled only where its ratio looks like typical ET and an ET
   voxel only where it looks like typical NET, which stays conservative and keeps ``ratio_low < ratio_high``
   as ``PostprocessParams`` requires. In the overlapping case (the paper's) nothing changes: in both cases
   ``ratio_high = max(NET p95, ET p5)`` and ``ratio_low = min(NET p95, ET p5)``. The ratio is the core ``ratio_map`` with the
   bundle's normalization (``"zscore"``, the paper's, by default; ``"mean"`` is an option whose thresholds must be
   fitted here), inside the core ``brain_mask`` of T1 and T1CE (the mask
   ``postprocess`` uses at inference); non-finite ratios and ratios outside [0.2, 5] are dropped before the
   percentiles. Percentiles use numpy's default linear interpolation.

2. **Minimum component volumes** (by default labels 1 ET and 3 CC, the two the paper fits; any of the four with
   ``candidates`` / ``--labels``). On cross-validation predictions, for every candidate cut-off (mm^3) the core
   ``postprocess`` is applied and the mean lesion-wise Dice of that label's region (ET for the ET cut-off, CC for
   the CC cut-off, ...) over the cases is computed; the maximiser is chosen, ties going to the **smaller**
   cut-off (remove as little as the data justify; a label whose best cut-off is 0 keeps every component). While
   one label's cut-off is swept the others play no part (removal only zeroes the swept label's voxels). The
   labels that are not swept keep the base parameters' cut-offs.

Memory: ``collect_ratios`` streams case by case and keeps at most ``max_per_case`` ratios per label and case
(a deterministic random subsample, seed 0, only when a case has more voxels than that), so the memory is bounded
by ``n_cases * max_per_case * 4 bytes`` per label; small cases are kept whole, so the percentiles are exact
there. ``sweep_min_volumes`` also streams: per case, the ratio step runs once, the labels are cropped to the
bounding box of prediction and ground truth (with a margin that keeps the component and lesion analysis
exact), every candidate is scored, and only the per-case scores are kept.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from pedtumorseg.conventions import CC, CHANNELS, ET, LABEL_NAMES, NET
from pedtumorseg.errors import InputError

log = logging.getLogger(__name__)

#: ratios outside this window are excluded (paper §2.6)
RATIO_WINDOW: tuple[float, float] = (0.2, 5.0)
#: default cut-off candidates in mm^3 (every swept label)
DEFAULT_CANDIDATES: tuple[float, ...] = (0, 25, 50, 75, 100, 160, 200, 300, 500)
#: default cap of ratios kept per label and case in ``collect_ratios``
DEFAULT_MAX_PER_CASE = 100_000
#: voxels of margin around the foreground bounding box in the sweep: >= lesion merging (5 dilations) + 1
_CROP_MARGIN = 8
_NNUNET_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})\.nii\.gz$")


# --- ratio thresholds -----------------------------------------------------------------------------------

def valid_ratios(values: np.ndarray) -> np.ndarray:
    """The finite values of ``values`` inside ``RATIO_WINDOW`` (inclusive), as a flat float64 array."""
    v = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = RATIO_WINDOW
    return v[np.isfinite(v) & (v >= lo) & (v <= hi)]


def _case_arrays(case) -> tuple[np.ndarray, np.ndarray]:
    """(images (4,z,y,x), gt labels) of one item of ``collect_ratios``' ``cases``."""
    if isinstance(case, (tuple, list)) and len(case) == 2:
        return np.asarray(case[0]), np.asarray(case[1])
    # a pedtumorseg.inputs.cases.CaseFiles with a segmentation
    from pedtumorseg.inputs.images import load_case, read_labels

    if getattr(case, "seg", None) is None:
        raise InputError(None, f"case {getattr(case, 'case_id', case)!r} has no ground-truth segmentation")
    loaded = load_case(case)
    return loaded.images, read_labels(case.seg, loaded.geometry)


def case_ratio_map(images: np.ndarray, normalization: str = "zscore") -> np.ndarray:
    """The core T1CE/T1 ratio map of one image stack (4, z, y, x).

    The mask is the core ``brain_mask`` of T1 and T1CE, the mask ``postprocess`` uses by default at inference,
    so the fitted thresholds apply to the same normalization as the one they are used with.
    """
    from pedtumorseg.postprocess import brain_mask, ratio_map

    images = np.asarray(images)
    t1, t1ce = images[CHANNELS.index("t1")], images[CHANNELS.index("t1ce")]
    return ratio_map(t1, t1ce, brain_mask([t1, t1ce]), normalization)


def _subsample(values: np.ndarray, cap: int | None, rng: np.random.Generator) -> np.ndarray:
    if cap is None or values.size <= cap:
        return values
    return values[np.sort(rng.choice(values.size, size=cap, replace=False))]


def collect_ratios(cases: Iterable, normalization: str = "zscore",
                   max_per_case: int | None = DEFAULT_MAX_PER_CASE) -> tuple[np.ndarray, np.ndarray]:
    """T1CE/T1 ratios at ground-truth ET and NET voxels of training cases.

    ``cases`` yields either ``(images, gt_labels)`` pairs (images ``(4, z, y, x)`` in channel order T1, T1CE,
    T2, FLAIR; labels ``(z, y, x)``) or ``pedtumorseg.inputs.cases.CaseFiles`` with a ``seg`` (loaded one at a time).
    The ratio is the core ``ratio_map(t1, t1ce, brain_mask([t1, t1ce]), normalization)`` (the inference
    mask); non-finite ratios and ratios outside [0.2, 5] are excluded. Per case and label at most
    ``max_per_case`` ratios are kept (a deterministic random subsample, only when there are more; ``None`` keeps everything).

    Returns ``(et_ratios, net_ratios)`` as float32 arrays.
    """
    rng = np.random.default_rng(0)
    et_parts: list[np.ndarray] = []
    net_parts: list[np.ndarray] = []
    for case in cases:
        images, gt = _case_arrays(case)
        if images.ndim != 4 or images.shape[0] != len(CHANNELS) or images.shape[1:] != gt.shape:
            raise InputError(None, f"images of shape {images.shape} do not match labels of shape {gt.shape}")
        ratio = case_ratio_map(images, normalization)
        for label, parts in ((ET, et_parts), (NET, net_parts)):
            v = valid_ratios(ratio[gt == label])
            parts.append(_subsample(v, max_per_case, rng).astype(np.float32))
        del images, gt, ratio
    cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0, np.float32)  # noqa: E731
    return cat(et_parts), cat(net_parts)


def fit_ratio_thresholds(et_ratios: np.ndarray, net_ratios: np.ndarray,
                         percentile: float = 95.0) -> tuple[float, float]:
    """``(ratio_high, ratio_low)`` by the paper's rule (see the module docstring).

    ``ratio_high`` = ``percentile``-th percentile of the NET ratios; ``ratio_low`` = ``(100 - percentile)``-th
    percentile of the ET ratios. Non-finite values and values outside [0.2, 5] are excluded first; numpy's
    linear interpolation. ``InputError`` when either set has no valid ratio.
    """
    if not 50.0 < percentile < 100.0:
        raise ValueError(f"percentile must lie in (50, 100), got {percentile}")
    et = valid_ratios(et_ratios)
    net = valid_ratios(net_ratios)
    for name, v in (("ET", et), ("NET", net)):
        if v.size == 0:
            raise InputError(None, f"no valid T1CE/T1 ratio at ground-truth {name} voxels; cannot fit thresholds")
    ratio_high = float(np.percentile(net, percentile))
    ratio_low = float(np.percentile(et, 100.0 - percentile))
    return ratio_high, ratio_low


# --- cut-off sweep --------------------------------------------------------------------------------------

def region_lesion_dice(pred: np.ndarray, gt: np.ndarray, label: int, spacing_zyx) -> float:
    """Lesion-wise Dice of one single-label region (the BraTS PED rule of the core ``metrics.region_scores``,
    lesion part only)."""
    from pedtumorseg.evaluation.metrics import region_scores

    return float(region_scores(pred == label, gt == label, spacing_zyx, legacy=False)["lesion_dice"])


def _crop_box(*label_maps: np.ndarray, margin: int = _CROP_MARGIN) -> tuple[slice, ...] | None:
    from pedtumorseg.arrays import bounding_box

    fg = np.zeros(label_maps[0].shape, bool)
    for m in label_maps:
        fg |= m > 0
    return bounding_box(fg, margin)


def best_cutoff(candidates: Sequence[float], scores: Sequence[float]) -> float:
    """The candidate with the highest score; ties (within 1e-12) go to the smaller candidate."""
    order = np.argsort(np.asarray(candidates, float), kind="stable")
    best, best_score = None, -np.inf
    for i in order:
        s = float(scores[i])
        if np.isfinite(s) and s > best_score + 1e-12:
            best, best_score = float(candidates[i]), s
    if best is None:
        raise ValueError("no finite score to choose a cut-off from")
    return best


def _replace(params, **changes):
    return dataclasses.replace(params, **changes)  # runs __post_init__ validation


def sweep_min_volumes(pairs: Iterable, spacing_zyx: Sequence[float] | None = None, *,
                      candidates: dict[int, Sequence[float]] | None = None, base_params=None) -> dict:
    """Choose the minimum component volume of each swept label on cross-validation predictions.

    ``candidates`` maps a label (1 ET, 2 NET, 3 CC, 4 ED) to its cut-off candidates in mm^3; the default is the
    paper's two labels, ET and CC, each with ``DEFAULT_CANDIDATES``. ``pairs`` yields ``(raw_pred, t1, t1ce,
    gt)`` or ``(raw_pred, t1, t1ce, gt, spacing_zyx)`` (arrays in ``(z, y, x)``; the 4-tuple form uses
    ``spacing_zyx``). For each case the core ``postprocess`` runs once with the component step off (the ratio
    step of ``base_params``, its thresholds and normalization), then for each label and candidate the core
    ``remove_small_components`` with that cut-off (mm^3) for that label only (exactly what ``postprocess`` does
    after the ratio step). The score of a candidate is the mean over cases of the lesion-wise Dice of that
    label's region. Ties go to the smaller cut-off. Removal zeroes only the swept label's voxels, so one label's
    cut-off plays no part in another label's score.

    Returns a JSON-serializable dict: ``{"n_cases", "min_volume_<label>" per swept label, "table": {"ET":
    [{"cutoff_mm3", "mean_lesion_dice"}, ...], ...}, "per_case": {"ET": [[...per candidate] per case], ...}}``.
    """
    from pedtumorseg.postprocess import MIN_VOLUME_KEYS, PostprocessParams, postprocess, remove_small_components

    base = PostprocessParams() if base_params is None else base_params
    if candidates is None:
        candidates = {ET: DEFAULT_CANDIDATES, CC: DEFAULT_CANDIDATES}
    if not candidates:
        raise ValueError("no label to sweep")
    cand: dict[int, list[float]] = {}
    for label, cs in sorted(candidates.items()):
        if label not in MIN_VOLUME_KEYS:
            raise ValueError(f"unknown label {label!r}; sweepable: {sorted(MIN_VOLUME_KEYS)}")
        cs = [float(c) for c in cs]
        if not cs or any(c < 0 or not np.isfinite(c) for c in cs):
            raise ValueError(f"{LABEL_NAMES[label]} candidates must be a non-empty list of finite values >= 0")
        cand[label] = cs
    ratio_only = _replace(base, components_enabled=False)

    per_case: dict[int, list[list[float]]] = {label: [] for label in cand}
    n = 0
    for item in pairs:
        if len(item) == 5:
            raw, t1, t1ce, gt, spacing = item
        elif len(item) == 4:
            raw, t1, t1ce, gt = item
            spacing = spacing_zyx
        else:
            raise ValueError("each pair is (raw_pred, t1, t1ce, gt) or (raw_pred, t1, t1ce, gt, spacing_zyx)")
        if spacing is None:
            raise ValueError("spacing_zyx is required for (raw_pred, t1, t1ce, gt) pairs")
        raw, gt = np.asarray(raw), np.asarray(gt)
        if raw.shape != gt.shape:
            raise InputError(None, f"prediction of shape {raw.shape} does not match ground truth {gt.shape}")
        spacing = tuple(float(s) for s in spacing)
        # the ratio step once per case, on the whole volume (its brain mask and normalization need it all)
        relabelled = np.asarray(postprocess(raw, t1, t1ce, spacing, ratio_only))
        box = _crop_box(relabelled, gt)
        r, g = (relabelled, gt) if box is None else (relabelled[box], gt[box])
        for label, cs in cand.items():
            # a larger cut-off removes a superset of the components a smaller one removes, so two cut-offs give
            # the same labels exactly when as many voxels of the label remain: score each distinct result once
            by_count: dict[int, float] = {}
            scores = []
            for c in cs:
                out = remove_small_components(r, spacing, {label: c})
                key = int(np.count_nonzero(out == label))
                if key not in by_count:
                    by_count[key] = region_lesion_dice(out, g, label, spacing)
                scores.append(by_count[key])
            per_case[label].append(scores)
        n += 1
    if n == 0:
        raise InputError(None, "no cross-validation prediction to sweep the cut-offs on")

    result: dict = {"n_cases": n, "table": {}, "per_case": {}}
    for label, cs in cand.items():
        name = LABEL_NAMES[label]
        means = np.asarray(per_case[label], float).mean(axis=0)
        result["table"][name] = [{"cutoff_mm3": c, "mean_lesion_dice": float(m)} for c, m in zip(cs, means)]
        result["per_case"][name] = per_case[label]
        result[MIN_VOLUME_KEYS[label]] = best_cutoff(cs, means)
    return result


# --- the whole fit from an nnU-Net raw dataset and its cross-validation predictions ---------------------------

def nnunet_training_cases(raw_dir: str | os.PathLike) -> list:
    """``CaseFiles`` of an nnU-Net raw dataset (``imagesTr/<case>_0000..0003.nii.gz`` = T1, T1CE, T2, FLAIR;
    ``labelsTr/<case>.nii.gz``), sorted by case id. ``InputError`` on a missing channel or label."""
    from pedtumorseg.inputs.cases import case_from_files

    raw_dir = Path(raw_dir)
    images_dir, labels_dir = raw_dir / "imagesTr", raw_dir / "labelsTr"
    for d in (images_dir, labels_dir):
        if not d.is_dir():
            raise InputError(d, "not a folder (expected an nnU-Net raw dataset with imagesTr/ and labelsTr/)")
    channels: dict[str, dict[int, Path]] = {}
    for p in sorted(images_dir.iterdir()):
        m = _NNUNET_CHANNEL.match(p.name)
        if m:
            channels.setdefault(m["case"], {})[int(m["ch"])] = p
    if not channels:
        raise InputError(images_dir, "no '<case>_0000.nii.gz' images")
    cases = []
    for cid in sorted(channels):
        found = channels[cid]
        missing = [i for i in range(len(CHANNELS)) if i not in found]
        if missing:
            raise InputError(images_dir, f"case {cid}: missing channel file {cid}_{missing[0]:04d}.nii.gz")
        seg = labels_dir / f"{cid}.nii.gz"
        if not seg.is_file():
            raise InputError(seg, f"case {cid}: ground-truth label file not found")
        cases.append(case_from_files(*(found[i] for i in range(len(CHANNELS))), case_id=cid, seg=seg))
    return cases


def find_cv_predictions(pred_dir: str | os.PathLike) -> dict[str, Path]:
    """Case id -> prediction file: ``<pred_dir>/<case>.nii.gz`` and ``<pred_dir>/fold_*/validation/<case>.nii.gz``
    (nnU-Net's layout). ``InputError`` if a case appears twice (in two folds)."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise InputError(pred_dir, "not a folder")
    files = sorted(pred_dir.glob("*.nii.gz")) + sorted(pred_dir.glob("fold_*/validation/*.nii.gz"))
    found: dict[str, Path] = {}
    for p in files:
        cid = p.name[: -len(".nii.gz")]
        if cid in found:
            raise InputError(p, f"case {cid} has two predictions (also {found[cid]})")
        found[cid] = p
    return found


def fit(raw_dir: str | os.PathLike, pred_dir: str | os.PathLike, *, normalization: str = "zscore",
        percentile: float = 95.0, candidates: dict[int, Sequence[float]] | None = None, base_params=None,
        max_per_case: int | None = DEFAULT_MAX_PER_CASE):
    """Fit every post-processing parameter; returns ``(PostprocessParams, report)``.

    ``raw_dir`` is an nnU-Net raw dataset (see ``nnunet_training_cases``); ``pred_dir`` holds the
    cross-validation predictions (``find_cv_predictions``). The ratio thresholds come from all training cases'
    ground truth; the cut-offs from the cases that have a prediction (the others are listed in the report as
    ``cases_without_prediction``), with the fitted thresholds in effect; ``candidates`` as in
    ``sweep_min_volumes`` (default: the paper's labels ET and CC). ``report`` is JSON-serializable.
    """
    from pedtumorseg.inputs.images import load_case, read_labels
    from pedtumorseg.postprocess import PostprocessParams

    base = _replace(PostprocessParams() if base_params is None else base_params, normalization=normalization)
    cases = nnunet_training_cases(raw_dir)
    predictions = find_cv_predictions(pred_dir)

    et, net = collect_ratios(cases, normalization, max_per_case=max_per_case)
    ratio_high, ratio_low = fit_ratio_thresholds(et, net, percentile)
    log.info("ratio thresholds: high %.4f (NET p%g, n=%d), low %.4f (ET p%g, n=%d)",
             ratio_high, percentile, net.size, ratio_low, 100 - percentile, et.size)
    paper_high, paper_low = ratio_high, ratio_low
    swapped = ratio_low > ratio_high
    if swapped:
        ratio_high, ratio_low = ratio_low, ratio_high
        log.warning("ET and NET ratios are separated (ET p%g %.4f > NET p%g %.4f): using ratio_high %.4f and "
                    "ratio_low %.4f (see fit_postprocessing docstring)", 100 - percentile, paper_low, percentile,
                    paper_high, ratio_high, ratio_low)
    if not ratio_low < ratio_high:
        raise InputError(raw_dir, f"fitted ratio thresholds are equal ({ratio_high:.4f}): ET p{100 - percentile:g} "
                                  f"= NET p{percentile:g}; check the labels and the normalization")
    with_ratio = _replace(base, ratio_high=ratio_high, ratio_low=ratio_low)

    with_pred = [c for c in cases if c.case_id in predictions]
    without = [c.case_id for c in cases if c.case_id not in predictions]
    unknown = sorted(set(predictions) - {c.case_id for c in cases})
    if without:
        log.warning("%d of %d training cases have no cross-validation prediction; sweeping on the other %d",
                    len(without), len(cases), len(with_pred))

    def pairs():
        for c in with_pred:
            loaded = load_case(c)
            gt = read_labels(c.seg, loaded.geometry)
            raw = read_labels(predictions[c.case_id], loaded.geometry)
            yield (raw, loaded.images[CHANNELS.index("t1")], loaded.images[CHANNELS.index("t1ce")], gt,
                   loaded.geometry.spacing_zyx)

    sweep = sweep_min_volumes(pairs(), candidates=candidates, base_params=with_ratio)
    params = _replace(with_ratio, **{k: v for k, v in sweep.items() if k.startswith("min_volume_")})
    report = {
        "normalization": normalization,
        "ratio_window": list(RATIO_WINDOW),
        "percentile": percentile,
        "ratio_high": ratio_high,
        "ratio_high_rule": f"{percentile:g}th percentile of T1CE/T1 ratios at ground-truth NET voxels",
        "ratio_low": ratio_low,
        "ratio_low_rule": f"{100 - percentile:g}th percentile of T1CE/T1 ratios at ground-truth ET voxels",
        "net_percentile_ratio": paper_high,
        "et_percentile_ratio": paper_low,
        "thresholds_swapped": swapped,
        "n_training_cases": len(cases),
        "n_et_ratios": int(et.size),
        "n_net_ratios": int(net.size),
        "max_ratios_per_case": max_per_case,
        "n_cases_with_prediction": len(with_pred),
        "cases_without_prediction": without,
        "predictions_without_training_case": unknown,
        "sweep": sweep,
        "params": params.to_dict(),
    }
    return params, report
