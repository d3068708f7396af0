"""Anatomical orientation of voxel axes: the network sees every case in the orientation its training data had.

An orientation is a three-letter code in SimpleITK's ``DICOMOrient`` convention: the letters name the anatomical
direction each ITK index axis (x, y, z) points *towards* (BraTS volumes read by SimpleITK are ``LPS``: x towards
the patient's Left, y towards Posterior, z towards Superior). Reorienting permutes and flips voxel axes only, so
it is exact and its inverse restores the array bit for bit.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from pedtumorseg.geometry import Geometry

#: orientation of a bundle whose manifest does not say (BraTS data as SimpleITK reads them)
DEFAULT_ORIENTATION = "LPS"
_PAIRS = ("LR", "PA", "SI")


def is_valid_code(code) -> bool:
    """Three letters, one from each of L/R, P/A, S/I."""
    if not isinstance(code, str) or len(code) != 3:
        return False
    return sorted(next((i for i, pair in enumerate(_PAIRS) if c in pair), -1) for c in code.upper()) == [0, 1, 2]


def orientation_code(geometry: Geometry) -> str:
    """The closest orientation code of a grid's direction cosines (e.g. ``LPS``, ``RAS``, ``PIL`` for sagittal)."""
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(tuple(float(d) for d in geometry.direction))


def reoriented_geometry(geometry: Geometry, code: str) -> Geometry:
    """The grid ``geometry`` takes when its voxels are reoriented to ``code``."""
    return Geometry.from_image(sitk.DICOMOrient(geometry.reference_image(sitk.sitkUInt8), code))


def reorient_array(array_zyx: np.ndarray, geometry: Geometry, code: str) -> tuple[np.ndarray, Geometry]:
    """``array_zyx`` on ``geometry`` reoriented to ``code``: (array, new geometry). Exact (axis flips/permutes)."""
    image = sitk.DICOMOrient(geometry.to_image(np.asarray(array_zyx)), code)
    return sitk.GetArrayFromImage(image), Geometry.from_image(image)


def reorient_stack(stack: np.ndarray, geometry: Geometry, code: str) -> tuple[np.ndarray, Geometry]:
    """A (C, z, y, x) stack reoriented channel by channel."""
    out, new_geometry = [], geometry
    for channel in stack:
        array, new_geometry = reorient_array(channel, geometry, code)
        out.append(array)
    return np.stack(out), new_geometry
