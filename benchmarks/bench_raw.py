"""Wall time of the whole raw path on a synthetic clinical examination (DICOM, skull, own pose and grid per series).

    python benchmarks/bench_raw.py                      # brats-size raw phantom (1 mm 3D T1CE), demo bundle, CPU
    python benchmarks/bench_raw.py --size small --threads 2

Stages (from the pipeline's progress messages): read the four DICOM series, register T1/T2/FLAIR to T1CE,
brain extraction (deepbet), resample to the network grid, predict (the demo bundle, no TTA), map the probabilities
back to the T1CE grid, post-process and write (NIfTI, brain mask, DICOM SEG). Targets (issue 10, 2 cores): whole
path < 60 s, registration < 20 s. Reference measured in the same run: the preprocessed path on the same
phantom's clean (BraTS-like) version; the ratio raw / clean is printed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from pedtumorseg.inputs.cases import find_case
from pedtumorseg.phantoms.clean import write_phantom
from pedtumorseg.phantoms.raw import make_raw_phantom, write_raw_phantom
from pedtumorseg.pipeline import Predictor, predict_case
from pedtumorseg.inputs.cases import find_any_case


def _wt_dice(a, b) -> float:
    a, b = a > 0, b > 0
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


def _timed(files, out, predictor, **kw):
    marks = []
    t0 = time.perf_counter()
    predict_case(files, out, predictor, progress=lambda f, m: marks.append((time.perf_counter(), m)), **kw)
    return time.perf_counter() - t0, t0, marks


def _stage_seconds(t0, marks) -> dict:
    """Seconds per stage: each stage runs from its first progress message to the next stage's first."""
    def stage(message: str) -> str:
        for key, name in (("registering", "register"), ("brain extraction", "skull strip"),
                          ("network grid", "resample in"), ("read ", "read"), ("fold ", "network"),
                          ("preprocessing", "network"), ("input grid", "map back"), ("loaded", "resample in"),
                          ("post-processed", "write"), ("done", "post-process + map back")):
            if key in message:
                return name
        return "other"

    out: dict = {}
    previous_t, previous = t0, "read"
    for t, message in marks:
        name = stage(message)
        out[previous] = out.get(previous, 0.0) + (t - previous_t)
        previous_t, previous = t, name
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=("small", "brats"), default="brats")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import SimpleITK as sitk
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        raw = make_raw_phantom(args.seed, args.size)
        study = write_raw_phantom(raw, tmp / "raw", fmt="dicom")
        clean = write_phantom(raw.clean, tmp / "clean")
        predictor = Predictor.load(device=args.device, tta=False)
        t_clean, _, _ = _timed(find_case(clean), tmp / "out-clean", predictor)
        t_raw, t0, marks = _timed(find_any_case(study), tmp / "out-raw", predictor, dicom_seg=True)
        case_id = raw.case_id
        dice_clean = _wt_dice(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp / "out-clean" / f"{case_id}-seg.nii.gz"))),
                              raw.clean.seg)
        dice_raw = _wt_dice(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp / "out-raw" / f"{case_id}-seg.nii.gz"))),
                            sitk.GetArrayFromImage(raw.seg))
        dice_brain = _wt_dice(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp / "out-raw" / f"{case_id}-brain-mask.nii.gz"))),
                              sitk.GetArrayFromImage(raw.brain_mask))
        stages = _stage_seconds(t0, marks)
        print(f"raw phantom {args.size} seed {args.seed}: T1CE {raw.images['t1ce'].GetSize()}, "
              f"{args.threads} threads, device {predictor.engine.device}, bundle {predictor.bundle.name}")
        for name, seconds in stages.items():
            print(f"  {name:24s} {seconds:8.2f} s")
        print(f"  raw path total           {t_raw:8.2f} s   (target < 60 s; registration "
              f"{stages.get('register', 0.0):.1f} s, target < 20 s)")
        print(f"  preprocessed path        {t_clean:8.2f} s   (same phantom, clean version)")
        print(f"  ratio raw / preprocessed {t_raw / t_clean:8.2f}")
        print(f"  whole-tumor Dice: raw {dice_raw:.3f}, clean {dice_clean:.3f}; brain-mask Dice {dice_brain:.3f}")


if __name__ == "__main__":
    main()
