"""Case I/O: find the four modalities of a case, read and validate them, put them on one grid, write labels.

The reference grid of a case is the T1CE grid (``conventions.REFERENCE_CHANNEL``). Images on a different
grid that still overlaps it physically are resampled onto it (linear, 0 outside) with a warning; anything
else that cannot be used is refused with a one-line ``InputError`` naming the file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
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
    The final file gets the usual permissions of a new file (umask applied), not ``mkstemp``'s private 0600.
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
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


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
        case_id = roles[REFERENCE_CHANNEL][0][0]
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
        if not (p.is_file() or p.is_dir()):
            raise InputError(p, f"{CHANNEL_LONG_NAMES[ch]} image not found")
    if case_id is None:
        stem = strip_image_extension(images["t1ce"].name) or images["t1ce"].name
        case_id = stem
        for suffix in (BRATS_SUFFIXES["t1ce"], LEGACY_SUFFIXES["t1ce"]):
            cid = _match(stem, suffix)
            if cid is not None:
                case_id = cid
                break
    return CaseFiles(case_id, images, None if seg is None else Path(seg))


# --- reading and validating -----------------------------------------------------------------------------
@dataclass
class Case:
    case_id: str
    images: np.ndarray  # (4, z, y, x) float32, CHANNELS order
    geometry: Geometry
    files: CaseFiles
    warnings: list[str] = field(default_factory=list)


def _read(path: Path) -> sitk.Image:
    if not Path(path).is_file():
        raise InputError(path, "file not found")
    try:
        return sitk.ReadImage(str(path))
    except Exception as exc:  # SimpleITK raises RuntimeError with a multi-line message
        first = str(exc).strip().splitlines()
        detail = next((ln.strip() for ln in reversed(first) if ln.strip()), "unknown reason")
        raise InputError(path, f"unreadable image file ({detail[:160]})") from None


def _nifti_has_nonfinite(path: Path) -> bool:
    """Whether a float NIfTI file stores NaN/Inf (ITK's NIfTI reader silently replaces them, so look at the bytes)."""
    import gzip
    import struct

    name = path.name.lower()
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        return False
    try:
        with (gzip.open if name.endswith(".gz") else open)(path, "rb") as fh:
            data = fh.read()
        for endian in ("<", ">"):
            hdr = struct.unpack(endian + "i", data[:4])[0]
            if hdr == 348:
                dtype_code = struct.unpack(endian + "h", data[70:72])[0]
                offset = int(struct.unpack(endian + "f", data[108:112])[0])
                break
            if hdr == 540:
                dtype_code = struct.unpack(endian + "h", data[12:14])[0]
                offset = int(struct.unpack(endian + "q", data[168:176])[0])
                break
        else:
            return False
        kind = {16: "f4", 64: "f8"}.get(dtype_code)
        if kind is None:
            return False
        values = np.frombuffer(data, dtype=endian + kind, offset=offset)
        return not bool(np.all(np.isfinite(values)))
    except (OSError, ValueError, struct.error):
        return False


def _check_image(path: Path, image: sitk.Image, what: str) -> np.ndarray:
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(path, f"{what} has {image.GetNumberOfComponentsPerPixel()} components per voxel; "
                               "expected a scalar image")
    size = image.GetSize()
    if image.GetDimension() != 3 or min(size) < 2:
        raise InputError(path, f"{what} is {image.GetDimension()}D with size {size}; expected a 3D volume")
    array = sitk.GetArrayFromImage(image)
    if not np.all(np.isfinite(array)) or (array.dtype.kind == "f" and _nifti_has_nonfinite(Path(path))):
        raise InputError(path, f"{what} contains NaN or infinite values")
    return array


def load_case(files: CaseFiles) -> Case:
    """Read, validate and put the four images on the T1CE grid; (4, z, y, x) float32."""
    raw: dict[str, sitk.Image] = {}
    for ch in CHANNELS:
        path = files.images[ch]
        image = _read(path)
        array = _check_image(path, image, CHANNEL_LONG_NAMES[ch])
        if array.size and float(array.max()) == float(array.min()):
            raise InputError(path, f"{CHANNEL_LONG_NAMES[ch]} is constant ({float(array.min()):g} everywhere)")
        raw[ch] = image
    ref_image = raw[REFERENCE_CHANNEL]
    geometry = Geometry.from_image(ref_image)
    warns: list[str] = []
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
    image = _read(path)
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
    """Write a uint8 label map on exactly ``geometry``, atomically."""
    path = Path(path)
    labels = np.asarray(labels)
    if labels.shape != geometry.shape_zyx:
        raise InputError(path, f"labels of shape {labels.shape} do not match the grid shape {geometry.shape_zyx}")
    image = geometry.to_image(labels.astype(np.uint8))
    with atomic_output(path) as tmp:
        sitk.WriteImage(image, str(tmp), True)
    return path


def write_image(array: np.ndarray, geometry: Geometry, path: str | os.PathLike) -> Path:
    """Write an image array (dtype kept) on ``geometry``, atomically."""
    path = Path(path)
    with atomic_output(path) as tmp:
        sitk.WriteImage(geometry.to_image(array), str(tmp), True)
    return path
