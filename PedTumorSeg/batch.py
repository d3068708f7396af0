"""Headless batch segmentation of a folder of cases.

In Slicer (no window, no dialogs)::

    Slicer --no-main-window --python-script <module dir>/batch.py -- --input-dir DIR --output-dir DIR \
        [--model BUNDLE] [--device auto|cuda|cpu] [--quality fast|full] [--num-parts N --part-id K] [--set k=v ...] \
        [--register auto|yes|no] [--skull-strip auto|yes|no] [--dicom-seg]

or with any Python that has the core package's requirements: ``python batch.py --input-dir ... --output-dir ...``.

This is a thin adapter over the core: the run is resolved once by ``pedtumorseg.pipeline.Predictor.load`` (bundle,
device, quality preset, ``--set`` overrides, raw-input options) and handed to ``pipeline.run_batch``, whose summary
lines are printed as they are.

Each case folder of ``--input-dir`` (BraTS or legacy names, or a DICOM study) gets ``<ID>-seg.nii.gz``, ``<ID>-stats.json`` in
``--output-dir``; finished cases are skipped (resume); progress lines go to stdout, a summary at the end, and the
exit status is non-zero when any case failed (1) or the arguments are wrong (2).

Exit status inside Slicer: ``--python-script`` keeps the application running after the script unless the script
ends it. ``slicer.util.exit(status)`` (Base/Python/slicer/util.py) clears ``commandOptions().runPythonAndExit``
and calls ``slicer.app.exit(status)``, so the Slicer process ends with ``status`` once pending events are
processed; that is what :func:`main` uses. Outside Slicer the status goes to ``sys.exit``.
"""

import argparse
import os
import sys

MODULE_DIR = os.path.dirname(os.path.abspath(__file__))
if MODULE_DIR not in sys.path:  # the core package ships next to this file
    sys.path.insert(0, MODULE_DIR)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

try:  # inside Slicer
    from slicer.ScriptedLoadableModule import ScriptedLoadableModule
except ImportError:  # plain Python
    ScriptedLoadableModule = None

if ScriptedLoadableModule is not None:

    class batch(ScriptedLoadableModule):  # noqa: N801 - Slicer requires the class to be named like the file
        """Slicer scans every ``*.py`` of a module folder for a module class named like the file; this hidden one
        keeps the scan from reporting ``batch.py`` as a broken module. The batch itself runs only as a script."""

        def __init__(self, parent):
            ScriptedLoadableModule.__init__(self, parent)
            parent.title = "PedTumorSeg batch"
            parent.categories = ["Segmentation"]
            parent.hidden = True


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="PedTumorSeg batch",
                                description="Segment every case folder under --input-dir (headless).")
    p.add_argument("--input-dir", required=True, help="folder of case folders")
    p.add_argument("--output-dir", required=True, help="folder for <ID>-seg.nii.gz and <ID>-stats.json")
    p.add_argument("--model", help="model bundle folder or .zip (default: the shipped demo bundle)")
    p.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cuda, cuda:N, mps or cpu")
    p.add_argument("--quality", choices=("fast", "full"), default="full",
                   help="fast: first fold, no test-time augmentation; full: all folds with TTA (default)")
    p.add_argument("--num-parts", type=int, default=1, help="split the cases into this many parts")
    p.add_argument("--part-id", type=int, default=0, help="process this part (0-based)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="post-processing override, e.g. --set min_volume_et=100 (repeatable)")
    p.add_argument("--raw", action="store_true", help="also write <ID>-seg-raw.nii.gz (before post-processing)")
    p.add_argument("--register", choices=("auto", "yes", "no"), default="auto",
                   help="raw scans: register T1, T2, FLAIR to T1CE (auto: when their grids differ)")
    p.add_argument("--skull-strip", choices=("auto", "yes", "no"), default="auto",
                   help="raw scans: brain extraction (auto: when the T1CE shows skull and scalp)")
    p.add_argument("--dicom-seg", action="store_true", help="also write <ID>-seg.dcm for DICOM studies")
    return p


def script_arguments(argv) -> list:
    """The arguments meant for this script: everything after a ``--`` separator if there is one."""
    argv = list(argv)
    if "--" in argv:
        return argv[argv.index("--") + 1:]
    return argv


def run(args, out=sys.stdout) -> int:
    """Run the batch for parsed ``args``; returns the exit status."""
    from pedtumorseg import pipeline

    if args.num_parts < 1 or not 0 <= args.part_id < args.num_parts:
        print(f"error: --part-id must be in [0, {args.num_parts - 1}] and --num-parts >= 1", file=out, flush=True)
        return EXIT_USAGE
    try:
        predictor = pipeline.Predictor.load(
            args.model, device=args.device, quality=args.quality, overrides=args.set,
            raw=pipeline.RawOptions(register=args.register, skull_strip=args.skull_strip))
    except Exception as exc:  # a wrong bundle path, device or --set value: one line, no traceback
        print(f"error: {exc}", file=out, flush=True)
        return EXIT_USAGE

    def progress(index: int, total: int, case_id: str, status: str) -> None:
        # run_batch counts cases from 1 (index == total for the last one)
        print(f"[{index}/{total}] {case_id}: {status}", file=out, flush=True)

    print(f"PedTumorSeg batch: {args.input_dir} -> {args.output_dir} ({predictor.describe()}, quality "
          f"{args.quality}, part {args.part_id + 1}/{args.num_parts})", file=out, flush=True)
    summary = pipeline.run_batch(args.input_dir, args.output_dir, predictor=predictor, num_parts=args.num_parts,
                                 part_id=args.part_id, write_raw=args.raw, dicom_seg=args.dicom_seg,
                                 progress=progress)
    for line in summary.lines():
        print(line, file=out, flush=True)
    return summary.exit_code


def main(argv=None) -> int:
    argv = script_arguments(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help (0) and on bad arguments (2)
        return EXIT_USAGE if exc.code else EXIT_OK
    try:
        return run(args)
    except Exception as exc:
        print(f"error: {exc}", file=sys.stdout, flush=True)
        return EXIT_FAILED


def _in_slicer() -> bool:
    try:
        import slicer  # noqa: F401

        return hasattr(slicer, "app")
    except ImportError:
        return False


if __name__ == "__main__":
    status = main()
    if _in_slicer():
        import slicer

        slicer.util.exit(status)
    else:
        sys.exit(status)
