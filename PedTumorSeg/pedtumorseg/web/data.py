"""The files a browser may reach: case folders under ``--data`` (and the upload folder), named by their path
relative to that root; anything that resolves outside it (``..``, absolute paths, symbolic links leading out) is
refused."""

from __future__ import annotations

import os
from pathlib import Path

from pedtumorseg.errors import InputError


def resolve_under(root: str | os.PathLike, relative: str) -> Path:
    """``root / relative`` after resolving links, refused (``InputError``) unless it lies inside ``root``.
    The error names only the relative path the browser sent, never the server's folders."""
    root = Path(root).resolve()
    text = str(relative or "").strip()
    if not text or "\x00" in text or Path(text).is_absolute() or text.startswith(("~", "\\")):
        raise InputError(text or "-", "not a case of the data folder")
    target = (root / text).resolve()
    if target != root and root not in target.parents:
        raise InputError(text, "not a case of the data folder")
    if not target.exists():
        raise InputError(text, "no such case")
    return target


def relative_message(message: str, roots: dict) -> str:
    """``message`` with each server folder of ``roots`` (folder -> the prefix the browser knows it by) replaced by
    that prefix: a refusal names the case as the case list does, never the server's folders."""
    for root in sorted(roots, key=lambda r: -len(str(Path(r).resolve()))):  # a folder inside another first
        message = message.replace(str(Path(root).resolve()) + os.sep, roots[root])
    return message


def list_cases(root: str | os.PathLike) -> list[str]:
    """Relative paths of the case folders in ``root`` (its sub-folders holding BraTS-named NIfTI files or a DICOM
    study, in any layout ``predict`` accepts), sorted; folders without a case and links that lead outside ``root``
    are left out. A folder that looks like a case but cannot be used (a sequence missing, two series that could be
    the T1CE) is listed too: opening it says why, as ``predict`` would."""
    from pedtumorseg.inputs.cases import discover_cases

    root = Path(root).resolve()
    out = set()
    try:
        discovered = discover_cases(root)
    except InputError:  # no case at all: an empty list in the browser
        return []
    folders = [_case_folder(root, case) for case in discovered.cases] + [Path(p) for p, _ in discovered.problems]
    for folder in folders:
        folder = folder.resolve()
        if folder == root or root in folder.parents:
            out.add(folder.relative_to(root).as_posix() or ".")
    return sorted(out)


def _case_folder(root: Path, case) -> Path:
    """The folder a found case was found as: its files' folder, or for a DICOM study (its images are series
    folders, possibly temporary views of a flat export) the sub-folder of ``root`` it is named after, as
    ``find_dicom_studies`` names it."""
    t1ce = Path(case.images["t1ce"])
    return root / case.case_id if t1ce.is_dir() else t1ce.parent


def list_uploads(root: str | os.PathLike) -> list[str]:
    """The upload folders in ``root`` that hold a case (four files or a DICOM study), sorted (one case each; the
    same case may be uploaded twice, which :func:`list_cases` would refuse as two cases of one id)."""
    from pedtumorseg.inputs.cases import find_any_case

    root = Path(root).resolve()
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink()) if root.is_dir() else []:
        try:
            find_any_case(folder)
        except InputError:
            continue
        out.append(folder.name)
    return out
