"""A case uploaded from the browser: four NIfTI files, or a DICOM study as one ``.zip`` file (``study_zip``), into a
new folder of the upload root (never an existing one, never overwriting a file), size-limited, and checked as
``predict`` checks a case (``find_case``, ``load_case``; ``find_any_case`` and each series read for a study: the
same refusals); on any refusal nothing is left behind. Errors name the uploaded file only."""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

from pedtumorseg.errors import InputError
from pedtumorseg.files import new_folder
from pedtumorseg.web.study_zip import MAX_ZIP_MEMBERS, extract_study

#: default limit of one upload (four volumes), bytes
MAX_UPLOAD_BYTES = 512 * 1024 * 1024
NIFTI_SUFFIXES = (".nii.gz", ".nii")
ZIP_SUFFIX = ".zip"
UPLOAD_SUFFIXES = NIFTI_SUFFIXES + (ZIP_SUFFIX,)


def _safe_name(name: str) -> str:
    base = os.path.basename(str(name).replace("\\", "/"))
    if not base or base.startswith(".") or base != str(name) or not base.lower().endswith(UPLOAD_SUFFIXES):
        raise InputError(base or "-", "not a NIfTI file name (expected <ID>-t1n.nii.gz ... without folders) nor a "
                                      "DICOM study as one .zip file")
    return base


def save_upload(files: list[dict], root, max_bytes: int = MAX_UPLOAD_BYTES, max_members: int = MAX_ZIP_MEMBERS) -> Path:
    """Write ``files`` (``{"name", "content"}`` as the browser sends them) into a new folder under ``root`` and
    check them as one case; returns the folder. One ``.zip`` file is a DICOM study (at most ``max_members``
    members, at most ``max_bytes`` unpacked)."""
    from pedtumorseg.inputs.cases import find_case
    from pedtumorseg.inputs.images import load_case

    if not files:
        raise InputError("-", "no files were uploaded")
    names = [_safe_name(f.get("name", "")) for f in files]
    if len(set(n.lower() for n in names)) != len(names):
        raise InputError(names[0], "the same file name was uploaded twice")
    total = sum(len(f.get("content") or b"") for f in files)
    if total > max_bytes:
        raise InputError(names[0], f"the upload is {total / 2**20:.0f} MiB, over the limit of "
                                   f"{max_bytes / 2**20:.0f} MiB")
    is_zip = [n.lower().endswith(ZIP_SUFFIX) for n in names]
    if any(is_zip) and len(names) > 1:
        raise InputError(names[is_zip.index(True)], "a DICOM study is uploaded as one .zip file on its own")
    folder = new_folder(root, (f"upload-{n}" for n in itertools.count(1)))  # never an existing one
    try:
        if any(is_zip):
            extract_study(names[0], files[0].get("content") or b"", folder, max_bytes, max_members)
            return folder
        for name, f in zip(names, files):
            with open(folder / name, "xb") as out:  # "x": never overwrite
                out.write(f.get("content") or b"")
        load_case(find_case(folder))
    except InputError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise InputError(_uploaded_name(exc, folder), _problem(exc)) from None
    except Exception:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


def _uploaded_name(exc: InputError, folder: Path) -> str:
    """The uploaded file the error is about (its name only), else "upload"."""
    path = getattr(exc, "path", None)
    return Path(path).name if path and Path(path).name != folder.name else "upload"


def _problem(exc: InputError) -> str:
    return getattr(exc, "problem", None) or str(exc)
