"""A folder of cases (``run_batch``): every case found, checked up front, sharded, resumed where an earlier run
stopped, one failure never stopping the others, and every failure reported at the end."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Sequence

from pedtumorseg.errors import Cancelled, UsageError
from pedtumorseg.files import check_output_folder
from pedtumorseg.inputs.cases import CaseFiles, discover_cases
from pedtumorseg.outputs.paths import CaseOutputs, prepare_outputs
from pedtumorseg.pipeline.case import predict_case
from pedtumorseg.pipeline.predictor import Predictor
from pedtumorseg.postprocess import PostprocessParams


@dataclass
class BatchSummary:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    incomplete: list[tuple[str, str]] = field(default_factory=list)  # done, but a requested output is missing

    @property
    def exit_code(self) -> int:
        return 1 if self.failed or self.incomplete else 0

    def lines(self) -> list[str]:
        out = [f"{len(self.done)} segmented, {len(self.skipped)} already finished (skipped), "
               f"{len(self.failed)} failed"]
        out += [f"FAILED {case_id}: {message}" for case_id, message in self.failed]
        out += [f"INCOMPLETE {case_id}: {message}" for case_id, message in self.incomplete]
        return out


def shard(items: Sequence, num_parts: int, part_id: int) -> list:
    """The ``part_id``-th of ``num_parts`` interleaved shares of ``items`` (stable for a sorted input)."""
    check_shard(num_parts, part_id)
    return list(items[part_id::num_parts])


def check_shard(num_parts: int, part_id: int) -> None:
    """``UsageError`` (a command-line mistake) unless ``0 <= part_id < num_parts``."""
    if num_parts < 1:
        raise UsageError(None, f"--num-parts must be at least 1, got {num_parts}")
    if not 0 <= part_id < num_parts:
        raise UsageError(None, f"--part-id must be in [0, {num_parts - 1}] for --num-parts {num_parts}, "
                               f"got {part_id}")


BatchProgress = Callable[[int, int, str, str], None]


def run_batch(input_dir: str | os.PathLike, output_dir: str | os.PathLike,
              predictor: Predictor | Callable[[], Predictor], *, params: PostprocessParams | None = None,
              num_parts: int = 1, part_id: int = 0, write_raw: bool = False, overlay: bool = False,
              dicom_seg: bool = False, progress: BatchProgress | None = None) -> BatchSummary:
    """Segment every case under ``input_dir`` (each sub-folder holding a BraTS-named case or a DICOM study).

    ``predictor`` is the resolved run (:meth:`Predictor.load`) or a function that returns it, called only when the
    up-front checks passed and there is work to do (the model loads once, for every case). Finished cases are
    skipped (resume); one case's failure does not stop the others; every failure is listed in the summary.
    ``progress(index, total, case_id, status)`` is called after each case with status ``done``/``skipped``/
    ``failed``.

    Refused up front with ``InputError``, before any inference: an input folder without any case folder, two
    case folders with the same case id (their outputs would overwrite each other), an unusable output folder or
    one that is a case folder.
    """
    check_shard(num_parts, part_id)
    discovered = discover_cases(input_dir)
    check_output_folder(output_dir)
    for files in discovered.cases:
        CaseOutputs.of(files.case_id, output_dir).spare_inputs(files)
    # incomplete case folders are failures of their own case, sharded like the others
    entries = sorted([(f.case_id, f) for f in discovered.cases] + [(folder.name, exc) for folder, exc in
                                                                    discovered.problems], key=lambda e: e[0])
    return run_cases(shard(entries, num_parts, part_id), output_dir, predictor, params=params, write_raw=write_raw,
                     overlay=overlay, dicom_seg=dicom_seg, progress=progress)


def run_cases(cases: Sequence[tuple[str, CaseFiles | Exception]], output_dir: str | os.PathLike,
              predictor: Predictor | Callable[[], Predictor], *, params: PostprocessParams | None = None,
              write_raw: bool = False, overlay: bool = False, dicom_seg: bool = False,
              progress: BatchProgress | None = None) -> BatchSummary:
    """The batch path over given cases: ``(case_id, CaseFiles)`` to segment, or ``(case_id, error)`` for a case
    that cannot be used (reported as failed). Finished cases are skipped, leftovers of killed runs removed, the
    model loaded (``predictor`` a loader) only when a case needs it; ``run_batch``'s contract otherwise. A job
    over a list of cases (a cohort manifest's slice) calls this after its own up-front checks."""
    summary, todo = _triage(list(cases), output_dir)
    if todo and not isinstance(predictor, Predictor):  # a loader: the model loads only after the checks above
        predictor = predictor()
    index, total = 0, len(summary.failed) + len(summary.skipped) + len(todo)
    for status, case_ids in (("failed", [c for c, _ in summary.failed]), ("skipped", summary.skipped)):
        for case_id in case_ids:
            index += 1
            if progress:
                progress(index, total, case_id, status)
    for files in todo:
        index += 1
        status = _run_one(files, output_dir, predictor, summary, params=params, write_raw=write_raw,
                          overlay=overlay, dicom_seg=dicom_seg)
        if progress:
            progress(index, total, files.case_id, status)
    return summary


def _triage(cases: list, output_dir) -> tuple[BatchSummary, list[CaseFiles]]:
    """The summary of what needs no run (unusable folders: failed; finished earlier: skipped) and the cases to run."""
    summary = BatchSummary()
    todo = []
    for case_id, files in cases:
        if isinstance(files, Exception):
            summary.failed.append((case_id, str(files)))
            continue
        outputs = CaseOutputs.of(case_id, output_dir)
        outputs.remove_stale_temporaries()
        if outputs.is_finished():
            summary.skipped.append(case_id)
        else:
            todo.append(files)
    return summary, todo


def _run_one(files: CaseFiles, output_dir, predictor: Predictor, summary: BatchSummary, **options) -> str:
    """Run one case into ``summary``; its status. A failure (a MemoryError on one large case, a bad file) is that
    case's: the others go on. Cancelling stops the batch."""
    try:
        outputs = prepare_outputs(files, output_dir)
        result = predict_case(files, output_dir, predictor, outputs=outputs, **options)
    except Cancelled:
        raise
    except Exception as exc:
        summary.failed.append((files.case_id, str(exc) or type(exc).__name__))
        return "failed"
    summary.done.append(files.case_id)
    for reason in result.not_written.values():
        summary.incomplete.append((files.case_id, reason))
    return "done"
