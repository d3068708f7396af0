"""The kinds of lesion a realistic phantom draws, grown by ``tumor_growth`` in the case's anatomy.

Each kind returns an *appearance class* map (finer than the labels: necrosis and solid non-enhancing tumor are
both NET but look different; mimics look like disease and carry no label):

- ``hgg``: ring-enhancing high-grade glioma of one hemisphere: necrotic core, an enhancing rim (partly broken,
  solid non-enhancing tumor where it is), sometimes a cyst, edema spreading along white matter, strong mass effect.
- ``lgg``: diffuse low-grade glioma: solid non-enhancing tumor, rarely a small enhancing focus or cyst, little edema.
- ``dipg``: diffuse midline glioma of the pons: non-enhancing, expanding the pons, crossing its midline.
- ``pilocytic``: a round cyst with an enhancing mural nodule, mostly in a cerebellar hemisphere.
- ``solid``: a solid, mostly enhancing tumor (medulloblastoma/ependymoma-like), often in the posterior fossa.

Volumes: the four real labeled cases have tumor cores of 9.5 to 108 cm3 and a whole tumor 1.6 to 4.3 times the
core (``REALISM.md``); the hgg draws span that, the other kinds are smaller, as pediatric tumors often are.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from pedtumorseg.arrays import bounding_box
from pedtumorseg.phantoms.tumor_growth import (EDEMA_SPEED, SPEED, Anatomy, allowed_region, arrival_times,
                                               first_reached, smooth_field, speed_map)

# appearance classes (``CLASS_LABEL`` maps them to the labels of the ground truth)
A_ET, A_NET, A_CC, A_ED, A_NECROSIS, A_WMH, A_VESSEL = 1, 2, 3, 4, 5, 6, 7
CLASS_LABEL = np.array([0, 1, 2, 3, 4, 2, 0, 0], np.uint8)
KINDS = ("hgg", "lgg", "dipg", "pilocytic", "solid")
#: template points (LPS mm) where posterior-fossa kinds start: pons, vermis / fourth ventricle, cerebellar hemisphere
PONS = np.array([0.0, 27.0, -32.0])
VERMIS = np.array([0.0, 58.0, -26.0])
CEREBELLUM = np.array([22.0, 60.0, -32.0])


def _seed_near(anatomy: Anatomy, allowed: np.ndarray, target: np.ndarray | None, rng: np.random.Generator,
               min_depth: float) -> np.ndarray | None:
    """A voxel (z, y, x) in white-matter-rich ``allowed`` tissue, the nearest to ``target`` (template mm, with a
    few mm of jitter) or a random one; None when there is none."""
    ok = allowed & (anatomy.wm > 0.45) & (anatomy.depth_mm > min_depth) & ~anatomy.ventricles
    idx = np.argwhere(ok)
    if len(idx) == 0:
        return None
    if target is None:
        return idx[rng.integers(len(idx))]
    goal = target + rng.normal(0, 3.0, 3)
    d = sum((anatomy.mni[k][tuple(idx.T)] - goal[k]) ** 2 for k in range(3))
    return idx[int(np.argmin(d))]


def _grow(anatomy: Anatomy, allowed: np.ndarray, seed, volume_mm3: float, speeds: dict, roughness: float,
          rng: np.random.Generator) -> np.ndarray:
    """The region of ``volume_mm3`` a front from ``seed`` reaches first, closed and without holes."""
    speed = speed_map(anatomy, allowed, speeds, rng, roughness)
    times = arrival_times(speed, np.asarray([seed]), anatomy.spacing_zyx)
    region = first_reached(times, int(volume_mm3 / np.prod(anatomy.spacing_zyx)))
    region = ndimage.binary_closing(region, iterations=1) & allowed
    return ndimage.binary_fill_holes(region) & allowed & ~anatomy.ventricles


def _edema(anatomy: Anatomy, allowed: np.ndarray, core: np.ndarray, ratio: float,
           rng: np.random.Generator) -> np.ndarray:
    """Edema of ``ratio`` times the core's volume, grown from the core's surface along white matter."""
    if ratio <= 0 or not core.any():
        return np.zeros(core.shape, bool)
    speed = speed_map(anatomy, allowed | core, EDEMA_SPEED, rng, 0.5)
    surface = core & ~ndimage.binary_erosion(core)
    seeds = np.argwhere(surface)
    if len(seeds) > 4000:
        seeds = seeds[rng.choice(len(seeds), 4000, replace=False)]
    times = arrival_times(speed, seeds, anatomy.spacing_zyx)
    times[core] = -1.0
    grown = first_reached(times, int(core.sum() * (1 + ratio)))
    return grown & ~core


def _inner_depth(core: np.ndarray, spacing_zyx, rng: np.random.Generator, wobble_mm: float) -> np.ndarray:
    """Depth (mm) inside ``core`` (0 outside), plus a smooth random wobble so shells are irregular."""
    depth = np.zeros(core.shape, np.float32)
    if core.any():
        box = bounding_box(core, margin=1)
        depth[box] = ndimage.distance_transform_edt(core[box], sampling=spacing_zyx)
    return depth + wobble_mm * smooth_field(rng, core.shape, 3.0 / np.asarray(spacing_zyx))


def _balls(shape, spacing_zyx, centres, radii) -> np.ndarray:
    """Union of balls (centres in voxels, radii in mm)."""
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing_zyx)], indexing="ij", sparse=True)
    out = np.zeros(shape, bool)
    for c, r in zip(centres, radii):
        cm = np.asarray(c) * np.asarray(spacing_zyx)
        out |= sum((g - v) ** 2 for g, v in zip(grids, cm)) < r * r
    return out


def hgg(anatomy: Anatomy, rng: np.random.Generator, small: bool = False) -> tuple[np.ndarray, float] | None:
    """A ring-enhancing high-grade glioma; returns (classes, mass-effect strength mm) or None (no seed)."""
    supra = allowed_region(anatomy, np.zeros(3), False, "supra")
    seed = _seed_near(anatomy, supra & (np.abs(anatomy.mni[0]) > 12), None, rng, 18.0)
    if seed is None:
        return None
    allowed = allowed_region(anatomy, anatomy.mni[(slice(None),) + tuple(seed)], True, "supra")
    volume = np.exp(rng.uniform(np.log(3e3), np.log(1.2e4))) if small else np.exp(rng.uniform(np.log(8e3), np.log(1.1e5)))
    core = _grow(anatomy, allowed, seed, volume, SPEED, rng.uniform(0.3, 0.8), rng)
    classes = np.zeros(core.shape, np.uint8)
    depth = _inner_depth(core, anatomy.spacing_zyx, rng, 1.2)
    rim = rng.uniform(2.5, 7.0)
    classes[core] = A_NECROSIS
    gate = smooth_field(rng, core.shape, 4.0 / np.asarray(anatomy.spacing_zyx)) > rng.uniform(-1.5, 0.0)
    classes[core & (depth < rim) & gate] = A_ET
    classes[core & (depth < rim) & ~gate] = A_NET
    solid = smooth_field(rng, core.shape, 5.0 / np.asarray(anatomy.spacing_zyx)) > rng.uniform(0.3, 1.5)
    classes[core & (depth >= rim) & solid] = A_NET
    if rng.random() < 0.3:  # a cyst in the core
        inner = np.argwhere(core & (depth > rim + 2))
        if len(inner):
            c = inner[rng.integers(len(inner))]
            classes[_balls(core.shape, anatomy.spacing_zyx, [c], [rng.uniform(4, 10)]) & core & (depth > rim)] = A_CC
    ed = _edema(anatomy, allowed, core, rng.uniform(0.5, 3.0) if rng.random() < 0.92 else 0.0, rng)
    classes[ed] = A_ED
    return classes, rng.uniform(0.15, 0.35) * (volume * 3 / (4 * np.pi)) ** (1 / 3)


def lgg(anatomy: Anatomy, rng: np.random.Generator) -> tuple[np.ndarray, float] | None:
    """A diffuse low-grade glioma of one hemisphere (or, 25 %, of the posterior fossa)."""
    region = "infra" if rng.random() < 0.25 else "supra"
    where = allowed_region(anatomy, np.zeros(3), False, region)
    seed = _seed_near(anatomy, where & (np.abs(anatomy.mni[0]) > 8), CEREBELLUM * [rng.choice([-1, 1]), 1, 1]
                      if region == "infra" else None, rng, 12.0)
    if seed is None:
        return None
    allowed = allowed_region(anatomy, anatomy.mni[(slice(None),) + tuple(seed)], True, region)
    volume = np.exp(rng.uniform(np.log(5e3), np.log(7e4)))
    core = _grow(anatomy, allowed, seed, volume, SPEED, rng.uniform(0.6, 1.0), rng)
    classes = np.where(core, A_NET, 0).astype(np.uint8)
    inner = np.argwhere(ndimage.binary_erosion(core, iterations=2))
    if rng.random() < 0.2 and len(inner):
        c = inner[rng.integers(len(inner))]
        classes[_balls(core.shape, anatomy.spacing_zyx, [c], [rng.uniform(4, 8)]) & core] = A_ET
    if rng.random() < 0.15 and len(inner):
        c = inner[rng.integers(len(inner))]
        classes[_balls(core.shape, anatomy.spacing_zyx, [c], [rng.uniform(4, 9)]) & core] = A_CC
    classes[_edema(anatomy, allowed, core, rng.uniform(0.1, 0.6) if rng.random() < 0.5 else 0.0, rng)] = A_ED
    return classes, rng.uniform(0.0, 0.12) * (volume * 3 / (4 * np.pi)) ** (1 / 3)


def dipg(anatomy: Anatomy, rng: np.random.Generator) -> tuple[np.ndarray, float] | None:
    """A diffuse midline glioma of the pons: it fills and expands the pons across its midline."""
    x, y, z = anatomy.mni
    pons = anatomy.mask & (np.abs(x) < 18) & (y > 8) & (y < 45) & (z > -48) & (z < -14)
    seed = _seed_near(anatomy, pons, PONS, rng, 5.0)
    if seed is None:
        return None
    volume = rng.uniform(8e3, 3e4)
    core = _grow(anatomy, pons, seed, volume, {"wm": 1.0, "gm": 0.6, "csf": 0.0}, rng.uniform(0.2, 0.5), rng)
    classes = np.where(core, A_NET, 0).astype(np.uint8)
    inner = np.argwhere(ndimage.binary_erosion(core, iterations=2))
    if rng.random() < 0.3 and len(inner):
        c = inner[rng.integers(len(inner))]
        classes[_balls(core.shape, anatomy.spacing_zyx, [c], [rng.uniform(3, 7)]) & core] = A_ET
    if rng.random() < 0.2 and len(inner):
        c = inner[rng.integers(len(inner))]
        classes[_balls(core.shape, anatomy.spacing_zyx, [c], [rng.uniform(3, 6)]) & core] = A_NECROSIS
    classes[_edema(anatomy, pons | (z < -10), core, rng.uniform(0.1, 0.4) if rng.random() < 0.3 else 0.0,
                   rng)] = A_ED
    return classes, rng.uniform(0.2, 0.4) * (volume * 3 / (4 * np.pi)) ** (1 / 3)


def pilocytic(anatomy: Anatomy, rng: np.random.Generator) -> tuple[np.ndarray, float] | None:
    """A cystic pilocytic-like tumor: a round fluid cyst (a cyst is round: fluid pressure) with an enhancing mural
    nodule on its wall, sometimes a thin enhancing wall; in a cerebellar hemisphere (70 %) or a cerebral one."""
    infra = rng.random() < 0.7
    region = "infra" if infra else "supra"
    where = allowed_region(anatomy, np.zeros(3), False, region)
    target = CEREBELLUM * [rng.choice([-1, 1]), 1, 1] if infra else None
    seed = _seed_near(anatomy, where & (np.abs(anatomy.mni[0]) > 6), target, rng, 14.0)
    if seed is None:
        return None
    allowed = allowed_region(anatomy, anatomy.mni[(slice(None),) + tuple(seed)], True, region) & ~anatomy.ventricles
    sp = np.asarray(anatomy.spacing_zyx)
    radius = rng.uniform(9, 22)
    wobble = 0.08 * radius * smooth_field(rng, allowed.shape, 0.5 * radius / sp)
    grids = np.meshgrid(*[(np.arange(n) - c) * s for n, c, s in zip(allowed.shape, seed, sp)], indexing="ij",
                        sparse=True)
    r = np.sqrt(sum(g ** 2 for g in grids))
    cyst = (r + wobble < radius) & allowed
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    nodule_centre = seed + direction * radius / sp
    nodule = _balls(cyst.shape, sp, [nodule_centre], [rng.uniform(0.3, 0.6) * radius]) & allowed
    classes = np.zeros(cyst.shape, np.uint8)
    classes[cyst] = A_CC
    if rng.random() < 0.3:  # a thin enhancing wall
        classes[cyst & ~ndimage.binary_erosion(cyst, iterations=1)] = A_ET
    depth = _inner_depth(nodule, sp, rng, 1.0)
    classes[nodule] = A_ET if rng.random() < 0.85 else A_NET
    classes[nodule & (depth > rng.uniform(2.0, 6.0)) & (rng.random() < 0.5)] = A_NET
    core = classes > 0
    classes[_edema(anatomy, allowed, core, rng.uniform(0.05, 0.4) if rng.random() < 0.5 else 0.0, rng)] = A_ED
    return classes, rng.uniform(0.2, 0.4) * radius


def solid(anatomy: Anatomy, rng: np.random.Generator) -> tuple[np.ndarray, float] | None:
    """A solid, mostly enhancing tumor with patches of non-enhancing tumor and small necrosis; at the vermis /
    fourth ventricle (50 %) or in a hemisphere."""
    infra = rng.random() < 0.5
    region = "infra" if infra else "supra"
    where = allowed_region(anatomy, np.zeros(3), False, region)
    seed = _seed_near(anatomy, where, VERMIS if infra else None, rng, 8.0 if infra else 16.0)
    if seed is None:
        return None
    allowed = allowed_region(anatomy, anatomy.mni[(slice(None),) + tuple(seed)], not infra, region)
    volume = np.exp(rng.uniform(np.log(6e3), np.log(5e4)))
    core = _grow(anatomy, allowed, seed, volume, {"wm": 1.0, "gm": 0.5, "csf": 0.0}, rng.uniform(0.2, 0.5), rng)
    sp = np.asarray(anatomy.spacing_zyx)
    enhancing = smooth_field(rng, core.shape, 3.0 / sp) > rng.uniform(-1.2, 0.2)
    classes = np.where(core, np.where(enhancing, A_ET, A_NET), 0).astype(np.uint8)
    depth = _inner_depth(core, sp, rng, 1.0)
    if rng.random() < 0.4:
        classes[core & (depth > depth.max() * rng.uniform(0.6, 0.85))] = A_NECROSIS
    classes[_edema(anatomy, allowed, core, rng.uniform(0.2, 1.2) if rng.random() < 0.6 else 0.0, rng)] = A_ED
    return classes, rng.uniform(0.15, 0.3) * (volume * 3 / (4 * np.pi)) ** (1 / 3)


def mimics(anatomy: Anatomy, classes: np.ndarray, rng: np.random.Generator) -> None:
    """In place, outside the lesions: white-matter hyperintensities (small FLAIR/T2-bright foci, 40 % of cases,
    periventricular or scattered) and normal enhancement that is not tumor (vessels near the surface, the choroid
    plexus in the ventricles; every case, at a random strength set by the appearance)."""
    sp = np.asarray(anatomy.spacing_zyx)
    free = classes == 0
    if rng.random() < 0.4:
        spots = np.argwhere(free & (anatomy.wm > 0.7) & (anatomy.depth_mm > 10))
        if len(spots):
            picks = spots[rng.choice(len(spots), int(rng.integers(1, 8)))]
            blobs = _balls(classes.shape, sp, picks, rng.uniform(2.0, 6.0, len(picks)))
            classes[blobs & free & anatomy.mask & ~anatomy.ventricles] = A_WMH
    ridge = np.abs(smooth_field(rng, classes.shape, 2.0 / sp)) < 0.06
    vessels = ridge & (anatomy.depth_mm < 6.0) & (anatomy.gm + anatomy.csf > 0.6)
    plexus = anatomy.ventricles & (smooth_field(rng, classes.shape, 2.5 / sp) > 1.2)
    classes[(vessels | plexus) & (classes == 0) & anatomy.mask] = A_VESSEL
