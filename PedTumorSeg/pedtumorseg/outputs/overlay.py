"""The overlay PNG of a result: axial, coronal and sagittal slices through the tumor with the labels in their
colors (ET red, NET green, CC yellow, ED teal)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pedtumorseg.conventions import CHANNELS, FOREGROUND_LABELS, LABEL_COLORS
from pedtumorseg.files import atomic_output
from pedtumorseg.geometry import Geometry


def _window(image: np.ndarray) -> np.ndarray:
    """Grey values in [0, 255] with a robust window (1st-99th percentile of the non-zero voxels)."""
    nonzero = image[image != 0]
    if nonzero.size == 0:
        return np.zeros(image.shape, np.uint8)
    lo, hi = np.percentile(nonzero, [1, 99])
    if hi <= lo:
        hi = lo + 1
    return (np.clip((image - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def _to_lps(array: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, tuple[float, float, float]]:
    """The array reoriented so that (z, y, x) run towards Superior, Posterior, Left; and its zyx spacing."""
    import SimpleITK as sitk

    image = geometry.to_image(array)
    oriented = sitk.DICOMOrient(image, "LPS")
    spacing = oriented.GetSpacing()
    return sitk.GetArrayFromImage(oriented), (spacing[2], spacing[1], spacing[0])


def _views(volume: np.ndarray, center: tuple[int, int, int]) -> list[np.ndarray]:
    """Axial, coronal and sagittal slices through ``center`` of an LPS-ordered (z, y, x) volume, shown in the
    radiological convention (patient's right on the left of the picture, anterior/superior at the top)."""
    z, y, x = center
    axial = volume[z]  # rows anterior->posterior, columns right->left
    coronal = volume[:, y, :][::-1]  # rows superior->inferior
    sagittal = volume[:, :, x][::-1]  # rows superior->inferior, columns anterior->posterior
    return [axial, coronal, sagittal]


def _tumor_center(labels: np.ndarray) -> tuple[int, int, int]:
    coords = np.argwhere(labels > 0)
    if coords.size == 0:
        return tuple(int(s) // 2 for s in labels.shape)  # type: ignore[return-value]
    return tuple(int(v) for v in np.round(coords.mean(axis=0)))  # type: ignore[return-value]


def write_overlay_png(images: np.ndarray, labels: np.ndarray, geometry: Geometry, path: str | os.PathLike,
                      *, channel: str = "t1ce", alpha: float = 0.45) -> Path:
    """A PNG montage: axial, coronal and sagittal slices through the tumor's center, the chosen channel in grey
    and the labels in the label colors (ET red, NET green, CC yellow, ED teal). Needs Pillow."""
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError("the PNG overlay needs Pillow: pip install 'pedtumorseg[viz]'") from exc

    grey, spacing = _to_lps(images[CHANNELS.index(channel)].astype(np.float32), geometry)
    lab, _ = _to_lps(labels.astype(np.uint8), geometry)
    grey = _window(grey)
    center = _tumor_center(lab)
    sz, sy, sx = spacing
    # physical aspect: (row spacing, column spacing) of each view
    aspects = [(sy, sx), (sz, sx), (sz, sy)]

    panels = []
    for g, l, (row_mm, col_mm) in zip(_views(grey, center), _views(lab, center), aspects):
        rgb = np.repeat(g[..., None].astype(np.float32), 3, axis=2)
        for value in FOREGROUND_LABELS:
            mask = l == value
            if mask.any():
                color = np.array(LABEL_COLORS[value], np.float32) * 255
                rgb[mask] = (1 - alpha) * rgb[mask] + alpha * color
        img = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
        height = max(1, int(round(img.height * row_mm / col_mm)))
        img = img.resize((img.width, height), Image.BILINEAR)
        scale = 256 / max(img.width, img.height)
        img = img.resize((max(1, int(img.width * scale)), max(1, int(img.height * scale))), Image.BILINEAR)
        panels.append(img)

    width = sum(p.width for p in panels) + 8 * (len(panels) - 1)
    height = max(p.height for p in panels)
    canvas = Image.new("RGB", (width, height), (0, 0, 0))
    x = 0
    for p in panels:
        canvas.paste(p, (x, (height - p.height) // 2))
        x += p.width + 8
    path = Path(path)
    with atomic_output(path) as tmp:
        canvas.save(tmp, format="PNG")
    return path
