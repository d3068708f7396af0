"""One array task (``pedtumorseg cohort run-task``): its slice of the submission's manifest through the batch path
(``pipeline.run_cases``), the model loaded once for all its cases, on the CPUs SLURM gave it.

Each case gets a status file: running (job, task, start time), then done, failed (the error line) or interrupted.
The scheduler's SIGTERM (preemption, time limit, ``scancel``) arrives as ``KeyboardInterrupt``
(``errors.run_command``): the current case's temporary files and any of its outputs already written are removed
on the way out, the case is recorded as interrupted and the task exits 130. A requeued or resubmitted task
skips the cases whose outputs are finished, so nothing is redone.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

from pedtumorseg.cohort.manifest import Row, read_manifest
from pedtumorseg.cohort.state import (DONE, FAILED, INTERRUPTED, RUNNING, CohortFolder, RunSettings, elapsed_since,
                                      now_text, read_settings)
from pedtumorseg.errors import Cancelled, InputError, UsageError
from pedtumorseg.outputs.paths import CaseOutputs
from pedtumorseg.pipeline import Predictor, RawOptions, run_cases


def task_id_of(explicit: int | None) -> int:
    """The array index: ``--task-id``, else ``SLURM_ARRAY_TASK_ID``."""
    if explicit is not None:
        return explicit
    value = os.environ.get("SLURM_ARRAY_TASK_ID", "")
    if not value.isdigit():
        raise UsageError(None, "no task: give --task-id N, or run as a SLURM array task (SLURM_ARRAY_TASK_ID)")
    return int(value)


def use_allocated_cpus() -> int | None:
    """Limit torch's threads to ``SLURM_CPUS_PER_TASK`` (the engine caps its threads by it as well)."""
    value = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if not value.isdigit() or int(value) < 1:
        return None
    import torch

    torch.set_num_threads(int(value))
    return int(value)


class _Model:
    """The run's predictor, loaded on first use and then kept: one load for every case of the task."""

    def __init__(self, run: RunSettings):
        self.run = run
        self._predictor: Predictor | None = None

    def base(self) -> Predictor:
        if self._predictor is None:
            run = self.run
            self._predictor = Predictor.load(run.model, device=run.device, folds=run.folds, tta=run.tta,
                                             step_size=run.step_size, overrides=run.overrides,
                                             raw=RawOptions(run.register, run.skull_strip, None, run.strict),
                                             backend=run.backend)
        return self._predictor

    def for_row(self, row: Row) -> Predictor:
        base = self.base()
        return dataclasses.replace(base, raw=row.raw_options(base.raw), params=row.params(base.params))


def run_task(settings_path: str | os.PathLike, task_id: int | None = None, log=print) -> int:
    """Run the cases of one array task; the exit status (1 when a case failed)."""
    output_dir, manifest_path, run, resources = read_settings(settings_path)
    task = task_id_of(task_id)
    manifest = read_manifest(manifest_path)
    order = manifest.case_ids  # the submission's order: task k holds cases [k * per_task, (k + 1) * per_task)
    if any(p.case_id is None for p in manifest.problems):
        raise InputError(manifest_path, "; ".join(str(p) for p in manifest.problems if p.case_id is None))
    start = task * resources.cases_per_task
    if not 0 <= start < len(order):
        raise UsageError(None, f"task {task} is beyond the {len(order)} case(s) of {manifest_path}")
    mine = order[start:start + resources.cases_per_task]
    rows = {row.case_id: row for row in manifest.rows}
    threads = use_allocated_cpus()
    log(f"task {task}: cases {', '.join(mine)}" + (f" on {threads} CPU(s)" if threads else ""), flush=True)
    folder, model, failed = CohortFolder(output_dir), _Model(run), 0
    for case_id in mine:
        problem = "; ".join(str(p) for p in manifest.problems_of(case_id))
        state = _run_case(case_id, rows.get(case_id), problem, output_dir, folder, model, log)
        failed += state == FAILED
    return 1 if failed else 0


def _run_case(case_id: str, row: Row | None, problem: str, output_dir: Path, folder: CohortFolder, model: _Model,
              log) -> str:
    """One case: skipped when its outputs are finished, else run with its status recorded; its final state."""
    outputs = CaseOutputs.of(case_id, output_dir)
    if outputs.is_finished():
        if (folder.read_status(case_id) or {}).get("state") != DONE:
            folder.write_status(case_id, DONE, note="outputs finished earlier")
        log(f"{case_id}: finished earlier, skipped", flush=True)
        return DONE
    start, started = time.perf_counter(), now_text()
    try:  # the SIGTERM may come while the running status is being written (its fsync)
        folder.write_status(case_id, RUNNING, started=started)
        entry = (case_id, InputError(None, problem)) if row is None else (case_id, _files_or_error(row))
        predictor = model.base if row is None else (lambda: model.for_row(row))
        summary = run_cases([entry], output_dir, predictor, write_raw=model.run.write_raw,
                            overlay=model.run.overlay)
    except (KeyboardInterrupt, Cancelled):
        folder.write_status(case_id, INTERRUPTED, started=started, seconds=elapsed_since(start),
                            message="interrupted (SIGTERM: preemption, time limit or scancel); no output kept")
        log(f"{case_id}: interrupted", flush=True)
        raise
    if summary.failed:
        message = summary.failed[0][1]
        folder.write_status(case_id, FAILED, started=started, seconds=elapsed_since(start), message=message)
        log(f"{case_id}: FAILED: {message}", file=sys.stderr, flush=True)
        return FAILED
    notes = [reason for _, reason in summary.incomplete]
    folder.write_status(case_id, DONE, started=started, seconds=elapsed_since(start), warnings=notes)
    log(f"{case_id}: done in {elapsed_since(start):.1f} s", flush=True)
    return DONE


def _files_or_error(row: Row):
    try:
        return row.case_files()
    except InputError as exc:
        return exc
