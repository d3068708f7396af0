"""Submitting a cohort (``cohort submit``) and its unfinished part again (``cohort resubmit --failed``): the manifest
checked as a whole, the cases chosen, the submission's files written (its manifest, settings and job script under
``<output>/cohort/submissions/``) and the job array given to ``sbatch``; ``--dry-run`` prints the script instead.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from pedtumorseg.cohort import slurm
from pedtumorseg.cohort.manifest import Manifest, Row, read_manifest, write_manifest
from pedtumorseg.cohort.state import CohortFolder, Resources, RunSettings, now_text, read_settings, settings_dict
from pedtumorseg.cohort.status import RESUBMITTABLE, cohort_states, outputs_done, read_record
from pedtumorseg.errors import UsageError
from pedtumorseg.files import atomic_output, check_output_folder
from pedtumorseg.outputs.paths import CaseOutputs


@dataclass
class Submission:
    """What was (or, in a dry run, would be) submitted."""

    cases: list[str]
    script: str
    job_id: str | None = None
    number: int | None = None
    skipped: list[str] | None = None  # finished earlier, or held by a live task


def check_cohort(manifest_path, output_dir) -> Manifest:
    """The manifest with every problem reported at once (``ManifestError``), and the output folder usable for
    every case (writable; no case's input folder; ids that name files inside it)."""
    manifest = read_manifest(manifest_path).require_valid()
    check_output_folder(output_dir)
    for row in manifest.rows:
        outputs = CaseOutputs.of(row.case_id, output_dir)
        if row.study is None:
            outputs.spare_inputs(row.case_files())
    return manifest


def _busy_cases(record: dict | None, live: dict[str, str] | None) -> set[str]:
    """Cases held by a task SLURM still has (queued or running): never given to a second task at once."""
    from pedtumorseg.cohort.status import latest_tasks

    if not record or not live:
        return set()
    return {case_id for case_id, task in latest_tasks(record).items() if task in live}


def submit_cohort(manifest_path, output_dir, run: RunSettings, resources: Resources, *,
                  dry_run: bool = False) -> Submission:
    """Submit every case of the manifest whose outputs are not finished and that no live task holds."""
    slurm.check_resources(resources)
    output_dir = Path(output_dir).resolve()
    manifest = check_cohort(manifest_path, output_dir)
    folder = CohortFolder(Path(output_dir))
    record = folder.read_record()
    manifest_file = str(Path(manifest_path).resolve())
    if record and record["manifest"] != manifest_file:
        raise UsageError(output_dir, f"this output folder holds the cohort of {record['manifest']}; give that "
                                     "manifest, or another output folder")
    busy = _busy_cases(record, slurm.live_tasks())
    todo = [row for row in manifest.rows if row.case_id not in busy and not outputs_done(row.case_id, output_dir)]
    skipped = [row.case_id for row in manifest.rows if row not in todo]
    record = record or {"manifest": manifest_file, "cases": [], "submissions": []}
    record["cases"] += [row.case_id for row in manifest.rows if row.case_id not in record["cases"]]
    return _submit(folder, record, todo, run, resources, dry_run, skipped)


def resubmit_failed(output_dir, resources: dict | None = None, *, dry_run: bool = False) -> Submission:
    """Submit again the cases a task ended without finishing (failed, interrupted, not started), with the
    settings of the latest submission and ``resources`` (changed fields only) over its resources."""
    output_dir = Path(output_dir).resolve()
    record = read_record(output_dir)
    folder = CohortFolder(output_dir)
    last = record["submissions"][-1]
    _, _, run, previous = read_settings(last["settings"])
    res = replace(previous, **(resources or {}))
    slurm.check_resources(res)
    states = cohort_states(output_dir)
    wanted = {s.case_id for s in states if s.state in RESUBMITTABLE}
    manifest = read_manifest(record["manifest"])
    problems = [p for p in manifest.problems if p.case_id in wanted or p.case_id is None]
    if problems:
        from pedtumorseg.cohort.manifest import ManifestError

        raise ManifestError(record["manifest"], problems)
    todo = [row for row in manifest.rows if row.case_id in wanted]
    return _submit(folder, record, todo, run, res, dry_run, [s.case_id for s in states if s.case_id not in wanted])


def _submit(folder: CohortFolder, record: dict, rows: list[Row], run: RunSettings, res: Resources, dry_run: bool,
            skipped: list[str]) -> Submission:
    number = len(record["submissions"]) + 1
    settings_path = folder.submission_path(number, ".json")
    if not rows:
        return Submission([], "", skipped=skipped)
    script = slurm.job_script(res, len(rows), settings_path, folder.logs)
    if dry_run:
        return Submission([row.case_id for row in rows], script, number=number, skipped=skipped)
    folder.logs.mkdir(parents=True, exist_ok=True)
    cases_csv = write_manifest(rows, folder.submission_path(number, ".csv"))
    from pedtumorseg.files import write_json

    write_json(settings_dict(folder.output_dir, cases_csv, run, res), settings_path)
    script_path = folder.submission_path(number, ".sbatch")
    with atomic_output(script_path) as tmp:
        tmp.write_text(script, encoding="utf-8")
    try:
        job_id = slurm.submit(script_path)
    except BaseException:  # not submitted: no trace of it (the next submission takes its number)
        for path in (cases_csv, settings_path, script_path):
            path.unlink(missing_ok=True)
        raise
    record["submissions"].append({"number": number, "job_id": job_id, "submitted": now_text(),
                                  "cases": [row.case_id for row in rows], "cases_per_task": res.cases_per_task,
                                  "tasks": slurm.task_count(len(rows), res.cases_per_task),
                                  "settings": str(settings_path), "script": str(script_path)})
    folder.write_record(record)
    return Submission([row.case_id for row in rows], script, job_id, number, skipped)
