"""Tumors that grow the way anatomy lets them: front propagation with tissue-dependent speed, and mass effect.

``build_anatomy`` gives the clean phantom's MNI152 anatomy (tissue fractions and brain mask through the same
per-case affine, ``clean.template_transform``) plus what growth needs: every voxel's template coordinate (LPS mm,
so the midline is template x = 0 and the falx is the plane between the hemispheres), its depth below the brain
surface, and the ventricles (CSF-dominated voxels at least 8 mm deep, the sulcal CSF being near the surface).

``arrival_times`` runs SimpleITK's fast marching (``FastMarchingImageFilter``) from a seed with a speed that is
high in white matter (gliomas infiltrate along tracts), low in grey matter, and zero in CSF, outside the brain and,
for a lesion of one hemisphere, on the other side of the falx; a smooth random field modulates it so fronts are
irregular. A region is then "the first N voxels reached" for a target volume. ``push`` is the mass effect: a
smooth radial displacement away from a lesion's core that fades with distance and towards the skull, applied to
the tissue maps (and to labels that move with tissue, as infiltrating edema does).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from pedtumorseg.arrays import bounding_box
from pedtumorseg.geometry import Geometry
from pedtumorseg.phantoms.clean import anatomy_with, template_transform

#: speed of the growth front per unit tissue fraction (white matter 1): gliomas spread along white matter
SPEED = {"wm": 1.0, "gm": 0.22, "csf": 0.0}
#: edema follows white matter tracts even more selectively (finger-like, sparing the cortex)
EDEMA_SPEED = {"wm": 1.0, "gm": 0.05, "csf": 0.0}
#: no front crosses within this distance (mm) of the template midline for a one-hemisphere lesion
FALX_HALF_WIDTH_MM = 1.5
VENTRICLE_DEPTH_MM = 8.0


@dataclass
class Anatomy:
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    mask: np.ndarray  # bool brain
    mni: np.ndarray  # (3, z, y, x) template coordinate (LPS mm: x right-to-left, y anterior-to-posterior)
    depth_mm: np.ndarray  # distance below the brain surface
    ventricles: np.ndarray  # bool
    spacing_zyx: tuple


def _template_coordinates(geometry: Geometry, tf: sitk.AffineTransform) -> np.ndarray:
    """(3, z, y, x): the template point (LPS mm) of every voxel of ``geometry`` under the affine ``tf``."""
    z, y, x = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in geometry.shape_zyx], indexing="ij")
    direction = np.asarray(geometry.direction, float).reshape(3, 3)
    index = np.stack([x, y, z], -1) * np.asarray(geometry.spacing, np.float32)
    points = index @ direction.T.astype(np.float32) + np.asarray(geometry.origin, np.float32)
    matrix = np.asarray(tf.GetMatrix(), float).reshape(3, 3).astype(np.float32)
    centre = np.asarray(tf.GetCenter(), np.float32)
    moved = (points - centre) @ matrix.T + centre + np.asarray(tf.GetTranslation(), np.float32)
    return np.moveaxis(moved, -1, 0)


def build_anatomy(geometry: Geometry, rng: np.random.Generator) -> Anatomy:
    """The per-case anatomy: the clean phantom's tissue maps through a random affine, and growth's maps."""
    tf = template_transform(rng)
    gm, wm, csf, mask = anatomy_with(geometry, tf)
    sp = geometry.spacing_zyx
    depth = ndimage.distance_transform_edt(mask, sampling=sp).astype(np.float32)
    ventricles = (csf > 0.5) & (depth > VENTRICLE_DEPTH_MM)
    ventricles = ndimage.binary_opening(ventricles)
    return Anatomy(gm, wm, csf, mask, _template_coordinates(geometry, tf), depth, ventricles, tuple(sp))


def smooth_field(rng: np.random.Generator, shape, sigma_vox) -> np.ndarray:
    """Unit-variance Gaussian random field of correlation length ``sigma_vox`` (voxels, scalar or per axis)."""
    n = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_vox, mode="wrap")
    return n / (n.std() + 1e-6)


def speed_map(anatomy: Anatomy, allowed: np.ndarray, speeds: dict, rng: np.random.Generator,
              roughness: float) -> np.ndarray:
    """Front speed: tissue-weighted, modulated by exp(roughness * smooth noise), zero outside ``allowed``."""
    speed = speeds["wm"] * anatomy.wm + speeds["gm"] * anatomy.gm + speeds["csf"] * anatomy.csf
    sigma = 6.0 / np.asarray(anatomy.spacing_zyx)
    speed = speed * np.exp(roughness * smooth_field(rng, speed.shape, sigma))
    speed[~allowed | (anatomy.csf > 0.5) | anatomy.ventricles] = 0.0
    return speed.astype(np.float32)


def allowed_region(anatomy: Anatomy, seed_mni: np.ndarray, hemispheric: bool, region: str) -> np.ndarray:
    """Where a lesion may grow: inside the brain; for a ``hemispheric`` lesion only its side of the falx;
    ``region`` "supra" (above the tentorium), "infra" (posterior fossa: brainstem and cerebellum) or "any"."""
    allowed = anatomy.mask.copy()
    x, y, z = anatomy.mni
    if hemispheric:
        allowed &= (np.sign(x) == np.sign(seed_mni[0])) & (np.abs(x) > FALX_HALF_WIDTH_MM)
    # the tentorium, roughly: a plane through template (y=40, z=-12) and (y=90, z=2) (LPS: y grows posteriorly)
    tentorium = -12.0 + (y - 40.0) * 0.28
    if region == "infra":
        allowed &= (z < tentorium) & (y > 5.0)
    elif region == "supra":
        allowed &= z > tentorium + 2.0
    return allowed


def arrival_times(speed: np.ndarray, seeds: np.ndarray, spacing_zyx, stop: float = 1e4) -> np.ndarray:
    """Fast-marching arrival time (mm at unit speed) from the voxel indices ``seeds`` (n, 3) in (z, y, x)."""
    image = sitk.GetImageFromArray(np.maximum(speed, 0.0).astype(np.float32))
    image.SetSpacing(tuple(float(s) for s in spacing_zyx[::-1]))
    march = sitk.FastMarchingImageFilter()
    march.SetTrialPoints([tuple(int(v) for v in s[::-1]) for s in seeds])
    march.SetStoppingValue(stop)
    times = sitk.GetArrayFromImage(march.Execute(image))
    times[speed <= 0] = np.inf
    times[times >= stop * 0.999] = np.inf
    return times


def first_reached(times: np.ndarray, n_voxels: int) -> np.ndarray:
    """The ``n_voxels`` voxels reached first (fewer if fewer are reachable)."""
    finite = np.isfinite(times)
    n = int(min(n_voxels, finite.sum()))
    if n <= 0:
        return np.zeros(times.shape, bool)
    cut = np.partition(times[finite], n - 1)[n - 1]
    return finite & (times <= cut)


def push(core: np.ndarray, anatomy: Anatomy, strength_mm: float) -> np.ndarray:
    """Mass effect of ``core``: a displacement field (3, z, y, x) in voxels, as ``backward`` offsets (the output
    voxel x shows the tissue at x - u). Radial from the core's centroid, ``strength_mm`` at the core's radius,
    decaying as (R / r)^2 beyond it and fading to zero within 10 mm of the brain surface (the skull holds)."""
    sp = np.asarray(anatomy.spacing_zyx, float)
    if not core.any() or strength_mm <= 0:
        return np.zeros((3,) + core.shape, np.float32)
    centre = np.argwhere(core).mean(0)
    radius = (core.sum() * np.prod(sp) * 3 / (4 * np.pi)) ** (1 / 3)
    grids = np.meshgrid(*[(np.arange(n) - c) * s for n, c, s in zip(core.shape, centre, sp)], indexing="ij",
                        sparse=True)
    r = np.sqrt(sum(g ** 2 for g in grids)) + 1e-3
    magnitude = strength_mm * np.where(r < radius, r / radius, (radius / r) ** 2)
    magnitude *= np.clip(anatomy.depth_mm / 10.0, 0.0, 1.0)
    field = np.stack([np.broadcast_to(g / r * magnitude / s, core.shape) for g, s in zip(grids, sp)])
    return ndimage.gaussian_filter(field, (0, 1, 1, 1)).astype(np.float32)


def warp(volume: np.ndarray, field: np.ndarray, order: int = 1) -> np.ndarray:
    """``volume`` sampled at x - u(x) (``push``'s field), nearest neighbour for labels (``order`` 0); only the
    box where the field moves anything by 0.02 voxels or more is resampled."""
    box = bounding_box(np.abs(field).max(0) >= 0.02, margin=2)
    out = volume.copy()
    if box is None:
        return out
    offset = np.asarray([b.start for b in box], np.float32).reshape(3, 1, 1, 1)
    coords = np.indices(out[box].shape, dtype=np.float32) + offset - field[(slice(None),) + box]
    out[box] = ndimage.map_coordinates(volume, coords, order=order, mode="nearest").astype(volume.dtype)
    return out
