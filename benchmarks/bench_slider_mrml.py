"""Slider latency in a real MRML scene: a slider move until the segments are updated, on slicer-core (PyPI).

What the module does per move (``PedTumorSegLib.segmentation_sync.SegmentationSync.update``): ``Session.update``,
the hand-edit check of every segment, and the writes of the changed segments into the segmentation node through
``vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment``. Timed per move, from the call to its return, on a
240x240x155 case: the T1/T1CE of ``--case`` (a BraTS case folder; default: a 240x240x155 synthetic case) with the
layered tumor and stray islands of ``bench_postprocess.py`` as the raw labels. Every slider of the panel is swept
back and forth ``--moves`` times. Reported against references measured in the same run: ``Session.update`` alone
for the same moves, and one whole-volume segment write (what a move cost before, per segment written).

    PYTHONPATH=PedTumorSeg:Testing .venv/bin/python benchmarks/bench_slider_mrml.py [--case DIR] [--moves 12]

Goal (issue 11): median <= 50 ms, p95 <= 100 ms per move on 2 cores. Prints numbers; asserts nothing on time, but
fails when a segment differs from the Session after the sweep.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for folder in (REPO / "PedTumorSeg", REPO / "Testing", HERE):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


def _case(case_dir, seed, tmp):
    """(reference T1CE file, raw labels, t1, t1ce, spacing_zyx)."""
    import SimpleITK as sitk
    from bench_postprocess import add_stray_islands, synthetic_case

    name, seg, t1, t1ce, spacing = synthetic_case(seed)
    if case_dir:
        from pedtumorseg.inputs.cases import find_case
        from pedtumorseg.inputs.images import load_case

        files = find_case(case_dir)
        case = load_case(files)
        t1, t1ce = case.images[0], case.images[1]
        if t1.shape != seg.shape:
            raise SystemExit(f"{case_dir}: expected a 240x240x155 case, got {t1.shape[::-1]}")
        reference, spacing = Path(files.images["t1ce"]), case.geometry.spacing_zyx
        name = Path(case_dir).name
    else:
        image = sitk.GetImageFromArray(t1ce)
        image.SetSpacing(tuple(reversed(spacing)))
        reference = Path(tmp) / "synthetic-t1c.nii.gz"
        sitk.WriteImage(image, str(reference))
    return name, reference, add_stray_islands(seg, seed), t1, t1ce, spacing


def _moves(n: int):
    """(parameter, value) pairs: each panel slider swept back and forth, check boxes toggled."""
    from pedtumorseg.ui import controls

    out = []
    for spec in controls.slider_specs():
        if spec.kind == "checkbox":
            out += [(spec.name, not spec.default), (spec.name, spec.default)] * max(1, n // 4)
            continue
        lo, hi = spec.minimum, spec.maximum
        if spec.name == "ratio_low":
            hi = 1.2  # beyond the default ratio_high it is clamped; a few moves there are kept at the end
        if spec.name == "ratio_high":
            lo = 1.0
        if spec.name.startswith("min_volume"):
            hi = min(hi, 2000.0)  # the range where islands and components actually change
        values = np.linspace(lo, hi, n)
        for v in np.concatenate([values, values[::-1]]):
            out.append((spec.name, round(float(v), spec.decimals)))
    out += [("ratio_low", 2.0), ("ratio_low", 0.8), ("ratio_low", 3.0), ("ratio_low", 0.766)]  # clamped drags
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", help="a BraTS case folder with 240x240x155 T1/T1CE (default: synthetic)")
    ap.add_argument("--moves", type=int, default=12, help="positions per slider sweep (each swept back and forth)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cores", type=int, default=2, help="CPU cores the process may use (Linux)")
    args = ap.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[: args.cores]))

    import tempfile

    from slicer_harness import SlicerScene, moduleLogic

    from pedtumorseg.postprocess import PostprocessParams, Session

    with tempfile.TemporaryDirectory() as tmp:
        name, reference, raw, t1, t1ce, spacing = _case(args.case, args.seed, tmp)
        harness = SlicerScene()
        volume = harness.loadVolume(reference)
        logic = moduleLogic(harness, Path(tmp) / "runs")
        params = PostprocessParams()
        t0 = time.perf_counter()
        session = Session(raw, t1, t1ce, spacing, params)
        build = time.perf_counter() - t0
        t0 = time.perf_counter()
        node = logic.setResult(session, volume)
        first = time.perf_counter() - t0
        shadow = Session(raw, t1, t1ce, spacing, params)
        box = [int(s) for s in np.ptp(np.argwhere(raw > 0), axis=0) + 1]
        print(f"case {name}: shape {raw.shape[::-1]} (x y z), tumor box {box[::-1]} voxels, "
              f"{os.cpu_count()} CPUs visible, affinity {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'}")
        print(f"Session construction {build * 1000:.0f} ms; first display of the four segments {first * 1000:.0f} ms")

        timings, reference_times, writes = [], [], []
        for key, value in _moves(args.moves):
            t0 = time.perf_counter()
            changed = logic.updatePostprocessing({key: value})
            timings.append((key, time.perf_counter() - t0))
            writes.append(len(changed))
            t0 = time.perf_counter()
            shadow.update(**{key: getattr(session.params, key)})
            reference_times.append(time.perf_counter() - t0)

        # whole-volume write of one segment: the cost per written segment before the bounding-box writes
        from vtk.util import numpy_support

        import slicer
        import vtk

        full = slicer.vtkOrientedImageData()
        matrix = vtk.vtkMatrix4x4()
        volume.GetIJKToRASMatrix(matrix)
        full.SetExtent(0, raw.shape[2] - 1, 0, raw.shape[1] - 1, 0, raw.shape[0] - 1)
        full.SetImageToWorldMatrix(matrix)
        whole = []
        for label in (4, 2, 4):
            t0 = time.perf_counter()
            mask = np.ascontiguousarray((session.labels == label).astype(np.uint8)).ravel()
            full.GetPointData().SetScalars(numpy_support.numpy_to_vtk(mask, deep=True, array_type=vtk.VTK_UNSIGNED_CHAR))
            slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
                full, node, logic.sync.segmentIds[label], slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)
            whole.append(time.perf_counter() - t0)
        logic.sync._write(4)
        logic.sync._write(2)

        for label in (1, 2, 3, 4):
            if not np.array_equal(logic.sync.segmentArray(label), (session.labels == label).astype(np.uint8)):
                print(f"!! segment {label} differs from the Session after the sweep", file=sys.stderr)
                return 1

    ms = [t * 1000 for _, t in timings]
    q = statistics.quantiles(ms, n=20)
    median, p95 = statistics.median(ms), q[18]
    ref_median = statistics.median(reference_times) * 1000
    print(f"\n{len(ms)} slider moves, {sum(writes)} segment writes ({sum(w > 0 for w in writes)} moves changed "
          f"segments)")
    print(f"move -> segments updated in MRML: median {median:.1f} ms, p95 {p95:.1f} ms, max {max(ms):.1f} ms "
          f"(goal: median <= 50, p95 <= 100)")
    print(f"reference, Session.update alone, same moves: median {ref_median:.1f} ms -> MRML share of a move "
          f"x{median / max(ref_median, 1e-3):.1f}")
    print(f"reference, one whole-volume segment write: median {statistics.median(whole) * 1000:.1f} ms -> a move "
          f"costs {median / (statistics.median(whole) * 1000):.2f} of one whole-volume write")
    print(f"\n{'per parameter, ms':<22}{'move median':>12}{'max':>8}{'Session.update median':>23}{'max':>8}")
    for key in dict.fromkeys(k for k, _ in timings):
        values = [t * 1000 for k, t in timings if k == key]
        refs = [r * 1000 for (k, _), r in zip(timings, reference_times) if k == key]
        print(f"  {key:<20}{statistics.median(values):>12.1f}{max(values):>8.1f}{statistics.median(refs):>23.1f}"
              f"{max(refs):>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
