"""Reading a case: each image read in full and validated (one ``InputError`` line naming the file for anything
unusable), the four put on the T1CE grid; label maps read and checked.

The reference grid of a case is the T1CE grid (``conventions.REFERENCE_CHANNEL``). Images on a different grid
that still overlaps it physically are resampled onto it (linear, 0 outside) with a warning.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import warnings as _warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk

from pedtumorseg.conventions import CHANNEL_LONG_NAMES, CHANNELS, REFERENCE_CHANNEL
from pedtumorseg.errors import InputError
from pedtumorseg.files import path_problem, same_file
from pedtumorseg.geometry import Geometry, header_geometry
from pedtumorseg.inputs.nifti import verify_nifti

if TYPE_CHECKING:
    from pedtumorseg.inputs.cases import CaseFiles

log = logging.getLogger(__name__)

LABEL_VALUES = frozenset({0, 1, 2, 3, 4})


@dataclass
class Case:
    case_id: str
    images: np.ndarray  # (4, z, y, x) float32, CHANNELS order
    geometry: Geometry
    files: CaseFiles
    warnings: list[str] = field(default_factory=list)


#: voxel spacings (mm) outside this range are refused as a broken header, not segmented
SPACING_RANGE_MM = (0.05, 20.0)
#: intensities: refused beyond these (largest |value|, smallest max - min), warned beyond the second pair
MAX_ABS_INTENSITY = 1e12
MIN_INTENSITY_RANGE = 1e-6
WARN_ABS_INTENSITY = 1e6
WARN_INTENSITY_RANGE = 1e-2


def read_image(path: str | os.PathLike, what: str = "image") -> sitk.Image:
    """Read an image file after the full-read checks of ``verify_nifti``; ``InputError`` naming the file."""
    path = Path(path)
    problem = path_problem(path)
    if problem:
        raise InputError(path, problem)
    verify_nifti(path, what)
    try:
        return sitk.ReadImage(str(path))
    except Exception as exc:  # SimpleITK raises RuntimeError with a multi-line message
        first = str(exc).strip().splitlines()
        detail = next((ln.strip() for ln in reversed(first) if ln.strip()), "unknown reason")
        raise InputError(path, f"unreadable image file ({detail[:160]})") from None


def read_header(path: str | os.PathLike, what: str = "image") -> Geometry:
    """The grid of an image file from its header alone; an unreadable file gets the full reader's one-line
    ``InputError`` (it says why: truncated, not an image ...)."""
    path = Path(path)
    problem = path_problem(path)
    if problem:
        raise InputError(path, problem)
    try:
        return header_geometry(path)
    except RuntimeError:
        return Geometry.from_image(read_image(path, what))


def check_image(path: Path, image: sitk.Image, what: str) -> np.ndarray:
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(path, f"{what} has {image.GetNumberOfComponentsPerPixel()} components per voxel; "
                               "expected a scalar image")
    size = image.GetSize()
    if image.GetDimension() != 3 or min(size) < 2:
        raise InputError(path, f"{what} is {image.GetDimension()}D with size {size}; expected a 3D volume")
    spacing = image.GetSpacing()
    lo, hi = SPACING_RANGE_MM
    if not all(math.isfinite(s) and lo <= s <= hi for s in spacing):
        raise InputError(path, f"{what} has voxel spacing {tuple(round(s, 6) for s in spacing)} mm; expected "
                               f"each between {lo:g} and {hi:g} mm (broken header?)")
    if not all(math.isfinite(v) for v in tuple(image.GetOrigin()) + tuple(image.GetDirection())):
        raise InputError(path, f"{what} has a non-finite origin or direction in its header")
    array = sitk.GetArrayFromImage(image)
    if not np.all(np.isfinite(array)):
        raise InputError(path, f"{what} contains NaN or infinite values")
    return array


def _intensity_problems(path: Path, array: np.ndarray, what: str) -> list[str]:
    """Refuse intensities no MR image has (they break float32 normalization); warnings for unusual scales."""
    vmax, vmin = float(array.max()), float(array.min())
    largest, spread = max(abs(vmax), abs(vmin)), vmax - vmin
    if largest > MAX_ABS_INTENSITY:
        beyond = " (beyond the float32 range)" if largest > float(np.finfo(np.float32).max) else ""
        raise InputError(path, f"{what} has intensities up to {largest:.3g}{beyond}; an MR image above "
                               f"{MAX_ABS_INTENSITY:g} is not plausible: rescale it")
    if 0 < spread < MIN_INTENSITY_RANGE:
        raise InputError(path, f"{what} has an intensity range of only {spread:.3g}; below "
                               f"{MIN_INTENSITY_RANGE:g} is not plausible for an MR image: rescale it")
    warns = []
    if largest > WARN_ABS_INTENSITY or 0 < spread < WARN_INTENSITY_RANGE:
        warns.append(f"{path}: {what} has an unusual intensity scale (values {vmin:.3g} to {vmax:.3g}); check "
                     "that it is the raw MR image")
    return warns


def _voxel_digest(array: np.ndarray) -> tuple:
    """Shape, dtype and a hash of the voxels: equal for two images with exactly the same content."""
    data = np.ascontiguousarray(array)
    return data.shape, data.dtype.str, hashlib.blake2b(memoryview(data).cast("B")).digest()


def load_case(files: CaseFiles) -> Case:
    """Read, validate and put the four images on the T1CE grid; (4, z, y, x) float32."""
    raw: dict[str, sitk.Image] = {}
    digests: dict[str, tuple] = {}
    warns: list[str] = []
    for ch in CHANNELS:
        path, what = files.images[ch], CHANNEL_LONG_NAMES[ch]
        for other in digests:
            if same_file(path, files.images[other]):
                raise InputError(path, f"the same file is given as {CHANNEL_LONG_NAMES[other]} and {what}")
        image = read_image(path, what)
        array = check_image(path, image, what)
        if array.size and float(array.max()) == float(array.min()):
            raise InputError(path, f"{what} is constant ({float(array.min()):g} everywhere)")
        for msg in _intensity_problems(path, array, what):
            warns.append(msg)
            _warnings.warn(msg, stacklevel=2)
            log.warning(msg)
        digest = _voxel_digest(array)
        for other, seen in digests.items():
            if digest == seen:
                raise InputError(path, f"{what} has exactly the same voxels as the {CHANNEL_LONG_NAMES[other]} "
                                       f"image {files.images[other].name}; each modality needs its own image")
        raw[ch], digests[ch] = image, digest
    ref_image = raw[REFERENCE_CHANNEL]
    geometry = Geometry.from_image(ref_image)
    stack = np.empty((len(CHANNELS),) + geometry.shape_zyx, np.float32)
    for i, ch in enumerate(CHANNELS):
        image, path = raw[ch], files.images[ch]
        g = Geometry.from_image(image)
        if not g.same_grid(geometry):
            if not g.overlaps(geometry):
                raise InputError(path, f"{CHANNEL_LONG_NAMES[ch]} grid does not overlap the T1CE grid of "
                                       f"{files.images[REFERENCE_CHANNEL].name} in physical space")
            image = sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), ref_image, sitk.Transform(),
                                  sitk.sitkLinear, 0.0, sitk.sitkFloat32)
            msg = (f"{path}: {CHANNEL_LONG_NAMES[ch]} grid (size {g.size}, spacing "
                   f"{tuple(round(s, 4) for s in g.spacing)}) differs from the T1CE grid; resampled onto it")
            warns.append(msg)
            _warnings.warn(msg, stacklevel=2)
            log.warning(msg)
        stack[i] = sitk.GetArrayViewFromImage(image).astype(np.float32, copy=False)
    return Case(files.case_id, stack, geometry, files, warns)


def read_labels(path: str | os.PathLike, geometry: Geometry | None = None) -> np.ndarray:
    """A uint8 label map with values in {0..4}; if ``geometry`` is given the file must be on that grid."""
    path = Path(path)
    image = read_image(path, "label map")
    array = check_image(path, image, "label map")
    if geometry is not None and not Geometry.from_image(image).same_grid(geometry):
        raise InputError(path, f"label map grid (size {image.GetSize()}) differs from the image grid "
                               f"(size {geometry.size})")
    if not np.array_equal(array, np.round(array)):
        raise InputError(path, "label map has non-integer values")
    values = set(np.unique(array).astype(np.int64).tolist())
    bad = sorted(values - LABEL_VALUES)
    if bad:
        raise InputError(path, f"label map has values {bad[:5]} outside {{0, 1, 2, 3, 4}}")
    return array.astype(np.uint8)


