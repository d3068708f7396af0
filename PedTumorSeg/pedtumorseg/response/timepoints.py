"""The timepoints of one patient as the user gives them: ``NAME=CASE`` (a case folder, or a DICOM study, segmented
with the model) or ``NAME=SEG,T1CE`` (an existing label map and the T1CE it was made on). Given in time order.

A timepoint holds its labels and its T1CE on the T1CE's own grid; a label map on another grid is refused (naming
the file). Timepoints whose DICOM headers name different patients (PatientID) are refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from pedtumorseg.errors import InputError, UsageError
from pedtumorseg.geometry import Geometry
from pedtumorseg.inputs.images import read_labels
from pedtumorseg.inputs.prepare import read_any


@dataclass(frozen=True)
class TimepointSpec:
    name: str
    case: Path | None = None
    seg: Path | None = None
    t1ce: Path | None = None


@dataclass
class Timepoint:
    name: str
    labels: np.ndarray  # uint8 (z, y, x) on the T1CE grid
    t1ce: sitk.Image  # float32
    seg_path: Path
    t1ce_path: Path
    segmented_here: bool = False

    @property
    def geometry(self) -> Geometry:
        return Geometry.from_image(self.t1ce)

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        return self.geometry.spacing_zyx


def parse_timepoint(text: str) -> TimepointSpec:
    """``NAME=CASE`` or ``NAME=SEG,T1CE`` (``UsageError`` otherwise)."""
    name, sep, rest = text.partition("=")
    name = name.strip()
    if not sep or not name or not rest or any(c in name for c in "/\\,"):
        raise UsageError(None, f"--timepoint {text!r}: expected NAME=CASE_FOLDER or NAME=SEG,T1CE")
    parts = [p for p in rest.split(",")]
    if len(parts) == 1:
        return TimepointSpec(name, case=Path(parts[0]))
    if len(parts) == 2 and all(parts):
        return TimepointSpec(name, seg=Path(parts[0]), t1ce=Path(parts[1]))
    raise UsageError(None, f"--timepoint {text!r}: expected NAME=CASE_FOLDER or NAME=SEG,T1CE")


def check_specs(specs: list[TimepointSpec]) -> None:
    """At least two timepoints, distinct names, every named path present (before any work)."""
    if len(specs) < 2:
        raise UsageError(None, "give at least two --timepoint (baseline first, in time order)")
    names = [s.name for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UsageError(None, f"timepoint names must differ: {', '.join(dup)} given twice")
    for s in specs:
        for p in (s.case, s.seg, s.t1ce):
            if p is not None and not Path(p).exists():
                raise InputError(p, f"timepoint {s.name}: no such file or folder")


def load_timepoint(spec: TimepointSpec, segmented_here: bool = False) -> Timepoint:
    """Read ``spec.seg`` and ``spec.t1ce`` (the label map must lie on the T1CE's grid)."""
    t1ce = read_any(spec.t1ce, "t1ce")
    labels = read_labels(spec.seg, Geometry.from_image(t1ce))
    return Timepoint(spec.name, labels, t1ce, Path(spec.seg), Path(spec.t1ce), segmented_here)


def patient_id(path: str | os.PathLike) -> str | None:
    """The DICOM PatientID of a T1CE series folder (None for image files or without the tag)."""
    path = Path(path)
    if not path.is_dir():
        return None
    from pedtumorseg.inputs.dicom import series_files
    import pydicom

    files = series_files(path)
    if not files:
        return None
    value = getattr(pydicom.dcmread(files[0], stop_before_pixels=True), "PatientID", None)
    return str(value).strip() or None if value is not None else None


def check_same_patient(timepoints: list[Timepoint]) -> None:
    """Refuse timepoints whose DICOM PatientIDs differ (naming the first T1CE that differs from the baseline)."""
    ids = [(tp, patient_id(tp.t1ce_path)) for tp in timepoints]
    known = [(tp, pid) for tp, pid in ids if pid]
    for tp, pid in known[1:]:
        if pid != known[0][1]:
            raise InputError(tp.t1ce_path, f"timepoint {tp.name} is of PatientID {pid!r}, the timepoint "
                                           f"{known[0][0].name} of {known[0][1]!r}: not one patient")


def segment_timepoint(spec: TimepointSpec, out: Path, predictor, warn=None) -> Timepoint:
    """Segment a ``NAME=CASE`` timepoint with ``predictor`` into ``out/NAME`` (the usual ``predict`` outputs) and
    load it with the case's T1CE."""
    from pedtumorseg.inputs.cases import find_any_case
    from pedtumorseg.pipeline import predict_case

    files = find_any_case(spec.case)
    result = predict_case(files, Path(out) / spec.name, predictor, warn=warn)
    return load_timepoint(TimepointSpec(spec.name, seg=result.outputs["seg"], t1ce=Path(files.images["t1ce"])),
                          segmented_here=True)
