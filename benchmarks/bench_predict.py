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

from pedtumorseg.bundle import default_bundle_path, write_bundle
from pedtumorseg.conventions import CHANNELS, LABEL_COLORS, LABEL_NAMES
from pedtumorseg.io import find_case
from pedtumorseg.model.presets import NETWORK_CLASS, build_network, network_kwargs
from pedtumorseg.pipeline import Predictor, predict_case
from pedtumorseg.postprocess import PostprocessParams

REAL_CASE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real" / "BraTS-GLI-00001-000"


def paper_bundle(folder: Path) -> Path:
    """The paper preset (6 stages, 128^3 patches at 1 mm) with random weights, as a bundle."""
    kwargs = network_kwargs("paper")
    net = build_network(NETWORK_CLASS, kwargs, len(CHANNELS), 5)
    manifest = {
        "name": "paper-preset-random-weights", "version": "0", "description": "timing only",
        "labels": {str(k): v for k, v in LABEL_NAMES.items()},
        "colors": {str(k): list(v) for k, v in LABEL_COLORS.items()},
        "channels": list(CHANNELS), "spacing_zyx": [1.0, 1.0, 1.0], "patch_size": [128, 128, 128],
        "normalization": {"scheme": "zscore", "use_mask_for_norm": [True] * 4},
        "network": {"class": NETWORK_CLASS, "kwargs": kwargs}, "mirror_axes": [0, 1, 2],
        "postprocessing": PostprocessParams().to_dict(),
    }
    return write_bundle(folder / "paper.zip", manifest, {0: net.state_dict()}, zip=True)


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
                from pedtumorseg.phantom import make_phantom, write_phantom
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
