"""How close phantoms come to real scans: per-label intensity statistics, normalized to normal-appearing white
matter (NAWM), and the Wasserstein distance between real and phantom distributions.

The same estimator runs on real and synthetic cases, so neither side gets ground-truth tissue the other lacks:
the brain is every voxel with data in all four sequences (their skull-stripping masks differ at the edge); the tumor-free brain is the brain outside the whole tumor
dilated by 3 mm; its T1 intensities are split into CSF < GM < WM by three-class k-means (``scipy.cluster.vq``),
and NAWM is the WM class eroded by one voxel. Each sequence is divided by its NAWM median, so a value of 1.6 in
FLAIR means "1.6 times as bright as normal white matter", whatever the scanner's scale.

Regions: ``ET``, ``NCR`` (NET and CC together: BraTS 2018's label 1 holds necrosis and non-enhancing tumor and
has no cyst label), ``ED``, ``brain`` (tumor-free brain) and its ``wm``, ``gm``, ``csf`` classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.cluster.vq import kmeans2
from scipy.stats import wasserstein_distance

from pedtumorseg.conventions import CC, CHANNELS, ED, ET, NET

REGIONS = ("ET", "NCR", "ED", "brain", "wm", "gm", "csf")
QUANTILES = (5, 25, 50, 75, 95)
#: voxels kept per region and case (a fixed-seed subsample), so every case weighs the same in a pooled sample
SAMPLES_PER_REGION = 4000
#: BraTS <= 2020 label -> this project's label
BRATS2018_TO_PROJECT = {4: ET, 1: NET, 2: ED}


@dataclass
class CaseIntensities:
    """Per region: channel -> NAWM-normalized intensity samples; plus image-quality measurements."""
    samples: dict  # region -> channel -> 1-D float array (may be empty)
    nawm: dict  # channel -> NAWM median (the scanner's scale)
    quality: dict  # channel -> {"wm_cv", "anisotropy", "bias"}
    zscore: dict | None = None  # channel -> (mean, sd) of the normalized brain, tumor included (nnU-Net's z-score)


def map_brats2018(seg: np.ndarray) -> np.ndarray:
    """BraTS 2018 labels (1 NCR/NET, 2 ED, 4 ET) -> this project's (ET 1, NET 2, ED 4)."""
    out = np.zeros(seg.shape, np.uint8)
    for old, new in BRATS2018_TO_PROJECT.items():
        out[seg == old] = new
    return out


def tissue_classes(t1: np.ndarray, free: np.ndarray) -> np.ndarray:
    """CSF (1) < GM (2) < WM (3) inside ``free`` by three-class k-means on T1, 0 elsewhere."""
    values = t1[free].astype(np.float64)
    start = np.percentile(values, [5, 50, 90]).reshape(3, 1)
    centres, _ = kmeans2(values.reshape(-1, 1), start, minit="matrix", iter=25)
    cuts = np.sort(centres[:, 0])
    bounds = (cuts[:-1] + cuts[1:]) / 2
    classes = np.zeros(t1.shape, np.uint8)
    classes[free] = (np.searchsorted(bounds, values) + 1).astype(np.uint8)
    return classes


def _regions(seg: np.ndarray, brain: np.ndarray, t1: np.ndarray, spacing_zyx) -> tuple[dict, np.ndarray]:
    """Region masks (see ``REGIONS``) and the NAWM mask."""
    wt = seg > 0
    radius = np.maximum(np.round(3.0 / np.asarray(spacing_zyx, float)).astype(int), 1)
    grown = ndimage.binary_dilation(wt, np.ones(tuple(2 * radius + 1), bool)) if wt.any() else wt
    free = brain & ~grown
    classes = tissue_classes(t1, free)
    nawm = ndimage.binary_erosion(classes == 3)
    if nawm.sum() < 100:
        nawm = classes == 3
    masks = {"ET": seg == ET, "NCR": (seg == NET) | (seg == CC), "ED": seg == ED, "brain": free,
             "wm": classes == 3, "gm": classes == 2, "csf": classes == 1}
    return masks, nawm


def measure_case(images: dict, seg: np.ndarray, spacing_zyx, seed: int = 0) -> CaseIntensities:
    """NAWM-normalized intensity samples per region and channel, and the quality measures of one case.

    ``images``: channel (``CHANNELS``) -> array; ``seg``: this project's labels on the same grid."""
    brain = np.all(np.stack([images[c] > 0 for c in CHANNELS]), 0)
    masks, nawm = _regions(seg, brain, images["t1"], spacing_zyx)
    rng = np.random.default_rng(seed)
    samples = {r: {} for r in REGIONS}
    scale, quality, zscore = {}, {}, {}
    for ch in CHANNELS:
        img = images[ch].astype(np.float32)
        scale[ch] = float(np.median(img[nawm]))
        norm = img / scale[ch]
        zscore[ch] = (float(norm[brain].mean()), float(norm[brain].std()))
        for region, mask in masks.items():
            values = norm[mask]
            if len(values) > SAMPLES_PER_REGION:
                values = rng.choice(values, SAMPLES_PER_REGION, replace=False)
            samples[region][ch] = values
        quality[ch] = _quality(norm, nawm, brain)
    return CaseIntensities(samples, scale, quality, zscore)


def _quality(norm: np.ndarray, nawm: np.ndarray, brain: np.ndarray) -> dict:
    """``wm_cv``: robust spread of NAWM (IQR / 1.349, NAWM median = 1), the noise plus texture a tissue shows;
    ``anisotropy``: mean |difference| between neighbouring voxels along z over that along x, inside the brain
    (below 1 when slices are thicker than the in-plane pixels, as after resampling thick slices);
    ``bias``: spread (max/min) of the NAWM median over the eight octants of the brain's bounding box."""
    q25, q75 = np.percentile(norm[nawm], [25, 75])
    inner = ndimage.binary_erosion(brain, iterations=2)
    dz = np.abs(np.diff(norm, axis=0))[inner[1:] & inner[:-1]].mean()
    dx = np.abs(np.diff(norm, axis=2))[inner[..., 1:] & inner[..., :-1]].mean()
    idx = np.argwhere(brain)
    mid = (idx.min(0) + idx.max(0)) // 2
    medians = []
    for octant in range(8):
        sel = [slice(None, m) if (octant >> k) & 1 else slice(m, None) for k, m in enumerate(mid)]
        part = nawm[tuple(sel)]
        if part.sum() > 50:
            medians.append(np.median(norm[tuple(sel)][part]))
    bias = float(max(medians) / min(medians)) if medians else float("nan")
    return {"wm_cv": float((q75 - q25) / 1.349), "anisotropy": float(dz / dx), "bias": bias}


def pooled(cases: list[CaseIntensities], region: str, channel: str, space: str = "nawm") -> np.ndarray:
    """The samples of ``region``/``channel`` of every case, concatenated; ``space`` "nawm" (NAWM = 1) or
    "zscore" (each case z-scored over its brain as the network's input is: nnU-Net's z-score with the mask)."""
    parts = []
    for c in cases:
        values = c.samples[region][channel]
        if len(values):
            if space == "zscore":
                mean, sd = c.zscore[channel]
                values = (values - mean) / sd
            parts.append(values)
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def distance_table(real: list[CaseIntensities], phantoms: list[CaseIntensities], space: str = "nawm") -> dict:
    """region -> channel -> Wasserstein-1 distance between the pooled real and phantom samples in ``space``
    (None when either side has none)."""
    out = {}
    for region in REGIONS:
        out[region] = {}
        for ch in CHANNELS:
            a, b = pooled(real, region, ch, space), pooled(phantoms, region, ch, space)
            out[region][ch] = float(wasserstein_distance(a, b)) if len(a) and len(b) else None
    return out


def mean_distance(table: dict, regions=REGIONS) -> float:
    """Mean of the defined distances of ``regions`` over the four channels."""
    values = [v for r in regions for v in table[r].values() if v is not None]
    return float(np.mean(values)) if values else float("nan")


def quantile_table(cases: list[CaseIntensities]) -> dict:
    """region -> channel -> the ``QUANTILES`` of the pooled samples (None when empty)."""
    return {r: {ch: (np.percentile(s, QUANTILES).round(3).tolist() if len(s := pooled(cases, r, ch)) else None)
                for ch in CHANNELS} for r in REGIONS}


def read_labeled_case(folder, geometry=None, brats2018: bool = True) -> tuple[dict, np.ndarray | None, tuple]:
    """(channel -> array, labels in this project's convention or None, spacing_zyx) of a BraTS-named case folder.

    With ``geometry`` (e.g. ``clean.geometry_for("small")``) the case is resampled onto it first: images smoothed
    by a Gaussian of a third of the target spacing (against aliasing) and linearly interpolated, kept where the
    resampled skull-stripping mask is above 0.5; labels by nearest neighbour. So real and synthetic cases are
    measured at one resolution."""
    import SimpleITK as sitk

    from pedtumorseg.inputs.cases import find_case

    files = find_case(folder)

    def read(path, labels: bool):
        image = sitk.ReadImage(str(path), sitk.sitkUInt8 if labels else sitk.sitkFloat32)
        if geometry is None:
            return sitk.GetArrayFromImage(image), tuple(image.GetSpacing()[::-1])
        ref = geometry.reference_image(image.GetPixelID())
        if labels:
            out = sitk.Resample(image, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
            return sitk.GetArrayFromImage(out), geometry.spacing_zyx
        inside = sitk.Resample(sitk.Cast(image > 0, sitk.sitkFloat32), ref, sitk.Transform(), sitk.sitkLinear, 0)
        image = sitk.SmoothingRecursiveGaussian(image, [s / 3 for s in geometry.spacing])
        out = sitk.GetArrayFromImage(sitk.Resample(image, ref, sitk.Transform(), sitk.sitkLinear, 0))
        return np.where(sitk.GetArrayFromImage(inside) > 0.5, np.maximum(out, 1e-3), 0.0), geometry.spacing_zyx

    images = {ch: read(path, False)[0] for ch, path in files.images.items()}
    seg = None
    if files.seg is not None:
        seg = read(files.seg, True)[0]
        seg = map_brats2018(seg) if brats2018 else seg.astype(np.uint8)
    spacing = read(files.images[CHANNELS[0]], False)[1]
    return images, seg, spacing


def case_spread(cases: list[CaseIntensities], region: str) -> dict:
    """channel -> standard deviation of log(per-case median) of ``region``: how much a class's mean varies between
    scans (what ``appearance.SPREAD`` draws)."""
    out = {}
    for ch in CHANNELS:
        medians = [np.median(c.samples[region][ch]) for c in cases if len(c.samples[region][ch])]
        out[ch] = float(np.std(np.log(medians), ddof=1)) if len(medians) > 1 else None
    return out
