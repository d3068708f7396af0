"""Intensities of a realistic phantom, randomized the way SynthSeg randomizes, around ratios measured on real scans.

Every number here is a ratio to normal-appearing white matter (NAWM = 1) per sequence (T1, T1CE, T2, FLAIR).
The tumor classes' centres are the medians that ``benchmarks/phantom_realism.py`` measured inside the expert labels
of four real gliomas (``REALISM.md``: ET, necrosis/NET, edema); cyst (CC) and solid NET, which those cases do not
separate, are set from the same table's relations (a cyst is fluid: CSF-like in T1/T2, FLAIR not fully
suppressed). Per case, each class's mean is drawn log-normally around its centre (``SPREAD``: the between-case
spread of the real medians), so the network meets contrasts a little beyond those four scanners; inside a class
a multiplicative texture of two scales gives the within-class spread the real labels show.

Then, per sequence: gamma, a smooth multiplicative bias field (real octant spreads 1.02-1.30), a slice profile
and resolution of 1.5-6 mm along one axis resampled back (real z/x gradient ratios 0.46-1.14: thick slices are
common), in-plane blur, Rician noise, a darker brain edge (partial volume with the stripped CSF), a scanner
scale (real NAWM medians 110 to 13 177), sometimes clipping at a high quantile (one real case is clipped at
32767) and skull-stripping errors (a patch of skull or dura left, or a cap of brain cut off).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from pedtumorseg.conventions import CHANNELS
from pedtumorseg.phantoms.lesions import A_CC, A_ED, A_ET, A_NECROSIS, A_NET, A_VESSEL, A_WMH
from pedtumorseg.phantoms.tumor_growth import smooth_field

#: NAWM-relative centre per class and sequence (t1, t1ce, t2, flair). CSF stays T2-bright (3.2, fluid) although
#: the real k-means "csf" class is darker: that class is mostly the skull-stripped edge; with CSF at 3.2 the
#: z-scored brain's T2 spread matches the real one (NAWM units: real sd 0.42-0.53, phantoms 0.25-0.39; at 2.3
#: they were 0.18-0.29 and NCR sat 1.4 brain sd too high in T2 after z-scoring)
RATIOS = {
    "gm": (0.74, 0.80, 1.20, 1.08),
    "csf": (0.30, 0.34, 3.20, 0.28),
    A_ET: (0.80, 1.30, 1.55, 1.62),
    A_NET: (0.74, 0.80, 2.40, 1.70),
    A_NECROSIS: (0.58, 0.62, 2.90, 1.55),
    A_CC: (0.42, 0.46, 3.00, 0.95),
    A_ED: (0.86, 0.88, 1.60, 1.60),
    A_WMH: (0.90, 0.92, 1.50, 1.55),
    A_VESSEL: (0.85, 1.90, 0.70, 0.90),
}
#: log-normal spread of a class's per-case mean: the real between-scan sd of log medians (``REALISM.md``: ET 0.20,
#: NCR 0.16, ED 0.10-0.22, GM 0.05-0.11; NET and necrosis lower, as kinds already differ)
SPREAD = {"gm": 0.05, "csf": 0.2, A_ET: 0.15, A_NET: 0.12, A_NECROSIS: 0.12, A_CC: 0.12, A_ED: 0.10,
          A_WMH: 0.10, A_VESSEL: 0.25}
#: within-class texture (coefficient of variation) range per class kind
TISSUE_CV, LESION_CV = (0.02, 0.06), (0.08, 0.2)
#: scanner scale: NAWM value drawn log-uniformly in this range (the real cases: 110 to 13 177)
NAWM_RANGE = (80.0, 15000.0)
#: Rician noise sigma (NAWM-relative) per sequence: the real NAWM spreads are 0.06-0.09 in T1/T1CE, 0.11-0.17 in
#: T2/FLAIR (``REALISM.md``), texture included
NOISE = ((0.01, 0.05), (0.01, 0.06), (0.03, 0.10), (0.03, 0.09))
#: chance of thick slices per sequence (real T1/T2/FLAIR at 1 mm: z/x anisotropy 0.61-0.65, T1CE 0.98: T1CE is
#: mostly a 3D acquisition) and their thickness
P_THICK_SLICES, THICKNESS_MM = (0.7, 0.35, 0.9, 0.9), (1.5, 6.0)
P_CLIP, P_SKULL_LEFT, P_BRAIN_CUT = 0.1, 0.25, 0.15
#: scalp / skull / dura left by skull stripping (NAWM-relative): fat-bright T1, enhancing dura
SKULL = (1.3, 1.6, 1.1, 1.1)


def _texture(rng: np.random.Generator, shape, spacing_zyx, cv: float) -> np.ndarray:
    """Multiplicative texture 1 + cv * (fine + coarse smooth noise) / sqrt(2)."""
    sp = np.asarray(spacing_zyx)
    fine = smooth_field(rng, shape, np.maximum(1.0 / sp, 0.5))
    coarse = smooth_field(rng, shape, 4.0 / sp)
    return (1.0 + cv * (fine + coarse) / np.sqrt(2.0)).astype(np.float32)


def _means(rng: np.random.Generator) -> dict:
    """class -> (4,) per-case NAWM-relative means."""
    return {k: np.asarray(v) * np.exp(rng.normal(0.0, SPREAD[k], 4)) for k, v in RATIOS.items()}


def _bias(rng: np.random.Generator, shape) -> np.ndarray:
    """exp of a smooth field: a 4x4x4 grid of normal coefficients on Gaussian bumps along each axis (SynthSeg
    upsamples such a small grid), evaluated as a tensor product."""
    coarse = rng.normal(0.0, rng.uniform(0.02, 0.1), (4, 4, 4))
    bases = []
    for n in shape:
        t = np.linspace(0.0, 3.0, n)[:, None]
        bases.append(np.exp(-0.5 * (t - np.arange(4)[None, :]) ** 2 / 0.7 ** 2))
    field = np.einsum("abc,za,yb,xc->zyx", coarse, *bases, optimize=True)
    return np.exp(field).astype(np.float32)


def _resolution(img: np.ndarray, spacing_zyx, rng: np.random.Generator, p_thick: float) -> np.ndarray:
    """In-plane blur, and with ``p_thick`` slices of 1.5-6 mm along one axis (z 80 %), resampled back."""
    sp = np.asarray(spacing_zyx, float)
    img = ndimage.gaussian_filter(img, rng.uniform(0.2, 0.7) / sp)
    if rng.random() >= p_thick:
        return img
    axis = int(rng.choice(3, p=[0.8, 0.1, 0.1]))
    thickness = rng.uniform(*THICKNESS_MM)
    if thickness <= sp[axis] * 1.05:
        return img
    sigma = np.zeros(3)
    sigma[axis] = thickness / 2.355 / sp[axis]  # slice profile: FWHM = thickness
    img = ndimage.gaussian_filter(img, sigma)
    n = img.shape[axis]
    step = thickness / sp[axis]
    low = np.arange(0.0, n - 1 + 1e-6, step)
    sampled = np.take(img, np.clip(np.rint(low).astype(int), 0, n - 1), axis=axis)
    coords = np.indices(img.shape, dtype=np.float32)
    coords[axis] = np.clip(coords[axis] / step, 0, len(low) - 1)
    return ndimage.map_coordinates(sampled, coords, order=1, mode="nearest").astype(np.float32)


def _channel(k: int, gm, wm, csf, classes, means: dict, tex: dict, rng) -> np.ndarray:
    """Noise-free NAWM-relative image of sequence ``k``: tissue partial volumes, then each lesion class."""
    img = wm * tex["wm"] + gm * means["gm"][k] * tex["gm"] + csf * means["csf"][k] * tex["csf"]
    for cls in (A_WMH, A_ED, A_NET, A_NECROSIS, A_CC, A_ET):
        sel = classes == cls
        if sel.any():
            img[sel] = means[cls][k] * tex["lesion"][sel]
    vessel = classes == A_VESSEL
    if vessel.any() and k in (1, 2):  # enhancing vessels and plexus in T1CE, flow voids in T2
        img[vessel] = img[vessel] * (1 - tex["vessel"]) + means[A_VESSEL][k] * tex["vessel"]
    gamma = np.exp(rng.normal(0.0, 0.07))
    return np.power(np.maximum(img, 0.0), gamma).astype(np.float32)


def _skull_left(mask: np.ndarray, spacing_zyx, rng: np.random.Generator) -> np.ndarray:
    """A patch of the shell outside the brain (up to 5 mm) that skull stripping left."""
    outside = ndimage.distance_transform_edt(~mask, sampling=spacing_zyx)
    shell = (outside > 0) & (outside < rng.uniform(1.5, 5.0))
    gate = smooth_field(rng, mask.shape, 12.0 / np.asarray(spacing_zyx)) > rng.uniform(0.8, 1.8)
    return shell & gate


def _brain_cut(mask: np.ndarray, spacing_zyx, rng: np.random.Generator) -> np.ndarray:
    """The brain mask less a cap up to 3-10 mm deep on a random side (over-eager skull stripping)."""
    normal = rng.normal(size=3)
    normal /= np.linalg.norm(normal)
    idx = np.indices(mask.shape, dtype=np.float32)
    proj = sum(idx[a] * spacing_zyx[a] * normal[a] for a in range(3))
    limit = proj[mask].max() - rng.uniform(3.0, 10.0)
    return mask & (proj < limit)


def render(gm, wm, csf, classes, mask, spacing_zyx, rng: np.random.Generator) -> tuple[dict, np.ndarray]:
    """int16 images (channel -> array) and the final brain mask (after a possible cut) of one case."""
    shape = mask.shape
    means = _means(rng)
    tex = {"wm": _texture(rng, shape, spacing_zyx, rng.uniform(*TISSUE_CV)),
           "gm": _texture(rng, shape, spacing_zyx, rng.uniform(*TISSUE_CV)),
           "csf": _texture(rng, shape, spacing_zyx, rng.uniform(*TISSUE_CV)),
           "lesion": _texture(rng, shape, spacing_zyx, rng.uniform(*LESION_CV)),
           "vessel": rng.uniform(0.2, 1.0)}
    brain = _brain_cut(mask, spacing_zyx, rng) if rng.random() < P_BRAIN_CUT else mask
    skull = _skull_left(brain, spacing_zyx, rng) if rng.random() < P_SKULL_LEFT else np.zeros(shape, bool)
    edge = ndimage.gaussian_filter(brain.astype(np.float32), rng.uniform(1.0, 3.0) / np.asarray(spacing_zyx))
    support = brain | skull
    images = {}
    for k, ch in enumerate(CHANNELS):
        img = _channel(k, gm, wm, csf, classes, means, tex, rng)
        if skull.any():
            img[skull] = SKULL[k] * np.exp(rng.normal(0, 0.2)) * tex["lesion"][skull]
        img = np.where(brain, img * np.clip((edge - 0.15) / 0.6, 0.05, 1.0), img)
        img = _resolution(img * _bias(rng, shape), spacing_zyx, rng, P_THICK_SLICES[k])
        sigma = rng.uniform(*NOISE[k])
        noise = rng.standard_normal((2,) + shape, dtype=np.float32) * sigma
        img = np.sqrt((img + noise[0]) ** 2 + noise[1] ** 2)
        img *= np.exp(rng.uniform(*np.log(NAWM_RANGE)))
        if rng.random() < P_CLIP:
            img = np.minimum(img, np.percentile(img[support], rng.uniform(99.0, 99.9)))
        img[~support] = 0
        images[ch] = np.clip(np.rint(img), 1 * support, 32767).astype(np.int16)
    return images, brain
