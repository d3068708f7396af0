"""Raw clinical scans in: DICOM series or NIfTI files on their own grids, unregistered, with skull and scalp.

``prepare_case`` decides what a case needs and returns a :class:`PreparedCase`:

- **preprocessed** (BraTS-like: files, one grid, skull-stripped): ``io.load_case`` as before; the network sees the
  images as they are (reoriented to the bundle's orientation only when they are stored differently), so BraTS
  results stay bit for bit what they were;
- **raw** otherwise: every sequence is read (``dicom_input`` for series folders), T1/T2/FLAIR are rigidly
  registered to the T1CE (``registration``) unless the four share a grid, the brain is extracted when the image
  shows a skull (``brain_extraction``) or taken from a user's mask, and the four are resampled (linear) onto the
  *network grid*: the T1CE's field of view, reoriented to the bundle's orientation, at the bundle's spacing.
  The network's class probabilities are resampled (linear) back onto the original T1CE grid and the labels are
  their argmax there, so the result lies on the volume the clinician sees.

``--register auto|yes|no``: auto registers when the four grids differ. ``--skull-strip auto|yes|no``: auto strips
when ``brain_extraction.detect_skull`` finds skull and scalp on the T1CE.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .brain_extraction import SkullDecision, deepbet_mask, detect_skull
from .conventions import CHANNEL_LONG_NAMES, CHANNELS, NUM_CLASSES, REFERENCE_CHANNEL
from .dicom_input import find_study, is_dicom_folder, read_series, require_raw_extra
from .errors import InputError
from .io import Case, CaseFiles, Geometry, _check_image, _read, load_case
from .orientation import orientation_code, predict_in_orientation, reoriented_geometry
from .registration import register_rigid

log = logging.getLogger(__name__)
CHOICES = ("auto", "yes", "no")


@dataclass(frozen=True)
class RawOptions:
    """How a case's raw inputs are handled (CLI ``--register``, ``--skull-strip``, ``--brain-mask``)."""

    register: str = "auto"
    skull_strip: str = "auto"
    brain_mask: Path | None = None

    def __post_init__(self):
        for name in ("register", "skull_strip"):
            if getattr(self, name) not in CHOICES:
                raise ValueError(f"--{name.replace('_', '-')} must be one of {', '.join(CHOICES)}, "
                                 f"got {getattr(self, name)!r}")
        if self.brain_mask is not None:
            object.__setattr__(self, "brain_mask", Path(self.brain_mask))

    def to_dict(self) -> dict:
        return {"register": self.register, "skull_strip": self.skull_strip,
                "brain_mask": None if self.brain_mask is None else str(self.brain_mask)}


def find_any_case(folder: str | os.PathLike, explicit: dict | None = None) -> CaseFiles:
    """A case folder with BraTS/legacy file names, else a DICOM study folder (``dicom_input.find_study``)."""
    from .io import find_case

    folder = Path(folder)
    explicit = {ch: p for ch, p in (explicit or {}).items() if p}
    try:
        files = find_case(folder)
    except InputError:
        if not folder.is_dir() or not any(is_dicom_folder(r) for r, _d, _f in os.walk(folder)):
            if explicit:
                raise InputError(folder, "give either --case or the four files --t1 --t1ce --t2 --flair, not both "
                                         "(single series go with --case only for a DICOM study folder)") from None
            raise
        files = None
    if files is not None:
        if explicit:
            raise InputError(folder, "give either --case or the four files --t1 --t1ce --t2 --flair, not both")
        return files
    require_raw_extra(folder, "a DICOM study folder")
    images = find_study(folder, explicit)
    return CaseFiles(folder.name, images, None)


def find_dicom_studies(root: str | os.PathLike, known: set, problems: list | None = None) -> list[CaseFiles]:
    """Sub-folders of ``root`` that are not file-named cases (``known`` ids/names) but hold DICOM series: one
    study each. A study whose sequences cannot be chosen goes to ``problems`` as ``(folder, error)``."""
    root = Path(root)
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in known):
        if not any(is_dicom_folder(r) for r, _d, _f in os.walk(folder)):
            continue
        try:
            out.append(find_any_case(folder))
        except InputError as exc:
            if problems is None:
                raise
            problems.append((folder, exc))
    return out


def read_any(path: str | os.PathLike, channel: str) -> sitk.Image:
    """A DICOM series folder or an image file, validated, as float32."""
    path = Path(path)
    if path.is_dir():
        require_raw_extra(path, "DICOM input")
        image = read_series(path)
    else:
        image = _read(path)
    array = _check_image(path, image, CHANNEL_LONG_NAMES[channel])
    if array.size and float(array.max()) == float(array.min()):
        raise InputError(path, f"{CHANNEL_LONG_NAMES[channel]} is constant ({float(array.min()):g} everywhere)")
    return sitk.Cast(image, sitk.sitkFloat32)


def _header_geometry(path: Path) -> Geometry:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except Exception:
        return Geometry.from_image(_read(path))  # _read raises the one-line InputError
    return Geometry(tuple(int(s) for s in reader.GetSize()), tuple(float(s) for s in reader.GetSpacing()),
                    tuple(float(o) for o in reader.GetOrigin()), tuple(float(d) for d in reader.GetDirection()))


def grid_at_spacing(geometry: Geometry, spacing_xyz) -> Geometry:
    """The same field of view (outer voxel corners) and direction sampled at ``spacing_xyz``."""
    sp_old, sp_new = np.asarray(geometry.spacing, float), np.asarray(spacing_xyz, float)
    extent = np.asarray(geometry.size, float) * sp_old
    size = np.maximum(1, np.round(extent / sp_new)).astype(int)
    d = np.asarray(geometry.direction, float).reshape(3, 3)
    corner = np.asarray(geometry.origin, float) - d @ (0.5 * sp_old)
    origin = corner + d @ (0.5 * sp_new)
    return Geometry(tuple(int(s) for s in size), tuple(float(s) for s in sp_new), tuple(float(o) for o in origin),
                    geometry.direction)


def _reference(geometry: Geometry, pixel=sitk.sitkFloat32) -> sitk.Image:
    ref = sitk.Image([int(s) for s in geometry.size], pixel)
    ref.SetSpacing(geometry.spacing)
    ref.SetOrigin(geometry.origin)
    ref.SetDirection(geometry.direction)
    return ref


@dataclass
class PreparedCase:
    case: Case  # images on the T1CE grid (registered, brain-masked in raw mode); geometry = T1CE grid
    info: dict  # the "input" section of <ID>-stats.json
    brain_mask: np.ndarray | None = None  # bool on the T1CE grid, when one was used
    network_images: np.ndarray | None = None  # raw mode: (4, z, y, x) on network_geometry
    network_geometry: Geometry | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def raw(self) -> bool:
        return self.network_images is not None

    def predict(self, engine, orientation: str, progress=None, cancel=None):
        """The engine's prediction with probabilities and labels on the T1CE grid."""
        if not self.raw:
            return predict_in_orientation(engine, self.case.images, self.case.geometry, orientation,
                                          progress=progress, cancel=cancel)
        prediction = engine.predict(self.network_images, self.network_geometry.spacing_zyx, progress=progress,
                                    cancel=cancel, probabilities=True)  # resampled back, not the labels
        probabilities = probabilities_to_grid(prediction.probabilities, self.network_geometry, self.case.geometry)
        labels = probabilities.argmax(0).astype(np.uint8)
        if self.brain_mask is not None:
            labels[~self.brain_mask] = 0
        prediction.probabilities, prediction.labels = probabilities, labels
        return prediction


def probabilities_to_grid(probabilities: np.ndarray, source: Geometry, target: Geometry) -> np.ndarray:
    """(C, ...) class probabilities on ``source`` resampled (linear) onto ``target``; outside ``source``: background."""
    ref = _reference(target)
    out = np.empty((probabilities.shape[0],) + target.shape_zyx, np.float32)
    for c in range(probabilities.shape[0]):
        image = source.to_image(np.ascontiguousarray(probabilities[c], dtype=np.float32))
        out[c] = sitk.GetArrayFromImage(sitk.Resample(image, ref, sitk.Transform(), sitk.sitkLinear,
                                                          1.0 if c == 0 else 0.0, sitk.sitkFloat32))
    return out


def prepare_case(files: CaseFiles, options: RawOptions | None, bundle, device: str = "cpu",
                 progress=None) -> PreparedCase:
    """Read a case and bring it into the network's space (see the module docstring)."""
    options = options or RawOptions()
    report = progress or (lambda fraction, message: None)
    paths = {ch: Path(files.images[ch]) for ch in CHANNELS}
    dicom = any(p.is_dir() for p in paths.values())
    info: dict = {"options": options.to_dict(), "network_orientation": bundle.orientation}
    decision: SkullDecision | None = None
    if not dicom and options.register != "yes" and options.brain_mask is None and options.skull_strip != "yes":
        geoms = {ch: _header_geometry(p) for ch, p in paths.items()}
        same = all(g.same_grid(geoms[REFERENCE_CHANNEL]) for g in geoms.values())
        if same or options.register == "no":
            case = load_case(files)
            if options.skull_strip == "auto":
                ref = case.geometry.to_image(case.images[CHANNELS.index(REFERENCE_CHANNEL)])
                decision = detect_skull(ref)
                log.info("%s: %s", files.case_id, decision.reason)
            if decision is None or not decision.skull:
                info.update({"mode": "preprocessed", "input_orientation": orientation_code(case.geometry),
                             "registration": {"performed": False,
                                              "reason": "one grid" if same else "--register no"},
                             "skull": {"stripped_here": False,
                                       **(decision.to_dict() if decision else {"reason": "--skull-strip no"})}})
                return PreparedCase(case, info, warnings=list(case.warnings))
    return _prepare_raw(files, paths, options, bundle, device, decision, info, report)


def _prepare_raw(files, paths, options, bundle, device, decision, info, report) -> PreparedCase:
    images = {ch: read_any(p, ch) for ch, p in paths.items()}
    fixed = images[REFERENCE_CHANNEL]
    ref_geometry = Geometry.from_image(fixed)
    report(0.01, f"{files.case_id}: read {', '.join(CHANNEL_LONG_NAMES[c] for c in CHANNELS)}")
    info["mode"] = "raw"
    info["input_orientation"] = orientation_code(ref_geometry)
    info["sources"] = {ch: {"path": str(p), "kind": "dicom" if p.is_dir() else "file",
                            "size_xyz": list(images[ch].GetSize()),
                            "spacing_xyz": [round(s, 4) for s in images[ch].GetSpacing()],
                            "orientation": orientation_code(Geometry.from_image(images[ch]))}
                       for ch, p in paths.items()}
    warnings: list[str] = []

    # co-registration to the T1CE
    same = all(Geometry.from_image(images[ch]).same_grid(ref_geometry) for ch in CHANNELS)
    do_register = options.register == "yes" or (options.register == "auto" and not same)
    transforms = {ch: sitk.Euler3DTransform() for ch in CHANNELS}
    registration: dict = {"performed": do_register,
                          "reason": {"yes": "--register yes", "no": "--register no"}.get(
                              options.register, "grids differ" if not same else "one grid")}
    for ch in CHANNELS:
        if ch == REFERENCE_CHANNEL:
            continue
        g = Geometry.from_image(images[ch])
        if not g.overlaps(ref_geometry):
            raise InputError(paths[ch], f"{CHANNEL_LONG_NAMES[ch]} does not overlap the T1CE in physical space "
                                        "(different patient position or examination?)")
        if do_register:
            report(0.02, f"{files.case_id}: registering {CHANNEL_LONG_NAMES[ch]} to T1CE")
            result = register_rigid(fixed, images[ch])
            transforms[ch] = result.transform
            registration[ch] = result.to_dict()
            if not registration[ch]["improved"]:
                msg = (f"{paths[ch]}: registration of {CHANNEL_LONG_NAMES[ch]} to T1CE did not improve the mutual "
                       "information; check the alignment")
                warnings.append(msg)
                log.warning(msg)
    info["registration"] = registration

    # brain mask on the T1CE grid
    fixed_ref = _reference(ref_geometry, sitk.sitkUInt8)
    skull: dict = {}
    mask_image = None
    if options.brain_mask is not None:
        user = _read(options.brain_mask)
        _check_image(options.brain_mask, user, "brain mask")
        if not Geometry.from_image(user).overlaps(ref_geometry):
            raise InputError(options.brain_mask, "brain mask does not overlap the T1CE in physical space")
        mask_image = sitk.Resample(sitk.Cast(user != 0, sitk.sitkUInt8), fixed_ref, sitk.Transform(),
                                   sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        skull = {"stripped_here": True, "method": "user mask", "path": str(options.brain_mask)}
    else:
        if options.skull_strip == "auto" and decision is None:
            decision = detect_skull(fixed)
            log.info("%s: %s", files.case_id, decision.reason)
        strip = options.skull_strip == "yes" or (options.skull_strip == "auto" and decision.skull)
        skull = {"stripped_here": strip, **(decision.to_dict() if decision else {}),
                 **({"reason": f"--skull-strip {options.skull_strip}"} if options.skull_strip != "auto" else {})}
        if strip:
            report(0.08, f"{files.case_id}: brain extraction (deepbet on T1)")
            t1_mask = deepbet_mask(images["t1"], paths["t1"], device=device)
            mask_image = sitk.Resample(t1_mask, fixed_ref, transforms["t1"], sitk.sitkNearestNeighbor, 0,
                                       sitk.sitkUInt8)
            skull["method"] = "deepbet on T1, carried to the T1CE grid by the T1 registration"
    brain = None
    if mask_image is not None:
        brain = sitk.GetArrayFromImage(mask_image).astype(bool)
        if not brain.any():
            raise InputError(options.brain_mask or paths["t1"], "the brain mask is empty on the T1CE grid")
        skull["brain_volume_ml"] = round(float(brain.sum() * ref_geometry.voxel_volume_mm3 / 1000.0), 1)
    info["skull"] = skull

    # images on the T1CE grid (for post-processing and the overlay) and on the network grid
    report(0.1, f"{files.case_id}: resampling to the network grid")
    net_geometry = grid_at_spacing(reoriented_geometry(ref_geometry, bundle.orientation),
                                   tuple(reversed(bundle.spacing_zyx)))
    net_ref = _reference(net_geometry)
    net_mask = None
    if mask_image is not None:
        net_mask = sitk.GetArrayFromImage(sitk.Resample(sitk.Cast(mask_image, sitk.sitkFloat32), net_ref,
                                                            sitk.Transform(), sitk.sitkLinear, 0.0)) >= 0.5
    stack = np.empty((len(CHANNELS),) + ref_geometry.shape_zyx, np.float32)
    net_stack = np.empty((len(CHANNELS),) + net_geometry.shape_zyx, np.float32)
    fixed_float_ref = _reference(ref_geometry)
    for i, ch in enumerate(CHANNELS):
        on_ref = images[ch] if ch == REFERENCE_CHANNEL else sitk.Resample(
            images[ch], fixed_float_ref, transforms[ch], sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        stack[i] = sitk.GetArrayFromImage(on_ref)
        net_stack[i] = sitk.GetArrayFromImage(sitk.Resample(images[ch], net_ref, transforms[ch],
                                                                sitk.sitkLinear, 0.0, sitk.sitkFloat32))
    np.clip(stack, 0, None, out=stack)
    np.clip(net_stack, 0, None, out=net_stack)
    if brain is not None:
        stack[:, ~brain] = 0
        net_stack[:, ~net_mask] = 0
    info["network_grid"] = {"size_xyz": list(net_geometry.size), "spacing_xyz": list(net_geometry.spacing),
                            "orientation": orientation_code(net_geometry)}
    case = Case(files.case_id, stack, ref_geometry, files, warnings)
    return PreparedCase(case, info, brain, net_stack, net_geometry, warnings)
