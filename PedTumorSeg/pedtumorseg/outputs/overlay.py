"""The overlay PNG of a result, readable on its own: axial, coronal and sagittal slices through the tumor with the
labels in their colors (ET red, NET green, CC yellow, ED teal), orientation letters on every side, a legend with
each subregion's volume, the case id and the model, and a banner when the model is a demonstration."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pedtumorseg.arrays import volumes
from pedtumorseg.conventions import (
    CHANNEL_LONG_NAMES,
    CHANNELS,
    FOREGROUND_LABELS,
    LABEL_COLORS,
    LABEL_LONG_NAMES,
    LABEL_NAMES,
)
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


#: view name and the anatomical direction at its (left, right, top, bottom) edge, as ``_views`` lays them out
VIEW_EDGES: tuple[tuple[str, tuple[str, str, str, str]], ...] = (
    ("Axial", ("R", "L", "A", "P")), ("Coronal", ("R", "L", "S", "I")), ("Sagittal", ("A", "P", "S", "I")))
PANEL_PX = 360  # the longer side of each view
MARGIN = 12
NOTICE_RGB = (190, 20, 20)


def _tumor_center(labels: np.ndarray) -> tuple[int, int, int]:
    coords = np.argwhere(labels > 0)
    if coords.size == 0:
        return tuple(int(s) // 2 for s in labels.shape)  # type: ignore[return-value]
    return tuple(int(v) for v in np.round(coords.mean(axis=0)))  # type: ignore[return-value]


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1: a scalable font
    except TypeError:  # pragma: no cover - older Pillow: the fixed bitmap font
        return ImageFont.load_default()


def _panels(grey: np.ndarray, lab: np.ndarray, spacing, alpha: float) -> list:
    """One picture per view, the labels blended in their colors, at physical aspect, longer side ``PANEL_PX``."""
    from PIL import Image

    center = _tumor_center(lab)
    sz, sy, sx = spacing
    aspects = [(sy, sx), (sz, sx), (sz, sy)]  # (row spacing, column spacing) of each view
    panels = []
    for g, lab_view, (row_mm, col_mm) in zip(_views(grey, center), _views(lab, center), aspects):
        rgb = np.repeat(g[..., None].astype(np.float32), 3, axis=2)
        for value in FOREGROUND_LABELS:
            mask = lab_view == value
            if mask.any():
                color = np.array(LABEL_COLORS[value], np.float32) * 255
                rgb[mask] = (1 - alpha) * rgb[mask] + alpha * color
        img = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
        height = max(1, int(round(img.height * row_mm / col_mm)))
        scale = PANEL_PX / max(img.width, height)
        panels.append(img.resize((max(1, round(img.width * scale)), max(1, round(height * scale))), Image.BILINEAR))
    return panels


def _draw_edges(draw, box: tuple[int, int, int, int], edges: tuple[str, str, str, str], font) -> None:
    """The anatomical direction letters inside each edge of a view."""
    x0, y0, x1, y1 = box
    left, right, top, bottom = edges
    my, mx = (y0 + y1) // 2, (x0 + x1) // 2
    for text, xy, anchor in ((left, (x0 + 4, my), "lm"), (right, (x1 - 4, my), "rm"),
                             (top, (mx, y0 + 4), "mt"), (bottom, (mx, y1 - 4), "mb")):
        draw.text(xy, text, fill=(255, 255, 0), font=font, anchor=anchor, stroke_width=2, stroke_fill=(0, 0, 0))


def _legend(draw, x: int, y: int, labels: np.ndarray, spacing, font) -> None:
    """Color swatches with each subregion's name and volume, then TC and WT."""
    ml = volumes(labels, spacing)["volumes_ml"]
    for value in FOREGROUND_LABELS:
        name = LABEL_NAMES[value]
        color = tuple(int(round(c * 255)) for c in LABEL_COLORS[value])
        draw.rectangle((x, y + 2, x + 14, y + 16), fill=color, outline=(255, 255, 255))
        text = f"{name} {LABEL_LONG_NAMES[value].lower()}: {ml[name]:.1f} mL"
        draw.text((x + 20, y), text, fill=(240, 240, 240), font=font)
        x += 26 + int(draw.textlength(text, font=font)) + 16
    draw.text((x, y), f"TC {ml['TC']:.1f} mL   WT {ml['WT']:.1f} mL", fill=(240, 240, 240), font=font)


def write_overlay_png(images: np.ndarray, labels: np.ndarray, geometry: Geometry, path: str | os.PathLike,
                      *, channel: str = "t1ce", alpha: float = 0.45, case_id: str = "", model: str = "",
                      notice: str = "") -> Path:
    """A PNG a reader can take in on its own: axial, coronal and sagittal slices through the tumor's center (the
    chosen channel in grey, the labels in their colors, radiological convention: the patient's right on the left),
    direction letters on every side, the case id and ``model`` above, a legend with the volumes below, and
    ``notice`` (e.g. that the model is a demonstration) as a red banner on top. Needs Pillow."""
    try:
        from PIL import Image, ImageDraw
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError("the PNG overlay needs Pillow: pip install 'pedtumorseg[viz]'") from exc

    grey, spacing = _to_lps(images[CHANNELS.index(channel)].astype(np.float32), geometry)
    lab, _ = _to_lps(labels.astype(np.uint8), geometry)
    panels = _panels(_window(grey), lab, spacing, alpha)
    font, small = _font(18), _font(15)
    banner = 34 if notice else 0
    top = banner + 62
    width = max(sum(p.width for p in panels) + MARGIN * (len(panels) + 1), 900)
    canvas = Image.new("RGB", (width, top + PANEL_PX + 50), (0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    if notice:
        draw.rectangle((0, 0, width, banner - 4), fill=NOTICE_RGB)
        draw.text((MARGIN, (banner - 4) // 2), notice, fill=(255, 255, 255), font=small, anchor="lm")
    title = "   ".join(t for t in (f"Case {case_id}" if case_id else "", f"Model {model}" if model else "",
                                   f"{CHANNEL_LONG_NAMES[channel]} with labels") if t)
    draw.text((MARGIN, banner + 8), title, fill=(255, 255, 255), font=font)
    x = MARGIN
    for panel, (name, edges) in zip(panels, VIEW_EDGES):
        y = top + (PANEL_PX - panel.height) // 2
        canvas.paste(panel, (x, y))
        draw.text((x, top - 4), name, fill=(230, 230, 230), font=small, anchor="ld")
        _draw_edges(draw, (x, y, x + panel.width, y + panel.height), edges, small)
        x += panel.width + MARGIN
    _legend(draw, MARGIN, top + PANEL_PX + 16, labels, geometry.spacing_zyx, small)
    path = Path(path)
    with atomic_output(path) as tmp:
        canvas.save(tmp, format="PNG")
    return path
