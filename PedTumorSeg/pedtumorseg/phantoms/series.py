"""Timepoints of one synthetic patient for response assessment: a tumour that grows or shrinks by known factors,
the head moved between scans by a known rigid motion, a lesion that appears, each scan on its own grid.

The anatomy is defined in the patient's own coordinates (mm): a head ellipsoid with smooth tissue texture (a fixed
set of Gaussian blobs, so every scan shows the same anatomy), a darker ventricle, and a tumour of nested
ellipsoids: NET core (0.6 of the tumour radii), ET rim (the rest of the tumour core), ED shell (1.5 x the radii).
At timepoint ``t`` the tumour radii are ``scales[t]`` times the baseline's. The patient pose of scan ``t`` is the
rigid motion ``motions[t]`` (a baseline point -> the same anatomy in scan ``t``'s scanner coordinates, the transform
registration should find), the identity at baseline. Images are T1CE-like (ET bright).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

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


def _patient_points(geometry: Geometry, pose: sitk.Euler3DTransform) -> np.ndarray:
    """Patient coordinates (x, y, z mm) of every voxel centre of ``geometry``, (z, y, x, 3)."""
    nx, ny, nz = geometry.size
    k, j, i = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    idx = np.stack([i, j, k], -1).reshape(-1, 3).astype(float)
    d = np.asarray(geometry.direction).reshape(3, 3)
    x = np.asarray(geometry.origin) + (idx * np.asarray(geometry.spacing)) @ d.T
    r = np.asarray(pose.GetMatrix()).reshape(3, 3)
    c, t = np.asarray(pose.GetCenter()), np.asarray(pose.GetTranslation())
    q = (x - c - t) @ r + c  # the inverse motion: R^T (x - c - t) + c
    return q.reshape(nz, ny, nx, 3)


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
    radii = TUMOR_RADII * scale
    if scale > 0:
        labels[_ellipsoid(q, TUMOR_CENTER, radii * EDEMA_FACTOR) & head] = ED
        labels[_ellipsoid(q, TUMOR_CENTER, radii)] = ET
        labels[_ellipsoid(q, TUMOR_CENTER, radii * CORE_FRACTION)] = NET
    if new_lesion:
        labels[_ellipsoid(q, NEW_LESION_CENTER, np.full(3, NEW_LESION_RADIUS))] = ET
    image[labels == ED] = 115.0
    image[labels == ET] = 260.0
    image[labels == NET] = 70.0
    return geometry.to_image(image), labels


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
