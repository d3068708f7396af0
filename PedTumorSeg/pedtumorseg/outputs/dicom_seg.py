"""DICOM Segmentation output (highdicom): the final labels as a SEG object referencing the T1CE series.

One segment per label (1 ET, 2 NET, 3 CC, 4 ED, numbered as the labels), named with ``LABEL_LONG_NAMES``, colored
with ``LABEL_COLORS`` and coded with the SNOMED CT codes the Slicer module uses (``outputs.terminology``,
category "Morphologically Altered Structure", anatomic region "Brain"). Frames follow the T1CE series' slices
(the label map lies on the T1CE grid, read in SimpleITK/GDCM slice order). Needs the optional ``[raw]`` extra.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pedtumorseg import __version__
from pedtumorseg.conventions import FOREGROUND_LABELS, LABEL_COLORS, LABEL_LONG_NAMES
from pedtumorseg.inputs.dicom import RAW_EXTRA_HINT, series_files
from pedtumorseg.errors import InputError
from pedtumorseg.files import atomic_output
from pedtumorseg.outputs.terminology import BRAIN, CATEGORY, TERMINOLOGY_TYPES


#: attributes every source image must carry for highdicom to build a SEG that references it (the patient, study,
#: frame-of-reference and plane modules it copies or relies on; measured by removing each from a series)
REQUIRED_SOURCE_ATTRIBUTES: tuple[str, ...] = (
    "FrameOfReferenceUID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "Modality",
    "PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyID", "StudyDate", "AccessionNumber",
    "ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing", "SliceThickness", "Rows", "Columns")


def dicom_seg_problem(t1ce_series: str | os.PathLike) -> str | None:
    """Why a DICOM SEG cannot be written for ``t1ce_series`` (one line: the missing package or the attributes its
    files lack, e.g. a FrameOfReferenceUID an anonymizer removed), or None when it can. Reads headers only."""
    try:
        import highdicom  # noqa: F401
        import pydicom
    except ImportError:
        return f"--dicom-seg needs the optional raw-input packages ({RAW_EXTRA_HINT})"
    missing: set[str] = set()
    for path in series_files(t1ce_series):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        missing |= {a for a in REQUIRED_SOURCE_ATTRIBUTES if a not in ds}
    if not missing:
        return None
    names = ", ".join(a for a in REQUIRED_SOURCE_ATTRIBUTES if a in missing)
    why = " (some anonymizers remove it)" if missing == {"FrameOfReferenceUID"} else ""
    return f"the T1CE series lacks {names}{why}, which a DICOM SEG must reference"


def _code(triplet):
    from pydicom.sr.coding import Code

    scheme, value, meaning = triplet
    return Code(value, scheme, meaning)


def segment_descriptions(model: dict | None = None) -> list:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algorithm = hd.AlgorithmIdentificationSequence(
        name=str((model or {}).get("name", "PedTumorSeg")), version=str((model or {}).get("version", __version__)),
        family=codes.cid7162.ArtificialIntelligence)
    out = []
    for label in FOREGROUND_LABELS:
        rgb = tuple(int(round(255 * c)) for c in LABEL_COLORS[label])
        out.append(hd.seg.SegmentDescription(
            segment_number=int(label), segment_label=LABEL_LONG_NAMES[label],
            segmented_property_category=_code(CATEGORY), segmented_property_type=_code(TERMINOLOGY_TYPES[label]),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm,
            anatomic_regions=[_code(BRAIN)], display_color=hd.color.CIELabColor.from_rgb(*rgb)))
    return out


def write_dicom_seg(labels: np.ndarray, t1ce_series: str | os.PathLike, out_path: str | os.PathLike,
                    model: dict | None = None) -> Path:
    """Write ``labels`` (z, y, x on the T1CE series' grid) as a DICOM SEG referencing that series, atomically."""
    try:
        import highdicom as hd
        import pydicom
    except ImportError:
        raise InputError(out_path, f"--dicom-seg needs the optional raw-input packages: {RAW_EXTRA_HINT}") from None
    t1ce_series = Path(t1ce_series)
    files = series_files(t1ce_series)
    sources = [pydicom.dcmread(f) for f in files]
    labels = np.asarray(labels, np.uint8)
    if labels.shape != (len(sources), int(sources[0].Rows), int(sources[0].Columns)):
        raise InputError(t1ce_series, f"label map of shape {labels.shape} does not match the series "
                                      f"({len(sources)} slices of {sources[0].Rows}x{sources[0].Columns})")
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=labels, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segment_descriptions(model), series_instance_uid=hd.UID(), series_number=9001,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="PedTumorSeg",
        manufacturer_model_name=str((model or {}).get("name", "PedTumorSeg")),
        software_versions=f"pedtumorseg {__version__}", device_serial_number="none",
        series_description="PedTumorSeg tumor segmentation", omit_empty_frames=False)
    out_path = Path(out_path)
    with atomic_output(out_path) as tmp:
        seg.save_as(str(tmp))
    return out_path
