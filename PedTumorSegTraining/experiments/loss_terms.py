"""Small controlled experiments on the loss terms (CPU, minutes): the FP term and the HD term.

Data: synthetic phantoms (``pedtumorseg.phantoms.clean``, ``small`` 2.5 mm grid) reduced to 5 mm (2x2x2 block mean of
the images, every second voxel of the labels: 31x48x48) and z-scored per channel inside the brain. A tiny
``PedTumorSegNet`` (decoder widths 8, 16, 32; strides 1, 2, 2; the paper's SE, separable convs and init) is
trained on whole volumes (padded to 32x48x48), batch 2, SGD (lr 1e-2, momentum 0.99, Nesterov, cosine decay),
with nnU-Net's-style random flips only. Every variant uses the same seeds: the same initial weights, the same
sequence of training cases and flips; only the loss differs.

Evaluation: held-out phantoms (other seeds), argmax of the network output, the core ``pedtumorseg.evaluation.metrics``
lesion-wise Dice (BraTS PED rules) at 5 mm. For the FP term the figure of merit is the lesion-wise Dice of a
subregion on the cases where that subregion is absent from the ground truth (1 if nothing is predicted, else 0),
and the number of false-positive voxels there.

    python PedTumorSegTraining/experiments/loss_terms.py scales            # term magnitudes at initialization
    python PedTumorSegTraining/experiments/loss_terms.py fp --iterations 400
    # or on phantoms already on disk (pedtumorseg phantoms --size small ...):
    python PedTumorSegTraining/experiments/loss_terms.py fp --train-dir TRAIN --train-seed 10000 \
        --test-dir VAL --test-seed 30000 --n-test 12
    python PedTumorSegTraining/experiments/loss_terms.py hd --iterations 400

Results are printed as JSON (and written with ``--out``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np
import torch

from pedtumorseg.conventions import LABEL_NAMES
from pedtumorseg.inputs.cases import find_case, find_cases
from pedtumorseg.inputs.images import load_case, read_labels
from pedtumorseg.model.loss import PedTumorSegLoss, hausdorff_dt, one_hot, soft_dice
from pedtumorseg.evaluation.metrics import lesion_wise
from pedtumorseg.model.network import PedTumorSegNet
from pedtumorseg.phantoms.clean import make_phantom

SPACING = (5.0, 5.0, 5.0)
PAD = (32, 48, 48)
SUBREGIONS = ("ET", "NET", "CC", "ED")


def reduced_case(source) -> tuple[np.ndarray, np.ndarray]:
    """(images (4, 31, 48, 48) float32 z-scored in the brain, labels (31, 48, 48) uint8) of a ``small`` phantom:
    ``source`` is a seed (generated) or a case folder written by ``pedtumorseg phantoms`` (read)."""
    if isinstance(source, (int, np.integer)):
        ph = make_phantom(int(source), "small")
        imgs = np.stack([ph.images[c].astype(np.float32) for c in ("t1", "t1ce", "t2", "flair")])
        seg = ph.seg
    else:
        case = find_case(source)
        loaded = load_case(case)
        imgs = loaded.images.astype(np.float32)
        seg = read_labels(case.seg, loaded.geometry)
        if loaded.geometry.spacing_zyx != (2.5, 2.5, 2.5):
            raise ValueError(f"{source}: expected a 'small' phantom (2.5 mm)")

    z, y, x = (s // 2 * 2 for s in imgs.shape[1:])
    imgs = imgs[:, :z, :y, :x].reshape(4, z // 2, 2, y // 2, 2, x // 2, 2).mean((2, 4, 6))
    labels = seg[:z:2, :y:2, :x:2].copy()
    brain = (imgs != 0).any(0)
    for c in range(4):
        v = imgs[c][brain]
        imgs[c] = np.where(brain, (imgs[c] - v.mean()) / (v.std() + 1e-8), 0)
    return imgs, labels


def pad(a: np.ndarray) -> np.ndarray:
    out = np.zeros(a.shape[:-3] + PAD, a.dtype)
    out[..., :a.shape[-3], :a.shape[-2], :a.shape[-1]] = a
    return out


def network(seed: int) -> PedTumorSegNet:
    torch.manual_seed(seed)
    return PedTumorSegNet(4, 5, deep_supervision=False, decoder_widths=[8, 16, 32], strides=[1, 2, 2],
                          blocks_per_stage=[1, 1, 2])


def train(data, loss_fn, iterations: int, seed: int = 0, log_every: int = 50) -> tuple[PedTumorSegNet, list]:
    net = network(seed)
    opt = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.99, nesterov=True, weight_decay=3e-5)
    rng = np.random.default_rng(seed)
    x_all = torch.from_numpy(np.stack([pad(i) for i, _ in data]))
    y_all = torch.from_numpy(np.stack([pad(lab) for _, lab in data]).astype(np.int64))
    history = []
    net.train()
    for it in range(iterations):
        for g in opt.param_groups:
            g["lr"] = 1e-2 * (1 + math.cos(math.pi * it / iterations)) / 2
        idx = rng.choice(len(data), 2, replace=False)
        flips = [ax for ax in (2, 3, 4) if rng.random() < 0.5]
        x, y = x_all[idx], y_all[idx][:, None]
        if flips:
            x, y = x.flip(flips), y.flip(flips)
        loss = loss_fn(net(x), y)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 12)  # as nnU-Net
        opt.step()
        if it % log_every == 0 or it == iterations - 1:
            print(f"iteration {it}: loss {float(loss.detach()):.4f}", file=sys.stderr, flush=True)
            history.append({"iteration": it, "loss": float(loss.detach()),
                            **{k: float(v) for k, v in loss_fn.last_terms.items()}})
    return net, history


@torch.no_grad()
def evaluate(net, cases) -> dict:
    net.eval()
    rows = []
    for imgs, labels in cases:
        out = net(torch.from_numpy(pad(imgs))[None])
        pred = out[0].argmax(0).numpy()[:labels.shape[0], :labels.shape[1], :labels.shape[2]].astype(np.uint8)
        scores = lesion_wise(pred, labels, SPACING)
        row = {"lesion_dice": {r: float(scores[r]["lesion_dice"]) for r in scores}}
        row["absent"] = [name for lab, name in LABEL_NAMES.items() if not (labels == lab).any()]
        row["fp_voxels_absent"] = {name: int((pred == lab).sum()) for lab, name in LABEL_NAMES.items()
                                   if name in row["absent"]}
        rows.append(row)
    summary = {"mean_lesion_dice": {r: float(np.mean([row["lesion_dice"][r] for row in rows]))
                                    for r in rows[0]["lesion_dice"]}}
    absent = {}
    for name in SUBREGIONS:
        sel = [row for row in rows if name in row["absent"]]
        if sel:
            absent[name] = {"n_cases": len(sel),
                            "lesion_dice": float(np.mean([row["lesion_dice"][name] for row in sel])),
                            "cases_with_fp": sum(row["fp_voxels_absent"][name] > 0 for row in sel),
                            "fp_voxels": int(sum(row["fp_voxels_absent"][name] for row in sel))}
    summary["absent_class_cases"] = absent
    all_absent = [row["lesion_dice"][n] for row in rows for n in row["absent"] if n in SUBREGIONS]
    summary["absent_class_lesion_dice_pooled"] = float(np.mean(all_absent)) if all_absent else None
    summary["n_absent_class_instances"] = len(all_absent)
    return summary


def load(seeds, folder=None) -> list:
    """Cases by seed, or (with ``folder``) the phantom case folders in it whose seed is in ``seeds``."""
    if folder is None:
        return [reduced_case(s) for s in seeds]
    wanted = {f"BraTS-PED-S{s:05d}-000" for s in seeds}
    found = [c.images["t1"].parent for c in find_cases(folder) if c.case_id in wanted]
    if len(found) != len(wanted):
        raise SystemExit(f"{folder}: {len(found)} of the {len(wanted)} requested phantom seeds found")
    return [reduced_case(f) for f in sorted(found)]


def cmd_scales(a) -> dict:
    """Magnitudes of the unweighted terms for an untrained network on training cases (mean over 4 batches)."""
    data = load(range(a.train_seed, a.train_seed + 8), a.train_dir)
    net = network(0)
    vals = {"dice": [], "ce": [], "hd_normalized": [], "hd_karimi": [], "fp": []}
    with torch.no_grad():
        for k in range(0, 8, 2):
            x = torch.from_numpy(np.stack([pad(i) for i, _ in data[k:k + 2]]))
            y = torch.from_numpy(np.stack([pad(lab) for _, lab in data[k:k + 2]]).astype(np.int64))[:, None]
            logits = net(x)
            p, oh = torch.softmax(logits, 1), one_hot(y, 5)
            loss = PedTumorSegLoss(w_hd=1.0)
            loss(logits, y)
            vals["dice"].append(float(soft_dice(p, oh)))
            vals["ce"].append(float(loss.last_terms["ce"]))
            vals["fp"].append(float(loss.last_terms["fp"]))
            vals["hd_normalized"].append(float(hausdorff_dt(p, oh)))
            vals["hd_karimi"].append(float(hausdorff_dt(p, oh, normalize=False)))
    return {"patch": list(PAD), "at_initialization": {k: float(np.mean(v)) for k, v in vals.items()}}


def compare(a, variants: dict) -> dict:
    if a.only:
        variants = {k: v for k, v in variants.items() if k in a.only}
    train_data = load(range(a.train_seed, a.train_seed + a.n_train), a.train_dir)
    test_data = load(range(a.test_seed, a.test_seed + a.n_test), a.test_dir)
    results = {"iterations": a.iterations, "n_train": a.n_train, "n_test": a.n_test,
               "train_seeds": [a.train_seed, a.train_seed + a.n_train - 1],
               "test_seeds": [a.test_seed, a.test_seed + a.n_test - 1], "variants": {}}
    for name, kwargs in variants.items():
        t0 = time.perf_counter()
        net, history = train(train_data, PedTumorSegLoss(**kwargs), a.iterations, seed=a.seed)
        results["variants"][name] = {"loss_kwargs": kwargs, "train_s": round(time.perf_counter() - t0, 1),
                                     "history_last": history[-1], "test": evaluate(net, test_data)}
        print(name, json.dumps(results["variants"][name]["test"]), file=sys.stderr, flush=True)
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["scales", "fp", "hd"])
    ap.add_argument("--iterations", type=int, default=400)
    ap.add_argument("--n-train", type=int, default=24)
    ap.add_argument("--n-test", type=int, default=16)
    ap.add_argument("--train-seed", type=int, default=40000)
    ap.add_argument("--test-seed", type=int, default=50000)
    ap.add_argument("--train-dir", help="read the training phantoms from this folder instead of generating them")
    ap.add_argument("--test-dir", help="read the test phantoms from this folder instead of generating them")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", nargs="+", help="run only these variants (e.g. fp_on), to split a comparison "
                    "over processes; each variant's run depends only on the seeds and sizes")
    ap.add_argument("--skip-hd-off", action="store_true",
                    help="hd: leave out the HD-off variant (the same run as fp's fp_on with the same arguments)")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.what == "scales":
        res = cmd_scales(a)
    elif a.what == "fp":  # same everything, FP term on (theta 0.1) vs off; HD off in both to isolate the FP term
        res = compare(a, {"fp_off": dict(theta=0.0, w_hd=0.0), "fp_on": dict(theta=0.1, w_hd=0.0)})
    else:  # HD term: off, normalized at weight 1 (default), Karimi's un-normalized mean at 0.1 (the old default)
        variants = {"hd_off": dict(w_hd=0.0), "hd_normalized_w1": dict(w_hd=1.0),
                    "hd_karimi_w0.1": dict(w_hd=0.1, hd_normalize=False)}
        if a.skip_hd_off:  # identical to the "fp_on" variant of `fp` with the same seeds and sizes
            del variants["hd_off"]
        res = compare(a, variants)
    text = json.dumps(res, indent=1)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
