"""The module's post-processing Session from a ``--raw-only`` run: its raw labels with the T1/T1CE the network saw."""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import SimpleITK as sitk

from pedtumorseg.conventions import CHANNELS
from pedtumorseg.geometry import Geometry
from pedtumorseg.inputs.cases import case_from_files
from pedtumorseg.inputs.images import load_case, read_labels
from pedtumorseg.postprocess import PostprocessParams, Session


def session_from_raw_only(outputs: Mapping[str, str | os.PathLike], input_files: Sequence[str | os.PathLike],
                          params: PostprocessParams, case_id: str = "case"):
    """``(Session, (t1, t1ce))`` for the outputs of a ``raw_only`` run (``predict_case(..., raw_only=True)`` or
    ``pedtumorseg predict --raw-only``): its raw labels with the images the network saw. Inputs that were
    prepared (raw scans: registered, brain-extracted) come from the run's ``t1_prepared`` / ``t1ce_prepared``
    outputs with its brain mask; otherwise the input files (T1, T1CE, T2, FLAIR) are read again, as the run read
    them. The Slicer module and the web app post-process every result this way."""
    if "raw" not in outputs:
        raise RuntimeError(f"the prediction process did not report its raw label file (got {sorted(outputs)})")
    mask = None
    if "t1_prepared" in outputs:
        t1_image = sitk.ReadImage(str(outputs["t1_prepared"]), sitk.sitkFloat32)
        geometry = Geometry.from_image(t1_image)
        t1 = sitk.GetArrayFromImage(t1_image)
        t1ce = sitk.GetArrayFromImage(sitk.ReadImage(str(outputs["t1ce_prepared"]), sitk.sitkFloat32))
        if "brain_mask" in outputs:
            mask = read_labels(outputs["brain_mask"], geometry) > 0
    else:
        case = load_case(case_from_files(*input_files, case_id=case_id))
        geometry = case.geometry
        t1, t1ce = case.images[CHANNELS.index("t1")], case.images[CHANNELS.index("t1ce")]
    raw = read_labels(outputs["raw"], geometry)
    return Session(raw, t1, t1ce, geometry.spacing_zyx, params, mask=mask), (t1, t1ce)
