"""Writing images: label maps and float images on an exact grid, atomically, read back and compared before they
count (a write cut short by a full disk or a file-size limit leaves nothing behind).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from pedtumorseg.errors import InputError
from pedtumorseg.files import atomic_output
from pedtumorseg.geometry import Geometry
from pedtumorseg.inputs.nifti import verify_nifti


def write_labels(labels: np.ndarray, geometry: Geometry, path: str | os.PathLike) -> Path:
    """Write a uint8 label map on exactly ``geometry``, atomically; read back and compared before it counts."""
    path = Path(path)
    labels = np.asarray(labels)
    if labels.shape != geometry.shape_zyx:
        raise InputError(path, f"labels of shape {labels.shape} do not match the grid shape {geometry.shape_zyx}")
    return write_image(labels.astype(np.uint8), geometry, path)


def write_image(array: np.ndarray, geometry: Geometry, path: str | os.PathLike) -> Path:
    """Write an image array (dtype kept) on ``geometry``, atomically.

    The written file is read back (with the full-read checks of the reader) and compared with ``array`` and
    ``geometry`` before it replaces ``path``: a write cut short (full disk, file-size limit) raises
    ``OSError`` and leaves nothing behind.
    """
    path = Path(path)
    array = np.asarray(array)
    with atomic_output(path) as tmp:
        try:
            sitk.WriteImage(geometry.to_image(array), str(tmp), True)
        except RuntimeError as exc:  # ITK's multi-line message; its last line says why
            lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
            raise OSError(f"{path}: cannot write the image ({lines[-1][:160] if lines else 'unknown reason'})") \
                from None
        verify_written_image(tmp, array, geometry, name=path)
    return path


def verify_written_image(path: str | os.PathLike, array: np.ndarray, geometry: Geometry,
                         name: str | os.PathLike | None = None) -> None:
    """Raise ``OSError`` (naming ``name``, default ``path``) unless ``path`` holds exactly ``array`` on
    ``geometry``. A NIfTI file is decompressed once and its voxel bytes compared with ``array``'s; other formats
    are read back with ITK."""
    name = path if name is None else name
    try:
        nifti = verify_nifti(Path(path), "written image", keep_data=True)
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        if nifti is None:
            image = reader.Execute()
            back = sitk.GetArrayFromImage(image).ravel()
            size, spacing, origin, direction = (image.GetSize(), image.GetSpacing(), image.GetOrigin(),
                                                image.GetDirection())
        else:
            reader.ReadImageInformation()
            endian, data, offset = nifti
            stored = np.asarray(array).dtype.newbyteorder(endian)
            back = np.frombuffer(data, dtype=stored, count=np.asarray(array).size, offset=offset)
            size, spacing, origin, direction = (reader.GetSize(), reader.GetSpacing(), reader.GetOrigin(),
                                                reader.GetDirection())
    except InputError as exc:
        raise OSError(f"{name}: the written file is incomplete ({exc.problem}); is the disk full or a file-size limit reached?") from None
    except (RuntimeError, ValueError):
        raise OSError(f"{name}: the written file cannot be read back; is the disk full or a file-size limit reached?") from None
    written = Geometry(tuple(int(v) for v in size), tuple(float(v) for v in spacing),
                       tuple(float(v) for v in origin), tuple(float(v) for v in direction))
    if not (written.same_grid(geometry) and np.array_equal(back, np.asarray(array).ravel())):
        raise OSError(f"{name}: the written file differs from what was written; is the disk full or a file-size limit reached?")
