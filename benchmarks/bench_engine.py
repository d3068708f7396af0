"""Engine vs nnU-Net v2's own ``nnUNetPredictor`` on the same network, weights and case.

    .venv/bin/python benchmarks/bench_engine.py [--size small|brats] [--no-tta] [--device cpu|cuda]
        [--spacing Z Y X] [--patch Z Y X] [--repeats N]

Prints the wall time of each (preprocessing + sliding window + export back onto the input grid), the time ratio
nnU-Net / engine, and the agreement (fraction of voxels with the same label, max |probability difference|).
The nnU-Net harness (``reference_setup``, ``nnunet_predict``, ...) lives in Testing/nnunet_harness.py.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Testing"))

from nnunet_harness import (build_bundle, fp32_accumulation, make_manifest, nnunet_predict,  # noqa: E402
                            phantom_stack, reference_setup, spread_init_)

from pedtumorseg.conventions import NUM_CLASSES  # noqa: E402
from pedtumorseg.model.presets import NETWORK_CLASS  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=["small", "brats"], default="small")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--no-tta", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--spacing", type=float, nargs=3, help="bundle spacing (default: the case's)")
    ap.add_argument("--patch", type=int, nargs=3, default=[64, 64, 64])
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--reference", choices=["stock", "fp32"], default="stock",
                    help="stock nnU-Net (float16 accumulators) or nnU-Net with float32 accumulators")
    args = ap.parse_args(argv)

    from pedtumorseg.inference.engine import Engine, PredictOptions

    images, spacing = phantom_stack(args.seed, args.size)
    manifest = make_manifest(args.spacing or spacing, args.patch)
    torch.manual_seed(0)
    from pedtumorseg.model.presets import build_network
    net = spread_init_(build_network(NETWORK_CLASS, manifest["network"]["kwargs"], 4, NUM_CLASSES))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    tta = not args.no_tta
    with tempfile.TemporaryDirectory() as tmp:
        bundle = build_bundle(Path(tmp), manifest, state)
        engine = Engine(bundle, PredictOptions(device=args.device, tta=tta, batch_size=args.batch_size,
                                               precision=args.precision, probabilities=True))
        predictor = reference_setup(manifest, state, args.device, tta=tta)
        print(f"case {args.size} {images.shape[1:]} spacing {spacing}; bundle spacing {manifest['spacing_zyx']} "
              f"patch {args.patch}; tta={tta}; device {engine.device}; torch threads {torch.get_num_threads()}")
        # warm-up: the first forward pass at a new shape is several times slower on CPU (oneDNN primitive
        # creation); both sides get one before timing, so whichever runs first is not penalised
        with torch.inference_mode():
            x = torch.zeros((1, 4, *args.patch))
            engine._net_for(engine.folds[0])(x)
            predictor.network(x)
        t_eng, t_ref = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            pred = engine.predict(images, spacing)
            t_eng.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            if args.reference == "fp32":
                with fp32_accumulation():
                    seg, probs = nnunet_predict(predictor, images, spacing)
            else:
                seg, probs = nnunet_predict(predictor, images, spacing)
            t_ref.append(time.perf_counter() - t0)
    same = float((pred.labels == seg).mean())
    diff = float(np.abs(pred.probabilities - probs).max())
    te, tr = min(t_eng), min(t_ref)
    print(f"engine  {te:8.2f} s (batch {engine.auto_batch_size()})")
    print(f"nnU-Net {tr:8.2f} s ({args.reference})")
    print(f"ratio nnU-Net/engine {tr / te:.2f}")
    print(f"labels present {sorted(np.unique(pred.labels).tolist())}; same label {100 * same:.4f} %; "
          f"max |prob diff| {diff:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
