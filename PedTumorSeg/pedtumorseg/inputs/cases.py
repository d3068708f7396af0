"""Finding cases: the four images (and ground truth) of a case folder with BraTS 2023+ or legacy names, a DICOM
study folder, four explicit paths, or every case under a folder; case ids that can name output files.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from pedtumorseg.conventions import (BRATS_SUFFIXES, CHANNEL_LONG_NAMES, CHANNELS, IMAGE_EXTENSIONS, LEGACY_SUFFIXES,
                                     REFERENCE_CHANNEL, SEG_SUFFIX, strip_image_extension)
from pedtumorseg.errors import InputError
from pedtumorseg.files import folder_problem, path_problem
from pedtumorseg.inputs.dicom import find_study, holds_dicom, is_dicom_folder, require_raw_extra


@dataclass(frozen=True)
class CaseFiles:
    case_id: str
    images: dict  # channel -> Path, in CHANNELS order
    seg: Path | None = None
    ignored: tuple = ()  # files beside the case that look like its images but were not taken


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
        return CaseFiles(case_id, images, seg, _look_alikes(folder, set(images.values()) | {seg}))
    return None


_LOOK_ALIKE = re.compile(r"[-_](t1n|t1c|t2w|t2f|t1ce|t1|t2|flair|seg)(?![a-z0-9])", re.IGNORECASE)


def _look_alikes(folder: Path, taken: set) -> tuple[Path, ...]:
    """Image files of ``folder`` whose names carry a sequence suffix but that were not taken (``X-t1c (1).nii.gz``
    beside ``X-t1c.nii.gz``): the user should hear which file was used."""
    return tuple(p for p in sorted(folder.iterdir()) if p.is_file() and p not in taken
                 and strip_image_extension(p.name) is not None and _LOOK_ALIKE.search(p.name))


def find_case(folder: str | os.PathLike) -> CaseFiles:
    """The case in ``folder`` (BraTS 2023+ or legacy names); ``InputError`` if none or incomplete."""
    folder = Path(folder)
    problem = folder_problem(folder)
    if problem:
        raise InputError(folder, problem)
    case = _try_find_case(folder)
    if case is None:
        inner = [p.name for p in sorted(folder.iterdir()) if p.is_dir() and _quiet_case(p) is not None]
        if inner:
            raise InputError(folder, f"holds {len(inner)} case folder(s) ({', '.join(inner[:3])}"
                                     f"{', ...' if len(inner) > 3 else ''}), not one case: for a folder of cases "
                                     "use --input-dir")
        raise InputError(folder, "no case found (expected files '<ID>-t1n', '-t1c', '-t2w', '-t2f' or legacy "
                                 "'<ID>_t1', '_t1ce', '_t2', '_flair' with extension .nii.gz/.nii/.nrrd/.mha)")
    return case


def _quiet_case(folder: Path) -> CaseFiles | None:
    try:
        return _try_find_case(folder)
    except InputError:
        return None


def find_cases(root: str | os.PathLike, problems: list[tuple[Path, InputError]] | None = None) -> list[CaseFiles]:
    """Every case under ``root``: root itself if it is a case, then each subfolder holding one (sorted).

    An incomplete case folder (a modality missing, two files for one) raises ``InputError``; when a
    ``problems`` list is given, it is appended there as ``(folder, error)`` instead, so that a batch can report
    it as that case's failure and go on with the others.
    """
    root = Path(root)
    problem = folder_problem(root)
    if problem:
        raise InputError(root, problem)
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
            if not holds_dicom(p):
                raise InputError(p, f"{CHANNEL_LONG_NAMES[ch]} input is a directory, expected an image file or a "
                                    "DICOM series folder (no DICOM file found in it)")
            continue  # a DICOM series folder: read and checked by dicom_input
        problem = path_problem(p)
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

def find_any_case(folder: str | os.PathLike, explicit: dict | None = None) -> CaseFiles:
    """A case folder with BraTS/legacy file names, else a DICOM study folder (``dicom_input.find_study``)."""
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




@dataclass
class Discovered:
    """The cases under a folder: those found, and the folders that look like a case but cannot be used (each with
    its error, to be reported as that case's failure)."""

    cases: list[CaseFiles]
    problems: list[tuple[Path, InputError]]


def discover_cases(root: str | os.PathLike) -> Discovered:
    """Every file-named case and DICOM study under ``root`` (``find_cases``, ``find_dicom_studies``); two cases of one
    id (case-insensitively: on macOS and Windows their output files would be the same) and a folder without any case
    raise ``InputError``."""
    problems: list = []
    found = find_cases(root, problems=problems)
    found += find_dicom_studies(root, {f.case_id for f in found} | {p.name for p, _ in problems}, problems)
    if not found and not problems:
        raise InputError(root, "no case folders found (expected sub-folders with '<ID>-t1n', '-t1c', '-t2w', "
                               "'-t2f' images, or legacy '<ID>_t1', '_t1ce', '_t2', '_flair')")
    by_id: dict[str, Path] = {}
    for f in found:
        other = by_id.setdefault(f.case_id.casefold(), f.images["t1ce"].parent)
        if other != f.images["t1ce"].parent:
            raise InputError(root, f"case id {f.case_id} appears in two case folders ({other} and "
                                   f"{f.images['t1ce'].parent}); their outputs would overwrite each other")
    return Discovered(found, problems)
