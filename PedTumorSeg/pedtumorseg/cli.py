"""`pedtumorseg`: the command-line face of the core (phantoms, predict, evaluate, demo).

Every user error ends in one line on stderr that names the file and the problem, and a non-zero exit status:
1 for bad input or a failed case, 2 for a bad command line, 130 when cancelled.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CANCELLED = 130


def _error(message: str) -> None:
    print(f"pedtumorseg: error: {message}", file=sys.stderr)


# --- phantoms -----------------------------------------------------------------------------------------

def cmd_phantoms(args: argparse.Namespace) -> int:
    from .phantom import write_phantoms

    folders = write_phantoms(args.out, args.n, size=args.size, seed=args.seed)
    for folder in folders:
        print(folder)
    return 0


# --- predict ------------------------------------------------------------------------------------------

class _JsonProgress:
    """`--progress json`: one JSON object per line on stdout, read by the Slicer module's background runner."""

    def __call__(self, fraction: float, message: str) -> None:
        self.emit({"event": "progress", "fraction": round(float(fraction), 4), "message": message})

    @staticmethod
    def emit(event: dict) -> None:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()


def _text_progress(fraction: float, message: str) -> None:
    print(f"[{fraction * 100:5.1f}%] {message}", file=sys.stderr, flush=True)


def _postprocess_params(args: argparse.Namespace, predictor):
    params = predictor.bundle.postprocessing
    if args.set:
        params = params.with_overrides(args.set)
    return params


def _single_case_files(args: argparse.Namespace):
    from .errors import InputError
    from .io import case_from_files, find_case

    explicit = [args.t1, args.t1ce, args.t2, args.flair]
    if args.case:
        if any(explicit):
            raise InputError(args.case, "give either --case or the four files --t1 --t1ce --t2 --flair, not both")
        return find_case(args.case)
    missing = [name for name, value in zip(("--t1", "--t1ce", "--t2", "--flair"), explicit) if not value]
    if missing:
        raise InputError(None, f"missing {', '.join(missing)}: give all four files, or --case DIR, or --input-dir DIR")
    return case_from_files(args.t1, args.t1ce, args.t2, args.flair, case_id=args.case_id)


def cmd_predict(args: argparse.Namespace) -> int:
    from .errors import Cancelled, InputError
    from .pipeline import Predictor, predict_case, run_batch

    json_progress = _JsonProgress() if args.progress == "json" else None
    try:
        if args.input_dir:
            if not args.output_dir:
                raise InputError(args.input_dir, "batch mode needs --output-dir")
            return _predict_batch(args, run_batch, Predictor)
        if not args.out:
            raise InputError(None, "give --out DIR for the outputs")
        files = _single_case_files(args)
        predictor = Predictor.load(args.model, device=args.device, folds=args.folds, tta=not args.no_tta,
                                   step_size=args.step_size, backend=args.backend)
        params = _postprocess_params(args, predictor)
        progress = json_progress or (_text_progress if args.progress == "text" else None)
        result = predict_case(files, args.out, predictor, params=params, write_raw=args.raw,
                              overlay=args.overlay, progress=progress)
    except Cancelled:
        if json_progress:
            json_progress.emit({"event": "error", "message": "cancelled"})
        return EXIT_CANCELLED
    except Exception as exc:
        if json_progress:
            json_progress.emit({"event": "error", "message": str(exc)})
        raise
    if json_progress:
        json_progress.emit({"event": "done", "case_id": result.case_id,
                            "outputs": {k: str(v) for k, v in result.outputs.items()},
                            **result.stats["inference"]})
    else:
        for kind, path in result.outputs.items():
            print(f"{kind}: {path}")
    return 0


def _predict_batch(args: argparse.Namespace, run_batch, Predictor) -> int:
    from tqdm import tqdm

    bar = None

    def on_case(index: int, total: int, case_id: str, status: str) -> None:
        nonlocal bar
        if args.progress == "none":
            return
        if bar is None:
            bar = tqdm(total=total, unit="case", file=sys.stderr)
        bar.set_postfix_str(f"{case_id}: {status}")
        bar.update(1)

    predictor = None
    params = None
    if args.set:
        predictor = Predictor.load(args.model, device=args.device, folds=args.folds, tta=not args.no_tta,
                                   step_size=args.step_size, backend=args.backend)
        params = _postprocess_params(args, predictor)
    summary = run_batch(args.input_dir, args.output_dir, predictor=predictor, model=args.model, device=args.device,
                        folds=args.folds, tta=not args.no_tta, step_size=args.step_size, backend=args.backend,
                        params=params,
                        num_parts=args.num_parts,
                        part_id=args.part_id, write_raw=args.raw, overlay=args.overlay, progress=on_case)
    if bar is not None:
        bar.close()
    for line in summary.lines():
        print(line, file=sys.stderr if line.startswith("FAILED") else sys.stdout)
    return summary.exit_code


# --- evaluate -----------------------------------------------------------------------------------------

def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate_folder

    result = evaluate_folder(args.pred, args.gt, args.out, workers=args.workers)
    for line in result.summary_lines():
        print(line)
    for case_id in result.missing:
        _error(f"{args.pred}: no prediction for case {case_id}")
    return EXIT_FAILED if result.missing else 0


# --- demo ---------------------------------------------------------------------------------------------

def cmd_demo(args: argparse.Namespace) -> int:
    from .io import find_case
    from .phantom import make_phantom, write_phantom
    from .pipeline import Predictor, predict_case

    out = Path(args.out)
    phantom = make_phantom(args.seed, args.size)
    case_dir = write_phantom(phantom, out / "input")
    print(f"synthetic case: {case_dir}")
    predictor = Predictor.load(args.model, device=args.device, tta=not args.no_tta)
    print(f"model: {predictor.bundle.name} {predictor.bundle.version} on {predictor.engine.device}")
    result = predict_case(find_case(case_dir), out, predictor, write_raw=True, overlay=True,
                          progress=_text_progress)
    volumes = result.stats["volumes_ml"]
    print("volumes (mL): " + ", ".join(f"{k} {v:.1f}" for k, v in volumes.items()))
    print(f"ground truth of the phantom: {case_dir / (phantom.case_id + '-seg.nii.gz')}")
    for kind, path in result.outputs.items():
        print(f"{kind}: {path}")
    return 0


# --- parser -------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pedtumorseg", description="Pediatric brain tumor segmentation "
                                     "(ET, NET, CC, ED) from T1, T1CE, T2 and FLAIR.")
    parser.add_argument("--version", action="version", version=f"pedtumorseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("phantoms", help="write synthetic BraTS-named cases with ground truth")
    p.add_argument("--out", required=True, help="folder for the case folders")
    p.add_argument("--n", type=int, default=3, help="number of cases (default 3)")
    p.add_argument("--size", choices=("brats", "small"), default="brats",
                   help="brats: 240x240x155 at 1 mm; small: the same field of view at 2.5 mm")
    p.add_argument("--seed", type=int, default=0, help="case k uses seed SEED+k (default 0)")
    p.set_defaults(func=cmd_phantoms)

    p = sub.add_parser("predict", help="segment one case or a folder of cases")
    src = p.add_argument_group("input (one of: --case, the four files, --input-dir)")
    src.add_argument("--case", help="folder of one case (BraTS or legacy names)")
    src.add_argument("--t1")
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
    p.add_argument("--overlay", action="store_true", help="also write a PNG montage of the result")
    p.add_argument("--num-parts", type=int, default=1, help="batch sharding: number of parts")
    p.add_argument("--part-id", type=int, default=0, help="batch sharding: this part (0-based)")
    p.add_argument("--progress", choices=("text", "json", "none"), default="text",
                   help="progress on stderr (text), as JSON lines on stdout (json), or none")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("evaluate", help="BraTS lesion-wise metrics of predictions against ground truth")
    p.add_argument("--pred", required=True, help="folder with <ID>-seg.nii.gz predictions")
    p.add_argument("--gt", required=True, help="folder of ground-truth cases (<ID>/<ID>-seg.nii.gz) or label files")
    p.add_argument("--out", required=True, help="CSV file for the per-case, per-region rows")
    p.add_argument("--workers", type=int, default=1, help="parallel processes")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("demo", help="segment a synthetic case with the shipped demo model")
    p.add_argument("--out", default="pedtumorseg-demo", help="output folder (default ./pedtumorseg-demo)")
    p.add_argument("--seed", type=int, default=7, help="phantom seed")
    p.add_argument("--size", choices=("brats", "small"), default="brats")
    p.add_argument("--model", help="model bundle (default: the shipped demo bundle)")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-tta", action="store_true")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .errors import PedTumorSegError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except PedTumorSegError as exc:
        _error(str(exc))
        return EXIT_FAILED
    except ValueError as exc:  # bad --set values and similar command-line mistakes
        _error(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        _error("interrupted")
        return EXIT_CANCELLED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
