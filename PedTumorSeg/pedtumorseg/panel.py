"""Slicer-free logic of the PedTumorSeg module panel.

Everything the Slicer module computes that is not MRML/Qt glue lives here so that it can be tested without
Slicer: auto-assignment of loaded volumes to the four channels, input validation, the prediction options of
the Device/Quality controls, the post-processing controls built from :data:`postprocess.PARAMETERS`, the
results table, the segment terminology strings, the comparison of segment crops for hand-edit detection, the
ratio-window clamp, the raw-scan options and the decision which
Python requirements are missing.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from .conventions import (CHANNEL_LONG_NAMES, CHANNELS, CC, ED, ET, LABEL_LONG_NAMES, NET, REGIONS,
                          strip_image_extension)

# --- input auto-assignment --------------------------------------------------------------------------------

# Name patterns per channel, as token sequences of the normalized name (lower case, runs of "_", "-", " ", "."
# turned into "_"). Checked in this order, so "t2_flair" is FLAIR and never T2, and "t1_gd" is T1CE, never T1.
_CHANNEL_PATTERNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("flair", ("t2f", "flair", "t2_flair", "t2flair", "flair_t2", "tirm", "dark_fluid")),
    ("t1ce", ("t1c", "t1ce", "t1gd", "t1_gd", "t1_ce", "t1_c", "t1_post", "t1post", "t1_postcontrast",
              "t1_contrast", "t1_gad", "t1gad", "t1_gado", "t1wce", "t1w_ce", "t1w_gd", "t1w_post", "ce_t1",
              "ce_t1w", "gd_t1", "post_t1", "t1\\+c", "t1\\+gd", "t1_\\+c", "postcontrast", "post_contrast", "mprage_gd")),
    ("t2", ("t2w", "t2", "t2_w", "t2_weighted", "t2_tse", "t2tse")),
    ("t1", ("t1n", "t1", "t1w", "t1_w", "t1_native", "t1_pre", "t1pre", "t1_precontrast", "t1_weighted", "native_t1",
            "mprage")),
)
_COMPILED = tuple(
    (channel, tuple(re.compile(r"(?:^|_)" + p + r"(?:$|_)") for p in patterns))
    for channel, patterns in _CHANNEL_PATTERNS
)


def normalize_name(name: str) -> str:
    """Lower case, file extension removed, separators (``_ - space .``) collapsed to single ``_``."""
    text = str(name).strip().lower()
    text = strip_image_extension(text) or text
    text = re.sub(r"[\s_\-.]+", "_", text)
    return text.strip("_")


def classify_name(name: str) -> str | None:
    """The channel a volume name denotes (``t1``, ``t1ce``, ``t2``, ``flair``) or None."""
    text = normalize_name(name)
    for channel, patterns in _COMPILED:
        if any(p.search(text) for p in patterns):
            return channel
    return None


def assign_inputs(names: Iterable[str]) -> dict[str, str]:
    """Map channels to volume names, e.g. ``{"t1": "BraTS-PED-00001-000-t1n", ...}``.

    Each name is classified by :func:`classify_name`; the first name (in the given order) of each channel wins.
    A channel with no matching name is absent from the result. No name is assigned twice (the same name listed
    twice is used once).
    """
    result: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        if name in used:
            continue
        channel = classify_name(name)
        if channel is not None and channel not in result:
            result[channel] = name
            used.add(name)
    return result


def validate_inputs(selection: Mapping[str, object | None]) -> list[str]:
    """Problems with a channel -> volume selection (any hashable id per volume, None = not selected).

    Returns one message per problem (empty list = can run): a missing channel, or one volume used for two
    channels.
    """
    problems: list[str] = []
    for channel in CHANNELS:
        if selection.get(channel) is None:
            problems.append(f"select the {CHANNEL_LONG_NAMES[channel]} volume")
    seen: dict[object, str] = {}
    for channel in CHANNELS:
        value = selection.get(channel)
        if value is None:
            continue
        if value in seen:
            problems.append(f"the same volume is selected as {CHANNEL_LONG_NAMES[seen[value]]} and as "
                            f"{CHANNEL_LONG_NAMES[channel]}")
        else:
            seen[value] = channel
    return problems


# --- prediction options -----------------------------------------------------------------------------------

DEVICE_CHOICES: tuple[str, ...] = ("Auto", "GPU", "CPU")
QUALITY_CHOICES: tuple[str, ...] = ("Fast", "Full")
_DEVICE_ARG = {"auto": "auto", "gpu": "cuda", "cuda": "cuda", "cpu": "cpu"}


def prediction_settings(quality: str, device: str, bundle_folds: Sequence[int]) -> dict:
    """``{"device": ..., "folds": [...], "tta": bool}`` for the Quality and Device controls.

    ``Fast``: the first fold of the bundle, no test-time augmentation. ``Full``: every fold, with mirroring TTA.
    """
    dev = _DEVICE_ARG.get(str(device).strip().lower())
    if dev is None:
        raise ValueError(f"device {device!r}: expected one of {', '.join(DEVICE_CHOICES)}")
    folds = [int(f) for f in bundle_folds]
    if not folds:
        raise ValueError("the model bundle lists no folds")
    q = str(quality).strip().lower()
    if q == "fast":
        return {"device": dev, "folds": folds[:1], "tta": False}
    if q == "full":
        return {"device": dev, "folds": folds, "tta": True}
    raise ValueError(f"quality {quality!r}: expected one of {', '.join(QUALITY_CHOICES)}")


# --- post-processing controls -----------------------------------------------------------------------------

#: parameters shown in the panel, in display order (ratio window and normalization stay bundle settings)
PANEL_PARAMETERS: tuple[str, ...] = ("ratio_enabled", "ratio_high", "ratio_low", "components_enabled",
                                     "min_volume_et", "min_volume_net", "min_volume_cc", "min_volume_ed")


@dataclass(frozen=True)
class SliderSpec:
    """One post-processing control: a check box (``kind == "checkbox"``) or a slider (``"slider"``)."""

    name: str  # PostprocessParams field; also the parameter-node attribute and the widget's SlicerParameterName
    kind: str
    label: str
    default: float | bool
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    decimals: int = 0
    unit: str = ""

    @property
    def widget_name(self) -> str:
        """objectName of the widget in PedTumorSeg.ui, e.g. ``ratio_highSlider``."""
        return self.name + ("CheckBox" if self.kind == "checkbox" else "Slider")


def _decimals(step: float) -> int:
    text = f"{step:.10f}".rstrip("0")
    return len(text.split(".")[1]) if "." in text else 0


def slider_specs() -> list[SliderSpec]:
    """The panel's post-processing controls built from :data:`pedtumorseg.postprocess.PARAMETERS`."""
    from .postprocess import PARAMETERS

    by_name = {p.name: p for p in PARAMETERS}
    specs = []
    for name in PANEL_PARAMETERS:
        p = by_name[name]
        if p.type == "bool":
            specs.append(SliderSpec(name, "checkbox", p.label, bool(p.default)))
        elif p.type == "float":
            specs.append(SliderSpec(name, "slider", p.label, float(p.default), float(p.min), float(p.max),
                                    float(p.step), _decimals(float(p.step)), p.unit.replace("^3", "\u00b3")))
        else:
            raise ValueError(f"parameter {name} of type {p.type} cannot be a panel control")
    return specs


def parameter_changes(current, values: Mapping[str, object]) -> dict[str, object]:
    """The entries of ``values`` (control name -> value) that differ from the ``PostprocessParams`` ``current``.

    Float values are compared after rounding to the slider's decimals, so that a slider's float noise does not
    trigger a recomputation.
    """
    decimals = {s.name: s.decimals for s in slider_specs() if s.kind == "slider"}
    changes: dict[str, object] = {}
    for name, value in values.items():
        old = getattr(current, name)
        if isinstance(old, bool):
            new = bool(value)
        else:
            new = round(float(value), decimals.get(name, 6) + 2)
            if round(old, decimals.get(name, 6) + 2) == new:
                continue
        if new != old:
            changes[name] = new
    return changes


# --- results ------------------------------------------------------------------------------------------------

RESULT_COLUMNS: tuple[str, ...] = ("Region", "Description", "Volume (mL)", "Fraction of WT")
_REGION_DESCRIPTIONS = {
    "ET": LABEL_LONG_NAMES[ET], "NET": LABEL_LONG_NAMES[NET], "CC": LABEL_LONG_NAMES[CC], "ED": LABEL_LONG_NAMES[ED],
    "TC": "Tumor core (ET + NET + CC)", "WT": "Whole tumor (ET + NET + CC + ED)",
}


def results_table(labels, spacing_zyx) -> list[tuple[str, str, float, float]]:
    """Rows ``(region, description, volume_ml, fraction_of_wt)`` for ET, NET, CC, ED, TC, WT."""
    from .metrics import volumes

    v = volumes(labels, spacing_zyx)
    return [(region, _REGION_DESCRIPTIONS[region], float(v["volumes_ml"][region]), float(v["fraction_of_wt"][region]))
            for region in REGIONS]


def format_results_row(row: tuple[str, str, float, float]) -> tuple[str, str, str, str]:
    """Display strings of a :func:`results_table` row (mL with 2 decimals, fraction as percent)."""
    region, description, ml, fraction = row
    return region, description, f"{ml:.2f}", f"{fraction * 100:.1f} %"


def results_csv(rows: Iterable[tuple[str, str, float, float]]) -> str:
    """CSV text of a :func:`results_table` (full precision, fraction in [0, 1])."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["region", "description", "volume_ml", "fraction_of_wt"])
    for region, description, ml, fraction in rows:
        writer.writerow([region, description, repr(float(ml)), repr(float(fraction))])
    return buffer.getvalue()


# --- segment terminology -------------------------------------------------------------------------------------

#: Slicer's terminology context names (Modules/Loadable/Terminologies/Resources/*-DICOM-Master.json)
TERMINOLOGY_CONTEXT = "Segmentation category and type - DICOM master list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
_CATEGORY = ("SCT", "49755003", "Morphologically Altered Structure")
_BRAIN = ("SCT", "12738006", "Brain")
#: label -> SNOMED CT type code (coding scheme designator, code value, code meaning), all from the DICOM master
#: list's "Morphologically Altered Structure" category. DICOM has no code for "enhancing"/"non-enhancing", so ET
#: is "Neoplasm" and NET "Mass"; the segment name carries the distinction.
TERMINOLOGY_TYPES: dict[int, tuple[str, str, str]] = {
    ET: ("SCT", "108369006", "Neoplasm"),
    NET: ("SCT", "4147007", "Mass"),
    CC: ("SCT", "367643001", "Cyst"),
    ED: ("SCT", "79654002", "Edema"),
}


def _triplet(code: tuple[str, str, str] | None) -> str:
    if code is None:
        return "^^"
    for part in code:
        if "~" in part or "^" in part:
            raise ValueError(f"terminology code part {part!r} contains a separator")
    return "^".join(code)


def terminology_entry(label: int) -> str:
    """The segment's ``TerminologyEntry`` tag value for ``label`` (1-4).

    Format of Slicer's ``vtkSlicerTerminologiesModuleLogic::SerializeTerminologyEntry`` (Slicer 5.x, unchanged
    in 5.8-5.10): seven ``~``-separated parts ``context ~ category ~ type ~ type modifier ~ region context ~
    region ~ region modifier``, each code a ``designator^value^meaning`` triplet (``^^`` when empty).
    """
    if label not in TERMINOLOGY_TYPES:
        raise ValueError(f"label {label!r}: expected one of {sorted(TERMINOLOGY_TYPES)}")
    parts = [TERMINOLOGY_CONTEXT, _triplet(_CATEGORY), _triplet(TERMINOLOGY_TYPES[label]), _triplet(None),
             ANATOMIC_CONTEXT, _triplet(_BRAIN), _triplet(None)]
    return "~".join(parts)


# --- hand-edit detection -----------------------------------------------------------------------------------

def tight_crop(mask, offset_zyx=(0, 0, 0)):
    """``(crop, start_zyx)``: the smallest box of ``mask`` (any array, non-zero = inside) holding every non-zero
    voxel, as uint8 0/1, and the index of its first voxel (``offset_zyx`` added); ``(None, None)`` when empty."""
    array = np.asarray(mask) != 0
    if not array.any():
        return None, None
    lo, hi = [], []
    for axis in range(array.ndim):
        other = tuple(a for a in range(array.ndim) if a != axis)
        hits = np.flatnonzero(array.any(axis=other))
        lo.append(int(hits[0]))
        hi.append(int(hits[-1]) + 1)
    crop = array[tuple(slice(a, b) for a, b in zip(lo, hi))].astype(np.uint8)
    return crop, tuple(int(a) + int(o) for a, o in zip(lo, offset_zyx))


def same_crop(a, b) -> bool:
    """Whether two :func:`tight_crop` results hold the same voxels (both empty counts as the same)."""
    (crop_a, start_a), (crop_b, start_b) = a, b
    if crop_a is None or crop_b is None:
        return crop_a is None and crop_b is None
    return tuple(start_a) == tuple(start_b) and crop_a.shape == crop_b.shape and np.array_equal(crop_a, crop_b)


# --- slider values ------------------------------------------------------------------------------------------

def clamp_ratio_window(current, changes: Mapping[str, object]) -> dict[str, object]:
    """``changes`` with the ratio window kept valid (``ratio_low < ratio_high``) instead of refused.

    A ``ratio_low`` dragged to or above ``ratio_high`` stops one slider step below it; a ``ratio_high`` dragged
    to or below ``ratio_low`` stops one step above it (when both change at once, ``ratio_high`` wins). The
    result stays inside the sliders' range. ``current`` is the ``PostprocessParams`` the changes apply to.
    """
    out = dict(changes)
    if "ratio_low" not in out and "ratio_high" not in out:
        return out
    specs = {s.name: s for s in slider_specs()}
    step = specs["ratio_low"].step
    high = float(out.get("ratio_high", current.ratio_high))
    low = float(out.get("ratio_low", current.ratio_low))
    if low < high:
        return out
    if "ratio_low" in changes:
        low = round(high - step, specs["ratio_low"].decimals)
        if low < specs["ratio_low"].minimum:  # high is at the bottom of the range: move it up instead
            low = specs["ratio_low"].minimum
            high = round(low + step, specs["ratio_high"].decimals)
            out["ratio_high"] = high
        out["ratio_low"] = low
    else:
        high = round(low + step, specs["ratio_high"].decimals)
        if high > specs["ratio_high"].maximum:
            high = specs["ratio_high"].maximum
            out["ratio_low"] = round(high - step, specs["ratio_low"].decimals)
        out["ratio_high"] = high
    return {name: value for name, value in out.items() if value != getattr(current, name) or name in changes}


# --- raw clinical scans ----------------------------------------------------------------------------------------

#: the "Raw scans" choice: what the prediction does about skull stripping and registration
RAW_SCAN_CHOICES: tuple[str, ...] = ("Auto", "Yes", "No")


def raw_scan_arguments(skull_strip: str, register: str) -> list[str]:
    """CLI arguments of the panel's "Raw scans" controls: ``--skull-strip``/``--register`` ``yes|no``; ``Auto``
    is the CLI's default and adds nothing."""
    out = []
    for flag, value in (("--skull-strip", skull_strip), ("--register", register)):
        text = str(value).strip().lower()
        if text not in ("auto", "yes", "no"):
            raise ValueError(f"{flag} {value!r}: expected one of {', '.join(RAW_SCAN_CHOICES)}")
        if text != "auto":
            out += [flag, text]
    return out


# --- run status -----------------------------------------------------------------------------------------------
def run_info(done_event: dict | None) -> dict:
    """What a finished run says about itself: ``backend``, ``device``, ``elapsed_s`` when the ``done`` event or the
    stats file it names has them (absent keys are left out), and ``warnings``."""
    event = dict(done_event or {})
    stats = {}
    path = event.get("outputs", {}).get("stats")
    if path and os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as f:
                stats = json.load(f)
        except (OSError, ValueError):
            stats = {}
    info = {}
    for key in ("backend", "device", "elapsed_s"):
        for source in (event, stats, stats.get("model", {}), stats.get("runtime", {})):
            if isinstance(source, dict) and source.get(key) is not None:
                info[key] = source[key]
                break
    info["warnings"] = list(stats.get("warnings", []))
    return info


def status_text(info: dict) -> str:
    """One status line for a finished run, e.g. ``Done (torch on cpu, 12.3 s).``"""
    parts = [str(info[k]) for k in ("backend",) if info.get(k)]
    if info.get("device"):
        parts.append(("on " if parts else "") + str(info["device"]))
    details = " ".join(parts)
    if info.get("elapsed_s") is not None:
        details = (details + ", " if details else "") + f"{float(info['elapsed_s']):.1f} s"
    return f"Done ({details})." if details else "Done."


# --- requirements ----------------------------------------------------------------------------------------------

#: packages Slicer ships; never installed or replaced by the module
SLICER_SHIPPED: tuple[str, ...] = ("numpy", "scipy", "SimpleITK")
#: packages installed with pip when missing (requirement strings as in pyproject.toml)
PIP_REQUIREMENTS: dict[str, str] = {"safetensors": "safetensors>=0.4", "tqdm": "tqdm>=4.60"}


@dataclass(frozen=True)
class MissingRequirements:
    install_torch: bool  # through the PyTorch extension (PyTorchUtils)
    pip: tuple[str, ...]  # requirement strings for slicer.util.pip_install
    problems: tuple[str, ...]  # missing packages that must not be installed by the module

    @property
    def ok(self) -> bool:
        return not self.install_torch and not self.pip and not self.problems


def installed_versions() -> dict[str, str | None]:
    """Distribution name -> version (None if missing) of :data:`SLICER_SHIPPED`, torch and :data:`PIP_REQUIREMENTS`.
    Packages Slicer builds itself (e.g. SimpleITK) may have no pip metadata, so an importable package without
    metadata counts as installed ("unknown")."""
    import importlib.metadata
    import importlib.util

    versions: dict[str, str | None] = {}
    for name in list(SLICER_SHIPPED) + ["torch"] + list(PIP_REQUIREMENTS):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "unknown" if importlib.util.find_spec(name) is not None else None
    return versions


def missing_requirements(installed: Mapping[str, str | None]) -> MissingRequirements:
    """Decide what to install from ``installed`` (distribution name -> version, None or absent = missing).

    torch goes through the PyTorch extension (it picks the CUDA build); safetensors and tqdm through pip;
    a missing numpy, scipy or SimpleITK is reported as a broken Slicer installation, never installed.
    """
    lower = {str(k).lower(): v for k, v in installed.items()}

    def missing(name: str) -> bool:
        return not lower.get(name.lower())

    problems = tuple(f"{name} is missing from Slicer's Python: reinstall Slicer (the module does not replace "
                     f"packages Slicer ships)" for name in SLICER_SHIPPED if missing(name))
    pip = tuple(req for name, req in PIP_REQUIREMENTS.items() if missing(name))
    return MissingRequirements(install_torch=missing("torch"), pip=pip, problems=problems)
