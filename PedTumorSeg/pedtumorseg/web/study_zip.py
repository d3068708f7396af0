"""A DICOM study uploaded from the browser as one ``.zip`` file: every member checked from the zip's central
directory before anything is written (names that lead out of the folder, links and other special files, too many
members, an uncompressed total over the limit), then written member by member into the new upload folder (never
overwriting, the bytes counted again while they are written), then checked as ``predict`` checks a study
(``find_any_case``: the four series chosen; each series read). Read with the standard library's ``zipfile``.
"""

from __future__ import annotations

import io
import os
import re
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from pedtumorseg.conventions import CHANNELS
from pedtumorseg.errors import InputError

#: at most this many members in one zip (a study of 4 series of a few hundred slices has a few thousand)
MAX_ZIP_MEMBERS = 20_000
_CHUNK = 1 << 20
#: what macOS' archiver adds beside the files (resource forks, folder settings): not written
_SKIPPED = re.compile(r"(^|/)(__MACOSX/|\.DS_Store$)")
_DRIVE = re.compile(r"^[A-Za-z]:")


def _member_parts(info: zipfile.ZipInfo) -> tuple[str, ...] | None:
    """The path parts of ``info`` inside the upload folder (None: skipped), or the one-line problem raised."""
    name = info.filename.replace("\\", "/")
    if _SKIPPED.search(name):
        return None
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise ValueError(f"member {info.filename!r} is a symbolic link")
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):  # 0: no file type recorded (plain)
        raise ValueError(f"member {info.filename!r} is not a plain file")
    if info.flag_bits & 0x1:
        raise ValueError(f"member {info.filename!r} is encrypted")
    if not name or "\x00" in name or name.startswith("/") or _DRIVE.match(name) or ":" in name:
        raise ValueError(f"member {info.filename!r} has an absolute path or a drive")
    parts = tuple(p for p in PurePosixPath(name).parts if p not in ("", "."))
    if ".." in parts:
        raise ValueError(f"member {info.filename!r} leads outside the folder ('..')")
    return parts


def _plan(archive: zipfile.ZipFile, max_bytes: int, max_members: int) -> list[tuple[zipfile.ZipInfo, tuple]]:
    """The members to write, checked from the central directory alone (nothing is decompressed yet)."""
    infos = archive.infolist()
    if len(infos) > max_members:
        raise ValueError(f"holds {len(infos)} members, more than the {max_members} allowed")
    plan, seen, total = [], set(), 0
    for info in infos:
        parts = _member_parts(info)
        if not parts or info.is_dir():
            continue
        key = "/".join(parts).casefold()
        if key in seen:
            raise ValueError(f"member {info.filename!r} appears twice")
        seen.add(key)
        total += info.file_size
        plan.append((info, parts))
    if total > max_bytes:
        raise ValueError(f"unpacks to {total / 2**20:.0f} MiB, over the limit of {max_bytes / 2**20:.0f} MiB")
    if not plan:
        raise ValueError("holds no files")
    return plan


def _write(archive: zipfile.ZipFile, plan: list, folder: Path, max_bytes: int) -> None:
    """Write the planned members under ``folder``, counting the bytes (a member may hold more than it says)."""
    total = 0
    for info, parts in plan:
        target = folder.joinpath(*parts)
        written = 0
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as source, open(target, "xb") as out:  # "x": never overwrite
                while chunk := source.read(_CHUNK):
                    written += len(chunk)
                    total += len(chunk)
                    if written > info.file_size or total > max_bytes:
                        raise ValueError(f"member {info.filename!r} unpacks to more than the zip says")
                    out.write(chunk)
        except OSError as exc:  # a file where a folder must go, a full disk: named without the server's path
            why = exc.strerror or type(exc).__name__
            raise ValueError(f"member {info.filename!r} could not be written ({why})") from None


def extract_study(name: str, content: bytes, folder: Path, max_bytes: int, max_members: int = MAX_ZIP_MEMBERS):
    """Unpack the zip ``content`` (uploaded as ``name``) into the new, empty ``folder`` and check it as a DICOM
    study; returns its ``CaseFiles``. Refusals are ``InputError(name, problem)``; the caller removes ``folder``."""
    from pedtumorseg.inputs.cases import find_any_case
    from pedtumorseg.inputs.dicom import is_dicom_folder
    from pedtumorseg.inputs.prepare import read_any

    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            _write(archive, _plan(archive, max_bytes, max_members), folder, max_bytes)
    except ValueError as exc:  # our refusals; zipfile.BadZipFile is not one (it is an Exception)
        raise InputError(name, str(exc)) from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, zlib.error, OSError) as exc:
        detail = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise InputError(name, f"not a readable zip file ({detail})") from None
    if not any(is_dicom_folder(root) for root, _dirs, _files in os.walk(folder)):
        raise InputError(name, "holds no DICOM series (a .zip upload is a DICOM study: the T1, T1CE, T2 and "
                               "T2-FLAIR series)")
    try:
        case = find_any_case(folder)
        for channel in CHANNELS:
            read_any(case.images[channel], channel)  # pixel data readable and not constant, as predict checks
    except InputError as exc:
        raise InputError(name, exc.problem.replace(str(folder), folder.name)) from None
    return case
