"""Where a case's outputs go (``CaseOutputs``, built once per case), the checks done before its inference, and
whether an earlier run finished it (resumable batches)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from pathlib import Path

from pedtumorseg.errors import InputError
from pedtumorseg.files import check_output_folder, remove_stale_temporaries, same_file
from pedtumorseg.inputs.cases import CaseFiles, check_case_id
from pedtumorseg.inputs.images import read_labels

#: output kind -> file name suffix after the case id (DEVELOPING.md: CLI output files)
SUFFIXES: dict[str, str] = {
    "seg": "-seg.nii.gz",
    "raw": "-seg-raw.nii.gz",
    "stats": "-stats.json",
    "overlay": "-overlay.png",
    "brain_mask": "-brain-mask.nii.gz",
    "dicom_seg": "-seg.dcm",
    "t1_prepared": "-t1-prepared.nii.gz",
    "t1ce_prepared": "-t1ce-prepared.nii.gz",
}


@dataclass(frozen=True)
class CaseOutputs:
    """The output files of one case in one folder; ``InputError`` for a case id that would name a file outside it."""

    case_id: str
    folder: Path
    seg: Path
    raw: Path
    stats: Path
    overlay: Path
    brain_mask: Path
    dicom_seg: Path
    t1_prepared: Path
    t1ce_prepared: Path

    @classmethod
    def of(cls, case_id: str, folder: str | os.PathLike) -> "CaseOutputs":
        folder = Path(folder)
        check_case_id(case_id)
        paths = {kind: folder / f"{case_id}{suffix}" for kind, suffix in SUFFIXES.items()}
        for p in paths.values():  # confined to the folder, whatever the id holds
            if p.parent != folder:
                raise InputError(None, f"case id {case_id!r} would write {p} outside the output folder {folder}")
        return cls(case_id, folder, **paths)

    def paths(self) -> dict[str, Path]:
        """Output kind -> path, in the order of :data:`SUFFIXES`."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name in SUFFIXES}

    def remove_stale_temporaries(self) -> None:
        """Remove the temporary files a killed earlier run left beside these outputs."""
        for p in self.paths().values():
            remove_stale_temporaries(p)

    def spare_inputs(self, files: CaseFiles) -> None:
        """``InputError`` if the folder holds the case's own files (its ground truth ``<ID>-seg.nii.gz`` would be
        overwritten, or outputs mistaken for ground truth later), or if any output path is one of its inputs."""
        inputs = [Path(p) for p in files.images.values()] + ([Path(files.seg)] if files.seg else [])
        if self.folder.is_dir():
            for folder in {p.parent for p in inputs}:
                if same_file(self.folder, folder):
                    raise InputError(self.folder, f"the output folder is the folder of the input files of case "
                                                  f"{files.case_id}; outputs would overwrite or mix with them (e.g. "
                                                  f"the ground truth {files.case_id}-seg.nii.gz): choose another "
                                                  "output folder")
        for p in self.paths().values():
            for q in inputs:
                if same_file(p, q):
                    raise InputError(q, f"input file would be overwritten by the output {p}: choose another "
                                        "output folder")

    def is_finished(self) -> bool:
        """Whether the outputs are complete and intact: the stats file (written last) parses and names the case,
        and the label map reads back in full on the grid the stats record. A case whose files were cut short (a
        full disk, a killed process) is not finished, so a resumed batch runs it again."""
        if not (self.stats.is_file() and self.seg.is_file()):
            return False
        try:
            stats = json.loads(self.stats.read_text(encoding="utf-8"))
            size = list(stats["geometry"]["size_xyz"]) if stats["case_id"] == self.case_id else None
            for path in (self.seg, self.raw):  # the raw labels only where an earlier run wrote them
                if (path == self.seg or path.exists()) and list(read_labels(path).shape[::-1]) != size:
                    return False
        except (OSError, ValueError, InputError, KeyError, TypeError):
            return False
        return True


def prepare_outputs(files: CaseFiles, folder: str | os.PathLike, check_folder: bool = True) -> CaseOutputs:
    """Everything about a case's outputs that can be checked before its inference, done once: a usable case id, a
    writable output folder (``check_folder``: skip when the caller just checked it) that is not an input folder;
    the temporary files a killed earlier run left are removed."""
    outputs = CaseOutputs.of(files.case_id, folder)
    if check_folder:
        check_output_folder(folder)
    outputs.spare_inputs(files)
    outputs.remove_stale_temporaries()
    return outputs
