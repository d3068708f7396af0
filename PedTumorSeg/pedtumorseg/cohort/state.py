"""What a cohort keeps in its output folder, under ``<output>/cohort/``: the record of its submissions
(``cohort.json``), each submission's cases, settings and job script (``submissions/``), one status file per case
written by the task that runs it (``status/<ID>.json``) and the tasks' logs (``logs/``).

The case outputs themselves (``<ID>-seg.nii.gz`` ... ``<ID>-stats.json``) are the truth about a case being done;
a status file adds what the outputs cannot say: running (in which job and task, since when), failed (the error
line) or interrupted (the scheduler's SIGTERM). Every file is written atomically.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

from pedtumorseg.errors import InputError
from pedtumorseg.files import write_json

STATE_FOLDER = "cohort"
#: the states a status file records
RUNNING, DONE, FAILED, INTERRUPTED = "running", "done", "failed", "interrupted"


def now_text() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class RunSettings:
    """How every case of a cohort is segmented (the options of ``pedtumorseg predict`` that a cohort takes)."""

    model: str | None = None
    device: str = "auto"
    folds: list[int] | None = None
    tta: bool = True
    step_size: float = 0.5
    overrides: list[str] = field(default_factory=list)
    backend: str = "auto"
    register: str = "auto"
    skull_strip: str = "auto"
    strict: bool = False
    write_raw: bool = False
    overlay: bool = False

    @classmethod
    def from_dict(cls, data: dict) -> "RunSettings":
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


@dataclass
class Resources:
    """What each array task asks SLURM for, and how it runs (``container``: an Apptainer/Singularity image)."""

    cases_per_task: int = 1
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    cpus_per_task: int = 4
    gpus: int = 0
    mem: str | None = "16G"
    time: str | None = "04:00:00"
    max_parallel: int | None = None
    job_name: str = "pedtumorseg"
    sbatch_args: list[str] = field(default_factory=list)
    container: str | None = None
    binds: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict) -> "Resources":
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


@dataclass(frozen=True)
class CohortFolder:
    """The paths of a cohort's bookkeeping inside its output folder."""

    output_dir: Path

    @property
    def root(self) -> Path:
        return Path(self.output_dir) / STATE_FOLDER

    @property
    def record_path(self) -> Path:
        return self.root / "cohort.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def submission_path(self, number: int, suffix: str) -> Path:
        return self.root / "submissions" / f"{number:03d}{suffix}"

    def status_path(self, case_id: str) -> Path:
        return self.root / "status" / f"{case_id}.json"

    def read_record(self) -> dict | None:
        """``cohort.json`` (manifest, submissions), or None when nothing was submitted here."""
        return _read_json(self.record_path) if self.record_path.exists() else None

    def write_record(self, record: dict) -> None:
        write_json(record, self.record_path)

    def read_status(self, case_id: str) -> dict | None:
        path = self.status_path(case_id)
        try:
            return _read_json(path) if path.exists() else None
        except InputError:
            return None  # a status file cut short is no status; the outputs still tell whether the case is done

    def write_status(self, case_id: str, state: str, **info) -> None:
        """Record ``state`` of a case with the job, task, host and time it happened in (SLURM's variables)."""
        env = os.environ
        status = {"case_id": case_id, "state": state, "time": now_text(), "host": socket.gethostname(),
                  "pid": os.getpid(), "job_id": env.get("SLURM_ARRAY_JOB_ID") or env.get("SLURM_JOB_ID"),
                  "task_id": env.get("SLURM_ARRAY_TASK_ID"), "restart": env.get("SLURM_RESTART_COUNT"), **info}
        write_json(status, self.status_path(case_id))


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(path, f"cannot read: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(path, "not a JSON object")
    return data


def settings_dict(output_dir: Path, manifest: Path, run: RunSettings, resources: Resources) -> dict:
    """The settings file of one submission: everything its tasks need, nothing taken from the environment."""
    return {"output_dir": str(Path(output_dir).resolve()), "manifest": str(Path(manifest).resolve()),
            "run": asdict(run), "resources": asdict(resources), "written": now_text()}


def read_settings(path: str | os.PathLike) -> tuple[Path, Path, RunSettings, Resources]:
    """A submission's settings file: output folder, its manifest, ``RunSettings``, ``Resources``."""
    data = _read_json(Path(path))
    try:
        return (Path(data["output_dir"]), Path(data["manifest"]), RunSettings.from_dict(data["run"]),
                Resources.from_dict(data["resources"]))
    except (KeyError, TypeError) as exc:
        raise InputError(path, f"not a cohort settings file (missing {exc})") from None


def elapsed_since(start: float) -> float:
    return round(time.perf_counter() - start, 3)
