"""Slider latency of the post-processing Session vs a naive full-volume recomputation.

Builds a 240x240x155 case (synthetic layered blobs whose tumor box is about 80^3, a realistic pediatric
tumor; ``--phantom`` uses a ``brats`` phantom of ``pedtumorseg.phantoms.clean`` instead, whose tumors are often
smaller), scatters a few small stray ET/CC islands next to the tumor (what a raw prediction has and the
minimum-volume sliders act on), then for each parameter of ``postprocess.PARAMETERS`` moves it ``--moves``
times across its slider range and reports the median ``Session.update`` latency against the median of a full
``postprocess(...)`` call with the same parameters. Prints a table; no assertions on time.

    .venv/bin/python benchmarks/bench_postprocess.py [--moves 20] [--naive-repeats 3] [--seed 0] [--phantom]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
from scipy import ndimage

from pedtumorseg.postprocess import PARAMETERS, PostprocessParams, Session, postprocess


def synthetic_case(seed: int):
    """Layered ellipsoids (ED > NET/ET > CC) in an ellipsoidal brain, 240x240x155, 1 mm."""
    rng = np.random.default_rng(seed)
    shape = (155, 240, 240)
    zz, yy, xx = np.ogrid[:shape[0], :shape[1], :shape[2]]
    brain = ((zz - 77) / 70.0) ** 2 + ((yy - 120) / 95.0) ** 2 + ((xx - 120) / 80.0) ** 2 < 1
    r = np.sqrt(((zz - 70) / 1.0) ** 2 + ((yy - 100) / 1.2) ** 2 + ((xx - 140) / 1.0) ** 2)
    noise = ndimage.gaussian_filter(rng.normal(size=(78, 120, 120)).astype(np.float32), 2)
    noise = ndimage.zoom(noise / noise.std(), 2, order=1)[:shape[0], :shape[1], :shape[2]]
    seg = np.zeros(shape, np.uint8)
    seg[(r < 34) & brain] = 4
    seg[r < 22] = 2
    seg[(r < 22) & (r > 14) & (noise > 0.2)] = 1
    seg[r < 9] = 3
    t1 = np.where(brain, 900 + 60 * rng.normal(size=shape), 0).astype(np.float32)
    t1ce = np.where(brain, t1 * np.exp(0.25 * noise), 0).astype(np.float32)
    return "synthetic", seg, t1, t1ce, (1.0, 1.0, 1.0)


def phantom_case(seed: int):
    try:
        from pedtumorseg.phantoms.clean import make_phantom
    except ImportError:
        return None
    for s in range(seed, seed + 4):  # a case with ET, NET and CC
        ph = make_phantom(s, "brats")
        if all((ph.seg == label).any() for label in (1, 2, 3)):
            return (ph.case_id, ph.seg, ph.images["t1"].astype(np.float32), ph.images["t1ce"].astype(np.float32),
                    ph.geometry.spacing_zyx)
    return None


def add_stray_islands(seg: np.ndarray, seed: int, n: int = 40) -> np.ndarray:
    """Small ET/CC islands (1-125 voxels) within 10 voxels of the tumor."""
    rng = np.random.default_rng(seed)
    seg = seg.copy()
    near = ndimage.binary_dilation(seg > 0, iterations=10) & (seg == 0)
    points = np.argwhere(near)
    for p in points[rng.choice(len(points), size=n, replace=False)]:
        size = int(rng.integers(1, 6))
        box = tuple(slice(c, c + size) for c in p)
        region = seg[box]
        region[region == 0] = rng.choice([1, 3])
    return seg


def moves_for(param, n: int):
    if param.type == "bool":
        return [bool(i % 2 == 0) ^ bool(param.default) for i in range(n)]
    if param.type == "choice":
        others = [c for c in param.choices if c != param.default]
        return [others[0] if i % 2 == 0 else param.default for i in range(n)]
    lo, hi = param.min, param.max
    if param.name == "ratio_high":
        lo = 1.0 + 1e-3  # stay above the default ratio_low
    if param.name == "ratio_low":
        hi = 1.0  # stays below the default ratio_high
    values = np.linspace(lo, hi, n)
    return [float(v) for v in np.concatenate([values[0::2], values[1::2][::-1]])]  # slider swept back and forth


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--moves", type=int, default=20)
    ap.add_argument("--naive-repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--phantom", action="store_true", help="use a brats phantom instead of synthetic blobs")
    args = ap.parse_args(argv)

    case = phantom_case(args.seed) if args.phantom else None
    case = case or synthetic_case(args.seed)
    name, seg, t1, t1ce, spacing = case
    seg = add_stray_islands(seg, args.seed)
    box = ndimage.find_objects((seg > 0).astype(np.uint8))[0]
    extent = "x".join(str(s.stop - s.start) for s in box)
    print(f"case {name}: shape {seg.shape}, spacing {tuple(spacing)}, tumor bbox {extent} voxels, "
          f"label counts {np.bincount(seg.ravel(), minlength=5)[1:].tolist()}")

    base = PostprocessParams()
    t0 = time.perf_counter()
    session = Session(seg, t1, t1ce, spacing, base)
    print(f"Session construction (brain mask, ratio map of the tumor box, all tables): "
          f"{(time.perf_counter() - t0) * 1000:.0f} ms")

    print(f"\nmedian (and max) over {args.moves} moves per parameter; naive = full postprocess(), median of "
          f"{args.naive_repeats}")
    print(f"{'parameter':<20}{'session ms':>12}{'max ms':>9}{'naive ms':>12}{'speed-up':>10}  labels changed (share of moves)")
    for param in PARAMETERS:
        session.reset(base)
        session.update(ratio_enabled=True, components_enabled=True)
        times, changed_moves = [], 0
        values = moves_for(param, args.moves)
        for value in values:
            t0 = time.perf_counter()
            changed = session.update(**{param.name: value})
            times.append(time.perf_counter() - t0)
            changed_moves += bool(changed)
        naive = []
        for value in values[: args.naive_repeats]:
            params = base.replace(**{param.name: value})
            t0 = time.perf_counter()
            postprocess(seg, t1, t1ce, spacing, params)
            naive.append(time.perf_counter() - t0)
        s_ms, n_ms = statistics.median(times) * 1000, statistics.median(naive) * 1000
        print(f"{param.name:<20}{s_ms:>12.1f}{max(times) * 1000:>9.1f}{n_ms:>12.1f}{n_ms / s_ms:>9.0f}x  {changed_moves}/{len(values)}")
        final = session.labels.copy()
        if not np.array_equal(final, postprocess(seg, t1, t1ce, spacing, session.params)):
            print(f"  !! session labels differ from postprocess after moving {param.name}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
