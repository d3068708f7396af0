"""Files on disk: atomic output (temporary name, fsync, rename), the output-folder checks done before any work,
leftovers of killed runs, JSON written and read back, and the one file-identity check.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator

from pedtumorseg.conventions import IMAGE_EXTENSIONS, strip_image_extension
from pedtumorseg.errors import InputError


def _split_ext(name: str) -> tuple[str, str]:
    stem = strip_image_extension(name, IMAGE_EXTENSIONS + (".tar.gz",))
    if stem is not None:
        return stem, name[len(stem):]
    stem, ext = os.path.splitext(name)
    return stem, ext


def _new_file_mode() -> int:
    """The mode ``open()`` would give a new file: 0o666 minus the process umask."""
    try:  # Linux: read the umask without changing it
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` (same extension); rename it onto ``path`` on success.

    On an exception the temporary file is removed and ``path`` is left untouched (absent if it was absent).
    Before the rename the temporary file's data is flushed to disk (``fsync``: a full disk shows up here, not
    later), and the folder entry after it. The final file gets the usual permissions of a new file (umask
    applied), not ``mkstemp``'s private 0600. A temporary file left by a killed process is named
    ``.<stem>.<8 random characters>.tmp<ext>``; ``remove_stale_temporaries(path)`` removes those.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stem, ext = _split_ext(path.name)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".tmp{ext}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, _new_file_mode())
            _fsync(tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):  # some file systems cannot sync a directory; the data is synced already
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files ``atomic_output(path)`` leaves when its process is killed (SIGKILL, a crash)."""
    path = Path(path)
    stem, ext = _split_ext(path.name)
    pattern = re.compile(rf"\.{re.escape(stem)}\.[A-Za-z0-9_]{{8}}\.tmp{re.escape(ext)}")
    removed = []
    if path.parent.is_dir():
        for p in path.parent.iterdir():
            if pattern.fullmatch(p.name) and p.is_file() and not p.is_symlink():
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                    removed.append(p)
    return removed


def check_output_folder(folder: str | os.PathLike) -> Path:
    """``InputError`` naming ``folder`` unless files can be created in it (or where it would be created):
    an existing file in its place or above it, a read-only folder, a full disk. Creates nothing that stays."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and not existing.is_symlink():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        if existing == folder:
            raise InputError(folder, "output folder is an existing file, not a folder")
        raise InputError(folder, f"cannot create the output folder: {existing} is a file, not a folder")
    if not existing.exists():
        raise InputError(folder, f"cannot create the output folder: {existing} is a broken link")
    try:
        fd, probe = tempfile.mkstemp(prefix=".pedtumorseg-write-test.", dir=existing)
        try:
            os.write(fd, b"\0" * 16384)  # a full disk fails here (or at fsync), not after the inference
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        where = "" if existing == folder else f" (in {existing})"
        raise InputError(folder, f"cannot write the output here{where}: {exc.strerror or exc}") from None
    return folder


def check_output_file(path: str | os.PathLike) -> Path:
    """``InputError`` unless ``path`` can be written as a file (not a folder; its folder writable)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(path, "output file is an existing folder")
    check_output_folder(path.parent)
    return path


def path_problem(path: Path) -> str | None:
    """Why ``path`` is not a readable image file, or None if it is a file."""
    if path.is_dir():
        return "is a directory, expected an image file"
    if not path.is_file():
        return "file not found" if not path.exists() else "not a regular file"
    return None


def folder_problem(path: Path) -> str | None:
    """Why ``path`` is not an existing folder ("folder not found", "is a file, not a folder"), or None."""
    if path.is_dir():
        return None
    return "is a file, not a folder" if path.exists() else "folder not found"


def same_file(a, b) -> bool:
    """Whether a and b name the same existing file or folder (False when either is missing)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False



def write_json(data: dict, path: str | os.PathLike) -> Path:
    """Write ``data`` as indented JSON, atomically; read back and compared before it replaces ``path``."""
    path = Path(path)
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    with atomic_output(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
        if Path(tmp).read_text(encoding="utf-8") != text:  # read back before it counts
            raise OSError(f"{path}: the written file differs from what was written; is the disk full?")
    return path


def new_folder(root: str | os.PathLike, names) -> Path:
    """Create and return the first folder of ``names`` (an iterable of folder names) that does not exist in
    ``root``; ``mkdir`` without ``exist_ok`` decides, so two processes never get the same folder."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        try:
            (root / name).mkdir()
            return root / name
        except FileExistsError:
            continue
    raise FileExistsError(f"{root}: every candidate folder name exists")
