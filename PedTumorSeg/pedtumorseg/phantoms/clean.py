"""Synthetic BraTS-like cases with ground truth: MNI152 anatomy, a random tumor, physically plausible contrasts.

Anatomy comes from nilearn's packaged MNI152 templates (no network), mapped physically into the BraTS/SRI24
grid of the real example case (240x240x155 at 1 mm, LPS, origin (0, -239, 0), identity direction) by a
translation that puts the template brain's centroid on the centroid of the real case's brain mask, plus a
mild random affine per case. ``small`` is the same field of view at 2.5 mm (96x96x62).

Labels: 1 ET, 2 NET, 3 CC, 4 ED. Per case, independently: no ET drawn with p=0.08, no CC with p=0.12, no ED
with p=0.50; a second lesion with p=0.15. Every ET, NET and CC lesion of the ground truth is large enough for
the BraTS scorer to score (at least ``MIN_SUBREGION_MM3`` and more than 10 voxels; smaller ones take the label
around them), so a perfect prediction scores a lesion-wise Dice of 1 in every region. Drawn subregions that come
out that small count as absent: at 2.5 mm, ET is absent in about 16 % of cases and CC in 28 % (200 seeds).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from pedtumorseg.conventions import BRATS_SUFFIXES, CC, CHANNELS, ED, ET, NET, SEG_SUFFIX
from pedtumorseg.geometry import Geometry
from pedtumorseg.outputs.images import write_image, write_labels
from pedtumorseg.evaluation.metrics import MIN_PRED_LESION_VOXELS, dilation_lesions

#: centroid (LPS, mm) of the brain mask of the real case BraTS-GLI-00001-000 and of the MNI152 brain mask
_BRATS_BRAIN_CENTROID = np.array([119.93, -111.50, 80.61])
_MNI_BRAIN_CENTROID = np.array([0.0, 22.0, 9.55])

_DIRECTION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
_BRATS_ORIGIN = (0.0, -239.0, 0.0)
_BRATS_SIZE = (240, 240, 155)

P_NO_ET, P_NO_CC, P_NO_ED, P_TWO_LESIONS = 0.08, 0.12, 0.50, 0.15
#: ET, NET and CC lesions below this volume (or of <= 10 voxels) take the surrounding label
MIN_SUBREGION_MM3 = 200.0

# mean intensity per tissue and modality (t1, t1ce, t2, flair), int16-like scale of real BraTS
_TISSUE = {
    "wm": (900, 950, 520, 520),
    "gm": (640, 690, 760, 680),
    "csf": (250, 280, 1850, 160),
    NET: (520, 560, 1150, 930),
    ET: (560, 1650, 980, 880),
    CC: (200, 230, 2050, 420),
    ED: (600, 640, 1300, 1150),
}


def geometry_for(size: str) -> Geometry:
    """The BraTS grid (``brats``) or the same field of view at 2.5 mm (``small``)."""
    if size == "brats":
        return Geometry(_BRATS_SIZE, (1.0, 1.0, 1.0), _BRATS_ORIGIN, _DIRECTION)
    if size == "small":
        sp = 2.5
        n = (96, 96, 62)
        # keep the outer corner of the first voxel where the 1 mm grid's is: origin - 0.5 mm
        origin = tuple(o - 0.5 + sp / 2 for o in _BRATS_ORIGIN)
        return Geometry(n, (sp, sp, sp), origin, _DIRECTION)
    raise ValueError(f"unknown phantom size {size!r} (use 'small' or 'brats')")


@dataclass
class Phantom:
    case_id: str
    images: dict  # channel -> int16 (z, y, x)
    seg: np.ndarray  # uint8 (z, y, x)
    geometry: Geometry


def _nifti_to_sitk(img) -> sitk.Image:
    """nibabel RAS image -> SimpleITK LPS image (float32)."""
    data = np.asarray(img.get_fdata(dtype=np.float32))
    aff = np.asarray(img.affine, float)
    flip = np.diag([-1.0, -1.0, 1.0])
    rot = flip @ aff[:3, :3]
    spacing = np.linalg.norm(rot, axis=0)
    out = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    out.SetSpacing(tuple(float(s) for s in spacing))
    out.SetDirection(tuple(float(v) for v in (rot / spacing).ravel()))
    out.SetOrigin(tuple(float(v) for v in flip @ aff[:3, 3]))
    return out


@functools.lru_cache(maxsize=1)
def _templates() -> tuple[sitk.Image, sitk.Image, sitk.Image]:
    from nilearn import datasets

    return (_nifti_to_sitk(datasets.load_mni152_gm_template()),
            _nifti_to_sitk(datasets.load_mni152_wm_template()),
            _nifti_to_sitk(datasets.load_mni152_brain_mask()))


def template_transform(rng: np.random.Generator | None) -> sitk.AffineTransform:
    """The map from a point of the BraTS grid (LPS mm) to the MNI152 template point it shows: the centroid
    translation plus, with ``rng``, a mild random rotation (up to 6 degrees), scale and shift."""
    if rng is None:  # the template brain as it is
        angles, scale, shift = np.zeros(3), np.ones(3), np.zeros(3)
    else:
        angles = np.deg2rad(rng.uniform(-6, 6, 3))
        scale = rng.uniform(0.9, 1.06, 3)
        shift = rng.uniform(-3, 3, 3)
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    matrix = rz @ ry @ rx @ np.diag(1.0 / scale)  # output point -> template point
    tf = sitk.AffineTransform(3)
    tf.SetMatrix(tuple(matrix.ravel()))
    tf.SetCenter(tuple(_BRATS_BRAIN_CENTROID))
    tf.SetTranslation(tuple(_MNI_BRAIN_CENTROID - _BRATS_BRAIN_CENTROID + shift))
    return tf


def _anatomy(geometry: Geometry, rng: np.random.Generator | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Tissue fractions (gm, wm, csf) and a boolean brain mask on ``geometry``, mildly deformed."""
    return anatomy_with(geometry, template_transform(rng))


def anatomy_with(geometry: Geometry, tf: sitk.Transform) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Tissue fractions (gm, wm, csf) and a boolean brain mask on ``geometry`` through ``tf`` (grid -> MNI)."""
    gm_t, wm_t, mask_t = _templates()
    ref = geometry.to_image(np.zeros(geometry.shape_zyx, np.uint8))
    out = []
    for t in (gm_t, wm_t, mask_t):
        r = sitk.Resample(t, ref, tf, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        out.append(sitk.GetArrayFromImage(r))
    gm, wm, m = out
    mask = m > 0.5
    gm = np.where(mask, np.clip(gm, 0, 1), 0)
    wm = np.where(mask, np.clip(wm, 0, 1), 0)
    tot = gm + wm
    over = tot > 1
    gm[over] /= tot[over]
    wm[over] /= tot[over]
    csf = np.where(mask, 1.0 - gm - wm, 0.0)
    return gm.astype(np.float32), wm.astype(np.float32), csf.astype(np.float32), mask


def _smooth_noise(rng: np.random.Generator, shape, sigma_vox: float) -> np.ndarray:
    n = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_vox, mode="wrap")
    return n / (n.std() + 1e-6)


def _tumor_labels(geometry: Geometry, mask: np.ndarray, parenchyma: np.ndarray,
                  rng: np.random.Generator) -> np.ndarray:
    """Label map of 1-2 lesions: ED shell, NET core, CC cysts inside, ET rim or nodules."""
    has_et, has_cc, has_ed = rng.random() >= P_NO_ET, rng.random() >= P_NO_CC, rng.random() >= P_NO_ED
    n_lesions = 2 if rng.random() < P_TWO_LESIONS else 1
    sp = np.asarray(geometry.spacing_zyx, float)
    seg = np.zeros(geometry.shape_zyx, np.uint8)
    # depth below the brain surface, on every second voxel (only used to pick lesion centres in deep parenchyma)
    depth_mm = ndimage.distance_transform_edt(mask[::2, ::2, ::2], sampling=2 * sp)
    deep = parenchyma[::2, ::2, ::2] > 0.5
    for lesion in range(n_lesions):
        _add_lesion(seg, mask, depth_mm, deep, sp, lesion, (has_et, has_cc, has_ed), rng)
    drop_unscoreable_subregions(seg, float(np.prod(sp)))
    return seg


def _add_lesion(seg: np.ndarray, mask: np.ndarray, depth_mm: np.ndarray, deep: np.ndarray, sp: np.ndarray,
                lesion: int, subregions: tuple[bool, bool, bool], rng: np.random.Generator) -> None:
    """Draw lesion number ``lesion`` into ``seg`` (in place): a noisy ellipsoid core (NET) with its edema shell,
    cysts (first lesion only) and an enhancing rim or nodules, as ``subregions`` (ET, CC, ED) allow."""
    has_et, has_cc, has_ed = subregions
    shape = seg.shape
    radius = float(rng.choice([rng.uniform(7, 13), rng.uniform(12, 26)], p=[0.3, 0.7]))
    if lesion > 0:
        radius *= 0.6
    ok = np.argwhere((depth_mm > radius * 0.9 + 4) & deep)
    if len(ok) == 0:
        ok = np.argwhere(depth_mm >= depth_mm.max() * 0.8)
    centre = np.minimum(ok[rng.integers(len(ok))] * 2, np.asarray(shape) - 1)
    axes = radius * rng.uniform(0.75, 1.25, 3)
    ed_extra = rng.uniform(0.35, 0.9) if has_ed else 0.0
    reach = axes.max() * (1.6 + ed_extra)
    half = np.ceil(reach / sp).astype(int)
    lo = np.maximum(centre - half, 0)
    hi = np.minimum(centre + half + 1, shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    zz, yy, xx = [(np.arange(a, b) - c) * s for a, b, c, s in zip(lo, hi, centre, sp)]
    rot = _random_rotation(rng)
    grid = np.stack(np.meshgrid(zz, yy, xx, indexing="ij"), -1) @ rot.T
    d = np.sqrt(((grid / axes) ** 2).sum(-1))
    bshape = d.shape
    level = d + 0.22 * _smooth_noise(rng, bshape, max(1.0, 0.35 * radius / sp.mean()))
    inside = mask[box]
    tc = (level < 1.0) & inside
    local = np.zeros(bshape, np.uint8)
    if has_ed:
        ed_level = d + 0.35 * _smooth_noise(rng, bshape, max(1.0, 0.5 * radius / sp.mean()))
        local[(ed_level < 1.0 + ed_extra) & inside] = ED
    local[tc] = NET
    if has_cc and lesion == 0:
        tc_inner = ndimage.binary_erosion(tc, np.ones((3, 3, 3), bool))  # cysts never touch the outside
        for _ in range(int(rng.integers(1, 3))):
            off = rng.uniform(-0.35, 0.35, 3) * axes
            cr = radius * rng.uniform(0.3, 0.5) * rng.uniform(0.8, 1.2, 3)
            cd = np.sqrt((((grid - off) / cr) ** 2).sum(-1))
            cd = cd + 0.12 * _smooth_noise(rng, bshape, max(1.0, 0.2 * radius / sp.mean()))
            local[(cd < 1.0) & tc_inner & (level < 0.8)] = CC
    if has_et and (lesion == 0 or rng.random() < 0.5):
        et = _enhancing(tc, level, d, grid, axes, radius, sp, bshape, rng)
        local[et & (local != CC)] = ET
    prev = seg[box].copy()
    region = np.where(local > 0, local, prev)
    # an earlier lesion's core is never overwritten by a later lesion's edema
    keep = (prev > 0) & (prev != ED) & (local == ED)
    region[keep] = prev[keep]
    seg[box] = region


def _enhancing(tc, level, d, grid, axes, radius: float, sp, bshape, rng: np.random.Generator) -> np.ndarray:
    """The enhancing part of a core ``tc``: a partly broken rim, or nodules inside or at its edge."""
    thick = max(3.0, rng.uniform(0.12, 0.3) * radius) / radius
    if rng.random() < 0.6:  # rim, partly broken
        gate = _smooth_noise(rng, bshape, max(1.0, 0.3 * radius / sp.mean())) > rng.uniform(-1.0, 0.2)
        et = tc & (level > 1.0 - thick) & gate
    else:  # nodules inside or at the edge of the core
        et = np.zeros(bshape, bool)
        for _ in range(int(rng.integers(1, 4))):
            off = rng.uniform(-0.6, 0.6, 3) * axes
            nr = max(3.0, radius * rng.uniform(0.2, 0.35))
            et |= np.sqrt(((grid - off) ** 2).sum(-1)) < nr
        et &= tc
    if not et.any():  # guarantee the drawn subregion exists at this resolution
        et = tc & (d < max(d[tc].min() * 1.01, 1e-6) + thick) if tc.any() else et
    return et


def drop_unscoreable_subregions(seg: np.ndarray, voxel_mm3: float) -> None:
    """In place: ET, NET and CC lesions (as the BraTS scorer delimits them) smaller than ``MIN_SUBREGION_MM3`` or
    of <= ``MIN_PRED_LESION_VOXELS`` voxels take the label that surrounds them (most of their one-voxel shell).

    The scorer deletes predicted lesions of <= 10 voxels, so a ground-truth lesion that small could not be scored
    even by a perfect prediction (at 2.5 mm, 10 voxels are 156 mm^3); and a reader does not outline a one-voxel
    cyst. A case whose only ET or CC is that small then simply has none of it.
    """
    min_voxels = max(MIN_PRED_LESION_VOXELS + 1, int(np.ceil(MIN_SUBREGION_MM3 / voxel_mm3)))
    for label in (ET, CC, NET):
        mask = seg == label
        if not mask.any():
            continue
        lesions, n = dilation_lesions(mask)
        sizes = np.bincount(lesions.ravel(), minlength=n + 1)
        for k in np.flatnonzero(sizes[1:] < min_voxels) + 1:
            component = (lesions == k) & mask
            shell = ndimage.binary_dilation(component, np.ones((3, 3, 3), bool)) & ~component
            around = np.bincount(seg[shell], minlength=5)
            around[label] = 0
            seg[component] = np.argmax(around)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def _bias_field(rng: np.random.Generator, shape) -> np.ndarray:
    coords = [np.linspace(-1, 1, n, dtype=np.float32) for n in shape]
    z, y, x = np.meshgrid(*coords, indexing="ij", sparse=True)
    c = rng.normal(0, 0.08, 6)
    log_b = c[0] * x + c[1] * y + c[2] * z + c[3] * x * x + c[4] * y * y + c[5] * x * y
    return np.exp(log_b).astype(np.float32)


@functools.lru_cache(maxsize=2)
def _undeformed_anatomy(size: str):
    return _anatomy(geometry_for(size), None)


def make_labels(seed: int, size: str = "small") -> np.ndarray:
    """Fast label layout for ``seed``: the tumor draws of ``make_phantom(seed, size)`` placed in the
    undeformed template brain (no per-case anatomy deformation, no intensities). For statistics over many
    seeds; the layout is close to, not identical with, the phantom's."""
    geometry = geometry_for(size)
    _, tumor_rng, _ = streams(seed)
    gm, wm, _, mask = _undeformed_anatomy(size)
    return _tumor_labels(geometry, mask, gm + wm, tumor_rng)


def streams(seed: int) -> tuple[np.random.Generator, np.random.Generator, np.random.Generator]:
    """Independent generators for anatomy, tumor and intensities, so each part's draws stand alone."""
    rng = np.random.default_rng(seed)
    return tuple(np.random.default_rng(s) for s in rng.integers(0, 2**63, 3))


def make_phantom(seed: int, size: str = "small") -> Phantom:
    """A deterministic synthetic case for ``seed`` (numpy Generator) on the ``small`` or ``brats`` grid."""
    geometry = geometry_for(size)
    anat_rng, tumor_rng, intensity_rng = streams(seed)
    gm, wm, csf, mask = _anatomy(geometry, anat_rng)
    seg = _tumor_labels(geometry, mask, gm + wm, tumor_rng)
    case_id = f"BraTS-PED-S{seed:05d}-000"
    sigma_blur = 0.6 / np.asarray(geometry.spacing_zyx)
    tumor_tex = _smooth_noise(intensity_rng, seg.shape, 1.5)
    images = {}
    for ch_index, ch in enumerate(CHANNELS):
        vals = {k: v[ch_index] * (1 + intensity_rng.normal(0, 0.05)) for k, v in _TISSUE.items()}
        img = gm * vals["gm"] + wm * vals["wm"] + csf * vals["csf"]
        for lab in (ED, NET, CC, ET):
            sel = seg == lab
            img[sel] = vals[lab] * (1 + 0.06 * tumor_tex[sel])
        img = ndimage.gaussian_filter(img, sigma_blur)
        img *= _bias_field(intensity_rng, img.shape) * intensity_rng.uniform(0.8, 1.25)
        sigma = 0.025 * vals["wm"]
        n1 = intensity_rng.standard_normal(img.shape, dtype=np.float32) * sigma
        n2 = intensity_rng.standard_normal(img.shape, dtype=np.float32) * sigma
        img = np.sqrt((img + n1) ** 2 + n2 ** 2)
        img[~mask] = 0
        images[ch] = np.clip(np.rint(img), 0, 32767).astype(np.int16)
    return Phantom(case_id, images, seg, geometry)


def write_phantom(phantom: Phantom, out_dir: str | os.PathLike) -> Path:
    """Write ``<out_dir>/<ID>/<ID>-t1n.nii.gz`` ... ``-seg.nii.gz``; returns the case folder."""
    folder = Path(out_dir) / phantom.case_id
    folder.mkdir(parents=True, exist_ok=True)
    for ch in CHANNELS:
        write_image(phantom.images[ch], phantom.geometry, folder / f"{phantom.case_id}-{BRATS_SUFFIXES[ch]}.nii.gz")
    write_labels(phantom.seg, phantom.geometry, folder / f"{phantom.case_id}-{SEG_SUFFIX}.nii.gz")
    return folder


def write_phantoms(out_dir: str | os.PathLike, n: int, size: str = "brats", seed: int = 0) -> list[Path]:
    """Write ``n`` phantom cases; case k uses seed ``seed + k``."""
    return [write_phantom(make_phantom(seed + k, size), out_dir) for k in range(n)]
