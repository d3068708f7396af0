"""CPU backends side by side in one process: whole `predict` (read, preprocess, sliding window, post-process, write)
of one case with each backend, the time ratio to PyTorch, label agreement with PyTorch, and peak memory.

    python benchmarks/bench_backends.py --preset paper                 # paper preset, one fold, no TTA
    python benchmarks/bench_backends.py --preset demo --tta            # the shipped demo bundle with TTA
    python benchmarks/bench_backends.py --preset paper --backends openvino torch --patch-only

The case is the real BraTS case next to the repository when present (else a `brats` phantom). The paper preset
has no trained weights here: its bundle carries spread random weights (same network, same tiles, so the same time
as real weights; the labels vary enough to compare). ONNX exports are made before timing (once per bundle, cached)
and their time is printed separately. ``--patch-only`` times one forward pass of one patch per backend instead.
Peak memory: the process's resident set high-water mark during each run (Linux ``VmHWM``, reset per run).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Testing"))

from nnunet_harness import spread_init_  # noqa: E402

from pedtumorseg.inference import backends  # noqa: E402
from pedtumorseg.inference.bundle import default_bundle_path, load_bundle, write_bundle  # noqa: E402
from pedtumorseg.conventions import CHANNELS, LABEL_COLORS, LABEL_NAMES  # noqa: E402
from pedtumorseg.inference.engine import Engine, PredictOptions  # noqa: E402
from pedtumorseg.inputs.cases import find_case  # noqa: E402
from pedtumorseg.inputs.images import read_labels
from pedtumorseg.model.presets import NETWORK_CLASS, build_network, network_kwargs  # noqa: E402
from pedtumorseg.pipeline import Predictor, predict_case  # noqa: E402
from pedtumorseg.postprocess import PostprocessParams  # noqa: E402

REAL_CASE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real" / "BraTS-GLI-00001-000"


def paper_bundle(folder: Path, folds: int = 1, seed: int = 0) -> Path:
    """The paper preset (128^3 patches at 1 mm) with spread random weights, ``folds`` folds."""
    kwargs = network_kwargs("paper")
    states = {}
    for f in range(folds):
        torch.manual_seed(seed + f)
        net = spread_init_(build_network(NETWORK_CLASS, kwargs, len(CHANNELS), 5), seed=seed + f)
        states[f] = {k: v.clone() for k, v in net.state_dict().items()}
    manifest = {
        "name": "paper-preset-random-weights", "version": "0", "description": "timing only",
        "labels": {str(k): v for k, v in LABEL_NAMES.items()},
        "colors": {str(k): list(v) for k, v in LABEL_COLORS.items()},
        "channels": list(CHANNELS), "spacing_zyx": [1.0, 1.0, 1.0], "patch_size": [128, 128, 128],
        "normalization": {"scheme": "zscore", "use_mask_for_norm": [True] * 4},
        "network": {"class": NETWORK_CLASS, "kwargs": kwargs}, "mirror_axes": [0, 1, 2],
        "postprocessing": PostprocessParams().to_dict(),
    }
    return write_bundle(folder / "paper.zip", manifest, states, zip=True)


class PeakRss:
    """High-water mark of this process's resident memory during a block (resets VmHWM on entry)."""

    def __enter__(self):
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass
        return self

    def __exit__(self, *exc):
        self.mib = float("nan")
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.mib = int(line.split()[1]) / 1024
        except OSError:
            pass
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=("demo", "paper"), default="paper")
    ap.add_argument("--tta", action="store_true", help="mirroring TTA (default off)")
    ap.add_argument("--backends", nargs="+", default=["torch", "openvino", "onnxruntime"],
                    help="backends to time, in this order (the first is the reference for agreement and ratios)")
    ap.add_argument("--case", type=Path, default=None, help="case folder (default: the real BraTS case)")
    ap.add_argument("--patch-only", action="store_true", help="time one forward pass of one patch per backend")
    args = ap.parse_args()
    wanted = [b for b in args.backends if backends.is_available(b)]
    skipped = sorted(set(args.backends) - set(wanted))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ.setdefault("PEDTUMORSEG_CACHE", str(tmp / "cache"))
        case_dir = args.case or (REAL_CASE if REAL_CASE.is_dir() else None)
        if case_dir is None:
            from pedtumorseg.phantoms.clean import make_phantom, write_phantom
            case_dir = write_phantom(make_phantom(0, "brats"), tmp / "case")
        model = default_bundle_path() if args.preset == "demo" else paper_bundle(tmp)
        bundle = load_bundle(model)
        print(f"preset {args.preset} ({bundle.name}), folds {bundle.folds}, TTA {args.tta}, case {case_dir.name}, "
              f"CPU threads {torch.get_num_threads()}; not installed: {skipped or 'none'}", flush=True)
        for b in wanted:
            if b != "torch":
                t0 = time.perf_counter()
                for f in bundle.folds:
                    backends.cached_onnx(bundle, f, bundle.patch_size)
                print(f"  ONNX export (once per bundle, cached): {time.perf_counter() - t0:.1f} s", flush=True)
                break
        results = {}
        for b in wanted:
            if args.patch_only:
                engine = Engine(bundle, PredictOptions(device="cpu", backend=b, tta=False))
                run = engine._runner_for(bundle.folds[0])
                x = torch.randn(1, len(CHANNELS), *bundle.patch_size)
                with torch.inference_mode():
                    run(x)  # warm-up (primitive creation / compilation)
                    t0 = time.perf_counter()
                    run(x)
                results[b] = (time.perf_counter() - t0, None, float("nan"))
                print(f"  {b:12s} one patch {results[b][0]:8.2f} s", flush=True)
                continue
            predictor = Predictor.load(model, device="cpu", tta=args.tta, backend=b)
            with PeakRss() as peak:
                t0 = time.perf_counter()
                res = predict_case(find_case(case_dir), tmp / f"out-{b}", predictor, write_raw=True)
                seconds = time.perf_counter() - t0
            raw = read_labels(res.outputs["raw"])
            results[b] = (seconds, raw, peak.mib)
            print(f"  {b:12s} predict {seconds:8.2f} s (network {res.stats['inference']['network_seconds']:.2f} s), "
                  f"peak RSS {peak.mib:7.0f} MiB", flush=True)
            del predictor
        ref = wanted[0]
        for b in wanted[1:]:
            ratio = results[ref][0] / results[b][0]
            line = f"  {b:12s} {ratio:5.2f}x faster than {ref}"
            if results[b][1] is not None:
                same = float((results[b][1] == results[ref][1]).mean())
                line += f"; raw labels equal on {100 * same:.4f} % of voxels"
            print(line)


if __name__ == "__main__":
    main()
