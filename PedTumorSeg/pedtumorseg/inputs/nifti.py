"""Byte-level checks of NIfTI files before ITK reads them: a complete gzip stream, every byte the header promises,
positive finite spacings and finite float voxels (ITK's reader silently zero-fills, resets or replaces these).
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from pedtumorseg.errors import InputError

_NIFTI_FLOAT = {16: "f4", 64: "f8"}
def nifti_layout(head: bytes) -> tuple[str, int, int, int, tuple[float, ...]] | None:
    """``(endian, datatype, header bytes, image bytes, pixdim[1:1+ndim])`` of a NIfTI-1/2 single-file header;
    None if ``head`` is not one (or its dimensions are unusable: the image reader reports those)."""
    for endian in "<>":
        if len(head) >= 348 and struct.unpack(endian + "i", head[:4])[0] == 348:
            dims = struct.unpack(endian + "8h", head[40:56])
            datatype, bitpix = struct.unpack(endian + "2h", head[70:74])
            pixdim = struct.unpack(endian + "8f", head[76:108])
            offset, minimum = struct.unpack(endian + "f", head[108:112])[0], 352
            break
        if len(head) >= 540 and struct.unpack(endian + "i", head[:4])[0] == 540:
            datatype, bitpix = struct.unpack(endian + "2h", head[12:16])
            dims = struct.unpack(endian + "8q", head[16:80])
            pixdim = struct.unpack(endian + "8d", head[104:168])
            offset, minimum = struct.unpack(endian + "q", head[168:176])[0], 544
            break
    else:
        return None
    ndim = dims[0]
    if not 1 <= ndim <= 7 or any(d < 1 for d in dims[1:ndim + 1]) or bitpix < 1 or not math.isfinite(offset):
        return None
    voxels = math.prod(dims[1:ndim + 1])
    return endian, datatype, max(int(offset), minimum), (voxels * bitpix + 7) // 8, tuple(pixdim[1:1 + ndim])


def verify_nifti(path: Path, what: str, keep_data: bool = False) -> tuple[str, bytes, int] | None:
    """Full-read check of a ``.nii`` / ``.nii.gz`` file before ITK reads it.

    ITK's NIfTI reader fills a file cut short with zeros and turns a spacing of 0 or NaN into 1 mm without a
    word; it also replaces stored NaN/Inf. So: the gzip stream must be complete (and its checksum right), the
    file must hold every byte the header promises, ``pixdim`` must be finite and positive, and float data must
    be finite. A ``.nii.gz`` is decompressed once more for this (see benchmarks/bench_io_checks.py).
    With ``keep_data``, returns ``(byte order, file contents, offset of the voxels)`` of a NIfTI file.
    """
    name = path.name.lower()
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        return
    try:
        with open(path, "rb") as fh:  # gzip or not by its content, as ITK does, not by the name
            compressed = fh.read(2) == b"\x1f\x8b"
        with (gzip.open if compressed else open)(path, "rb") as fh:
            head = fh.read(544)
            layout = nifti_layout(head)
            if layout is None:
                return  # not a NIfTI header the image reader accepts; it says why
            endian, datatype, offset, nbytes, pixdim = layout
            kind = _NIFTI_FLOAT.get(datatype)
            if kind is not None or keep_data:  # keep the data to look for NaN/Inf
                data = head + fh.read()
                size = len(data)
            else:
                size = len(head)
                while True:
                    block = fh.read(1 << 22)
                    if not block:
                        break
                    size += len(block)
    except EOFError:
        raise InputError(path, "the compressed file is truncated (its gzip stream ends early)") from None
    except (OSError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise InputError(path, f"corrupt file ({exc})") from None
    if size < offset + nbytes:
        raise InputError(path, f"the file is truncated: it holds {max(size - offset, 0)} bytes of image data, "
                               f"the header promises {nbytes}")
    for axis, value in zip("xyz", pixdim[:3]):
        if not (math.isfinite(value) and value > 0):
            raise InputError(path, f"{what} has voxel spacing {value:g} along {axis} in its header (pixdim); "
                                   "expected a positive size in mm")
    if kind is not None:
        values = np.frombuffer(data, dtype=endian + kind, count=nbytes // np.dtype(kind).itemsize, offset=offset)
        if not bool(np.isfinite(values).all()):
            raise InputError(path, f"{what} contains NaN or infinite values")
    return (endian, data, offset) if keep_data else None

