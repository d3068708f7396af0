"""Realistic phantoms (``pedtumorseg phantoms --style realistic``): tumors grown along anatomy, mass effect, and
appearance randomized around ratios measured on real scans (``REALISM.md`` holds the measurements).

A case draws, with its own generators for anatomy, tumor and appearance (as the clean phantom does):
a lesion kind (``KIND_WEIGHTS``), sometimes a second, smaller high-grade lesion (``P_SECOND``) or no tumor at all
(``P_TUMOR_FREE``); mimics (white-matter hyperintensities, vessel and plexus enhancement) that carry no label;
the mass effect of the cores on the tissue maps and on edema (which is tissue, so it moves with it); then the
appearance (``appearance.render``). Labels follow this project's convention (1 ET, 2 NET, 3 CC, 4 ED) and lie
inside the final brain mask; subregions too small to score are merged as in the clean phantom.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pedtumorseg.conventions import ED
from pedtumorseg.phantoms import lesions
from pedtumorseg.phantoms.appearance import render
from pedtumorseg.phantoms.clean import Phantom, drop_unscoreable_subregions, geometry_for, streams, write_phantom
from pedtumorseg.phantoms.lesions import A_ED, A_VESSEL, A_WMH, CLASS_LABEL
from pedtumorseg.phantoms.tumor_growth import build_anatomy, push, warp

KIND_WEIGHTS = {"hgg": 0.36, "lgg": 0.16, "dipg": 0.12, "pilocytic": 0.18, "solid": 0.18}
P_TUMOR_FREE, P_SECOND = 0.06, 0.12
STYLES = ("clean", "realistic")


@dataclass
class RealisticPhantom(Phantom):
    kinds: list = field(default_factory=list)  # the lesion kinds drawn
    brain_mask: np.ndarray | None = None  # final brain mask (bool)
    ventricles: np.ndarray | None = None  # bool, after the mass effect
    midline_x: np.ndarray | None = None  # template x (mm) after the mass effect: the falx is x = 0
    classes: np.ndarray | None = None  # appearance classes (``lesions``)


def _draw(anatomy, rng: np.random.Generator) -> tuple[np.ndarray, list, float]:
    """Appearance classes of the case's lesions, their kinds and the mass-effect strength (mm)."""
    classes = np.zeros(anatomy.mask.shape, np.uint8)
    kinds, strength = [], 0.0
    if rng.random() >= P_TUMOR_FREE:
        names = list(KIND_WEIGHTS)
        kind = str(rng.choice(names, p=np.asarray(list(KIND_WEIGHTS.values()))))
        drawn = getattr(lesions, kind)(anatomy, rng)
        if drawn is not None:
            classes, strength = drawn
            kinds.append(kind)
        if kinds and rng.random() < P_SECOND:
            second = lesions.hgg(anatomy, rng, small=True)
            if second is not None:
                free = (classes == 0) | (classes == A_ED)
                take = (second[0] > 0) & free
                classes[take] = second[0][take]
                kinds.append("hgg")
    lesions.mimics(anatomy, classes, rng)
    return classes, kinds, strength


def _mass_effect(anatomy, classes: np.ndarray, strength: float) -> np.ndarray:
    """In place on ``anatomy`` (tissue maps, ventricles, template coordinates) and returns the classes after the
    push: cores stay as drawn; edema and mimics are tissue and move with it."""
    label = CLASS_LABEL[classes]
    core = (label > 0) & (label != ED)
    u = push(core, anatomy, strength)
    if not u.any():
        return classes
    for name in ("gm", "wm", "csf"):
        setattr(anatomy, name, warp(getattr(anatomy, name), u))
    anatomy.ventricles = warp(anatomy.ventricles.astype(np.uint8), u, order=0).astype(bool) & ~core
    anatomy.mni = np.stack([warp(c, u) for c in anatomy.mni])
    moved = warp(np.where(core, 0, classes).astype(np.uint8), u, order=0)
    if (classes == A_ED).any():  # edema hugging the core stays attached to it
        grown = warp(((classes == A_ED) | core).astype(np.uint8), u, order=0).astype(bool)
        moved[grown & (moved == 0)] = A_ED
    out = np.where(core, classes, moved).astype(np.uint8)
    out[~anatomy.mask] = 0
    return out


def make_realistic_phantom(seed: int, size: str = "small") -> RealisticPhantom:
    """A deterministic realistic case for ``seed`` on the ``small`` (2.5 mm) or ``brats`` (1 mm) grid."""
    geometry = geometry_for(size)
    anat_rng, tumor_rng, look_rng = streams(seed + 7_000_000)
    anatomy = build_anatomy(geometry, anat_rng)
    classes, kinds, strength = _draw(anatomy, tumor_rng)
    classes = _mass_effect(anatomy, classes, strength)
    images, brain = render(anatomy.gm, anatomy.wm, anatomy.csf, classes, anatomy.mask, anatomy.spacing_zyx,
                           look_rng)
    classes[~brain] = 0
    seg = CLASS_LABEL[classes]
    drop_unscoreable_subregions(seg, float(np.prod(anatomy.spacing_zyx)))
    keep_mimic = np.isin(classes, (A_WMH, A_VESSEL))
    classes[(seg == 0) & ~keep_mimic] = 0
    return RealisticPhantom(f"BraTS-PED-R{seed:05d}-000", images, seg, geometry, kinds, brain,
                            anatomy.ventricles, anatomy.mni[0], classes)


def make_styled_phantom(seed: int, size: str, style: str) -> Phantom:
    """The phantom of ``style`` ("clean": ``clean.make_phantom``, byte-identical to it; "realistic")."""
    if style == "realistic":
        return make_realistic_phantom(seed, size)
    if style == "clean":
        from pedtumorseg.phantoms.clean import make_phantom
        return make_phantom(seed, size)
    raise ValueError(f"unknown phantom style {style!r} (use one of {', '.join(STYLES)})")


def write_styled_phantoms(out_dir: str | os.PathLike, n: int, size: str = "brats", seed: int = 0,
                          style: str = "clean") -> list[Path]:
    """Write ``n`` cases of ``style``; case k uses seed ``seed + k`` (``clean.write_phantoms`` for "clean")."""
    return [write_phantom(make_styled_phantom(seed + k, size, style), out_dir) for k in range(n)]
