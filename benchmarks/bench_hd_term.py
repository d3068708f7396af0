"""Cost of the HD loss term (``pedtumorseg.model.loss``) per training iteration, and what it adds to an iteration.

For batch 2, 5 classes and nnU-Net's deep-supervision pyramid of a patch (every level whose weight is > 0),
times (median of ``--repeats``):

* ``fields_edt``   — the distance fields of the HD term with the ``edt`` package (what the loss uses),
* ``fields_scipy`` — the same fields with ``scipy.ndimage.distance_transform_edt`` (the previous code),
* ``loss_hd_on`` / ``loss_hd_off`` — the whole ``DeepSupervisionLoss(PedTumorSegLoss)`` forward + backward
  on random logits, with and without the HD term,
* ``step`` (``--network demo|paper``) — forward + backward + SGD step of ``PedTumorSegNet`` at that patch,
  so the HD overhead can be given as a fraction of a whole iteration measured in the same run.

Ground truth: layered ellipsoids (ED > NET > ET/CC) filling about a third of the patch; logits random, so the
thresholded prediction has many boundaries (a worst case for the fields). Prints JSON; no assertions on time.

    .venv/bin/python benchmarks/bench_hd_term.py --patch 128 128 128 --network none --repeats 3
    .venv/bin/python benchmarks/bench_hd_term.py --patch 48 64 64 --network demo
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt

from pedtumorseg.model import loss as L
from pedtumorseg.model.presets import build_network, network_kwargs, NETWORK_CLASS


def phantom_labels(shape, batch=2) -> torch.Tensor:
    zz, yy, xx = np.ogrid[:shape[0], :shape[1], :shape[2]]
    c = [s / 2 for s in shape]
    r = ((zz - c[0]) / shape[0]) ** 2 + ((yy - c[1]) / shape[1]) ** 2 + ((xx - c[2]) / shape[2]) ** 2
    lab = np.zeros(shape, np.int64)
    lab[r < 0.12] = 4
    lab[r < 0.06] = 2
    lab[(r < 0.06) & (r > 0.045)] = 1
    lab[r < 0.015] = 3
    return torch.from_numpy(np.stack([lab] * batch))[:, None]


def pyramid(shape, levels):
    out = [tuple(shape)]
    for _ in range(levels - 1):
        out.append(tuple(max(1, s // 2) for s in out[-1]))
    return out


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patch", type=int, nargs=3, default=[128, 128, 128])
    ap.add_argument("--levels", type=int, default=5, help="deep-supervision levels (the last has weight 0)")
    ap.add_argument("--network", choices=["none", "demo", "paper"], default="none")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    L.HD_THREADS = a.threads
    shapes = pyramid(a.patch, a.levels)
    weights = L.deep_supervision_weights(a.levels)
    targets = [phantom_labels(s) for s in shapes]
    torch.manual_seed(0)
    logits = [torch.randn(2, 5, *s) for s in shapes]
    used = [i for i, w in enumerate(weights) if w > 0]

    def fields(edt_fn):
        for i in used:
            p = torch.softmax(logits[i], 1)
            g = L.one_hot(targets[i], 5)
            gn, pn = g[:, 1:].numpy() > 0.5, p[:, 1:].numpy() > 0.5
            for b in range(2):
                for c in range(4):
                    for m in (gn[b, c], pn[b, c]):
                        if m.any() and not m.all():
                            edt_fn(m) + edt_fn(~m)

    res = {"patch": a.patch, "levels": a.levels, "threads": a.threads, "edt_installed": L._edt_lib is not None}
    res["fields_scipy_s"] = timed(lambda: fields(distance_transform_edt), a.repeats)
    if L._edt_lib is not None:
        res["fields_edt_s"] = timed(lambda: fields(L._edt), a.repeats)
        res["edt_speedup"] = res["fields_scipy_s"] / res["fields_edt_s"]

    def loss_step(w_hd):
        ds = L.DeepSupervisionLoss(L.PedTumorSegLoss(w_hd=w_hd), weights)
        outs = [lg.clone().requires_grad_() for lg in logits]
        ds(outs, targets).backward()

    res["loss_hd_on_s"] = timed(lambda: loss_step(1.0), a.repeats)
    res["loss_hd_off_s"] = timed(lambda: loss_step(0.0), a.repeats)
    res["hd_overhead_s"] = res["loss_hd_on_s"] - res["loss_hd_off_s"]
    if a.network != "none":
        # n stages give n - 1 deep-supervision outputs
        strides = [[1, 1, 1]] + [[2, 2, 2]] * a.levels
        kw = network_kwargs(a.network, strides=strides, kernel_sizes=[[3, 3, 3]] * (a.levels + 1))
        net = build_network(NETWORK_CLASS, kw, 4, 5, deep_supervision=True)
        opt = torch.optim.SGD(net.parameters(), 1e-2, momentum=0.99, nesterov=True)
        x = torch.randn(2, 4, *a.patch)
        ds_off = L.DeepSupervisionLoss(L.PedTumorSegLoss(w_hd=0.0), weights)

        def step():
            opt.zero_grad()
            ds_off(net(x), targets).backward()
            opt.step()

        step()  # warm-up
        res["step_hd_off_s"] = timed(step, a.repeats)
        res["hd_overhead_fraction_of_iteration"] = res["hd_overhead_s"] / (res["step_hd_off_s"] + res["hd_overhead_s"])
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
