"""Train every network preset on synthetic phantoms and compare them on held-out phantoms (one command).

    python benchmarks/compare_baselines.py --work /tmp/cmp            # full size: ~30 min on 2 CPU cores
    python benchmarks/compare_baselines.py --work /tmp/cmp --quick    # minutes: a smoke-sized run
    python benchmarks/compare_baselines.py --cost                     # seconds: full-size params and FLOPs

Steps: ``write_phantoms`` (``small``: 96x96x62 at 2.5 mm) -> ``pedtumorseg-train convert`` -> for each preset
``plan`` (``--patch`` and the narrow widths in ``WIDTHS``: each preset's design, made narrow enough for a CPU)
-> ``train`` fold "all" -> ``export`` -> ``pedtumorseg-train compare`` of all bundles on the held-out phantoms
(lesion-wise scores per region, paired Wilcoxon tests, parameters, FLOPs per patch, seconds per case, all in
the same run on the same device). The table is ``WORK/compare/compare.md``.

Phantoms are simple synthetic tumors: the ranking on them says nothing about real-data performance; the
script proves that every preset trains, exports, loads and is scored by the same chain, and gives the cost
columns (parameters, FLOPs, time) of the narrowed networks.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

#: constructor overrides that narrow each preset for CPU training (per-stage lists fitted to the topology)
WIDTHS = {
    "paper": {"decoder_widths": [8, 16, 32, 64], "blocks_per_stage": [1, 1, 2, 2]},
    "nnunet": {"features_per_stage": [8, 16, 32, 64]},
    "resenc": {"features_per_stage": [8, 16, 32, 64], "n_blocks_per_stage": [1, 1, 2, 2]},
    "resunet": {"channels": [8, 16, 32, 64], "num_res_units": 2},
    "segresnet": {"init_filters": 8},
    "unetr": {"feature_size": 8, "hidden_size": 96, "mlp_dim": 192, "num_heads": 4},
    "light3d": {"widths": [16, 32, 64]},  # the published widths (340k parameters)
    "resselka2d": {"widths": [8, 16, 32, 64]},
}
DATASET_ID = 990


def full_size_cost(patch=(128, 128, 128), n_stages: int = 6) -> list[dict]:
    """Parameters and GFLOPs per patch of every preset at full width, for a ``patch`` with the isotropic
    topology (strides 1, 2, 2, ...; kernels 3) of ``n_stages`` stages (the 2D preset: one ``patch[1:]`` slice)."""
    from pedtumorseg.model.presets import BASELINES, baseline_kwargs, build_network, spatial_dims
    from pedtumorseg_train.compare import n_parameters, patch_flops
    rows = []
    for preset, spec in BASELINES.items():
        dims = 2 if spec["configuration"] == "2d" else 3
        strides = [[1] * dims] + [[2] * dims] * (n_stages - 1)
        p = list(patch[-dims:])
        kw = baseline_kwargs(preset, strides, [[3] * dims] * n_stages, p)
        net = build_network(spec["class"], kw, 4, 5)
        flops = patch_flops(net, [1, *p] if dims == 2 else p, spatial_dims(spec["class"], kw))
        rows.append({"preset": preset, "class": spec["class"].rsplit(".", 1)[1], "params": n_parameters(net),
                     "patch": "x".join(map(str, p)), "gflops_per_patch": flops / 1e9})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", help="working folder (phantoms, nnU-Net folders, bundles, table)")
    ap.add_argument("--cost", action="store_true", help="only print full-size parameters and FLOPs per preset")
    ap.add_argument("--presets", nargs="+", default=list(WIDTHS), choices=list(WIDTHS))
    ap.add_argument("--cases", type=int, default=16, help="training phantoms")
    ap.add_argument("--heldout", type=int, default=6, help="held-out phantoms (scored)")
    ap.add_argument("--patch", type=int, nargs=3, default=[48, 48, 48], help="3D patch (the 2D preset: Y X)")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="6 + 2 phantoms, 2 epochs x 4 iterations, 32^3 patch")
    a = ap.parse_args(argv)
    if a.cost:
        print("| preset | class | parameters | patch | GFLOPs/patch |\n|---|---|---|---|---|")
        for r in full_size_cost():
            print(f"| {r['preset']} | {r['class']} | {r['params']:,} | {r['patch']} | {r['gflops_per_patch']:.1f} |")
        return 0
    if not a.work:
        ap.error("--work is required")
    if a.quick:
        a.cases, a.heldout, a.epochs, a.iterations, a.patch = 6, 2, 2, 4, [32, 32, 32]

    import torch
    torch.set_num_threads(a.threads)
    from pedtumorseg.model.presets import BASELINES
    from pedtumorseg.phantoms.clean import write_phantoms
    from pedtumorseg_train.cli import main as train_cli

    work = Path(a.work)
    common = ["--work-dir", str(work / "nnunet"), "--threads", str(a.threads), "--num-workers", "0"]
    if not (work / "train").is_dir():
        write_phantoms(work / "train", a.cases, size="small", seed=1000)
        write_phantoms(work / "heldout", a.heldout, size="small", seed=50_000)
    if train_cli(["convert", "--brats", str(work / "train"), "--dataset-id", str(DATASET_ID), "--name",
                  "PhantomCompare", *common]) != 0:
        return 1
    timings, models = {}, []
    for preset in a.presets:
        t0 = time.time()
        patch = [str(p) for p in (a.patch[-2:] if BASELINES[preset]["configuration"] == "2d" else a.patch)]
        ds = ["--dataset-id", str(DATASET_ID), "--preset", preset]
        bundle = work / "bundles" / f"{preset}.zip"
        steps = [["plan", *ds, "--patch-size", *patch, "--arch-kwargs", json.dumps(WIDTHS[preset])],
                 ["train", *ds, "--fold", "all", "--epochs", str(a.epochs), "--iterations", str(a.iterations),
                  "--val-iterations", "2", "--no-final-validation", "--device", a.device],
                 ["export", *ds, "--folds", "all", "--out", str(bundle), "--name", preset]]
        for step in steps:
            if train_cli([*step, *common]) != 0:
                print(f"{preset}: {step[0]} failed", file=sys.stderr)
                return 1
        timings[preset] = time.time() - t0
        models.append(f"{preset}={bundle}")
        print(f"{preset}: plan + train + export {timings[preset]:.0f} s", flush=True)
    rc = train_cli(["compare", *[x for m in models for x in ("--model", m)], "--gt", str(work / "heldout"),
                    "--out", str(work / "compare"), "--device", a.device, *common])
    (work / "compare" / "training_seconds.json").write_text(json.dumps(
        {"settings": {k: v for k, v in vars(a).items() if k != "work"}, "seconds": timings}, indent=2) + "\n")
    return rc


if __name__ == "__main__":
    sys.exit(main())
