"""One case on the T1CE grid and in the network's space, whatever the scans were: ``prepare_case``.

- **preprocessed** (BraTS-like: files, one grid, skull-stripped): ``images.load_case``; the network sees the images
  as they are, reoriented to the bundle's orientation only when they are stored differently (an exact axis
  permutation), so BraTS results stay bit for bit what they were;
- **raw** otherwise: every sequence is read (``dicom`` for series folders), T1/T2/FLAIR are rigidly registered to
  the T1CE (``registration``) unless the four share a grid, the brain is extracted when the image shows a skull
  (``brain_extraction``) or taken from a user's mask, and the four are resampled (linear) onto the *network grid*:
  the T1CE's field of view, reoriented to the bundle's orientation, at the bundle's spacing. The way back onto the
  T1CE grid is ``inference.export``'s job.

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

from pedtumorseg.conventions import CHANNEL_LONG_NAMES, CHANNELS, REFERENCE_CHANNEL
from pedtumorseg.errors import InputError
from pedtumorseg.geometry import Geometry
from pedtumorseg.inputs.brain_extraction import SkullDecision, deepbet_mask, detect_skull
from pedtumorseg.inputs.cases import CaseFiles
from pedtumorseg.inputs.consistency import check_case
from pedtumorseg.inputs.dicom import classify, read_series, require_raw_extra, series_info
from pedtumorseg.inputs.images import Case, check_image, load_case, read_header, read_image
from pedtumorseg.inputs.orientation import orientation_code, reorient_stack, reoriented_geometry
from pedtumorseg.inputs.registration import register_rigid
from pedtumorseg.progress import ProgressCallback, no_progress

log = logging.getLogger(__name__)
CHOICES = ("auto", "yes", "no")
#: how the network input's grid relates to the case's (T1CE) grid
SAME, REORIENTED, RESAMPLED = "same", "reoriented", "resampled"


@dataclass(frozen=True)
class RawOptions:
    """How a case's raw inputs are handled (CLI ``--register``, ``--skull-strip``, ``--brain-mask``)."""

    register: str = "auto"
    skull_strip: str = "auto"
    brain_mask: Path | None = None
    strict: bool = False  # --strict: refuse a case whose images look misaligned or in the wrong slots

    def __post_init__(self):
        for name in ("register", "skull_strip"):
            if getattr(self, name) not in CHOICES:
                raise ValueError(f"--{name.replace('_', '-')} must be one of {', '.join(CHOICES)}, "
                                 f"got {getattr(self, name)!r}")
        if self.brain_mask is not None:
            object.__setattr__(self, "brain_mask", Path(self.brain_mask))

    def to_dict(self) -> dict:
        return {"register": self.register, "skull_strip": self.skull_strip,
                "brain_mask": None if self.brain_mask is None else str(self.brain_mask), "strict": self.strict}


@dataclass
class NetworkInput:
    """What the network sees: a (4, z, y, x) stack on ``geometry``, related to the case grid by ``route``
    (``same``: the case's own arrays; ``reoriented``: an exact axis permutation; ``resampled``: linear resampling
    of raw scans)."""

    images: np.ndarray
    geometry: Geometry
    route: str


@dataclass
class PreparedCase:
    case: Case  # images on the T1CE grid (registered, brain-masked in raw mode); geometry = T1CE grid
    info: dict  # the "input" section of <ID>-stats.json
    network: NetworkInput
    brain_mask: np.ndarray | None = None  # bool on the T1CE grid, when one was used
    warnings: list[str] = field(default_factory=list)

    @property
    def raw(self) -> bool:
        return self.network.route == RESAMPLED


def read_any(path: str | os.PathLike, channel: str) -> sitk.Image:
    """A DICOM series folder or an image file, validated, as float32."""
    path = Path(path)
    if path.is_dir():
        require_raw_extra(path, "DICOM input")
        image = read_series(path)
    else:
        image = read_image(path)
    array = check_image(path, image, CHANNEL_LONG_NAMES[channel])
    if array.size and float(array.max()) == float(array.min()):
        raise InputError(path, f"{CHANNEL_LONG_NAMES[channel]} is constant ({float(array.min()):g} everywhere)")
    return sitk.Cast(image, sitk.sitkFloat32)


def prepare_case(files: CaseFiles, options: RawOptions | None, bundle, device: str = "cpu",
                 progress: ProgressCallback | None = None) -> PreparedCase:
    """Read a case and bring it into the network's space (see the module docstring)."""
    options = options or RawOptions()
    info: dict = {"options": options.to_dict(), "network_orientation": bundle.orientation,
                  "files": {ch: str(Path(files.images[ch]).resolve()) for ch in CHANNELS}}
    case, decision = _preprocessed_case(files, options, info)
    if case is not None:
        prepared = PreparedCase(case, info, network_input_of(case, bundle.orientation), warnings=list(case.warnings))
    else:
        prepared = _prepare_raw(files, options, bundle, device, decision, info, progress or no_progress)
    _check_consistency(prepared, files, options)
    return prepared


def _check_consistency(prepared: PreparedCase, files: CaseFiles, options: RawOptions) -> None:
    """``inputs.consistency`` on the case as the network will see it: numbers into the stats, refusals raised,
    warnings added to the case's (refused too with ``--strict``)."""
    paths = {ch: Path(files.images[ch]) for ch in CHANNELS}
    guess = {ch: _series_sequence(p) for ch, p in paths.items() if p.is_dir()}
    result = check_case(prepared.case.images, paths, guess)
    if files.ignored:
        result.warn.append(f"{Path(files.images['t1ce']).parent}: also holds {', '.join(p.name for p in files.ignored)}, "
                           f"which look like images of this case but were not used (used: "
                           f"{', '.join(Path(files.images[ch]).name for ch in CHANNELS)})")
    prepared.info["consistency"] = result.to_dict()
    problems = result.refuse + (result.warn if options.strict else [])
    if problems:
        raise InputError(None, problems[0] + (" (--strict)" if not result.refuse else ""))
    prepared.case.warnings.extend(result.warn)
    if prepared.warnings is not prepared.case.warnings:
        prepared.warnings.extend(result.warn)


def _series_sequence(folder: Path) -> str | None:
    """The sequence a DICOM series' own description and parameters name (``dicom.classify``), None if unknown."""
    try:
        return classify(series_info(folder))
    except InputError:
        return None


def _preprocessed_case(files: CaseFiles, options: RawOptions, info: dict) -> tuple[Case | None, SkullDecision | None]:
    """``(case, None)`` when the files are a BraTS-like preprocessed case (``info`` filled in), else ``(None,
    the skull decision if one was made)``: then the case goes the raw way."""
    paths = {ch: Path(files.images[ch]) for ch in CHANNELS}
    if (any(p.is_dir() for p in paths.values()) or options.register == "yes" or options.brain_mask is not None
            or options.skull_strip == "yes"):
        return None, None
    geoms = {ch: read_header(p, CHANNEL_LONG_NAMES[ch]) for ch, p in paths.items()}
    same = all(g.same_grid(geoms[REFERENCE_CHANNEL]) for g in geoms.values())
    if not (same or options.register == "no"):
        return None, None
    case = load_case(files)
    decision = None
    if options.skull_strip == "auto":
        decision = detect_skull(case.geometry.to_image(case.images[CHANNELS.index(REFERENCE_CHANNEL)]))
        log.info("%s: %s", files.case_id, decision.reason)
        if decision.skull:
            return None, decision
    info.update({"mode": "preprocessed", "input_orientation": orientation_code(case.geometry),
                 "registration": {"performed": False, "reason": "one grid" if same else "--register no"},
                 "skull": {"stripped_here": False,
                           **(decision.to_dict() if decision else {"reason": "--skull-strip no"})}})
    return case, None


def network_input_of(case: Case, code: str) -> NetworkInput:
    """The case's images in the bundle's orientation (the same arrays when they are stored that way already)."""
    if orientation_code(case.geometry) == code.upper():
        return NetworkInput(case.images, case.geometry, SAME)
    images, geometry = reorient_stack(case.images, case.geometry, code)
    return NetworkInput(images, geometry, REORIENTED)


# --- raw scans ---------------------------------------------------------------------------------------------------

def _prepare_raw(files: CaseFiles, options: RawOptions, bundle, device: str, decision: SkullDecision | None,
                 info: dict, report: ProgressCallback) -> PreparedCase:
    paths = {ch: Path(files.images[ch]) for ch in CHANNELS}
    images = {ch: read_any(p, ch) for ch, p in paths.items()}
    ref_geometry = Geometry.from_image(images[REFERENCE_CHANNEL])
    report(0.01, f"{files.case_id}: read {', '.join(CHANNEL_LONG_NAMES[c] for c in CHANNELS)}")
    info["mode"] = "raw"
    info["input_orientation"] = orientation_code(ref_geometry)
    info["sources"] = {ch: {"path": str(p), "kind": "dicom" if p.is_dir() else "file",
                            "size_xyz": list(images[ch].GetSize()),
                            "spacing_xyz": [round(s, 4) for s in images[ch].GetSpacing()],
                            "orientation": orientation_code(Geometry.from_image(images[ch]))}
                       for ch, p in paths.items()}
    transforms, info["registration"], warnings = _register(files.case_id, images, paths, options, report)
    mask_image, info["skull"] = _brain_mask(files.case_id, images, paths, transforms, options, decision, device,
                                            report)
    report(0.1, f"{files.case_id}: resampling to the network grid")
    net_geometry = reoriented_geometry(ref_geometry, bundle.orientation).at_spacing(tuple(reversed(bundle.spacing_zyx)))
    stack, brain = _on_grid(images, transforms, ref_geometry, mask_image, t1ce_grid=True)
    net_stack, _ = _on_grid(images, transforms, net_geometry, mask_image, t1ce_grid=False)
    info["network_grid"] = {"size_xyz": list(net_geometry.size), "spacing_xyz": list(net_geometry.spacing),
                            "orientation": orientation_code(net_geometry)}
    if brain is not None:
        info["skull"]["brain_volume_ml"] = round(float(brain.sum() * ref_geometry.voxel_volume_mm3 / 1000.0), 1)
    case = Case(files.case_id, stack, ref_geometry, files, warnings)
    return PreparedCase(case, info, NetworkInput(net_stack, net_geometry, RESAMPLED), brain, warnings)


def _register(case_id: str, images: dict, paths: dict, options: RawOptions, report: ProgressCallback):
    """``(transforms T1CE -> each sequence, the stats' "registration" section, warnings)``."""
    ref_geometry = Geometry.from_image(images[REFERENCE_CHANNEL])
    same = all(Geometry.from_image(images[ch]).same_grid(ref_geometry) for ch in CHANNELS)
    do_register = options.register == "yes" or (options.register == "auto" and not same)
    transforms = {ch: sitk.Euler3DTransform() for ch in CHANNELS}
    registration: dict = {"performed": do_register,
                          "reason": {"yes": "--register yes", "no": "--register no"}.get(
                              options.register, "grids differ" if not same else "one grid")}
    warnings: list[str] = []
    for ch in CHANNELS:
        if ch == REFERENCE_CHANNEL:
            continue
        if not Geometry.from_image(images[ch]).overlaps(ref_geometry):
            raise InputError(paths[ch], f"{CHANNEL_LONG_NAMES[ch]} does not overlap the T1CE in physical space "
                                        "(different patient position or examination?)")
        if not do_register:
            continue
        report(0.02, f"{case_id}: registering {CHANNEL_LONG_NAMES[ch]} to T1CE")
        result = register_rigid(images[REFERENCE_CHANNEL], images[ch])
        transforms[ch] = result.transform
        registration[ch] = result.to_dict()
        if not registration[ch]["improved"]:
            msg = (f"{paths[ch]}: registration of {CHANNEL_LONG_NAMES[ch]} to T1CE did not improve the mutual "
                   "information; check the alignment")
            warnings.append(msg)
            log.warning(msg)
    return transforms, registration, warnings


def _brain_mask(case_id: str, images: dict, paths: dict, transforms: dict, options: RawOptions,
                decision: SkullDecision | None, device: str, report: ProgressCallback):
    """``(brain mask on the T1CE grid as a uint8 image or None, the stats' "skull" section)``."""
    ref = Geometry.from_image(images[REFERENCE_CHANNEL]).reference_image(sitk.sitkUInt8)
    if options.brain_mask is not None:
        user = read_image(options.brain_mask)
        check_image(options.brain_mask, user, "brain mask")
        if not Geometry.from_image(user).overlaps(Geometry.from_image(ref)):
            raise InputError(options.brain_mask, "brain mask does not overlap the T1CE in physical space")
        mask = sitk.Resample(sitk.Cast(user != 0, sitk.sitkUInt8), ref, sitk.Transform(), sitk.sitkNearestNeighbor,
                             0, sitk.sitkUInt8)
        skull = {"stripped_here": True, "method": "user mask", "path": str(options.brain_mask)}
        return _non_empty(mask, options.brain_mask), skull
    if options.skull_strip == "auto" and decision is None:
        decision = detect_skull(images[REFERENCE_CHANNEL])
        log.info("%s: %s", case_id, decision.reason)
    strip = options.skull_strip == "yes" or (options.skull_strip == "auto" and decision.skull)
    skull = {"stripped_here": strip, **(decision.to_dict() if decision else {}),
             **({"reason": f"--skull-strip {options.skull_strip}"} if options.skull_strip != "auto" else {})}
    if not strip:
        return None, skull
    report(0.08, f"{case_id}: brain extraction (deepbet on T1)")
    t1_mask = deepbet_mask(images["t1"], paths["t1"], device=device,
                           reason=decision.reason if decision else "--skull-strip yes")
    mask = sitk.Resample(t1_mask, ref, transforms["t1"], sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    skull["method"] = "deepbet on T1, carried to the T1CE grid by the T1 registration"
    return _non_empty(mask, paths["t1"]), skull


def _non_empty(mask: sitk.Image, source) -> sitk.Image:
    if not sitk.GetArrayViewFromImage(mask).any():
        raise InputError(source, "the brain mask is empty on the T1CE grid")
    return mask


def _on_grid(images: dict, transforms: dict, geometry: Geometry, mask_image: sitk.Image | None,
             t1ce_grid: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """The four sequences resampled (linear, 0 outside, clipped at 0) onto ``geometry`` through their transforms,
    zero outside the brain mask; and that mask there. ``t1ce_grid``: ``geometry`` is the T1CE's own grid (the T1CE
    is taken as it is, the mask as it is); else the mask is resampled linearly and thresholded at 0.5."""
    ref = geometry.reference_image()
    stack = np.empty((len(CHANNELS),) + geometry.shape_zyx, np.float32)
    for i, ch in enumerate(CHANNELS):
        image = images[ch] if (t1ce_grid and ch == REFERENCE_CHANNEL) else sitk.Resample(
            images[ch], ref, transforms[ch], sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        stack[i] = sitk.GetArrayFromImage(image)
    np.clip(stack, 0, None, out=stack)
    if mask_image is None:
        return stack, None
    if not t1ce_grid:
        brain = sitk.GetArrayFromImage(sitk.Resample(sitk.Cast(mask_image, sitk.sitkFloat32), ref, sitk.Transform(),
                                                     sitk.sitkLinear, 0.0)) >= 0.5
    else:
        brain = sitk.GetArrayFromImage(mask_image).astype(bool)
    stack[:, ~brain] = 0
    return stack, brain
