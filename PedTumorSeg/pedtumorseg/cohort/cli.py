"""`pedtumorseg cohort ...`: a cohort on a SLURM cluster.

``manifest`` (the CSV of a folder of cases), ``check`` (every problem of a manifest at once), ``submit`` (the
job array, or ``--dry-run`` its script), ``run-task`` (what each array task runs), ``status``, ``resubmit
--failed`` and ``report``. ``pedtumorseg.cli`` adds these with :func:`add_parser`.
"""

from __future__ import annotations

import argparse
import contextlib
import sys

from pedtumorseg.errors import UsageError

PROG = "pedtumorseg"


@contextlib.contextmanager
def _every_problem_printed():
    """A manifest's problems, one line each (``<prog>: error: <manifest>: line N: ...``), before the error line
    ``errors.run_command`` prints."""
    from pedtumorseg.cohort.manifest import ManifestError

    try:
        yield
    except ManifestError as exc:
        for problem in exc.problems:
            print(f"{PROG}: error: {exc.path}: {problem}", file=sys.stderr)
        raise


def cmd_manifest(args: argparse.Namespace) -> int:
    from pedtumorseg.cohort.manifest import ManifestError, manifest_from_folder, write_manifest
    from pedtumorseg.files import check_output_file

    check_output_file(args.out)
    rows, problems = manifest_from_folder(args.input_dir)
    if problems:
        with _every_problem_printed():
            raise ManifestError(args.input_dir, problems)
    write_manifest(rows, args.out)
    print(f"{len(rows)} case(s): {args.out}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from pedtumorseg.cohort.manifest import read_manifest
    from pedtumorseg.cohort.submit import check_cohort

    with _every_problem_printed():
        manifest = check_cohort(args.manifest, args.output_dir) if args.output_dir else \
            read_manifest(args.manifest).require_valid()
    print(f"{args.manifest}: {len(manifest.rows)} case(s), no problem found")
    return 0


def _run_settings(args: argparse.Namespace):
    from pedtumorseg.cohort.state import RunSettings
    from pedtumorseg.postprocess import PostprocessParams

    try:
        PostprocessParams().with_overrides(list(args.set or []))
    except ValueError as exc:
        raise UsageError(None, str(exc)) from None
    return RunSettings(model=args.model, device=args.device, folds=args.folds, tta=not args.no_tta,
                       step_size=args.step_size, overrides=list(args.set or []), backend=args.backend,
                       register=args.register, skull_strip=args.skull_strip, strict=args.strict,
                       write_raw=args.raw, overlay=args.overlay)


RESOURCE_OPTIONS = ("cases_per_task", "partition", "account", "qos", "cpus_per_task", "gpus", "mem", "time",
                    "max_parallel", "job_name", "sbatch_args", "container", "binds")


def _resources_given(args: argparse.Namespace) -> dict:
    return {name: getattr(args, name) for name in RESOURCE_OPTIONS if getattr(args, name) is not None}


def _print_submission(sub, dry_run: bool) -> int:
    if not sub.cases:
        print(f"nothing to submit: {len(sub.skipped or [])} case(s) finished or held by a queued or running task")
        return 0
    if dry_run:
        sys.stdout.write(sub.script)
        print(f"# dry run: {len(sub.cases)} case(s) would be submitted; nothing written or submitted",
              file=sys.stderr)
        return 0
    print(f"submitted job {sub.job_id}: {len(sub.cases)} case(s) "
          f"({len(sub.skipped or [])} finished or still held by a task, not submitted)")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from pedtumorseg.cohort.state import Resources
    from pedtumorseg.cohort.submit import submit_cohort

    resources = replace(Resources(), **_resources_given(args))
    with _every_problem_printed():
        sub = submit_cohort(args.manifest, args.output_dir, _run_settings(args), resources, dry_run=args.dry_run)
    return _print_submission(sub, args.dry_run)


def cmd_resubmit(args: argparse.Namespace) -> int:
    from pedtumorseg.cohort.submit import resubmit_failed

    if not args.failed:
        raise UsageError(None, "say what to resubmit: --failed (the failed, interrupted and not started cases)")
    with _every_problem_printed():
        sub = resubmit_failed(args.output_dir, _resources_given(args), dry_run=args.dry_run)
    return _print_submission(sub, args.dry_run)


def cmd_run_task(args: argparse.Namespace) -> int:
    from pedtumorseg.cohort.worker import run_task

    return run_task(args.settings, args.task_id)


def cmd_status(args: argparse.Namespace) -> int:
    from pedtumorseg.cohort.status import cohort_states, states_json, status_lines

    states = cohort_states(args.output_dir, verify=args.verify)
    print(states_json(states) if args.json else "\n".join(status_lines(states)))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pedtumorseg.cohort.report import write_report
    from pedtumorseg.cohort.state import CohortFolder
    from pedtumorseg.files import check_output_file, folder_problem

    if (problem := folder_problem(Path(args.output_dir))) is not None:
        raise UsageError(args.output_dir, problem)
    state = CohortFolder(Path(args.output_dir)).root
    csv_path = Path(args.csv or state / "report.csv")
    html_path = Path(args.html or state / "report.html")
    for path in (csv_path, html_path):
        check_output_file(path)
    for line in write_report(args.output_dir, csv_path, html_path, gt_dir=args.gt):
        print(line)
    return 0


def _add_run_options(p) -> None:
    g = p.add_argument_group("how each case is segmented (as pedtumorseg predict)")
    g.add_argument("--model", help="model bundle folder or .zip (default: the shipped demo bundle)")
    g.add_argument("--device", default="auto", help="auto, cuda, cuda:N, mps or cpu")
    g.add_argument("--backend", choices=("auto", "torch", "onnxruntime", "openvino"), default="auto")
    g.add_argument("--folds", type=int, nargs="+", help="folds to ensemble (default: all in the bundle)")
    g.add_argument("--no-tta", action="store_true", help="no mirroring test-time augmentation")
    g.add_argument("--step-size", type=float, default=0.5, help="sliding-window step as a fraction of the patch")
    g.add_argument("--set", action="append", metavar="KEY=VALUE", help="post-processing parameter for every case")
    g.add_argument("--register", choices=("auto", "yes", "no"), default="auto")
    g.add_argument("--skull-strip", choices=("auto", "yes", "no"), default="auto")
    g.add_argument("--strict", action="store_true", help="refuse cases whose images look misaligned or swapped")
    g.add_argument("--raw", action="store_true", help="also write the labels before post-processing")
    g.add_argument("--overlay", action="store_true", help="also write a PNG montage per case")


def _add_resources(p, defaults: bool) -> None:
    """The job's resources; ``defaults`` False (resubmit): unset options keep the previous submission's."""
    from pedtumorseg.cohort.state import Resources

    d = Resources() if defaults else None
    g = p.add_argument_group("SLURM job array" + ("" if defaults else " (default: as the latest submission)"))
    g.add_argument("--cases-per-task", type=int, help=f"cases per array task ({d.cases_per_task})" if d else None)
    g.add_argument("--partition")
    g.add_argument("--account")
    g.add_argument("--qos")
    g.add_argument("--cpus-per-task", type=int, help=f"CPUs per task, the threads used ({d.cpus_per_task})"
                   if d else None)
    g.add_argument("--gpus", type=int, help=f"GPUs per task (--gres=gpu:N; {d.gpus})" if d else None)
    g.add_argument("--mem", help=f"memory per task ({d.mem})" if d else None)
    g.add_argument("--time", help=f"time limit per task ({d.time})" if d else None)
    g.add_argument("--max-parallel", type=int, help="at most this many tasks at once (--array=...%%N)")
    g.add_argument("--job-name")
    g.add_argument("--sbatch-arg", dest="sbatch_args", action="append", metavar="ARG",
                   help="one more sbatch option for the script, e.g. --sbatch-arg=--constraint=a100")
    g.add_argument("--container", metavar="SIF", help="run each task in this Apptainer/Singularity image")
    g.add_argument("--bind", dest="binds", action="append", metavar="PATH",
                   help="with --container: a folder the tasks need (inputs, outputs, model)")
    p.add_argument("--dry-run", action="store_true", help="print the job script; write and submit nothing")


def add_parser(sub) -> None:
    """Add ``cohort`` and its subcommands to the ``pedtumorseg`` parser's subparsers ``sub``."""
    cohort = sub.add_parser("cohort", help="a cohort on a SLURM cluster: manifest, submit, status, resubmit, report")
    commands = cohort.add_subparsers(dest="cohort_command", required=True)
    p = commands.add_parser("manifest", help="write the manifest CSV of a folder of cases")
    p.add_argument("--input-dir", required=True, help="a folder of case folders (BraTS names or DICOM studies)")
    p.add_argument("--out", required=True, help="the manifest CSV to write")
    p.set_defaults(func=cmd_manifest)
    p = commands.add_parser("check", help="report every problem of a manifest at once")
    p.add_argument("--manifest", required=True)
    p.add_argument("--output-dir", help="also check this output folder for every case")
    p.set_defaults(func=cmd_check)
    p = commands.add_parser("submit", help="submit a SLURM job array over a manifest")
    p.add_argument("--manifest", required=True, help="cohort CSV (pedtumorseg cohort manifest writes one)")
    p.add_argument("--output-dir", required=True, help="output folder of every case (and the cohort's records)")
    _add_run_options(p)
    _add_resources(p, defaults=True)
    p.set_defaults(func=cmd_submit)
    p = commands.add_parser("resubmit", help="submit again the cases that a task ended without finishing")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--failed", action="store_true", help="the failed, interrupted and not started cases")
    _add_resources(p, defaults=False)
    p.set_defaults(func=cmd_resubmit)
    p = commands.add_parser("status", help="done / running / pending / failed ... per case")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--json", action="store_true", help="one JSON list instead of the table")
    p.add_argument("--verify", action="store_true", help="read every finished label map back in full")
    p.set_defaults(func=cmd_status)
    p = commands.add_parser("report", help="the cohort's CSV of volumes and fractions and its HTML report")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--csv", help="default: <output-dir>/cohort/report.csv")
    p.add_argument("--html", help="default: <output-dir>/cohort/report.html")
    p.add_argument("--gt", help="ground truth (case folders or label files): adds the evaluation report")
    p.set_defaults(func=cmd_report)
    p = commands.add_parser("run-task", help="run one array task of a submission (what the job script runs)")
    p.add_argument("--settings", required=True, help="the submission's settings file")
    p.add_argument("--task-id", type=int, help="array index (default: SLURM_ARRAY_TASK_ID)")
    p.set_defaults(func=cmd_run_task)
