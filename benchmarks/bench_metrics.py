"""Wall time of ``metrics.evaluate_case`` on a 240x240x155 pair, against the official BraTS PED scorer in the same
run.

    python benchmarks/bench_metrics.py                                  # ours only
    python benchmarks/bench_metrics.py --official OFFICIAL_DIR --official-python /tmp/official_env/bin/python

The ground truth is a synthetic nested tumor of about 150 mL with an irregular boundary (ED, NET, CC, an ET rim) at
1 mm; the prediction is that map shifted by one voxel, with a tenth of its boundary voxels deleted, its CC
relabelled NET inside one slab and six false-positive blobs (three of them <= 10 voxels). ``OFFICIAL_DIR`` is a checkout of the official BraTS-2024-Metrics code and
``--official-python`` the python of an environment with its requirements (see
``benchmarks/official_scorer_compare.py``); the official side scores the same pair from NIfTI files in a
subprocess and reports the time of its ``get_LesionWiseResults`` (which includes the temporary files it
writes and reads: that is how it works). Prints the wall and CPU seconds of each side (best of ``--repeat``;
CPU time is the steadier number on a shared machine) and the ratios ours / official, and checks that the lesion-wise Dice of both sides agree.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

OFFICIAL_SNIPPET = r"""
import json, os, sys, tempfile, time, warnings
warnings.simplefilter("ignore")
sys.path.insert(0, sys.argv[1])
import metrics_PED
pred, gt, repeat = os.path.abspath(sys.argv[2]), os.path.abspath(sys.argv[3]), int(sys.argv[4])
os.chdir(tempfile.mkdtemp())
times, cpu = [], []
for _ in range(repeat):
    t0, c0 = time.perf_counter(), time.process_time()
    table, _ = metrics_PED.get_LesionWiseResults(pred, gt, "BraTS-PED")
    times.append(time.perf_counter() - t0)
    cpu.append(time.process_time() - c0)
dice = {row["Labels"]: float(row["LesionWise_Score_Dice"]) for _, row in table.iterrows()}
print(json.dumps({"seconds": min(times), "cpu_seconds": min(cpu), "lesion_dice": dice}))
"""


def make_pair() -> tuple[np.ndarray, np.ndarray, tuple[float, float, float], object]:
    from scipy import ndimage

    from pedtumorseg.geometry import Geometry

    shape, spacing = (155, 240, 240), (1.0, 1.0, 1.0)
    rng = np.random.default_rng(0)
    zz, yy, xx = np.ogrid[:shape[0], :shape[1], :shape[2]]
    r = np.sqrt((zz - 80.0) ** 2 + (yy - 110.0) ** 2 + (xx - 130.0) ** 2)
    wobble = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 6) * 60  # irregular boundary
    gt = np.zeros(shape, np.uint8)
    gt[r + wobble < 34] = 4  # ED
    gt[r + wobble < 22] = 2  # NET
    gt[r + wobble < 10] = 3  # CC
    gt[(r + wobble >= 17) & (r + wobble < 22) & (xx > 130)] = 1  # ET rim
    pred = np.roll(gt, 1, axis=2)
    edge = (pred > 0) & (rng.random(shape) < 0.1) & ~ndimage.binary_erosion(pred > 0)
    pred[edge] = 0
    pred[78:83][pred[78:83] == 3] = 2
    for k, size in enumerate((1, 2, 2, 3, 4, 5)):  # 1, 8, 8 voxels (deleted); 27, 64, 125 voxels (FPs)
        z, y, x = 20 + 20 * k, 30, 30 + 25 * k
        pred[z:z + size, y:y + size, x:x + size] = 1 + k % 4
    geometry = Geometry(shape[::-1], spacing, (0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    return pred, gt, spacing, geometry


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official", type=Path, help="checkout of the official BraTS-2024-Metrics code")
    ap.add_argument("--official-python", default=sys.executable, help="python with the official requirements")
    ap.add_argument("--repeat", type=int, default=3, help="repetitions of our side (best time reported)")
    ap.add_argument("--official-repeat", type=int, default=1, help="repetitions of the official side")
    args = ap.parse_args(argv)

    from pedtumorseg.outputs.images import write_labels
    from pedtumorseg.evaluation.metrics import evaluate_case

    pred, gt, spacing, geometry = make_pair()
    evaluate_case(pred[:40, :40, :40], gt[:40, :40, :40], spacing)  # imports and table caches
    times, cpu = [], []
    for _ in range(args.repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        rows = evaluate_case(pred, gt, spacing)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    ours, ours_cpu = min(times), min(cpu)
    print(f"pair {gt.shape[::-1]} (x, y, z), spacing {spacing[::-1]} mm; GT WT {int((gt > 0).sum())} voxels")
    print(f"ours     evaluate_case: {ours:.3f} s wall, {ours_cpu:.3f} s CPU (best of {args.repeat})")
    for r in rows:
        print(f"  {r['region']:3s} lesion Dice {r['lesion_dice']:.4f} HD95 {r['lesion_hd95']:7.2f} "
              f"TP/FN/FP {r['num_tp_lesions']}/{r['num_fn_lesions']}/{r['num_fp_lesions']}")
    if args.official is None:
        print("official: skipped (no --official)")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        pred_path, gt_path = Path(tmp) / "pair-pred.nii.gz", Path(tmp) / "pair-gt.nii.gz"
        write_labels(pred, geometry, pred_path)
        write_labels(gt, geometry, gt_path)
        out = subprocess.run([args.official_python, "-c", OFFICIAL_SNIPPET, str(args.official.resolve()),
                              str(pred_path), str(gt_path), str(args.official_repeat)],
                             capture_output=True, text=True, check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    official = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"official get_LesionWiseResults: {official['seconds']:.3f} s wall, {official['cpu_seconds']:.3f} s CPU "
          f"(best of {args.official_repeat})")
    print(f"ratio ours / official: {ours / official['seconds']:.4f} (wall), "
          f"{ours_cpu / official['cpu_seconds']:.4f} (CPU)")
    names = {"NETC": "NET"}
    mine = {r["region"]: r["lesion_dice"] for r in rows}
    worst = max(abs(v - mine[names.get(k, k)]) for k, v in official["lesion_dice"].items())
    print(f"largest |lesion Dice official - ours| over the six regions: {worst:.2g}")
    return 0 if worst <= 1e-4 else 1


if __name__ == "__main__":
    raise SystemExit(main())
