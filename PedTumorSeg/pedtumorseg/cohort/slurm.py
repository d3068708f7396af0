"""SLURM: the ``sbatch`` job-array script of a submission, its submission with the real ``sbatch --parsable``, and
which array tasks the scheduler still holds (``squeue``). SLURM does the distribution; this only writes the job.
"""

from __future__ import annotations

import getpass
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from pedtumorseg import __version__
from pedtumorseg.errors import PedTumorSegError, UsageError
from pedtumorseg.cohort.state import Resources

#: squeue states of a task that will still run or is running (everything else has ended)
LIVE_STATES = ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
               "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "PREEMPTED", "RESV_DEL_HOLD", "STOPPED")
_TIME = re.compile(r"(\d+-)?\d+(:\d{1,2}){0,2}|\d+-\d+")
_MEM = re.compile(r"\d+[KMGT]?", re.IGNORECASE)


def check_resources(res: Resources) -> None:
    """``UsageError`` for values that ``sbatch`` would refuse or misread, before anything is written."""
    if res.cases_per_task < 1:
        raise UsageError(None, f"--cases-per-task must be at least 1, got {res.cases_per_task}")
    if res.cpus_per_task < 1:
        raise UsageError(None, f"--cpus-per-task must be at least 1, got {res.cpus_per_task}")
    if res.gpus < 0:
        raise UsageError(None, f"--gpus must be 0 or more, got {res.gpus}")
    if res.max_parallel is not None and res.max_parallel < 1:
        raise UsageError(None, f"--max-parallel must be at least 1, got {res.max_parallel}")
    if res.time and not _TIME.fullmatch(res.time):
        raise UsageError(None, f"--time {res.time!r}: expected SLURM's form, e.g. 30, 04:00:00 or 1-00:00:00")
    if res.mem and not _MEM.fullmatch(res.mem):
        raise UsageError(None, f"--mem {res.mem!r}: expected SLURM's form, e.g. 16G or 8000M")
    for name in ("partition", "account", "qos", "job_name"):
        value = getattr(res, name)
        if value is not None and (not value or re.search(r"\s", value)):
            raise UsageError(None, f"--{name.replace('_', '-')} {value!r}: a SLURM name has no spaces")


def task_count(n_cases: int, cases_per_task: int) -> int:
    return -(-n_cases // cases_per_task)


def _directives(res: Resources, tasks: int, logs: Path) -> list[str]:
    array = f"0-{tasks - 1}" + (f"%{res.max_parallel}" if res.max_parallel else "")
    lines = [f"--job-name={res.job_name}", f"--array={array}", "--nodes=1", "--ntasks=1",
             f"--cpus-per-task={res.cpus_per_task}", f"--output={logs / '%A_%a.log'}", "--open-mode=append",
             "--requeue"]
    lines += [f"--{name}={value}" for name, value in (("partition", res.partition), ("account", res.account),
                                                      ("qos", res.qos), ("mem", res.mem), ("time", res.time))
              if value]
    if res.gpus:
        lines.append(f"--gres=gpu:{res.gpus}")
    return [f"#SBATCH {line}" for line in lines + list(res.sbatch_args)]


def task_command(res: Resources, settings: Path) -> list[str]:
    """The command an array task runs (in the container when one is given)."""
    if res.container:
        prefix = ["apptainer", "exec"] + (["--nv"] if res.gpus else [])
        for bind in res.binds:
            prefix += ["--bind", bind]
        return prefix + [res.container, "pedtumorseg", "cohort", "run-task", "--settings", str(settings)]
    return [sys.executable, "-m", "pedtumorseg", "cohort", "run-task", "--settings", str(settings)]


def job_script(res: Resources, n_cases: int, settings: Path, logs: Path) -> str:
    """The ``sbatch`` script of a submission: one array task per ``cases_per_task`` cases of its manifest."""
    tasks = task_count(n_cases, res.cases_per_task)
    lines = ["#!/bin/bash",
             f"# pedtumorseg {__version__} cohort job: {n_cases} case(s), {res.cases_per_task} per task, "
             f"{tasks} task(s)"]
    lines += _directives(res, tasks, logs)
    lines += ["",
              "# threads: what SLURM allocated to the task",
              'export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}" MKL_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"',
              "# exec: the scheduler's SIGTERM (preemption, time limit, scancel) reaches pedtumorseg itself, which",
              "# ends the current case without partial output; a requeued task skips the finished cases",
              "exec " + shlex.join(task_command(res, settings)),
              ""]
    return "\n".join(lines)


def _sbatch() -> str:
    path = shutil.which("sbatch")
    if path is None:
        raise PedTumorSegError("sbatch not found: submit from a SLURM login node, or use --dry-run to see the job "
                               "script")
    return path


def submit(script: Path) -> str:
    """Submit ``script`` with ``sbatch --parsable``; the job id."""
    result = subprocess.run([_sbatch(), "--parsable", str(script)], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip().splitlines()
        raise PedTumorSegError(f"sbatch {script} failed: {message[-1] if message else f'exit {result.returncode}'}")
    job_id = result.stdout.strip().split(";")[0]
    if not job_id.isdigit():
        raise PedTumorSegError(f"sbatch {script}: unexpected answer {result.stdout.strip()!r}")
    return job_id


def live_tasks() -> dict[str, str] | None:
    """``"<job id>_<task id>"`` -> state of every array task of this user that SLURM still holds (pending,
    running, requeued ...); None when ``squeue`` is not here or does not answer (the scheduler is unknown)."""
    squeue = shutil.which("squeue")
    if squeue is None:
        return None
    try:
        result = subprocess.run([squeue, "-h", "-r", "-u", getpass.getuser(), "-o", "%i|%T"], capture_output=True,
                                text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    live = {}
    for line in result.stdout.splitlines():
        task, _, state = line.strip().partition("|")
        if task and state.upper() in LIVE_STATES:
            live[task] = state.upper()
    return live
