"""Where each case of a cohort stands (``pedtumorseg cohort status``), from the output folder and the scheduler,
never guessed: finished outputs mean done; a task's status file says running, failed (with the error line) or
interrupted; ``squeue`` says whether the task that holds a case is still queued or running.

States: ``done``; ``running``; ``pending`` (its task is queued, or running other cases first, or requeued);
``failed``; ``interrupted`` (SIGTERM, or its job ended while it ran: killed, node failure); ``not-started`` (its
task ended before reaching it: cancelled); ``not-submitted``. ``resubmit --failed`` takes the failed, interrupted
and not-started cases.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from pedtumorseg.cohort.state import DONE, FAILED, INTERRUPTED, RUNNING, CohortFolder
from pedtumorseg.errors import InputError
from pedtumorseg.outputs.paths import CaseOutputs

PENDING, NOT_STARTED, NOT_SUBMITTED = "pending", "not-started", "not-submitted"
STATES = (DONE, RUNNING, PENDING, FAILED, INTERRUPTED, NOT_STARTED, NOT_SUBMITTED)
#: the states ``resubmit --failed`` runs again: a task ended without finishing the case
RESUBMITTABLE = (FAILED, INTERRUPTED, NOT_STARTED)


@dataclass
class CaseState:
    case_id: str
    state: str
    task: str | None = None  # "<job id>_<task id>" of the task that ran it or holds it
    detail: str = ""
    seconds: float | None = None


def outputs_done(case_id: str, output_dir: Path, verify: bool = False) -> bool:
    """Whether the case's outputs are finished: the stats file (written last) parses and names the case and the
    label map exists; ``verify`` also reads the label map back in full (``CaseOutputs.is_finished``)."""
    outputs = CaseOutputs.of(case_id, output_dir)
    if verify:
        return outputs.is_finished()
    try:
        stats = json.loads(outputs.stats.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(stats, dict) and stats.get("case_id") == case_id and outputs.seg.is_file()


def latest_tasks(record: dict) -> dict[str, str]:
    """Case id -> ``"<job id>_<task id>"`` of the latest submission that holds it."""
    where: dict[str, str] = {}
    for sub in record.get("submissions", []):
        per_task = int(sub["cases_per_task"])
        for index, case_id in enumerate(sub["cases"]):
            where[case_id] = f"{sub['job_id']}_{index // per_task}"
    return where


def case_state(case_id: str, folder: CohortFolder, task: str | None, live: dict[str, str] | None,
               verify: bool = False) -> CaseState:
    """Long on purpose: the one decision table of the states, in the order of the module docstring."""
    if outputs_done(case_id, folder.output_dir, verify):
        status = folder.read_status(case_id) or {}
        return CaseState(case_id, DONE, _task_of(status), "", status.get("seconds"))
    status = folder.read_status(case_id)
    ran = _task_of(status) if status else None
    alive = None if (live is None or task is None) else task in live
    if status and status.get("state") == RUNNING:
        if live is not None and ran not in live:
            return CaseState(case_id, INTERRUPTED, ran, f"its job ended while it ran (killed, time limit or node "
                                                        f"failure; started {status.get('started')})")
        return CaseState(case_id, RUNNING, ran, f"since {status.get('started')} on {status.get('host')}")
    if alive and (status is None or ran != task or status.get("state") == INTERRUPTED):
        how = "requeued" if status and ran == task else live[task].lower()
        return CaseState(case_id, PENDING, task, f"task {how}")
    if status and status.get("state") in (FAILED, INTERRUPTED):
        return CaseState(case_id, status["state"], ran, status.get("message", ""), status.get("seconds"))
    if status and status.get("state") == DONE:
        return CaseState(case_id, FAILED, ran, "recorded done, but its outputs are missing or incomplete")
    if task is None:
        return CaseState(case_id, NOT_SUBMITTED)
    if live is None:
        return CaseState(case_id, PENDING, task, "scheduler not reachable (no squeue): not started yet")
    return CaseState(case_id, NOT_STARTED, task, "its task ended before reaching it (cancelled?)")


def _task_of(status: dict) -> str | None:
    if not status.get("job_id"):
        return None
    return f"{status['job_id']}_{status.get('task_id')}" if status.get("task_id") is not None else status["job_id"]


def read_record(output_dir: str | os.PathLike) -> dict:
    record = CohortFolder(Path(output_dir)).read_record()
    if record is None:
        raise InputError(output_dir, "no cohort was submitted into this folder (no cohort/cohort.json)")
    return record


def cohort_states(output_dir: str | os.PathLike, live: dict[str, str] | None = None, verify: bool = False,
                  ask_scheduler: bool = True) -> list[CaseState]:
    """The state of every case of the cohort submitted into ``output_dir``, in manifest order. ``live`` (array
    task -> SLURM state) is asked from ``squeue`` unless given or ``ask_scheduler`` is False."""
    from pedtumorseg.cohort.slurm import live_tasks

    output_dir = Path(output_dir)
    record = read_record(output_dir)
    if live is None and ask_scheduler:
        live = live_tasks()
    folder = CohortFolder(output_dir)
    where = latest_tasks(record)
    return [case_state(case_id, folder, where.get(case_id), live, verify) for case_id in record["cases"]]


def summary_line(states: list[CaseState]) -> str:
    counts = Counter(s.state for s in states)
    return f"{len(states)} case(s): " + ", ".join(f"{counts[s]} {s}" for s in STATES if counts[s])


def status_lines(states: list[CaseState]) -> list[str]:
    width = max([len(s.case_id) for s in states] + [7])
    lines = [f"{'case_id':<{width}}  {'state':<13}  {'task':<12}  detail"]
    for s in states:
        seconds = f"{s.seconds:.1f} s" if s.seconds is not None and s.state == DONE else ""
        lines.append(f"{s.case_id:<{width}}  {s.state:<13}  {s.task or '':<12}  {s.detail or seconds}".rstrip())
    return lines + [summary_line(states)]


def states_json(states: list[CaseState]) -> str:
    return json.dumps([asdict(s) for s in states], indent=2)
