"""Small-component removal (paper §2.6): measure the two readings the paper leaves open.

1. What is a component's volume: the label's **original** voxels inside a connected component of the
   3x3x3-dilated mask, or the voxels of the **dilated** component itself?
2. What do removed voxels become: **background** (0; the paper says "removed"; a removed ET island inside NET
   then leaves a hole in TC and WT) or **fill**: the foreground label that surrounds the removed component
   most (its 26-neighbours outside it; NET for an ET island inside NET), background if none?

Each of the 4 combinations is applied after the ratio step to raw network predictions on a validation set of
phantoms and scored with the core lesion-wise Dice (``pedtumorseg.evaluation.metrics``; BraTS PED rules), mean over cases.

    python PedTumorSegTraining/experiments/component_readings.py --cases work_dirs/demo/phantoms_val \\
        --pred work_dirs/exp/val_pred_v020 [--set normalization=mean] [--out readings.json]

``--pred`` holds ``<case>-seg-raw.nii.gz`` (``pedtumorseg predict --raw``); ``--set`` overrides post-processing
parameters (default: the core defaults) for the ratio step and the cut-offs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

from pedtumorseg.inputs.cases import find_cases
from pedtumorseg.inputs.images import load_case, read_labels
from pedtumorseg.evaluation.metrics import lesion_wise
from pedtumorseg.postprocess import PostprocessParams, postprocess, voxel_volume_mm3

CUBE = np.ones((3, 3, 3), bool)


def remove_components(labels, spacing, cutoffs: dict, volume_on: str, removed_to: str) -> np.ndarray:
    """Small-component removal under one reading (labels processed in label order on the input labels)."""
    labels = np.asarray(labels)
    out = labels.copy()
    vv = voxel_volume_mm3(spacing)
    for label, cutoff in cutoffs.items():
        if cutoff <= 0:
            continue
        mask = labels == label
        if not mask.any():
            continue
        dilated = ndimage.binary_dilation(mask, CUBE)
        comps, n = ndimage.label(dilated, CUBE)
        for k in range(1, n + 1):
            comp = comps == k
            size = (comp & mask).sum() if volume_on == "original" else comp.sum()
            if size * vv >= cutoff:
                continue
            voxels = comp & mask
            value = 0
            if removed_to == "fill":
                ring = ndimage.binary_dilation(voxels, CUBE) & ~voxels
                around = labels[ring]
                around = around[(around > 0) & (around != label)]
                if around.size:
                    value = int(np.bincount(around).argmax())
            out[voxels] = value
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", required=True)
    ap.add_argument("--pred", required=True)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    params = PostprocessParams().with_overrides(a.set)
    cutoffs = params.min_volume_mm3
    readings = [(v, r) for v in ("original", "dilated") for r in ("background", "fill")]
    scores = {f"{v}/{r}": [] for v, r in readings}
    scores["no_removal"] = []
    n_changed = {key: 0 for key in scores}
    for case in find_cases(a.cases):
        loaded = load_case(case)
        gt = read_labels(case.seg, loaded.geometry)
        raw = read_labels(Path(a.pred) / f"{case.case_id}-seg-raw.nii.gz", loaded.geometry)
        sp = loaded.geometry.spacing_zyx
        t1, t1ce = loaded.images[0], loaded.images[1]
        relabelled = postprocess(raw, t1, t1ce, sp, params.replace(components_enabled=False))
        variants = {"no_removal": relabelled}
        for v, r in readings:
            variants[f"{v}/{r}"] = remove_components(relabelled, sp, cutoffs, v, r)
        # the core implementation must be one of the readings
        core = postprocess(raw, t1, t1ce, sp, params)
        variants["core_equals"] = core
        for key, pred in variants.items():
            if key == "core_equals":
                continue
            s = lesion_wise(pred, gt, sp)
            scores[key].append({r: float(s[r]["lesion_dice"]) for r in s})
            n_changed[key] += int((pred != relabelled).sum())
        same = [k for k in scores if k != "no_removal" and np.array_equal(core, variants[k])]
        print(case.case_id, "core =", same, file=sys.stderr, flush=True)
    summary = {key: {"mean_lesion_dice": {r: float(np.mean([c[r] for c in rows])) for r in rows[0]},
                     "mean_over_regions": float(np.mean([np.mean(list(c.values())) for c in rows])),
                     "voxels_changed": n_changed[key]}
               for key, rows in scores.items()}
    res = {"n_cases": len(scores["no_removal"]), "params": params.to_dict(), "readings": summary}
    text = json.dumps(res, indent=1)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
