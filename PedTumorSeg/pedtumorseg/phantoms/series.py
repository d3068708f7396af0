"""Timepoints of one synthetic patient for response assessment: a tumour that grows or shrinks by known factors,
the head moved between scans by a known rigid motion, a lesion that appears, each scan on its own grid.

The anatomy is defined in the patient's own coordinates (mm): a head ellipsoid with smooth tissue texture (a fixed
set of Gaussian blobs, so every scan shows the same anatomy), a darker ventricle, and a tumour of nested
ellipsoids: NET core (0.6 of the tumour radii), ET rim (the rest of the tumour core), ED shell (1.5 x the radii).
At timepoint ``t`` the tumour radii are ``scales[t]`` times the baseline's. The patient pose of scan ``t`` is the
rigid motion ``motions[t]`` (a baseline point -> the same anatomy in scan ``t``'s scanner coordinates, the transform
registration should find), the identity at baseline. Images are T1CE-like (ET bright). The label maps hold each
subregion's partial volume to the voxel (``_partial_volume_labels``), so their volumes are those of the
anatomy (``truth_volumes_ml``) within a voxel's worth.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from pedtumorseg.conventions import ED, ET, NET
from pedtumorseg.geometry import Geometry
from pedtumorseg.outputs.images import write_image, write_labels

HEAD_CENTER = np.array([0.0, 0.0, 0.0])
HEAD_RADII = np.array([68.0, 82.0, 58.0])  # x, y, z (mm)
TUMOR_CENTER = np.array([22.0, -18.0, 8.0])
TUMOR_RADII = np.array([16.0, 12.0, 10.0])
NEW_LESION_CENTER = np.array([-30.0, 30.0, -10.0])
NEW_LESION_RADIUS = 7.0
CORE_FRACTION, EDEMA_FACTOR = 0.6, 1.5
SUBSAMPLES = 4  # per voxel axis, where a voxel may hold two labels


@dataclass
class SeriesScan:
    name: str
    t1ce: sitk.Image
    labels: np.ndarray  # (z, y, x) on the scan's grid
    motion: sitk.Euler3DTransform  # baseline point -> this scan's point
    scale: float


def grid(spacing_xyz=(2.0, 2.0, 3.0), fov_mm=(180.0, 210.0, 150.0)) -> Geometry:
    size = tuple(int(round(f / s)) for f, s in zip(fov_mm, spacing_xyz))
    origin = tuple(-0.5 * (n - 1) * s for n, s in zip(size, spacing_xyz))
    return Geometry(size, tuple(map(float, spacing_xyz)), origin, (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))


def motion(rotation_deg=(0.0, 0.0, 0.0), shift_mm=(0.0, 0.0, 0.0)) -> sitk.Euler3DTransform:
    """A rigid motion about the head centre (angles about x, y, z in degrees, then a shift in mm)."""
    t = sitk.Euler3DTransform()
    t.SetCenter(tuple(map(float, HEAD_CENTER)))
    t.SetRotation(*(float(np.radians(a)) for a in rotation_deg))
    t.SetTranslation(tuple(map(float, shift_mm)))
    return t


def _patient_points(geometry: Geometry, pose: sitk.Euler3DTransform, index_xyz: np.ndarray | None = None) -> np.ndarray:
    """Patient coordinates (x, y, z mm) of every voxel centre of ``geometry`` as (z, y, x, 3), or of the
    continuous indices ``index_xyz`` (n, 3) as (n, 3)."""
    if index_xyz is None:
        nx, ny, nz = geometry.size
        k, j, i = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
        return _patient_points(geometry, pose, np.stack([i, j, k], -1).reshape(-1, 3)).reshape(nz, ny, nx, 3)
    d = np.asarray(geometry.direction).reshape(3, 3)
    x = np.asarray(geometry.origin) + (np.asarray(index_xyz, float) * np.asarray(geometry.spacing)) @ d.T
    r = np.asarray(pose.GetMatrix()).reshape(3, 3)
    c, t = np.asarray(pose.GetCenter()), np.asarray(pose.GetTranslation())
    return (x - c - t) @ r + c  # the inverse motion: R^T (x - c - t) + c


def _ellipsoid(q: np.ndarray, center, radii) -> np.ndarray:
    return (((q - center) / radii) ** 2).sum(-1) <= 1.0


def _texture(q: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.zeros(q.shape[:-1], np.float32)
    for _ in range(24):
        centre = rng.uniform(-1, 1, 3) * HEAD_RADII * 0.8
        sigma = rng.uniform(8.0, 18.0)
        out += np.float32(rng.uniform(-35, 35)) * np.exp(-((q - centre) ** 2).sum(-1) / (2 * sigma ** 2)).astype(
            np.float32)
    return out


def _labels_at(q: np.ndarray, scale: float, new_lesion: bool) -> np.ndarray:
    """The label at patient points ``q`` (..., 3): the nested tumour ellipsoids (ED inside the head) and the new
    lesion."""
    labels = np.zeros(q.shape[:-1], np.uint8)
    radii = TUMOR_RADII * scale
    if scale > 0:
        labels[_ellipsoid(q, TUMOR_CENTER, radii * EDEMA_FACTOR) & _ellipsoid(q, HEAD_CENTER, HEAD_RADII)] = ED
        labels[_ellipsoid(q, TUMOR_CENTER, radii)] = ET
        labels[_ellipsoid(q, TUMOR_CENTER, radii * CORE_FRACTION)] = NET
    if new_lesion:
        labels[_ellipsoid(q, NEW_LESION_CENTER, np.full(3, NEW_LESION_RADIUS))] = ET
    return labels


def _partial_volume_labels(geometry: Geometry, pose: sitk.Euler3DTransform, scale: float, new_lesion: bool,
                           centre_labels: np.ndarray) -> np.ndarray:
    """Labels whose voxel counts are the anatomy's volumes: a hard label map that keeps each nested region's
    partial volume (NET, then TC = ET + NET, then WT) to the nearest voxel (one lesion at a time: the voxels are
    ranked over the whole map, so two lesions made together keep only their sum).

    Voxels near a boundary are sampled at ``SUBSAMPLES``^3 points; each region takes its voxels in decreasing
    order of the fraction of them it fills (the voxels of the region inside it first) until its voxel count is its
    partial volume rounded. Why not simpler rules: sampled at voxel centres only, the thin ET rim of the shrunken
    tumour (2.4-3.8 mm on 1.8 x 1.8 x 3.5 mm voxels) gains or loses whole voxel layers (ET +2.4 %, its NET of 30
    voxels -9 %); the label filling most of each voxel shrinks every convex region (WT -1.9 % at baseline: the
    half-filled level of a blurred convex shape lies inside it).
    """
    mixed = ndimage.maximum_filter(centre_labels, 3) != ndimage.minimum_filter(centre_labels, 3)
    where = np.argwhere(ndimage.binary_dilation(mixed))  # (n, 3) as z, y, x
    n = SUBSAMPLES
    offsets = (np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1).reshape(-1, 3) + 0.5) / n - 0.5
    sub = np.concatenate([
        _labels_at(_patient_points(geometry, pose, (c[:, None, ::-1] + offsets[None]).reshape(-1, 3)), scale,
                   new_lesion).reshape(len(c), -1) for c in np.array_split(where, max(1, len(where) // 4096))])
    out = np.zeros_like(centre_labels)
    inner = np.zeros(len(where), bool)  # the voxels (of ``where``) of the region inside the current one
    for region, label in ((np.array([NET]), NET), (np.array([ET, NET]), ET), (np.array([ET, NET, ED]), ED)):
        fraction = np.isin(sub, region).mean(1)
        sure = np.isin(centre_labels, region)
        sure[tuple(where.T)] = False  # the region's voxels away from any boundary
        out[sure & (out == 0)] = label
        order = np.lexsort((-fraction, ~inner))[:int(round(float(fraction.sum())))]  # stable: inner voxels, then the fullest
        chosen = np.zeros(len(where), bool)
        chosen[order] = True
        idx = tuple(where[chosen & ~inner].T)
        out[idx] = label
        inner |= chosen
    return out


def scan(geometry: Geometry, pose: sitk.Euler3DTransform, scale: float, new_lesion: bool,
         seed: int = 0) -> tuple[sitk.Image, np.ndarray]:
    """T1CE-like image and labels of the patient in ``pose`` on ``geometry`` (tumour radii x ``scale``)."""
    q = _patient_points(geometry, pose)
    head = _ellipsoid(q, HEAD_CENTER, HEAD_RADII)
    image = np.where(head, 100.0 + _texture(q, seed), 0.0).astype(np.float32)
    image[_ellipsoid(q, HEAD_CENTER + (0, 8, 10), (10.0, 22.0, 9.0)) & head] = 35.0  # ventricle
    skull = _ellipsoid(q, HEAD_CENTER, HEAD_RADII + 6.0) & ~head
    image[skull] = 160.0
    labels = np.zeros(image.shape, np.uint8)
    for part_scale, part_new in ((scale, False), (0.0, new_lesion)):  # each lesion keeps its own volume
        if part_scale > 0 or part_new:
            part = _partial_volume_labels(geometry, pose, part_scale, part_new, _labels_at(q, part_scale, part_new))
            labels[part > 0] = part[part > 0]
    image[labels == ED] = 115.0
    image[labels == ET] = 260.0
    image[labels == NET] = 70.0
    return geometry.to_image(image), labels


def truth_volumes_ml(scale: float, new_lesion: bool) -> dict[str, float]:
    """The subregion volumes (mL) of the continuous anatomy (ellipsoid volumes; the ED shell lies inside the
    head for every scale up to 1.5): what each scan's label map approximates."""
    ball = lambda radii: 4.0 / 3.0 * np.pi * float(np.prod(radii)) / 1000.0  # noqa: E731
    r = TUMOR_RADII * scale
    net = ball(r * CORE_FRACTION)
    et = ball(r) - net + (ball(np.full(3, NEW_LESION_RADIUS)) if new_lesion else 0.0)
    ed = ball(r * EDEMA_FACTOR) - ball(r)
    return {"ET": et, "NET": net, "CC": 0.0, "ED": ed, "TC": et + net, "WT": et + net + ed}


def make_series(scales=(1.0, 0.6, 1.3), new_lesion_at: int | None = 2,
                motions: list[sitk.Euler3DTransform] | None = None,
                spacings=((2.0, 2.0, 3.0), (1.8, 1.8, 3.5), (2.0, 2.0, 2.5)), seed: int = 0) -> list[SeriesScan]:
    """The scans of one patient (see the module docstring); ``motions`` default: identity, then two known ones."""
    if motions is None:
        motions = [motion(), motion((0.0, 3.0, 8.0), (6.0, -4.0, 3.0)), motion((-4.0, 0.0, -6.0), (-5.0, 5.0, -2.0))]
    out = []
    for t, s in enumerate(scales):
        geometry = grid(spacings[t % len(spacings)])
        appear = new_lesion_at is not None and t >= new_lesion_at
        image, labels = scan(geometry, motions[t % len(motions)], s, appear, seed)
        out.append(SeriesScan(f"tp{t}", image, labels, motions[t % len(motions)], float(s)))
    return out


def write_series(series: list[SeriesScan], out_dir: str | os.PathLike, patient: str = "PHANTOM-RESP") -> list[Path]:
    """One folder per scan with ``<ID>-t1c.nii.gz`` and ``<ID>-seg.nii.gz``; returns the folders."""
    folders = []
    for s in series:
        folder = Path(out_dir) / f"{patient}-{s.name}"
        geometry = Geometry.from_image(s.t1ce)
        write_image(sitk.GetArrayFromImage(s.t1ce), geometry, folder / f"{patient}-{s.name}-t1c.nii.gz")
        write_labels(s.labels, geometry, folder / f"{patient}-{s.name}-seg.nii.gz")
        folders.append(folder)
    return folders
