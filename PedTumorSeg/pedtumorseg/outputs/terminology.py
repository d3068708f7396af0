"""Standard terminology of the four segments (SNOMED CT codes of DICOM's master list), as Slicer's segments and the
DICOM SEG carry them."""

from __future__ import annotations

from pedtumorseg.conventions import CC, ED, ET, NET


#: Slicer's terminology context names (Modules/Loadable/Terminologies/Resources/*-DICOM-Master.json)
TERMINOLOGY_CONTEXT = "Segmentation category and type - DICOM master list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
CATEGORY = ("SCT", "49755003", "Morphologically Altered Structure")
BRAIN = ("SCT", "12738006", "Brain")
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
    parts = [TERMINOLOGY_CONTEXT, _triplet(CATEGORY), _triplet(TERMINOLOGY_TYPES[label]), _triplet(None),
             ANATOMIC_CONTEXT, _triplet(BRAIN), _triplet(None)]
    return "~".join(parts)
