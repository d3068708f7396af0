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


def list_cases(root: str | os.PathLike) -> list[str]:
    """Relative paths of the case folders in ``root`` (its sub-folders holding BraTS-named NIfTI files or a DICOM
    study), sorted; folders without a case and links that lead outside ``root`` are left out."""
    from pedtumorseg.inputs.cases import discover_cases

    root = Path(root).resolve()
    out = set()
    try:
        found = discover_cases(root).cases
    except InputError:  # no case at all: an empty list in the browser
        return []
    for case in found:
        any_file = Path(next(iter(case.images.values())))
        folder = any_file.resolve().parent if any_file.is_file() else any_file.resolve().parent
        if folder == root or root in folder.parents:
            out.add(folder.relative_to(root).as_posix() or ".")
    return sorted(out)


def list_uploads(root: str | os.PathLike) -> list[str]:
    """The upload folders in ``root`` that hold a case, sorted (one case each; the same case may be uploaded twice,
    which :func:`list_cases` would refuse as two cases of one id)."""
    from pedtumorseg.inputs.cases import find_case

    root = Path(root).resolve()
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink()) if root.is_dir() else []:
        try:
            find_case(folder)
        except InputError:
            continue
        out.append(folder.name)
    return out
