"""The phantom generator's ``raw`` mode: a synthetic clinical examination instead of a BraTS-preprocessed case.

From the phantom of the same seed (``clean.make_phantom``, or with ``style="realistic"``
``realistic.make_realistic_phantom``), a *world* head is built: the brain, then shells by distance from the brain
surface (2.5 mm CSF, skull out to 9 mm, scalp out to about 15 mm, its thickness varying smoothly). Each sequence is then scanned separately: a random rigid head pose per sequence (up to 8 degrees about
each axis, 8 mm along each), its own clinical grid (``RAW_GRIDS``: a 3D T1CE, a sagittal T1, an axial T2 stored
right-to-left/anterior-to-posterior and an anisotropic coronal FLAIR) and Rician noise everywhere, the air
included. Ground truth (labels and the brain mask) lies on the T1CE grid.

``write_raw_phantom`` writes the case as BraTS-named NIfTI files or as a DICOM study (one folder per series,
written by SimpleITK/GDCM, with a localizer series that the selection must ignore).
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from pedtumorseg.conventions import BRATS_SUFFIXES, CHANNELS, REFERENCE_CHANNEL, SEG_SUFFIX
from pedtumorseg.geometry import Geometry
from pedtumorseg.files import atomic_output
from pedtumorseg.phantoms.clean import Phantom
from pedtumorseg.phantoms.realistic import make_styled_phantom

#: shell outer radius (mm from the brain surface) and intensity (t1, t1ce, t2, flair)
_SHELLS = ((2.5, (250, 280, 1850, 160)),  # CSF
           (9.0, (150, 170, 120, 100)),  # skull
           (15.0, (1300, 1350, 900, 950)))  # scalp (fat and skin)
_DIRECTIONS = {  # ITK direction columns (x, y, z axes) in LPS; the third is the slice normal row x column
    "axial": ((1, 0, 0), (0, 1, 0), (0, 0, 1)),
    "axial_ras": ((-1, 0, 0), (0, -1, 0), (0, 0, 1)),
    "sagittal": ((0, 1, 0), (0, 0, -1), (-1, 0, 0)),
    "coronal": ((1, 0, 0), (0, 0, -1), (0, 1, 0)),
}
#: per size: channel -> (spacing x, y, z in mm, plane, field of view x, y, z in mm)
RAW_GRIDS = {
    "small": {"t1ce": ((2.0, 2.0, 2.0), "axial", (220, 220, 180)),
              "t1": ((2.0, 2.0, 3.0), "sagittal", (220, 190, 180)),
              "t2": ((1.5, 1.5, 5.0), "axial_ras", (220, 220, 170)),
              "flair": ((2.0, 2.0, 5.0), "coronal", (220, 190, 200))},
    "brats": {"t1ce": ((1.0, 1.0, 1.0), "axial", (220, 220, 180)),
              "t1": ((1.0, 1.0, 1.2), "sagittal", (220, 190, 180)),
              "t2": ((0.5, 0.5, 5.0), "axial_ras", (220, 220, 170)),
              "flair": ((0.9, 0.9, 5.0), "coronal", (220, 190, 200))},
}
SERIES = {  # description, TE, TR, TI (ms), contrast agent
    "t1": ("T1 MPRAGE SAG", 2.5, 1900.0, 900.0, ""),
    "t1ce": ("T1 MPRAGE AX POST GAD", 2.5, 1900.0, 900.0, "GADOBUTROL"),
    "t2": ("T2 TSE AX", 100.0, 4000.0, None, ""),
    "flair": ("T2 FLAIR COR", 120.0, 9000.0, 2500.0, ""),
}
MAX_ANGLE_DEG = 8.0
MAX_SHIFT_MM = 8.0
PAD_MM = 22.0


@dataclass
class RawPhantom:
    case_id: str
    images: dict  # channel -> sitk.Image (int16) on its own grid
    seg: sitk.Image  # uint8 truth on the T1CE grid
    brain_mask: sitk.Image  # uint8 truth on the T1CE grid
    poses: dict  # channel -> sitk.Euler3DTransform (scanner point -> world point)
    clean: Phantom


def _world(clean: Phantom, rng: np.random.Generator) -> tuple[dict, np.ndarray, np.ndarray, Geometry]:
    """The clean phantom padded, with CSF/skull/scalp shells: (channel -> float32, seg, brain, geometry)."""
    g = clean.geometry
    pad = [int(np.ceil(PAD_MM / s)) for s in g.spacing_zyx]
    widths = [(p, p) for p in pad]
    brain = np.pad(np.any(np.stack([clean.images[c] > 0 for c in CHANNELS]), 0), widths)
    brain = ndimage.binary_fill_holes(brain)
    seg = np.pad(clean.seg, widths)
    origin = np.asarray(g.origin) - np.asarray(g.spacing) * np.asarray(pad[::-1])
    geometry = Geometry(tuple(int(s) + 2 * p for s, p in zip(g.size, pad[::-1])), g.spacing,
                        tuple(float(o) for o in origin), g.direction)
    dist = ndimage.distance_transform_edt(~brain, sampling=g.spacing_zyx)
    wobble = ndimage.gaussian_filter(rng.standard_normal(brain.shape), 8.0 / np.mean(g.spacing))
    wobble = 3.0 * wobble / (wobble.std() + 1e-6)
    images = {}
    for i, ch in enumerate(CHANNELS):
        img = np.pad(clean.images[ch].astype(np.float32), widths)
        scale = float(np.median(clean.images[ch][clean.images[ch] > 0])) / 900.0 if (clean.images[ch] > 0).any() else 1
        inner = 0.0
        for k, (outer, values) in enumerate(_SHELLS):
            top = outer + (wobble if k == len(_SHELLS) - 1 else 0.0)
            shell = (~brain) & (dist > inner) & (dist <= top)
            img[shell] = values[i] * scale * (0.85 if ch == "t1" and k == 0 else 1.0)
            inner = outer
        images[ch] = ndimage.gaussian_filter(img, 0.5)
    return images, seg, brain, geometry


def _grid(center: np.ndarray, spacing, plane: str, fov) -> Geometry:
    d = np.array(_DIRECTIONS[plane], float).T  # columns = axis directions
    size = np.ceil(np.asarray(fov, float) / np.asarray(spacing, float)).astype(int)
    origin = center - d @ ((size - 1) * np.asarray(spacing, float) / 2)
    return Geometry(tuple(int(s) for s in size), tuple(float(s) for s in spacing), tuple(float(o) for o in origin),
                    tuple(float(v) for v in d.ravel()))


def _pose(rng: np.random.Generator, center: np.ndarray) -> sitk.Euler3DTransform:
    t = sitk.Euler3DTransform()
    t.SetCenter(tuple(float(c) for c in center))
    t.SetRotation(*(float(a) for a in np.deg2rad(rng.uniform(-MAX_ANGLE_DEG, MAX_ANGLE_DEG, 3))))
    t.SetTranslation(tuple(float(v) for v in rng.uniform(-MAX_SHIFT_MM, MAX_SHIFT_MM, 3)))
    return t


def make_raw_phantom(seed: int, size: str = "small", style: str = "clean") -> RawPhantom:
    """The raw examination for ``seed`` (see the module docstring), made from the phantom of ``style``
    (``realistic.make_styled_phantom``); deterministic."""
    clean = make_styled_phantom(seed, size, style)
    rng = np.random.default_rng([seed, 1])
    world_images, seg, brain, world_g = _world(clean, rng)
    idx = np.argwhere(brain).mean(0)[::-1]
    center = np.asarray(world_g.to_image(np.zeros(world_g.shape_zyx, np.uint8))
                        .TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in idx)))
    images, poses = {}, {}
    for ch in CHANNELS:
        spacing, plane, fov = RAW_GRIDS[size][ch]
        grid = _grid(center, spacing, plane, fov)
        pose = _pose(rng, center)
        ref = grid.to_image(np.zeros(grid.shape_zyx, np.float32))
        img = sitk.GetArrayFromImage(sitk.Resample(world_g.to_image(world_images[ch]), ref, pose, sitk.sitkLinear, 0.0))
        sigma = 0.02 * 900.0
        noisy = np.sqrt((img + rng.normal(0, sigma, img.shape)) ** 2 + rng.normal(0, sigma, img.shape) ** 2)
        images[ch] = grid.to_image(np.clip(np.rint(noisy), 0, 32767).astype(np.int16))
        poses[ch] = pose
        if ch == REFERENCE_CHANNEL:
            seg_t = sitk.Resample(world_g.to_image(seg), ref, pose, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
            brain_t = sitk.Resample(world_g.to_image(brain.astype(np.uint8)), ref, pose, sitk.sitkNearestNeighbor, 0,
                                    sitk.sitkUInt8)
    return RawPhantom(clean.case_id, images, seg_t, brain_t, poses, clean)


def _uid(rng: np.random.Generator) -> str:
    return "2.25." + str(int.from_bytes(rng.bytes(16), "big"))


def write_dicom_series(image: sitk.Image, folder: Path, tags: dict, rng: np.random.Generator) -> Path:
    """Write a 3D image as a DICOM MR series, one file per slice along its third axis (SimpleITK/GDCM)."""
    folder.mkdir(parents=True, exist_ok=True)
    d = np.asarray(image.GetDirection(), float).reshape(3, 3)
    iop = "\\".join(f"{v:.6f}" for v in (*d[:, 0], *d[:, 1]))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetSize()[2]):
        sl = image[:, :, k]
        for tag, value in tags.items():
            sl.SetMetaData(tag, str(value))
        ipp = image.TransformIndexToPhysicalPoint((0, 0, k))
        sl.SetMetaData("0020|0032", "\\".join(f"{v:.6f}" for v in ipp))
        sl.SetMetaData("0020|0037", iop)
        sl.SetMetaData("0020|0013", str(k + 1))
        sl.SetMetaData("0008|0018", _uid(rng))
        sl.SetMetaData("0018|0050", f"{image.GetSpacing()[2]:.4f}")
        sl.SetMetaData("0018|0088", f"{image.GetSpacing()[2]:.4f}")
        writer.SetFileName(str(folder / f"IM{k + 1:04d}.dcm"))
        writer.Execute(sl)
    return folder


def write_raw_phantom(raw: RawPhantom, out_dir: str | os.PathLike, fmt: str = "nifti") -> Path:
    """Write ``<out_dir>/<ID>/``: the four sequences (``<ID>-t1n.nii.gz`` ... or one DICOM series folder each plus
    a localizer), and the truth on the T1CE grid: ``<ID>-seg.nii.gz`` and ``<ID>-brain.nii.gz``."""
    if fmt not in ("nifti", "dicom"):
        raise ValueError(f"unknown phantom format {fmt!r} (use 'nifti' or 'dicom')")
    folder = Path(out_dir) / raw.case_id
    folder.mkdir(parents=True, exist_ok=True)
    for name, image in ((SEG_SUFFIX, raw.seg), ("brain", raw.brain_mask)):
        with atomic_output(folder / f"{raw.case_id}-{name}.nii.gz") as tmp:
            sitk.WriteImage(image, str(tmp), True)
    if fmt == "nifti":
        for ch in CHANNELS:
            with atomic_output(folder / f"{raw.case_id}-{BRATS_SUFFIXES[ch]}.nii.gz") as tmp:
                sitk.WriteImage(raw.images[ch], str(tmp), True)
        return folder
    rng = np.random.default_rng(zlib.crc32(raw.case_id.encode()))
    study = {"0008|0060": "MR", "0008|0016": "1.2.840.10008.5.1.4.1.1.4", "0020|000d": _uid(rng),
             "0020|0052": _uid(rng), "0010|0010": "PHANTOM^" + raw.case_id, "0010|0020": raw.case_id,
             "0010|0030": "", "0010|0040": "O", "0008|0020": "20260101", "0008|0030": "120000",
             "0008|0050": "", "0020|0010": "1", "0008|0090": "", "0008|0070": "PedTumorSeg phantom",
             "0008|0008": "ORIGINAL\\PRIMARY\\M\\ND"}
    for number, ch in enumerate(CHANNELS, start=2):
        desc, te, tr, ti, agent = SERIES[ch]
        tags = dict(study, **{"0020|000e": _uid(rng), "0020|0011": str(number), "0008|103e": desc,
                              "0018|0081": str(te), "0018|0080": str(tr)})
        if ti is not None:
            tags["0018|0082"] = str(ti)
        if agent:
            tags["0018|0010"] = agent
        write_dicom_series(raw.images[ch], folder / f"{number:02d}_{desc.replace(' ', '_')}", tags, rng)
    # a three-slice localizer the series selection must skip
    loc = raw.images["t1"]
    loc = loc[:, :, loc.GetSize()[2] // 2 - 1: loc.GetSize()[2] // 2 + 2]
    write_dicom_series(loc, folder / "01_LOCALIZER", dict(study, **{"0020|000e": _uid(rng), "0020|0011": "1",
                                                                    "0008|103e": "AX LOCALIZER"}), rng)
    return folder
