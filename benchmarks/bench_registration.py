"""Speed and accuracy of the rigid co-registration (``pedtumorseg.inputs.registration``) on the real case.

    python benchmarks/bench_registration.py [--real-case DIR] [--threads 2] [--n-random 3]

The real case's T1, T2 and FLAIR are moved by known rigid transforms (the three of the test suite, plus
``--n-random`` random ones up to 15 degrees and 20 mm) and resliced to a clinical 0.9 x 0.9 x 5 mm slab with a
larger field of view, then registered back to the T1CE. Printed per registration: seconds, optimizer
iterations, and the mean displacement (mm) between the recovered and the true transform over the brain; then the
total for the three series of one examination (issue target on 2 cores: < 20 s with a mean error < 1 mm).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from pedtumorseg.inputs.registration import image_center, mean_displacement, register_rigid

FIXED_CASES = {"t1n": ((14.0, -9.0, 6.0), (15.0, -12.0, 8.0)), "t2w": ((-6.0, 12.0, -15.0), (-20.0, 10.0, -5.0)),
               "t2f": ((10.0, 4.0, -11.0), (7.0, -18.0, 20.0))}


def slab_reference(fixed: sitk.Image) -> sitk.Image:
    """0.9 x 0.9 x 5 mm grid covering the fixed image's field of view plus 30 mm."""
    sp = (0.9, 0.9, 5.0)
    size = [int(np.ceil(300 / 0.9)), int(np.ceil(300 / 0.9)), int(np.ceil(215 / 5))]
    ref = sitk.Image(size, sitk.sitkFloat32)
    ref.SetSpacing(sp)
    ref.SetOrigin(tuple(float(o) - 30.0 for o in fixed.GetOrigin()))
    return ref


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = Path(__file__).resolve().parents[1]
    ap.add_argument("--real-case", type=Path, default=here.parent / "shared" / "data" / "real")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-random", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(a.threads)
    folder = next(p.parent for p in a.real_case.rglob("*-t1c.nii.gz"))
    fixed = sitk.ReadImage(str(next(folder.glob("*-t1c.nii.gz"))), sitk.sitkFloat32)
    center = image_center(fixed)
    brain = np.argwhere(sitk.GetArrayViewFromImage(fixed)[::4, ::4, ::4] > 0) * 4
    points = np.array([fixed.TransformIndexToPhysicalPoint(tuple(int(v) for v in idx[::-1])) for idx in brain])
    ref = slab_reference(fixed)
    rng = np.random.default_rng(a.seed)
    cases = [(s, ang, sh) for s, (ang, sh) in FIXED_CASES.items()]
    for k in range(a.n_random):
        cases.append((("t1n", "t2w", "t2f")[k % 3], tuple(rng.uniform(-15, 15, 3)), tuple(rng.uniform(-20, 20, 3))))
    originals = {s: sitk.ReadImage(str(next(folder.glob(f"*-{s}.nii.gz"))), sitk.sitkFloat32)
                 for s in ("t1n", "t2w", "t2f")}
    rows = []
    for suffix, angles, shift in cases:
        true = sitk.Euler3DTransform()
        true.SetCenter(center)
        true.SetRotation(*np.deg2rad(angles))
        true.SetTranslation(shift)
        moving = sitk.Resample(originals[suffix], ref, true, sitk.sitkLinear, 0.0)
        t0 = time.perf_counter()
        result = register_rigid(fixed, moving)
        seconds = time.perf_counter() - t0
        error = mean_displacement(result.transform, true.GetInverse(), points)
        rows.append((seconds, error))
        print(f"{suffix}  rot {np.round(angles, 1)} deg  shift {np.round(shift, 1)} mm:  {seconds:6.2f} s  "
              f"{result.iterations:4d} it (last level)  error {error:.3f} mm  improved {result.to_dict()['improved']}")
    secs = np.array([r[0] for r in rows])
    errs = np.array([r[1] for r in rows])
    print(f"per registration: mean {secs.mean():.2f} s, max {secs.max():.2f} s; three series ~ {3 * secs.mean():.1f} s "
          f"(target < 20 s); error mean {errs.mean():.3f} mm, max {errs.max():.3f} mm (target < 1 mm)")


if __name__ == "__main__":
    main()
