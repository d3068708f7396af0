"""DICOM input: read a series folder (SimpleITK/GDCM for the pixels) and pick the four sequences of a study
folder from their metadata (pydicom). Needs the optional ``[raw]`` extra (pydicom).

Series selection from a study folder: every folder below it that holds DICOM files; a folder that holds several
series (a flat export) is split by ``SeriesInstanceUID`` into one temporary folder of links per series (removed
when the process ends), so that everything downstream sees one series per folder. Per series,
``SeriesDescription`` + ``ProtocolName`` (upper case) and the sequence parameters decide:

- ignored: localizers/scouts, diffusion, perfusion, SWI, maps and other derived series (by name), and non-MR;
- FLAIR: the name says ``FLAIR``, or an inversion time >= 1200 ms with an echo time >= 60 ms;
- T2: the name says ``T2`` (not ``T2*``), or echo time >= 60 ms and repetition time >= 1500 ms without inversion;
- T1: the name says ``T1``/``MPRAGE``/``SPGR``/``BRAVO``/``TFE``, or echo time < 30 ms and repetition time < 1200 ms;
- T1 versus T1CE: T1CE when the series carries a contrast agent (``ContrastBolusAgent``) or its name says so
  (``+C``, ``POST``, ``GAD``, ``GD``, ``CE``, ``CONTRAST``, ``KM``).

Exactly one series must fit each of the four; otherwise the study is refused with one line that names what is
missing or which series compete, and how to choose explicitly (``--t1 DIR --t1ce DIR --t2 DIR --flair DIR``).
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import SimpleITK as sitk

from pedtumorseg.conventions import CHANNEL_LONG_NAMES, CHANNELS
from pedtumorseg.errors import InputError

RAW_EXTRA_HINT = "pip install 'pedtumorseg[raw]'"
_OPTION = {"t1": "--t1", "t1ce": "--t1ce", "t2": "--t2", "flair": "--flair"}


def require_raw_extra(path, what: str):
    """Import pydicom, or refuse ``path`` with one line saying how to install the ``[raw]`` extra."""
    try:
        import pydicom
    except ImportError:
        raise InputError(path, f"{what} needs the optional raw-input packages: {RAW_EXTRA_HINT}") from None
    return pydicom


def series_ids(folder: str | os.PathLike) -> list[str]:
    """SeriesInstanceUIDs of the DICOM files directly in ``folder`` (GDCM's scan; empty when none)."""
    folder = Path(folder)
    if not folder.is_dir() or not any(p.is_file() for p in folder.iterdir()):
        return []
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # GDCM warns about every folder without a series
    try:
        return list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or [])
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def holds_dicom(folder: Path, look_at: int = 64) -> bool:
    """Whether ``folder`` holds a DICOM file (the ``DICM`` magic after the 128-byte preamble, or a ``.dcm`` name)
    among the first ``look_at`` files: a cheap check before a model loads; the series itself is read later."""
    seen = 0
    for entry in sorted(folder.iterdir()):
        if not entry.is_file():
            continue
        if entry.suffix.lower() == ".dcm":
            return True
        try:
            with open(entry, "rb") as f:
                if f.read(132)[128:] == b"DICM":
                    return True
        except OSError:
            pass
        seen += 1
        if seen >= look_at:
            break
    return False


def is_dicom_folder(path: str | os.PathLike) -> bool:
    return Path(path).is_dir() and bool(series_ids(path))


def series_files(folder: str | os.PathLike) -> list[str]:
    """The files of the single series in ``folder`` in GDCM's slice order; refuses 0 or several series."""
    folder = Path(folder)
    ids = series_ids(folder)
    if not ids:
        raise InputError(folder, "no DICOM series in this folder")
    if len(ids) > 1:
        raise InputError(folder, f"holds {len(ids)} DICOM series; put each series in its own folder and give that "
                                 "folder")
    return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), ids[0]))


def read_series(folder: str | os.PathLike) -> sitk.Image:
    """The 3D image of the one DICOM series in ``folder`` (pixel data by SimpleITK/GDCM, rescale applied)."""
    files = series_files(folder)
    if len(files) < 2:
        raise InputError(folder, f"DICOM series has {len(files)} slice; expected a 3D volume")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except Exception as exc:
        detail = next((ln.strip() for ln in reversed(str(exc).splitlines()) if ln.strip()), "unknown reason")
        raise InputError(folder, f"unreadable DICOM series ({detail[:160]})") from None
    return image


@dataclass
class SeriesInfo:
    folder: Path
    description: str
    modality: str
    echo_time: float | None
    repetition_time: float | None
    inversion_time: float | None
    contrast: bool
    tags: dict = field(default_factory=dict)

    def label(self) -> str:
        return f"{self.folder.name} ({self.description or 'no description'})"


def _number(ds, name) -> float | None:
    value = getattr(ds, name, None)
    try:
        return None if value in (None, "") else float(value)
    except (TypeError, ValueError):
        return None


def series_info(folder: str | os.PathLike) -> SeriesInfo:
    """Metadata of the single series in ``folder`` (pydicom, header only)."""
    pydicom = require_raw_extra(folder, "reading DICOM")
    files = series_files(folder)
    ds = pydicom.dcmread(files[0], stop_before_pixels=True, force=True)
    description = " ".join(str(getattr(ds, n, "") or "") for n in ("SeriesDescription", "ProtocolName")).strip()
    agent = str(getattr(ds, "ContrastBolusAgent", "") or "").strip()
    return SeriesInfo(Path(folder), description, str(getattr(ds, "Modality", "") or ""),
                      _number(ds, "EchoTime"), _number(ds, "RepetitionTime"), _number(ds, "InversionTime"),
                      bool(agent), {"SeriesInstanceUID": str(getattr(ds, "SeriesInstanceUID", ""))})


_IGNORE = re.compile(r"LOCALI[SZ]ER|SCOUT|SURVEY|\bDWI\b|DIFFUSION|\bADC\b|TRACE|\bDTI\b|\bSWI\b|PERF|\bDSC\b|"
                     r"\bASL\b|\bMAP\b|T2\*|\bT2STAR\b|\bFA\b|PHASE")
_CONTRAST = re.compile(r"\+\s*C\b|\bC\+|POST|\bGAD|\bGD\b|\bCE\b|CONTRAST|\bKM\b|\bT1C\b|T1CE|T1GD")
_T1 = re.compile(r"\bT1|MPRAGE|MP-RAGE|SPGR|BRAVO|\bTFE\b|\bT1W")
_T2 = re.compile(r"\bT2|\bT2W")


def classify(info: SeriesInfo) -> str | None:
    """``t1``, ``t1ce``, ``t2``, ``flair`` or None (see the module docstring for the rule)."""
    name = info.description.upper()
    if info.modality and info.modality.upper() != "MR":
        return None
    if _IGNORE.search(name):
        return None
    te, tr, ti = info.echo_time, info.repetition_time, info.inversion_time
    if "FLAIR" in name or (ti is not None and ti >= 1200 and te is not None and te >= 60):
        return "flair"
    is_t2 = bool(_T2.search(name)) or (te is not None and te >= 60 and tr is not None and tr >= 1500 and not ti)
    is_t1 = bool(_T1.search(name)) or (te is not None and te < 30 and tr is not None and tr < 1200)
    if is_t2 and not _T1.search(name):
        return "t2"
    if is_t1 or _CONTRAST.search(name):
        return "t1ce" if info.contrast or _CONTRAST.search(name) else "t1"
    return None


def _link(source: str, target: Path) -> None:
    """A symbolic link, else a hard link, else a copy (Windows without the symlink privilege, other volumes)."""
    for make in (os.symlink, os.link):
        try:
            make(source, target)
            return
        except OSError:
            continue
    shutil.copy2(source, target)


def split_series(folder: str | os.PathLike, ids: list[str]) -> list[Path]:
    """For a folder holding several series: one new temporary folder per series holding links to its files (in
    GDCM's slice order), named ``<folder>-series<k>``; all are removed when the process ends."""
    folder = Path(folder)
    root = Path(tempfile.mkdtemp(prefix="pedtumorseg-series-"))
    atexit.register(shutil.rmtree, root, True)
    views = []
    for k, uid in enumerate(ids, start=1):
        view = root / f"{folder.name}-series{k:02d}"
        view.mkdir()
        for i, source in enumerate(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)):
            _link(source, view / f"{i:05d}.dcm")
        views.append(view)
    return views


def study_series(folder: str | os.PathLike) -> list[SeriesInfo]:
    """Every DICOM series below ``folder`` (sorted by path; a folder holding several is split, ``split_series``)."""
    folder = Path(folder)
    out = []
    for root, dirs, _files in os.walk(folder):
        dirs.sort()
        ids = series_ids(root)
        if len(ids) == 1:
            out.append(series_info(root))
        elif ids:
            out.extend(series_info(view) for view in split_series(root, ids))
    return out


def find_study(folder: str | os.PathLike, explicit: dict | None = None) -> dict[str, Path]:
    """channel -> series folder for a study folder; ``explicit`` (channel -> folder) overrides the automatic choice.

    Refuses with one line naming what is missing or ambiguous and how to choose explicitly.
    """
    folder = Path(folder)
    explicit = {ch: Path(p) for ch, p in (explicit or {}).items() if p}
    infos = study_series(folder)
    if not infos:
        raise InputError(folder, "no DICOM series found in this folder or below it")
    candidates: dict[str, list[SeriesInfo]] = {ch: [] for ch in CHANNELS}
    for info in infos:
        ch = classify(info)
        if ch is not None:
            candidates[ch].append(info)
    chosen: dict[str, Path] = {}
    how = ("choose explicitly with " + " ".join(f"{_OPTION[c]} DIR" for c in CHANNELS) + " (a series folder each)")
    for ch in CHANNELS:
        if ch in explicit:
            chosen[ch] = explicit[ch]
            continue
        found = candidates[ch]
        if not found:
            listed = "; ".join(i.label() for i in infos)
            raise InputError(folder, f"no {CHANNEL_LONG_NAMES[ch]} series recognised among: {listed}; {how}")
        if len(found) > 1:
            raise InputError(folder, f"{len(found)} series could be the {CHANNEL_LONG_NAMES[ch]}: "
                                     f"{'; '.join(i.label() for i in found)}; choose one with {_OPTION[ch]} DIR")
        chosen[ch] = found[0].folder
    return {ch: chosen[ch] for ch in CHANNELS}
