"""GPU check: the engine against nnU-Net v2's own predictor on the same weights and case, in one process.

    python benchmarks/gpu_check.py [--case DIR] [--folds 5] [--precision auto|fp16|bf16|fp32] [--compile]
        [--batch-size N] [--no-reference]

The paper preset (128^3 patches at 1 mm) with spread random weights, ``--folds`` folds, 8 mirrors (full TTA), on
the real BraTS case next to the repository (else a `brats` phantom). Prints, for the engine and for nnU-Net's
``nnUNetPredictor`` (perform_everything_on_device, its defaults): wall time of a whole prediction (preprocessing,
sliding window, export to the input grid) after one warm-up forward pass each, peak GPU memory
(``torch.cuda.max_memory_allocated``), and the fraction of voxels with the same label. Run by gpu_check.sh.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "Testing"))
sys.path.insert(0, str(HERE))

from bench_backends import REAL_CASE, paper_bundle  # noqa: E402
from nnunet_harness import nnunet_predict, reference_setup  # noqa: E402

from pedtumorseg.inference.bundle import load_bundle  # noqa: E402
from pedtumorseg.inference.engine import Engine, PredictOptions  # noqa: E402
from pedtumorseg.inputs.cases import find_case  # noqa: E402
from pedtumorseg.inputs.images import load_case


def _sync():
    torch.cuda.synchronize()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", type=Path, default=None)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--compile", action="store_true", help="torch.compile the engine's networks")
    ap.add_argument("--no-reference", action="store_true", help="skip nnU-Net's predictor")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 1
    dev = torch.device("cuda")
    print(f"GPU {torch.cuda.get_device_name(dev)}, torch {torch.__version__}, CUDA {torch.version.cuda}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        case_dir = args.case or (REAL_CASE if REAL_CASE.is_dir() else None)
        if case_dir is None:
            from pedtumorseg.phantoms.clean import make_phantom, write_phantom
            case_dir = write_phantom(make_phantom(0, "brats"), tmp / "case")
        case = load_case(find_case(case_dir))
        spacing = case.geometry.spacing_zyx
        bundle = load_bundle(paper_bundle(tmp, folds=args.folds))
        states = [bundle.state_dict(f) for f in bundle.folds]
        print(f"case {case_dir.name} {case.images.shape[1:]}, paper preset, {len(states)} folds x 8 mirrors", flush=True)

        engine = Engine(bundle, PredictOptions(device="cuda", tta=True, precision=args.precision,
                                               batch_size=args.batch_size, compile=args.compile))
        x = torch.zeros((engine.auto_batch_size(), 4, *bundle.patch_size), device=dev)
        t0 = time.perf_counter()
        with torch.inference_mode():
            for f in engine.folds:  # warm-up: builds (and compiles) every fold's resident network
                engine._runner_for(f)(x)
        _sync()
        print(f"engine warm-up {time.perf_counter() - t0:.1f} s (batch {engine.auto_batch_size()}, "
              f"precision {args.precision}, compile {args.compile})", flush=True)
        torch.cuda.reset_peak_memory_stats(dev)
        t0 = time.perf_counter()
        pred = engine.predict(case.images, spacing)
        _sync()
        t_engine = time.perf_counter() - t0
        mem_engine = torch.cuda.max_memory_allocated(dev) / 2 ** 30
        print(f"engine  {t_engine:8.2f} s  peak GPU memory {mem_engine:6.2f} GiB  labels "
              f"{sorted(np.unique(pred.labels).tolist())}", flush=True)
        del engine, x
        torch.cuda.empty_cache()
        if args.no_reference:
            return 0

        predictor = reference_setup(bundle.manifest, states, "cuda", tta=True)
        with torch.inference_mode():
            predictor.network(torch.zeros((1, 4, *bundle.patch_size), device=dev))
        _sync()
        torch.cuda.reset_peak_memory_stats(dev)
        t0 = time.perf_counter()
        seg, _ = nnunet_predict(predictor, case.images, spacing)
        _sync()
        t_ref = time.perf_counter() - t0
        mem_ref = torch.cuda.max_memory_allocated(dev) / 2 ** 30
        same = float((seg == pred.labels).mean())
        print(f"nnU-Net {t_ref:8.2f} s  peak GPU memory {mem_ref:6.2f} GiB")
        print(f"speed-up nnU-Net/engine {t_ref / t_engine:.2f}x; same label on {100 * same:.4f} % of voxels")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
