"""Voxel grids: ``Geometry`` (size, spacing, origin, direction in ITK order) and its one conversion to and from
SimpleITK images, from an image file's header, and onto another spacing.

Arrays are numpy in SimpleITK order ``(z, y, x)``; a ``Geometry`` keeps ITK order ``(x, y, z)``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

_REL_TOL = 1e-4
_ABS_TOL_MM = 1e-3


@dataclass(frozen=True)
class Geometry:
    """A voxel grid in ITK order: size/spacing/origin as (x, y, z), direction as a row-major 3x3 9-tuple."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @classmethod
    def from_image(cls, image: sitk.Image) -> "Geometry":
        return cls(tuple(int(s) for s in image.GetSize()), tuple(float(s) for s in image.GetSpacing()),
                   tuple(float(o) for o in image.GetOrigin()), tuple(float(d) for d in image.GetDirection()))

    def to_image(self, array_zyx: np.ndarray) -> sitk.Image:
        """A new SimpleITK image holding ``array_zyx`` on this grid."""
        array_zyx = np.asarray(array_zyx)
        if array_zyx.shape != self.shape_zyx:
            raise ValueError(f"array shape {array_zyx.shape} does not match grid shape {self.shape_zyx}")
        image = sitk.GetImageFromArray(np.ascontiguousarray(array_zyx))
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        return tuple(reversed(self.spacing))

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        return tuple(reversed(self.size))

    @property
    def voxel_volume_mm3(self) -> float:
        return float(np.prod(self.spacing))

    def corners_physical(self) -> np.ndarray:
        """(8, 3) physical coordinates of the outer voxel corners (index -0.5 and size-0.5)."""
        d = np.asarray(self.direction, float).reshape(3, 3)
        sp, org = np.asarray(self.spacing, float), np.asarray(self.origin, float)
        lo, hi = -0.5 * np.ones(3), np.asarray(self.size, float) - 0.5
        idx = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
        return org + (idx * sp) @ d.T

    def bounding_box(self) -> tuple[np.ndarray, np.ndarray]:
        c = self.corners_physical()
        return c.min(0), c.max(0)

    def same_grid(self, other: "Geometry") -> bool:
        """Equal size, and spacing/origin/direction within 1e-4 relative or 1e-3 mm."""
        if self.size != other.size:
            return False
        return all(np.allclose(a, b, rtol=_REL_TOL, atol=_ABS_TOL_MM) for a, b in
                   ((self.spacing, other.spacing), (self.origin, other.origin),
                    (self.direction, other.direction)))

    def overlaps(self, other: "Geometry", min_fraction: float = 0.01) -> bool:
        """Whether the physical bounding boxes intersect in at least ``min_fraction`` of the smaller box."""
        lo1, hi1 = self.bounding_box()
        lo2, hi2 = other.bounding_box()
        inter = np.clip(np.minimum(hi1, hi2) - np.maximum(lo1, lo2), 0, None).prod()
        smaller = min((hi1 - lo1).prod(), (hi2 - lo2).prod())
        return bool(inter > 0 and inter >= min_fraction * smaller)


    def reference_image(self, pixel=sitk.sitkFloat32) -> sitk.Image:
        """An empty SimpleITK image on this grid (a resampling reference)."""
        image = sitk.Image([int(s) for s in self.size], pixel)
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def at_spacing(self, spacing_xyz) -> "Geometry":
        """The same field of view (outer voxel corners) and direction sampled at ``spacing_xyz``."""
        sp_old, sp_new = np.asarray(self.spacing, float), np.asarray(spacing_xyz, float)
        extent = np.asarray(self.size, float) * sp_old
        size = np.maximum(1, np.round(extent / sp_new)).astype(int)
        d = np.asarray(self.direction, float).reshape(3, 3)
        corner = np.asarray(self.origin, float) - d @ (0.5 * sp_old)
        origin = corner + d @ (0.5 * sp_new)
        return Geometry(tuple(int(s) for s in size), tuple(float(s) for s in sp_new),
                        tuple(float(o) for o in origin), self.direction)


def header_geometry(path: str | os.PathLike) -> Geometry:
    """The grid of an image file from its header alone; ``RuntimeError`` (ITK's) when the header is unreadable."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return Geometry(tuple(int(v) for v in reader.GetSize()), tuple(float(v) for v in reader.GetSpacing()),
                    tuple(float(v) for v in reader.GetOrigin()), tuple(float(v) for v in reader.GetDirection()))
