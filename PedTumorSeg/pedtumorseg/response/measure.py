"""The bidimensional (2D) measurement of one lesion as the RANO/RAPNO criteria define it.

Definitions (all distances in mm, on the scan's own grid, in its axial slices: the slices of the array's first
axis, ``z``):

- A lesion's in-plane extent on a slice is the union of its voxels' squares (``sy x sx`` mm each). The
  **longest diameter (LD)** is the largest distance between two points of that union: the diameter of the convex
  hull of the voxels' corner points (``scipy.spatial.ConvexHull``; the farthest pair is always a pair of hull
  vertices). A rectangle of ``a x b`` voxels therefore has LD = its diagonal, a disc its diameter (edge to edge,
  as a caliper placed on the image is).
- The **perpendicular diameter (PD)** is the longest segment perpendicular to LD that lies inside the lesion and
  crosses LD: lines perpendicular to LD through the LD segment are cut by the voxel squares (exact slab
  intersection), the length being that of the contiguous inside stretch through the crossing point (0 where the
  crossing point lies outside); the positions tried are exactly those where the line meets a corner of the
  outline, where the maximum of this piecewise linear length lies, so the result is exact.
  For a rectangle of ``a x b`` mm (a >= b) this gives ``b * sqrt(a^2 + b^2) / a``; for a square both diagonals.
- **Enclosed holes** (a necrotic or cystic centre inside an enhancing rim) are filled on each slice before
  measuring, so the calipers span the lesion's outer margin as a reader places them; a ring measures as the disc
  it encloses.
- **Slice rule.** The criteria measure "on the axial image of the lesion's largest extent". ``largest_diameter``
  (the default) takes the slice with the largest LD; ``largest_product`` the slice with the largest LD x PD. Both
  are reported; ties go to the lower slice index.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from pedtumorseg.arrays import bounding_box
from pedtumorseg.response.criteria import SLICE_RULES

_EPS = 1e-9


@dataclass(frozen=True)
class Diameters:
    """The two diameters of one lesion on one slice; endpoints as (y, x) in mm from the voxel (0, 0)'s corner."""

    slice_index: int
    longest_mm: float
    perpendicular_mm: float
    longest_ends: tuple[tuple[float, float], tuple[float, float]]
    perpendicular_ends: tuple[tuple[float, float], tuple[float, float]]

    @property
    def product_mm2(self) -> float:
        return self.longest_mm * self.perpendicular_mm

    def to_dict(self) -> dict:
        return {"slice": self.slice_index, "longest_mm": round(self.longest_mm, 3),
                "perpendicular_mm": round(self.perpendicular_mm, 3), "product_mm2": round(self.product_mm2, 3),
                "longest_ends_yx_mm": [list(map(float, p)) for p in self.longest_ends],
                "perpendicular_ends_yx_mm": [list(map(float, p)) for p in self.perpendicular_ends]}


def _corner_points(mask2d: np.ndarray, spacing_yx) -> np.ndarray:
    ys, xs = np.nonzero(mask2d)
    sy, sx = (float(s) for s in spacing_yx)
    pts = np.concatenate([np.stack([(ys + dy) * sy, (xs + dx) * sx], axis=1) for dy in (0, 1) for dx in (0, 1)])
    return np.unique(pts, axis=0)


def longest_diameter(mask2d: np.ndarray, spacing_yx) -> tuple[float, np.ndarray, np.ndarray]:
    """(LD in mm, end a, end b) of the voxel squares of ``mask2d`` (see the module docstring)."""
    pts = _corner_points(mask2d, spacing_yx)
    if len(pts) == 0:
        return 0.0, np.zeros(2), np.zeros(2)
    try:
        pts = pts[ConvexHull(pts).vertices]
    except QhullError:  # collinear corner points cannot happen for squares, but keep the exact fallback
        pass
    d2 = ((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1)
    i, j = np.unravel_index(int(np.argmax(d2)), d2.shape)
    return float(np.sqrt(d2[i, j])), pts[i], pts[j]


def _chord_through(lo: np.ndarray, hi: np.ndarray, origin: np.ndarray, u: np.ndarray) -> tuple[float, float]:
    """The stretch [t0, t1] of the line ``origin + t u`` inside the union of the boxes [lo, hi] that contains t=0
    ((0, 0) when t=0 is outside)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t_lo = np.full(len(lo), -np.inf)
        t_hi = np.full(len(lo), np.inf)
        keep = np.ones(len(lo), bool)
        for k in range(2):
            if abs(u[k]) < _EPS:
                keep &= (origin[k] >= lo[:, k] - _EPS) & (origin[k] <= hi[:, k] + _EPS)
                continue
            a, b = (lo[:, k] - origin[k]) / u[k], (hi[:, k] - origin[k]) / u[k]
            t_lo, t_hi = np.maximum(t_lo, np.minimum(a, b)), np.minimum(t_hi, np.maximum(a, b))
    keep &= t_hi >= t_lo - _EPS
    if not keep.any():
        return 0.0, 0.0
    order = np.argsort(t_lo[keep])
    starts, ends = t_lo[keep][order], np.maximum.accumulate(t_hi[keep][order])
    # a new run starts where an interval begins after everything before it has ended
    new_run = np.concatenate([[True], starts[1:] > ends[:-1] + _EPS])
    run_starts = starts[new_run]
    run_ends = np.append(ends[np.flatnonzero(new_run)[1:] - 1], ends[-1])
    inside = np.flatnonzero((run_starts <= _EPS) & (run_ends >= -_EPS))
    if inside.size == 0:
        return 0.0, 0.0
    return float(run_starts[inside[0]]), float(run_ends[inside[0]])


def _boundary_corners(mask2d: np.ndarray, spacing_yx) -> np.ndarray:
    """Corner points of the voxels on the lesion's edge (the vertices of the union of its squares are among them)."""
    padded = np.pad(mask2d, 1)
    inner = padded[1:-1, 1:-1]
    edge = inner & ~(padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
    return _corner_points(edge, spacing_yx)


def perpendicular_diameter(mask2d: np.ndarray, spacing_yx, a: np.ndarray,
                           b: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(PD in mm, end c, end d): the longest inside stretch perpendicular to the segment a-b that crosses it.

    The inside length of a line perpendicular to LD is piecewise linear in its position along LD, with breaks only
    where the line passes a vertex of the lesion's outline; so the maximum is at one of those positions, and
    trying exactly the positions of the edge voxels' corners (within the LD segment) finds it.
    """
    mask2d = np.asarray(mask2d) != 0
    length = float(np.linalg.norm(b - a))
    if length == 0:
        return 0.0, a, a
    sy, sx = (float(s) for s in spacing_yx)
    ys, xs = np.nonzero(mask2d)
    lo = np.stack([ys * sy, xs * sx], axis=1).astype(float)
    hi = lo + (sy, sx)
    v = (b - a) / length
    u = np.array([-v[1], v[0]])
    offsets = (_boundary_corners(mask2d, spacing_yx) - a) @ v
    offsets = np.unique(np.round(offsets[(offsets >= -_EPS) & (offsets <= length + _EPS)], 9))
    best = (0.0, a, a)
    for s in offsets:
        origin = a + s * v
        t0, t1 = _chord_through(lo, hi, origin, u)
        if t1 - t0 > best[0] + _EPS:
            best = (t1 - t0, origin + t0 * u, origin + t1 * u)
    return float(best[0]), best[1], best[2]


def measure_slice(mask2d: np.ndarray, spacing_yx, slice_index: int = 0) -> Diameters:
    """Both diameters of the lesion voxels ``mask2d`` (y, x) on one slice."""
    ld, a, b = longest_diameter(mask2d, spacing_yx)
    pd, c, d = perpendicular_diameter(mask2d, spacing_yx, a, b)
    return Diameters(int(slice_index), ld, pd, _pair(a, b), _pair(c, d))


def _pair(p, q) -> tuple[tuple[float, float], tuple[float, float]]:
    return tuple(map(float, p)), tuple(map(float, q))


@dataclass(frozen=True)
class Measurement:
    """A lesion's 2D measurement under the chosen slice rule, and the other rule's result for comparison."""

    rule: str
    chosen: Diameters | None
    largest_diameter: Diameters | None
    largest_product: Diameters | None
    slices_with_lesion: int

    @property
    def product_mm2(self) -> float:
        return self.chosen.product_mm2 if self.chosen else 0.0

    def to_dict(self) -> dict:
        return {"slice_rule": self.rule, "slices_with_lesion": self.slices_with_lesion,
                "chosen": self.chosen.to_dict() if self.chosen else None,
                "largest_diameter_slice": self.largest_diameter.to_dict() if self.largest_diameter else None,
                "largest_product_slice": self.largest_product.to_dict() if self.largest_product else None}


def measure_lesion(mask3d: np.ndarray, spacing_zyx, rule: str = "largest_diameter") -> Measurement:
    """The 2D measurement of a lesion (a (z, y, x) mask) on its scan's axial slices (see the module docstring)."""
    if rule not in SLICE_RULES:
        raise ValueError(f"slice rule {rule!r}: expected one of {', '.join(SLICE_RULES)}")
    box = bounding_box(np.asarray(mask3d) != 0)
    if box is None:
        return Measurement(rule, None, None, None, 0)
    # measured inside the lesion's box (a whole-grid mask costs a hole filling per slice); shifted back at the end
    z0, y0, x0 = (int(b.start) for b in box)
    mask3d = np.stack([ndimage.binary_fill_holes(sl) for sl in np.asarray(mask3d)[box] != 0])
    spacing_yx = tuple(float(s) for s in spacing_zyx[1:])
    slices = [int(z) for z in np.flatnonzero(mask3d.any(axis=(1, 2)))]
    if not slices:
        return Measurement(rule, None, None, None, 0)
    longest = {z: longest_diameter(mask3d[z], spacing_yx) for z in slices}
    done: dict[int, Diameters] = {}

    def full(z: int) -> Diameters:
        if z not in done:
            ld, a, b = longest[z]
            pd, c, d = perpendicular_diameter(mask3d[z], spacing_yx, a, b)
            done[z] = Diameters(z, ld, pd, _pair(a, b), _pair(c, d))
        return done[z]

    order = sorted(slices, key=lambda z: (-round(longest[z][0], 6), z))
    by_ld = full(order[0])
    by_product = by_ld
    for z in order[1:]:  # PD <= LD, so a slice whose LD^2 is below the best product cannot beat it
        if longest[z][0] ** 2 < by_product.product_mm2 - _EPS:
            break
        candidate = full(z)
        if round(candidate.product_mm2, 6) > round(by_product.product_mm2, 6) or (
                round(candidate.product_mm2, 6) == round(by_product.product_mm2, 6) and z < by_product.slice_index):
            by_product = candidate
    shift = (y0 * spacing_yx[0], x0 * spacing_yx[1])

    def back(d: Diameters) -> Diameters:
        moved = lambda ends: tuple((p[0] + shift[0], p[1] + shift[1]) for p in ends)  # noqa: E731
        return replace(d, slice_index=d.slice_index + z0, longest_ends=moved(d.longest_ends),
                       perpendicular_ends=moved(d.perpendicular_ends))

    by_ld, by_product = back(by_ld), back(by_product)
    chosen = by_ld if rule == "largest_diameter" else by_product
    return Measurement(rule, chosen, by_ld, by_product, len(slices))
