"""Anatomical orientation of voxel axes: the network sees every case in the orientation its training data had.

An orientation is a three-letter code in SimpleITK's ``DICOMOrient`` convention: the letters name the anatomical
direction each ITK index axis (x, y, z) points *towards* (BraTS volumes read by SimpleITK are ``LPS``: x towards
the patient's Left, y towards Posterior, z towards Superior). Reorienting permutes and flips voxel axes only, so
it is exact and its inverse restores the array bit for bit.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .io import Geometry

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
    probe = sitk.Image([int(s) for s in geometry.size], sitk.sitkUInt8)
    probe.SetSpacing(geometry.spacing)
    probe.SetOrigin(geometry.origin)
    probe.SetDirection(geometry.direction)
    return Geometry.from_image(sitk.DICOMOrient(probe, code))


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


def predict_in_orientation(engine, images: np.ndarray, geometry: Geometry, code: str, progress=None, cancel=None):
    """``engine.predict`` with the images reoriented to ``code`` and the result mapped back onto ``geometry``.

    When the case is already in ``code`` nothing is copied or moved: the call is exactly ``engine.predict``.
    """
    current = orientation_code(geometry)
    if current == code.upper():
        return engine.predict(images, geometry.spacing_zyx, progress=progress, cancel=cancel)
    oriented, oriented_geometry = reorient_stack(images, geometry, code)
    prediction = engine.predict(oriented, oriented_geometry.spacing_zyx, progress=progress, cancel=cancel)
    probabilities = None  # the full-grid map only where the engine was asked for it
    if prediction.probabilities is not None:
        probabilities, _ = reorient_stack(prediction.probabilities, oriented_geometry, current)
    labels, _ = reorient_array(prediction.labels, oriented_geometry, current)
    prediction.probabilities, prediction.labels = probabilities, labels
    prediction.info["reoriented"] = {"from": current, "to": code.upper()}
    return prediction
