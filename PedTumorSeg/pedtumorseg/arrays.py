"""Small array helpers shared by several modules (one home for each).

Arrays are numpy in SimpleITK order ``(z, y, x)``; spacings are ``spacing_zyx`` in mm.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


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
