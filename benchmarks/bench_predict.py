"""Wall time of a whole `predict` (read, preprocess, sliding window, post-process, write) on a 240x240x155 case.

    python benchmarks/bench_predict.py --preset demo            # the shipped demo bundle
    python benchmarks/bench_predict.py --preset paper           # the paper's network (random weights, 1 mm)
    python benchmarks/bench_predict.py --preset paper --device cuda --tta

The case is the real BraTS case in ../shared/data/real when present (else a `brats` phantom). The paper preset has
no trained weights here, so its bundle carries random weights: the time is that of real weights (same network,
same number of tiles), the labels are meaningless. Prints the number of sliding-window tiles and the seconds of
each stage.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from bench_backends import REAL_CASE, paper_bundle  # the paper preset with random weights, as a bundle

from pedtumorseg.inference.bundle import default_bundle_path
from pedtumorseg.inputs.cases import find_case
from pedtumorseg.pipeline import Predictor, predict_case


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=("demo", "paper"), default="demo")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tta", action="store_true", help="mirroring TTA (default off)")
    ap.add_argument("--case", type=Path, default=None, help="case folder (default: the real BraTS case)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        case_dir = args.case
        if case_dir is None:
            if REAL_CASE.is_dir():
                case_dir = REAL_CASE
            else:
                from pedtumorseg.phantoms.clean import make_phantom, write_phantom
                case_dir = write_phantom(make_phantom(0, "brats"), tmp / "case")
        model = default_bundle_path() if args.preset == "demo" else paper_bundle(tmp)
        t0 = time.perf_counter()
        predictor = Predictor.load(model, device=args.device, tta=args.tta)  # every fold of the bundle
        t_load = time.perf_counter() - t0
        marks = []

        def progress(fraction: float, message: str) -> None:
            marks.append((time.perf_counter(), fraction, message))

        t1 = time.perf_counter()
        result = predict_case(find_case(case_dir), tmp / "out", predictor, progress=progress)
        t_total = time.perf_counter() - t1
        batches = [m for m in marks if "batch" in m[2]]
        net_time = batches[-1][0] - batches[0][0] if len(batches) > 1 else float("nan")
        print(f"preset {args.preset}: bundle {predictor.bundle.name}, device {predictor.engine.device}, "
              f"threads {torch.get_num_threads()}, TTA {args.tta}, case {case_dir.name}")
        print(f"  load bundle      {t_load:8.2f} s")
        print(f"  predict (total)  {t_total:8.2f} s   ({len(batches)} network batches; "
              f"{net_time:.2f} s between the first and last batch)")
        print(f"  WT volume        {result.stats['volumes_ml']['WT']:8.2f} mL")


if __name__ == "__main__":
    main()
