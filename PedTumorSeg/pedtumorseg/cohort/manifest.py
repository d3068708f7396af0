"""The cohort manifest: one CSV row per case, read and checked as a whole so that every problem is reported at
once, before anything is submitted; and the manifest of a folder of cases.

Columns (header row required; paths absolute or relative to the manifest's folder):

* ``case_id``: the output name of the case (unique, case-insensitively).
* ``t1``, ``t1ce``, ``t2``, ``flair``: the four images (files or DICOM series folders), or
* ``study``: a DICOM study folder whose series are chosen at run time, instead of the four.
* optional per-case options: ``register`` and ``skull_strip`` (``auto``/``yes``/``no``), ``brain_mask`` (a
  file), ``set`` (post-processing ``KEY=VALUE`` items separated by ``;``, applied after the run's ``--set``).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

from pedtumorseg.conventions import CHANNELS
from pedtumorseg.errors import InputError
from pedtumorseg.files import atomic_output
from pedtumorseg.inputs.cases import CaseFiles, check_case_id, discover_cases, find_any_case
from pedtumorseg.inputs.dicom import holds_dicom
from pedtumorseg.inputs.prepare import CHOICES, RawOptions
from pedtumorseg.postprocess import PostprocessParams

IMAGE_COLUMNS: tuple[str, ...] = CHANNELS
OPTION_COLUMNS: tuple[str, ...] = ("register", "skull_strip", "brain_mask", "set")
COLUMNS: tuple[str, ...] = ("case_id",) + IMAGE_COLUMNS + ("study",) + OPTION_COLUMNS


@dataclass(frozen=True)
class Row:
    """One case of a manifest, paths resolved; ``line`` its line in the CSV file."""

    line: int
    case_id: str
    images: dict[str, Path] = field(default_factory=dict)  # channel -> path; empty for a study row
    study: Path | None = None
    register: str = "auto"
    skull_strip: str = "auto"
    brain_mask: Path | None = None
    overrides: tuple[str, ...] = ()
    valid: bool = True  # False: the row has problems (kept for the checks across rows)

    def case_files(self) -> CaseFiles:
        """The case's files (a study's series chosen now: ``InputError`` when they cannot be)."""
        if self.study is not None:
            files = find_any_case(self.study)
            return CaseFiles(self.case_id, files.images, None, files.ignored)
        return CaseFiles(self.case_id, dict(self.images), None)

    def raw_options(self, base: RawOptions) -> RawOptions:
        """The run's raw-input options with this case's own."""
        return RawOptions(register=self.register if self.register != "auto" else base.register,
                          skull_strip=self.skull_strip if self.skull_strip != "auto" else base.skull_strip,
                          brain_mask=self.brain_mask or base.brain_mask, strict=base.strict)

    def params(self, base: PostprocessParams) -> PostprocessParams:
        return base.with_overrides(self.overrides) if self.overrides else base

    def to_csv(self) -> dict[str, str]:
        out = {"case_id": self.case_id, **{ch: str(p) for ch, p in self.images.items()},
               "study": str(self.study or ""), "register": self.register, "skull_strip": self.skull_strip,
               "brain_mask": str(self.brain_mask or ""), "set": ";".join(self.overrides)}
        return {c: out.get(c, "") for c in COLUMNS}


@dataclass(frozen=True)
class Problem:
    line: int | None  # None: the file as a whole
    case_id: str | None
    message: str

    def __str__(self) -> str:
        return self.message if self.line is None else f"line {self.line}: {self.message}"


@dataclass
class Manifest:
    path: Path
    rows: list[Row]  # the rows without problems
    problems: list[Problem]
    case_ids: list[str] = field(default_factory=list)  # every row's case id, in file order (problem rows too)

    def problems_of(self, case_id: str) -> list[Problem]:
        return [p for p in self.problems if p.case_id == case_id]

    def require_valid(self) -> "Manifest":
        if self.problems:
            raise ManifestError(self.path, self.problems)
        return self


class ManifestError(InputError):
    """A manifest with problems: ``problems`` lists every one (the CLI prints one line each)."""

    def __init__(self, path, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__(path, f"{len(problems)} problem(s) in the manifest; nothing was submitted")


def _readable(path: Path, what: str) -> str | None:
    """Why ``path`` cannot be read as ``what`` (a file, or a folder of DICOM files), or None."""
    if path.is_dir():
        if not os.access(path, os.R_OK | os.X_OK):
            return f"{what}: {path}: folder not readable"
        return None if holds_dicom(path) else f"{what}: {path}: a folder without DICOM files"
    if not path.exists():
        return f"{what}: {path}: file not found"
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        return f"{what}: {path}: {exc.strerror or exc}"
    return None


def _resolve(text: str, base: Path) -> Path:
    p = Path(os.path.expanduser(text.strip()))
    return p if p.is_absolute() else base / p


def _parse_row(line: int, record: dict, base: Path, problems: list[Problem]) -> Row:
    """Long on purpose: every check of one row, each problem recorded (none stops the others)."""
    value = {k: (record.get(k) or "").strip() for k in COLUMNS}
    case_id = value["case_id"]
    before = len(problems)

    def bad(message: str) -> None:
        problems.append(Problem(line, case_id or None, message))

    try:
        check_case_id(case_id)
    except InputError as exc:
        bad(str(exc))
    given = [ch for ch in IMAGE_COLUMNS if value[ch]]
    images, study = {}, None
    if value["study"] and given:
        bad("give either the four images or a study folder, not both")
    elif value["study"]:
        study = _resolve(value["study"], base)
        if not study.is_dir():
            bad(f"study: {study}: folder not found" if not study.exists() else f"study: {study}: not a folder")
        elif not os.access(study, os.R_OK | os.X_OK):
            bad(f"study: {study}: folder not readable")
    else:
        if len(given) < len(IMAGE_COLUMNS):
            missing = [ch for ch in IMAGE_COLUMNS if ch not in given]
            bad(f"missing {', '.join(missing)}: give all four images ({', '.join(IMAGE_COLUMNS)}) or a study folder")
        images = {ch: _resolve(value[ch], base) for ch in given}
        for ch, p in images.items():
            if (problem := _readable(p, ch)) is not None:
                bad(problem)
        seen: dict[Path, str] = {}
        for ch, p in images.items():
            if p.resolve() in seen:
                bad(f"{ch} and {seen[p.resolve()]} are the same file {p}")
            seen.setdefault(p.resolve(), ch)
    for name in ("register", "skull_strip"):
        if value[name] and value[name] not in CHOICES:
            bad(f"{name} must be one of {', '.join(CHOICES)}, got {value[name]!r}")
    brain_mask = _resolve(value["brain_mask"], base) if value["brain_mask"] else None
    if brain_mask is not None and (problem := _readable(brain_mask, "brain_mask")) is not None:
        bad(problem)
    overrides = tuple(item.strip() for item in value["set"].split(";") if item.strip())
    try:
        PostprocessParams().with_overrides(overrides)
    except ValueError as exc:
        bad(f"set: {exc}")
    if len(problems) > before:
        return Row(line, case_id, images, valid=False)
    return Row(line, case_id, images, study, value["register"] or "auto", value["skull_strip"] or "auto",
               brain_mask, overrides)


def read_manifest(path: str | os.PathLike) -> Manifest:
    """The manifest at ``path`` with every problem found (unreadable file, bad header, bad rows, ids used twice,
    one image file in two cases). ``InputError`` only when the file itself cannot be read as a CSV."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "manifest not found" if not path.exists() else "manifest is not a file")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            reader.fieldnames = header
            records = [(reader.line_num, record) for record in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(path, f"cannot read the manifest as CSV: {exc}") from None
    problems: list[Problem] = []
    unknown = [h for h in header if h not in COLUMNS]
    if "case_id" not in header:
        problems.append(Problem(None, None, f"no 'case_id' column (header: {', '.join(header) or 'empty'}); "
                                            f"columns: {', '.join(COLUMNS)}"))
    if unknown:
        problems.append(Problem(None, None, f"unknown column(s) {', '.join(unknown)}; columns: {', '.join(COLUMNS)}"))
    if problems:
        return Manifest(path, [], problems)
    base = path.resolve().parent
    parsed = [_parse_row(line, record, base, problems) for line, record in records]
    if not records:
        problems.append(Problem(None, None, "the manifest lists no case"))
    _cross_checks(parsed, problems)
    problems.sort(key=lambda p: -1 if p.line is None else p.line)
    return Manifest(path, [row for row in parsed if row.valid], problems, [row.case_id for row in parsed])


def _cross_checks(rows: list[Row], problems: list[Problem]) -> None:
    """Ids used twice (case-insensitively: output names collide on macOS/Windows) and an image in two cases."""
    ids: dict[str, int] = {}
    for row in rows:
        if row.case_id and (first := ids.setdefault(row.case_id.casefold(), row.line)) != row.line:
            problems.append(Problem(row.line, row.case_id, f"case id {row.case_id} is used twice (also line "
                                                           f"{first}): their outputs would overwrite each other"))
    owners: dict[Path, Row] = {}
    for row in rows:
        for ch, p in row.images.items():
            other = owners.setdefault(p.resolve(), row)
            if other is not row:
                problems.append(Problem(row.line, row.case_id, f"{ch} {p} is also an image of case "
                                                               f"{other.case_id} (line {other.line})"))


def write_manifest(rows: list[Row], path: str | os.PathLike) -> Path:
    """Write ``rows`` as a manifest CSV (absolute paths), atomically."""
    path = Path(path)
    with atomic_output(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(COLUMNS))
            writer.writeheader()
            for row in rows:
                writer.writerow(row.to_csv())
    return path


def manifest_from_folder(root: str | os.PathLike) -> tuple[list[Row], list[Problem]]:
    """The rows of every case under ``root`` (``inputs.cases.discover_cases``: BraTS-named case folders and DICOM
    studies, their series as chosen now) and the folders that look like a case but cannot be used."""
    found = discover_cases(root)
    rows = [Row(i + 2, f.case_id, {ch: Path(p).resolve() for ch, p in f.images.items()})
            for i, f in enumerate(sorted(found.cases, key=lambda f: f.case_id))]
    problems = [Problem(None, folder.name, str(exc)) for folder, exc in found.problems]
    return rows, problems
