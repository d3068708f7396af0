"""Small array helpers shared by several stages (one home for each): bounding boxes and crops, the non-zero mask,
voxel volumes, and the volumes of the subregions with their share of the whole tumor.

Arrays are numpy in SimpleITK order ``(z, y, x)``; spacings are ``spacing_zyx`` in mm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np
from scipy import ndimage

from pedtumorseg.conventions import FOREGROUND_LABELS, REGIONS


def bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...] | None:
    """Bounding box of ``mask`` grown by ``margin`` voxels (clipped to the array), or None for an empty mask."""
    mask = np.asarray(mask)
    slices = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        if hits.size == 0:
            return None
        slices.append(slice(max(int(hits[0]) - margin, 0), min(int(hits[-1]) + 1 + margin, mask.shape[axis])))
    return tuple(slices)


@dataclass(frozen=True)
class Crop:
    """The voxels of a mask inside its bounding box (uint8 0/1) and the index of the box's first voxel."""

    start: tuple[int, ...]
    array: np.ndarray

    @property
    def box(self) -> tuple[slice, ...]:
        return tuple(slice(a, a + n) for a, n in zip(self.start, self.array.shape))

    def same_as(self, other: "Crop | None") -> bool:
        return (other is not None and self.start == other.start and self.array.shape == other.array.shape
                and np.array_equal(self.array, other.array))


def crop(mask, offset=None) -> Crop | None:
    """The :class:`Crop` of ``mask`` (non-zero = inside), its start shifted by ``offset``; None when empty."""
    array = np.asarray(mask) != 0
    box = bounding_box(array)
    if box is None:
        return None
    offset = offset if offset is not None else (0,) * array.ndim
    return Crop(tuple(int(s.start) + int(o) for s, o in zip(box, offset)), array[box].astype(np.uint8))


def nonzero_mask(images) -> np.ndarray:
    """Union over channels of ``!= 0``, holes filled (nnU-Net's non-zero crop mask). ``images``: (C, z, y, x)."""
    images = [np.asarray(c) for c in images]
    mask = np.zeros(images[0].shape, dtype=bool)
    for channel in images:
        mask |= channel != 0
    return ndimage.binary_fill_holes(mask)


def voxel_volume_mm3(spacing_zyx) -> float:
    """Volume of one voxel in mm^3."""
    sz, sy, sx = (float(s) for s in spacing_zyx)
    return sz * sy * sx


def region_voxels(labels) -> dict[str, int]:
    """Voxel count of every region of ``conventions.REGIONS`` (ET ... WT); values other than the four labels are
    ignored."""
    labels = np.asarray(labels)
    counts = {label: int(np.count_nonzero(labels == label)) for label in FOREGROUND_LABELS}
    return {region: sum(counts[m] for m in members) for region, members in REGIONS.items()}


def share_of_wt(amounts: Mapping[str, float], regions: Iterable[str] | None = None) -> dict[str, float | None]:
    """Each region's amount (volume in mL, or voxel count) divided by the whole tumor's (``amounts["WT"]``).

    The rule for an empty whole tumor: the share is undefined, so every region gets None (JSON null; NaN where a
    caller computes statistics over cases), never 0, which would read as a measured proportion."""
    regions = list(amounts) if regions is None else list(regions)
    wt = amounts["WT"]
    return {r: (amounts[r] / wt if wt > 0 else None) for r in regions}


def volumes(labels, spacing_zyx) -> dict[str, dict[str, float | None]]:
    """``{"volumes_ml": {region: mL}, "fraction_of_wt": share_of_wt}`` of a label map (1 mL = 1000 mm^3)."""
    voxels = region_voxels(labels)
    voxel_ml = voxel_volume_mm3(spacing_zyx) / 1000.0
    return {"volumes_ml": {r: n * voxel_ml for r, n in voxels.items()}, "fraction_of_wt": share_of_wt(voxels)}
