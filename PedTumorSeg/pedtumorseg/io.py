"""Case I/O: find the four modalities of a case, read and validate them, put them on one grid, write labels.

The reference grid of a case is the T1CE grid (``conventions.REFERENCE_CHANNEL``). Images on a different
grid that still overlaps it physically are resampled onto it (linear, 0 outside) with a warning; anything
else that cannot be used is refused with a one-line ``InputError`` naming the file.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import logging
import math
import os
import re
import struct
import tempfile
import zlib
import warnings as _warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import SimpleITK as sitk

from .conventions import (BRATS_SUFFIXES, CHANNEL_LONG_NAMES, CHANNELS, IMAGE_EXTENSIONS, LEGACY_SUFFIXES,
                          REFERENCE_CHANNEL, SEG_SUFFIX, strip_image_extension)
from .errors import InputError

log = logging.getLogger(__name__)

LABEL_VALUES = frozenset({0, 1, 2, 3, 4})
_REL_TOL = 1e-4
_ABS_TOL_MM = 1e-3


# --- geometry -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Geometry:
    """A voxel grid in ITK order: size/spacing/origin as (x, y, z), direction as a row-major 3x3 9-tuple."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @classmethod
    def from_image(cls, image: sitk.Image) -> "Geometry":
        return cls(tuple(int(s) for s in image.GetSize()), tuple(float(s) for s in image.GetSpacing()),
                   tuple(float(o) for o in image.GetOrigin()), tuple(float(d) for d in image.GetDirection()))

    def to_image(self, array_zyx: np.ndarray) -> sitk.Image:
        """A new SimpleITK image holding ``array_zyx`` on this grid."""
        array_zyx = np.asarray(array_zyx)
        if array_zyx.shape != self.shape_zyx:
            raise ValueError(f"array shape {array_zyx.shape} does not match grid shape {self.shape_zyx}")
        image = sitk.GetImageFromArray(np.ascontiguousarray(array_zyx))
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        return tuple(reversed(self.spacing))

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        return tuple(reversed(self.size))

    @property
    def voxel_volume_mm3(self) -> float:
        return float(np.prod(self.spacing))

    def corners_physical(self) -> np.ndarray:
        """(8, 3) physical coordinates of the outer voxel corners (index -0.5 and size-0.5)."""
        d = np.asarray(self.direction, float).reshape(3, 3)
        sp, org = np.asarray(self.spacing, float), np.asarray(self.origin, float)
        lo, hi = -0.5 * np.ones(3), np.asarray(self.size, float) - 0.5
        idx = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
        return org + (idx * sp) @ d.T

    def bounding_box(self) -> tuple[np.ndarray, np.ndarray]:
        c = self.corners_physical()
        return c.min(0), c.max(0)

    def same_grid(self, other: "Geometry") -> bool:
        """Equal size, and spacing/origin/direction within 1e-4 relative or 1e-3 mm."""
        if self.size != other.size:
            return False
        return all(np.allclose(a, b, rtol=_REL_TOL, atol=_ABS_TOL_MM) for a, b in
                   ((self.spacing, other.spacing), (self.origin, other.origin),
                    (self.direction, other.direction)))

    def overlaps(self, other: "Geometry", min_fraction: float = 0.01) -> bool:
        """Whether the physical bounding boxes intersect in at least ``min_fraction`` of the smaller box."""
        lo1, hi1 = self.bounding_box()
        lo2, hi2 = other.bounding_box()
        inter = np.clip(np.minimum(hi1, hi2) - np.maximum(lo1, lo2), 0, None).prod()
        smaller = min((hi1 - lo1).prod(), (hi2 - lo2).prod())
        return bool(inter > 0 and inter >= min_fraction * smaller)


# --- atomic output --------------------------------------------------------------------------------------
def _split_ext(name: str) -> tuple[str, str]:
    stem = strip_image_extension(name, IMAGE_EXTENSIONS + (".tar.gz",))
    if stem is not None:
        return stem, name[len(stem):]
    stem, ext = os.path.splitext(name)
    return stem, ext


def _new_file_mode() -> int:
    """The mode ``open()`` would give a new file: 0o666 minus the process umask."""
    try:  # Linux: read the umask without changing it
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` (same extension); rename it onto ``path`` on success.

    On an exception the temporary file is removed and ``path`` is left untouched (absent if it was absent).
    Before the rename the temporary file's data is flushed to disk (``fsync``: a full disk shows up here, not
    later), and the folder entry after it. The final file gets the usual permissions of a new file (umask
    applied), not ``mkstemp``'s private 0600. A temporary file left by a killed process is named
    ``.<stem>.<8 random characters>.tmp<ext>``; ``remove_stale_temporaries(path)`` removes those.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stem, ext = _split_ext(path.name)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".tmp{ext}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, _new_file_mode())
            _fsync(tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):  # some file systems cannot sync a directory; the data is synced already
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files ``atomic_output(path)`` leaves when its process is killed (SIGKILL, a crash)."""
    path = Path(path)
    stem, ext = _split_ext(path.name)
    pattern = re.compile(rf"\.{re.escape(stem)}\.[A-Za-z0-9_]{{8}}\.tmp{re.escape(ext)}")
    removed = []
    if path.parent.is_dir():
        for p in path.parent.iterdir():
            if pattern.fullmatch(p.name) and p.is_file() and not p.is_symlink():
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                    removed.append(p)
    return removed


def check_output_folder(folder: str | os.PathLike) -> Path:
    """``InputError`` naming ``folder`` unless files can be created in it (or where it would be created):
    an existing file in its place or above it, a read-only folder, a full disk. Creates nothing that stays."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and not existing.is_symlink():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        if existing == folder:
            raise InputError(folder, "output folder is an existing file, not a folder")
        raise InputError(folder, f"cannot create the output folder: {existing} is a file, not a folder")
    if not existing.exists():
        raise InputError(folder, f"cannot create the output folder: {existing} is a broken link")
    try:
        fd, probe = tempfile.mkstemp(prefix=".pedtumorseg-write-test.", dir=existing)
        try:
            os.write(fd, b"\0" * 65536)  # a full disk fails here (or at fsync), not after the inference
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        where = "" if existing == folder else f" (in {existing})"
        raise InputError(folder, f"cannot write the output here{where}: {exc.strerror or exc}") from None
    return folder


def check_output_file(path: str | os.PathLike) -> Path:
    """``InputError`` unless ``path`` can be written as a file (not a folder; its folder writable)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(path, "output file is an existing folder")
    check_output_folder(path.parent)
    return path


# --- finding cases --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CaseFiles:
    case_id: str
    images: dict  # channel -> Path, in CHANNELS order
    seg: Path | None = None


def _match(stem: str, suffix: str) -> str | None:
    """Case id if ``stem`` ends with ``[-_]<suffix>`` (case-insensitive), else None.

    Matching the whole final token means ``t1`` never matches ``..._t1ce`` and ``t2`` never ``...-t2f``.
    """
    m = re.fullmatch(rf"(.+)[-_]{re.escape(suffix)}", stem, flags=re.IGNORECASE)
    return m.group(1) if m else None


def _scan(folder: Path) -> dict[str, dict[str, list[tuple[str, Path]]]]:
    """naming scheme -> role (channel or 'seg') -> [(case_id, path)]."""
    found: dict[str, dict[str, list[tuple[str, Path]]]] = {"brats": {}, "legacy": {}}
    for p in sorted(folder.iterdir()):
        if not p.is_file():
            continue
        stem = strip_image_extension(p.name)
        if stem is None:
            continue
        for scheme, suffixes in (("brats", BRATS_SUFFIXES), ("legacy", LEGACY_SUFFIXES)):
            for role, suffix in list(suffixes.items()) + [("seg", SEG_SUFFIX)]:
                cid = _match(stem, suffix)
                if cid is not None:
                    found[scheme].setdefault(role, []).append((cid, p))
    return found


def _try_find_case(folder: Path) -> CaseFiles | None:
    found = _scan(folder)
    for scheme, suffixes in (("brats", BRATS_SUFFIXES), ("legacy", LEGACY_SUFFIXES)):
        roles = found[scheme]
        if not any(ch in roles for ch in CHANNELS):
            continue
        missing = [ch for ch in CHANNELS if ch not in roles]
        if missing:
            ch = missing[0]
            raise InputError(folder, f"missing {CHANNEL_LONG_NAMES[ch]} image (expected a file named "
                                     f"'<ID>-{suffixes[ch]}' or '<ID>_{suffixes[ch]}' with one of "
                                     f"{', '.join(IMAGE_EXTENSIONS)})")
        for ch in CHANNELS:
            if len(roles[ch]) > 1:
                raise InputError(folder, f"more than one {CHANNEL_LONG_NAMES[ch]} image: "
                                         f"{', '.join(p.name for _, p in roles[ch])}")
        images = {ch: roles[ch][0][1] for ch in CHANNELS}
        case_id = check_case_id(roles[REFERENCE_CHANNEL][0][0])
        seg = roles["seg"][0][1] if roles.get("seg") else None
        return CaseFiles(case_id, images, seg)
    return None


def find_case(folder: str | os.PathLike) -> CaseFiles:
    """The case in ``folder`` (BraTS 2023+ or legacy names); ``InputError`` if none or incomplete."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "not a folder")
    case = _try_find_case(folder)
    if case is None:
        raise InputError(folder, "no case found (expected files '<ID>-t1n', '-t1c', '-t2w', '-t2f' or legacy "
                                 "'<ID>_t1', '_t1ce', '_t2', '_flair' with extension .nii.gz/.nii/.nrrd/.mha)")
    return case


def find_cases(root: str | os.PathLike, problems: list[tuple[Path, InputError]] | None = None) -> list[CaseFiles]:
    """Every case under ``root``: root itself if it is a case, then each subfolder holding one (sorted).

    An incomplete case folder (a modality missing, two files for one) raises ``InputError``; when a
    ``problems`` list is given, it is appended there as ``(folder, error)`` instead, so that a batch can report
    it as that case's failure and go on with the others.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "not a folder")
    cases = []
    for folder in [root] + sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            case = _try_find_case(folder)
        except InputError as exc:
            if problems is None:
                raise
            problems.append((folder, exc))
            continue
        if case is not None:
            cases.append(case)
    return cases


def case_from_files(t1, t1ce, t2, flair, case_id: str | None = None, seg=None) -> CaseFiles:
    """A case from four explicit paths (image files or DICOM series folders); the id defaults to the T1CE file
    name without modality suffix (a series folder: its name)."""
    images = {ch: Path(p) for ch, p in zip(CHANNELS, (t1, t1ce, t2, flair))}
    for ch, p in images.items():
        if p.is_dir():
            if not _holds_dicom(p):
                raise InputError(p, f"{CHANNEL_LONG_NAMES[ch]} input is a directory, expected an image file or a "
                                    "DICOM series folder (no DICOM file found in it)")
            continue  # a DICOM series folder: read and checked by dicom_input
        problem = _describe_path_problem(p)
        if problem == "file not found":
            raise InputError(p, f"{CHANNEL_LONG_NAMES[ch]} image not found")
        if problem:
            raise InputError(p, f"{CHANNEL_LONG_NAMES[ch]} input {problem}")
    if case_id is None:
        stem = strip_image_extension(images["t1ce"].name) or images["t1ce"].name
        case_id = stem
        for suffix in (BRATS_SUFFIXES["t1ce"], LEGACY_SUFFIXES["t1ce"]):
            cid = _match(stem, suffix)
            if cid is not None:
                case_id = cid
                break
    return CaseFiles(check_case_id(case_id), images, None if seg is None else Path(seg))


def check_case_id(case_id: str) -> str:
    """``case_id`` if it can name output files inside an output folder, else ``InputError``: no path separators,
    no ``:``, no control characters, not empty and not starting with ``.`` (hidden and temporary files)."""
    if (not case_id or case_id.startswith(".") or any(c in case_id for c in "/\\:") or case_id != case_id.strip()
            or any(ord(c) < 32 for c in case_id)):
        raise InputError(None, f"case id {case_id!r} cannot be used as a file name (it must not be empty, start "
                               "with '.', have spaces around it or contain '/', '\\', ':' or control characters)")
    return case_id


# --- reading and validating -----------------------------------------------------------------------------
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
_NIFTI_FLOAT = {16: "f4", 64: "f8"}


def _holds_dicom(folder: Path, look_at: int = 64) -> bool:
    """Whether ``folder`` holds a DICOM file (the ``DICM`` magic after the 128-byte preamble, or a ``.dcm`` name)
    among the first ``look_at`` files: a cheap check before a model loads; the series itself is read later."""
    seen = 0
    for entry in sorted(folder.iterdir()):
        if not entry.is_file():
            continue
        if entry.suffix.lower() == ".dcm":
            return True
        try:
            with open(entry, "rb") as f:
                if f.read(132)[128:] == b"DICM":
                    return True
        except OSError:
            pass
        seen += 1
        if seen >= look_at:
            break
    return False


def _describe_path_problem(path: Path) -> str | None:
    """Why ``path`` is not a readable image file, or None if it is a file."""
    if path.is_dir():
        return "is a directory, expected an image file"
    if not path.is_file():
        return "file not found" if not path.exists() else "not a regular file"
    return None


def _nifti_layout(head: bytes) -> tuple[str, int, int, int, tuple[float, ...]] | None:
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


def _verify_nifti(path: Path, what: str, keep_data: bool = False) -> tuple[str, bytes, int] | None:
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
            layout = _nifti_layout(head)
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


def _read(path: Path, what: str = "image") -> sitk.Image:
    """Read an image file after the full-read checks of ``_verify_nifti``; ``InputError`` naming the file."""
    path = Path(path)
    problem = _describe_path_problem(path)
    if problem:
        raise InputError(path, problem)
    _verify_nifti(path, what)
    try:
        return sitk.ReadImage(str(path))
    except Exception as exc:  # SimpleITK raises RuntimeError with a multi-line message
        first = str(exc).strip().splitlines()
        detail = next((ln.strip() for ln in reversed(first) if ln.strip()), "unknown reason")
        raise InputError(path, f"unreadable image file ({detail[:160]})") from None


def _check_image(path: Path, image: sitk.Image, what: str) -> np.ndarray:
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


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


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
            if _same_file(path, files.images[other]):
                raise InputError(path, f"the same file is given as {CHANNEL_LONG_NAMES[other]} and {what}")
        image = _read(path, what)
        array = _check_image(path, image, what)
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
    image = _read(path, "label map")
    array = _check_image(path, image, "label map")
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
        nifti = _verify_nifti(Path(path), "written image", keep_data=True)
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
        raise OSError(f"{name}: the written file is incomplete ({exc.problem}); is the disk full?") from None
    except (RuntimeError, ValueError):
        raise OSError(f"{name}: the written file cannot be read back; is the disk full?") from None
    written = Geometry(tuple(int(v) for v in size), tuple(float(v) for v in spacing),
                       tuple(float(v) for v in origin), tuple(float(v) for v in direction))
    if not (written.same_grid(geometry) and np.array_equal(back, np.asarray(array).ravel())):
        raise OSError(f"{name}: the written file differs from what was written; is the disk full?")
