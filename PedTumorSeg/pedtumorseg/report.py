"""What a prediction reports: the per-case stats JSON and a PNG overlay montage.

The stats are what a clinician reads (volumes in mL of each subregion and their share of the whole tumor, after
`shared/seeds/001`), plus the provenance needed to reproduce the result (model name/version, post-processing).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from . import __version__
from .conventions import CHANNELS, FOREGROUND_LABELS, LABEL_COLORS
from .io import Geometry, atomic_output
from .metrics import volumes


def stats_dict(case_id: str, labels: np.ndarray, geometry: Geometry, *, model: dict, postprocessing: dict,
               warnings: list[str] | None = None) -> dict:
    """JSON-ready summary of one segmented case.

    ``model`` holds at least ``name`` and ``version`` of the bundle; ``postprocessing`` is the
    ``PostprocessParams.to_dict()`` that produced ``labels``.
    """
    vol = volumes(labels, geometry.spacing_zyx)
    return {
        "case_id": case_id,
        "volumes_ml": vol["volumes_ml"],
        "fraction_of_wt": vol["fraction_of_wt"],
        "model": model,
        "postprocessing": postprocessing,
        "geometry": {
            "size_xyz": list(geometry.size),
            "spacing_xyz": list(geometry.spacing),
            "origin_xyz": list(geometry.origin),
            "direction": list(geometry.direction),
        },
        "warnings": list(warnings or []),
        "software": {"pedtumorseg": __version__},
    }


def write_json(data: dict, path: str | os.PathLike) -> Path:
    """Write ``data`` as indented JSON, atomically; read back and compared before it replaces ``path``."""
    path = Path(path)
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    with atomic_output(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
        if Path(tmp).read_text(encoding="utf-8") != text:  # read back before it counts
            raise OSError(f"{path}: the written file differs from what was written; is the disk full?")
    return path


# --- overlay ------------------------------------------------------------------------------------------

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
    and the labels in the colors of DESIGN §2 (ET red, NET green, CC yellow, ED teal). Needs Pillow."""
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
