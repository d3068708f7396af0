"""`pedtumorseg`: the command-line face of the core (phantoms, predict, evaluate, demo; response in its package).

Every user error ends in one line on stderr that names the file and the problem, and a non-zero exit status:
1 for bad input or a failed case, 2 for a bad command line, 130 when cancelled (``errors.run_command``).
Output locations are checked before anything is computed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pedtumorseg import __version__, progress
from pedtumorseg.errors import EXIT_CANCELLED, EXIT_FAILED, UsageError
from pedtumorseg.web.cli import add_parser as add_serve_parser

PROG = "pedtumorseg"


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)


def _warn(message: str) -> None:
    print(f"{PROG}: warning: {message}", file=sys.stderr, flush=True)


# --- phantoms -----------------------------------------------------------------------------------------

def cmd_phantoms(args: argparse.Namespace) -> int:
    from pedtumorseg.files import check_output_folder
    from pedtumorseg.phantoms.realistic import write_styled_phantoms

    if args.n < 1:
        raise UsageError(None, f"--n must be at least 1, got {args.n}")
    check_output_folder(args.out)
    if args.mode == "series":  # timepoints of one patient for `pedtumorseg response` (phantoms.series)
        from pedtumorseg.phantoms.series import make_series, write_series
        folders = write_series(make_series(seed=args.seed), args.out)
    elif args.mode == "raw":
        from pedtumorseg.phantoms.raw import make_raw_phantom, write_raw_phantom
        folders = [write_raw_phantom(make_raw_phantom(args.seed + k, args.size, args.style), args.out,
                                     fmt=args.format) for k in range(args.n)]
    else:
        folders = write_styled_phantoms(args.out, args.n, size=args.size, seed=args.seed, style=args.style)
    for folder in folders:
        print(folder)
    return 0


# --- predict ------------------------------------------------------------------------------------------

class _JsonProgress:
    """`--progress json`: one ``pedtumorseg.progress`` event per line on stdout (what the front ends read)."""

    def __call__(self, fraction: float, message: str) -> None:
        self.emit(progress.Progress(round(float(fraction), 4), message))

    @staticmethod
    def emit(event: progress.Event) -> None:
        sys.stdout.write(progress.to_line(event) + "\n")
        sys.stdout.flush()


def _text_progress(fraction: float, message: str) -> None:
    print(f"[{fraction * 100:5.1f}%] {message}", file=sys.stderr, flush=True)


def _check_overrides(items) -> list[str]:
    """The ``--set`` items, each checked against the post-processing parameters (``UsageError`` naming it)."""
    from pedtumorseg.postprocess import PostprocessParams

    try:
        PostprocessParams().with_overrides(list(items or []))
    except ValueError as exc:
        raise UsageError(None, str(exc)) from None
    return list(items or [])


def _load_predictor(args: argparse.Namespace):
    """The one resolved run configuration of a `predict` command line."""
    from pedtumorseg.pipeline import Predictor, RawOptions

    raw = RawOptions(register=args.register, skull_strip=args.skull_strip, brain_mask=args.brain_mask,
                     strict=args.strict)
    return Predictor.load(args.model, device=args.device, folds=args.folds, tta=not args.no_tta,
                          step_size=args.step_size, overrides=_check_overrides(args.set), raw=raw,
                          backend=args.backend)


def _single_case_files(args: argparse.Namespace):
    from pedtumorseg.inputs.cases import case_from_files, find_any_case

    explicit = [args.t1, args.t1ce, args.t2, args.flair]
    if args.case:
        # a DICOM study folder may take explicit series for some sequences; a file-named case folder may not
        return find_any_case(args.case, dict(zip(("t1", "t1ce", "t2", "flair"), explicit)) if any(explicit)
                             else None)
    missing = [name for name, value in zip(("--t1", "--t1ce", "--t2", "--flair"), explicit) if not value]
    if missing:
        raise UsageError(None, f"missing {', '.join(missing)}: give all four files, or --case DIR, or --input-dir DIR")
    return case_from_files(args.t1, args.t1ce, args.t2, args.flair, case_id=args.case_id)


def cmd_predict(args: argparse.Namespace) -> int:
    from pedtumorseg.errors import Cancelled
    from pedtumorseg.outputs.paths import prepare_outputs
    from pedtumorseg.pipeline import predict_case

    json_progress = _JsonProgress() if args.progress == "json" else None
    try:
        _check_predict_usage(args)
        if args.input_dir:
            return _predict_batch(args)
        files = _single_case_files(args)
        outputs = prepare_outputs(files, args.out)  # before the model loads and the inference runs
        predictor = _load_predictor(args)
        report = json_progress or (_text_progress if args.progress == "text" else None)
        result = predict_case(files, args.out, predictor, write_raw=args.raw, overlay=args.overlay,
                              dicom_seg=args.dicom_seg, progress=report, raw_only=args.raw_only, outputs=outputs,
                              warn=_warn)
    except Cancelled:
        if json_progress:
            json_progress.emit(progress.Failed("cancelled", cancelled=True))
        return EXIT_CANCELLED
    except Exception as exc:
        if json_progress:
            json_progress.emit(progress.Failed(str(exc)))
        raise
    if json_progress:
        inference = result.stats["inference"]
        json_progress.emit(progress.Done(result.case_id, {k: str(v) for k, v in result.outputs.items()},
                                         inference["backend"], inference["device"], inference["seconds"],
                                         inference["network_seconds"], tuple(result.stats["warnings"])))
    else:
        for kind, path in result.outputs.items():
            print(f"{kind}: {path}")
    for reason in result.not_written.values():
        _error(reason)
    return EXIT_FAILED if result.not_written else 0


def _check_predict_usage(args: argparse.Namespace) -> None:
    """Contradictory or missing options of `predict`, before anything is read."""
    _check_overrides(args.set)
    if args.raw_only and (args.input_dir or args.set):
        raise UsageError(None, "--raw-only is for one case and writes the labels before post-processing: "
                               "no --input-dir, no --set")
    if args.input_dir and not args.output_dir:
        raise UsageError(args.input_dir, "batch mode needs --output-dir")
    if not args.input_dir and not args.out:
        raise UsageError(None, "give --out DIR for the outputs")


def _predict_batch(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pedtumorseg.pipeline import run_batch

    bar = None

    def on_case(index: int, total: int, case_id: str, status: str) -> None:
        nonlocal bar
        if args.progress == "none":
            return
        if bar is None:
            bar = tqdm(total=total, unit="case", file=sys.stderr)
        bar.set_postfix_str(f"{case_id}: {status}")
        bar.update(1)

    summary = run_batch(args.input_dir, args.output_dir, lambda: _load_predictor(args), num_parts=args.num_parts,
                        part_id=args.part_id, write_raw=args.raw, overlay=args.overlay, dicom_seg=args.dicom_seg,
                        progress=on_case)
    if bar is not None:
        bar.close()
    for line in summary.lines():
        print(line, file=sys.stderr if line.startswith(("FAILED", "INCOMPLETE")) else sys.stdout)
    return summary.exit_code


# --- evaluate -----------------------------------------------------------------------------------------

def cmd_evaluate(args: argparse.Namespace) -> int:
    from pedtumorseg.evaluation.folder import evaluate_folder
    from pedtumorseg.files import check_output_file

    if (args.pred_b or args.size_cutoff_ml is not None) and not args.report:
        raise UsageError(None, "--pred-b and --size-cutoff-ml are options of the report: give --report too")
    if args.report and args.scorer != "brats2025":
        raise UsageError(None, "--report is built on the brats2025 scorer's columns: leave out --scorer or --report")
    if args.size_cutoff_ml is not None and not args.size_cutoff_ml > 0:
        raise UsageError(None, f"--size-cutoff-ml must be a volume > 0 mL, got {args.size_cutoff_ml}")
    if args.scorer == "brats2026":
        from pedtumorseg.evaluation.brats2026 import evaluator

        try:
            evaluator()  # the optional package, before any work
        except ImportError as exc:
            raise UsageError(None, str(exc)) from None
    check_output_file(args.out)  # before any case is evaluated
    if args.report:
        from pedtumorseg.evaluation.report import require_matplotlib

        check_output_file(args.report)
        require_matplotlib(args.report)  # before any work
    if args.pred_b:
        from pedtumorseg.evaluation.folder import label_files

        label_files(args.pred_b)  # an unusable second folder fails before the first is evaluated
    report = bool(args.report)
    result = evaluate_folder(args.pred, args.gt, args.out, workers=args.workers, report_data=report,
                             scorer=args.scorer)
    results = [("A", args.pred, result)]
    if args.pred_b:
        out = Path(args.out)
        out_b = out.with_name(f"{out.stem}-b{out.suffix}")  # metrics.csv -> metrics-b.csv
        results.append(("B", args.pred_b, evaluate_folder(args.pred_b, args.gt, out_b, workers=args.workers,
                                                          report_data=True, scorer=args.scorer)))
    for name, pred, res in results:
        if len(results) > 1:
            print(f"{name} = {pred}")
        for line in res.summary_lines():
            print(line)
    if report:
        from pedtumorseg.evaluation.report import write_report

        path = write_report(args.report, result, results[1][2] if args.pred_b else None,
                            labels={"A": str(args.pred), "B": str(args.pred_b)}, gt_label=str(args.gt),
                            size_cutoff_ml=args.size_cutoff_ml)
        print(f"report: {path}")
    for _, pred, res in results:
        for case_id in res.missing:
            _error(f"{pred}: no prediction for case {case_id}")
    return EXIT_FAILED if any(res.missing for *_, res in results) else 0


# --- demo ---------------------------------------------------------------------------------------------

def cmd_demo(args: argparse.Namespace) -> int:
    from pedtumorseg.files import check_output_folder
    from pedtumorseg.inputs.cases import find_case
    from pedtumorseg.phantoms.clean import make_phantom, write_phantom
    from pedtumorseg.pipeline import Predictor, predict_case

    out = Path(args.out)
    check_output_folder(out)
    predictor = Predictor.load(args.model, device=args.device, tta=not args.no_tta)  # a bad bundle: nothing written
    phantom = make_phantom(args.seed, args.size)
    case_dir = write_phantom(phantom, out / "input")
    print(f"synthetic case: {case_dir}")
    print(f"model: {predictor.bundle.name} {predictor.bundle.version} on {predictor.engine.device}")
    result = predict_case(find_case(case_dir), out, predictor, write_raw=True, overlay=True,
                          progress=_text_progress, warn=_warn)
    volumes = result.stats["volumes_ml"]
    print("volumes (mL): " + ", ".join(f"{k} {v:.1f}" for k, v in volumes.items()))
    print("Dice against the phantom's ground truth: " + _demo_dice(result.outputs["seg"], phantom.seg))
    print(f"ground truth of the phantom: {case_dir / (phantom.case_id + '-seg.nii.gz')}")
    for kind, path in result.outputs.items():
        print(f"{kind}: {path}")
    return 0


def _demo_dice(seg_path: Path, truth) -> str:
    """Voxel Dice of the written segmentation against the phantom's own labels, per region (ET ... WT)."""
    import SimpleITK as sitk

    from pedtumorseg.conventions import REGIONS
    from pedtumorseg.evaluation.metrics import dice, region_mask

    pred = sitk.GetArrayFromImage(sitk.ReadImage(str(seg_path)))
    return ", ".join(f"{r} {dice(region_mask(pred, r), region_mask(truth, r)):.2f}" for r in REGIONS)


# --- parser -------------------------------------------------------------------------------------------

def _add_phantoms(sub) -> None:
    p = sub.add_parser("phantoms", help="write synthetic BraTS-named cases with ground truth")
    p.add_argument("--out", required=True, help="folder for the case folders")
    p.add_argument("--n", type=int, default=3, help="number of cases (default 3)")
    p.add_argument("--size", choices=("brats", "small"), default="brats",
                   help="brats: 240x240x155 at 1 mm; small: the same field of view at 2.5 mm")
    p.add_argument("--seed", type=int, default=0, help="case k uses seed SEED+k (default 0)")
    p.add_argument("--mode", choices=("clean", "raw", "series"), default="clean",
                   help="clean: BraTS-preprocessed; raw: a clinical examination (skull, own pose and grid per "
                        "sequence); series: three timepoints of one patient (T1CE + labels; the tumour shrinks "
                        "to 0.6 then grows to 1.3 times its radii, the head moves, a lesion appears) for "
                        "`pedtumorseg response`")
    p.add_argument("--format", choices=("nifti", "dicom"), default="nifti", help="raw mode: NIfTI files or DICOM series")
    p.add_argument("--style", choices=("clean", "realistic"), default="clean",
                   help="clean: today's ellipsoid tumors (default); realistic: tumors grown along anatomy, mass "
                        "effect, several kinds, appearance randomized around contrasts measured on real scans")
    p.set_defaults(func=cmd_phantoms)


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="segment one case or a folder of cases")
    src = p.add_argument_group("input (one of: --case, the four files, --input-dir)")
    src.add_argument("--case", help="folder of one case (BraTS or legacy names) or a DICOM study folder")
    src.add_argument("--t1", help="image file or DICOM series folder (with --case: choose this study series)")
    src.add_argument("--t1ce")
    src.add_argument("--t2")
    src.add_argument("--flair")
    src.add_argument("--case-id", help="output name for the four-file form (default: from the T1CE file name)")
    src.add_argument("--input-dir", help="batch: a folder of case folders")
    p.add_argument("--out", help="output folder (single case)")
    p.add_argument("--output-dir", help="output folder (batch)")
    p.add_argument("--model", help="model bundle folder or .zip (default: the shipped demo bundle)")
    p.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cuda, cuda:N, mps or cpu")
    p.add_argument("--backend", choices=("auto", "torch", "onnxruntime", "openvino"), default="auto",
                   help="auto (on a CPU: OpenVINO, then ONNX Runtime when installed, else PyTorch; PyTorch on a "
                        "GPU), torch, onnxruntime or openvino (CPU only; pip install 'pedtumorseg[cpu-fast]')")
    p.add_argument("--folds", type=int, nargs="+", help="folds to ensemble (default: all in the bundle)")
    p.add_argument("--no-tta", action="store_true", help="no mirroring test-time augmentation")
    p.add_argument("--step-size", type=float, default=0.5, help="sliding-window step as a fraction of the patch")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="post-processing parameter, e.g. ratio_high=1.4, min_volume_et=150, ratio_enabled=false")
    p.add_argument("--raw", action="store_true", help="also write the labels before post-processing")
    p.add_argument("--raw-only", action="store_true",
                   help="single case: write only the network's labels (<ID>-seg-raw.nii.gz, no post-processing) and "
                        "their stats, for a caller that post-processes them itself (the Slicer module)")
    raw = p.add_argument_group("raw scans (DICOM or NIfTI, unregistered, with skull; needs pedtumorseg[raw])")
    raw.add_argument("--register", choices=("auto", "yes", "no"), default="auto",
                     help="rigidly register T1, T2, FLAIR to T1CE (auto: when their grids differ)")
    raw.add_argument("--skull-strip", choices=("auto", "yes", "no"), default="auto",
                     help="brain extraction with deepbet (auto: when the T1CE shows skull and scalp)")
    raw.add_argument("--brain-mask", help="use this brain mask (any grid overlapping the T1CE) instead of deepbet")
    p.add_argument("--strict", action="store_true",
                   help="refuse a case whose images look misaligned (another patient?) or in the wrong slots "
                        "(T1/T1CE or T2/FLAIR swapped) instead of warning")
    raw.add_argument("--dicom-seg", action="store_true",
                     help="also write <ID>-seg.dcm, a DICOM SEG referencing the T1CE series (T1CE given as DICOM)")
    p.add_argument("--overlay", action="store_true", help="also write a PNG montage of the result")
    p.add_argument("--num-parts", type=int, default=1, help="batch sharding: number of parts")
    p.add_argument("--part-id", type=int, default=0, help="batch sharding: this part (0-based)")
    p.add_argument("--progress", choices=("text", "json", "none"), default="text",
                   help="progress on stderr (text), as JSON lines on stdout (json), or none")
    p.set_defaults(func=cmd_predict)


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="BraTS lesion-wise metrics of predictions against ground truth")
    p.add_argument("--pred", required=True, help="folder with <ID>-seg.nii.gz predictions")
    p.add_argument("--gt", required=True, help="folder of ground-truth cases (<ID>/<ID>-seg.nii.gz) or label files")
    p.add_argument("--out", required=True, help="CSV file for the per-case, per-region rows")
    p.add_argument("--workers", type=int, default=1, help="parallel processes")
    p.add_argument("--report", metavar="HTML", help="also write a self-contained HTML report (score tables, "
                   "plots, volume agreement, size strata; needs pedtumorseg[report])")
    p.add_argument("--pred-b", metavar="FOLDER", help="a second prediction folder compared with --pred in the "
                   "report (paired Wilcoxon per region); its scores go to <out stem>-b.csv")
    p.add_argument("--size-cutoff-ml", type=float, metavar="ML", help="report: ground-truth WT volume "
                   "separating small from large tumors (default: the median over the cases)")
    p.add_argument("--scorer", choices=("brats2025", "brats2026"), default="brats2025",
                   help="brats2025: the BraTS 2024/2025 PED scorer (default); brats2026: the challenge package "
                        "brats-evaluation (panoptica; needs the [brats2026] extra)")
    p.set_defaults(func=cmd_evaluate)


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="segment a synthetic case with the shipped demo model")
    p.add_argument("--out", default="pedtumorseg-demo", help="output folder (default ./pedtumorseg-demo)")
    p.add_argument("--seed", type=int, default=7, help="phantom seed")
    p.add_argument("--size", choices=("brats", "small"), default="brats")
    p.add_argument("--model", help="model bundle (default: the shipped demo bundle)")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-tta", action="store_true")
    p.set_defaults(func=cmd_demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pedtumorseg", description="Pediatric brain tumor segmentation "
                                     "(ET, NET, CC, ED) from T1, T1CE, T2 and FLAIR.")
    parser.add_argument("--version", action="version", version=f"pedtumorseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_phantoms(sub)
    _add_predict(sub)
    _add_evaluate(sub)
    _add_demo(sub)
    from pedtumorseg.cohort.cli import add_parser as add_cohort_parser
    add_cohort_parser(sub)
    from pedtumorseg.response.cli import add_parser as add_response_parser
    add_response_parser(sub)
    add_serve_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from pedtumorseg.errors import run_command

    args = build_parser().parse_args(argv)
    return run_command(PROG, args.func, args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
