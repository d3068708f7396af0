#!/usr/bin/env bash
# The exact commands that produced Resources/Models/pedtumorseg-demo.zip (see Resources/Models/pedtumorseg-demo.md).
# Synthetic phantoms only; CPU; run from the repository root with the project venv.
set -euo pipefail
PY=${PY:-.venv/bin/python}
TRAIN=${TRAIN:-.venv/bin/pedtumorseg-train}
D=${D:-work_dirs/demo}           # git-ignored
W=$D/nnunet
export PEDTUMORSEG_CACHE=$D/cache

# 1. phantoms: 50 training cases (seeds 10000..10049) and 10 held-out cases (seeds 20000..20009), 2.5 mm "small"
$PY -c "
from pedtumorseg.phantom import write_phantoms
write_phantoms('$D/phantoms_train', 50, size='small', seed=10000)
write_phantoms('$D/phantoms_heldout', 10, size='small', seed=20000)
"

# 2. nnU-Net raw dataset, plans (demo preset, 32^3 patches for CPU) and preprocessing
$TRAIN convert --work-dir $W --brats $D/phantoms_train --dataset-id 101 --name PedTumorSegDemo
$TRAIN plan --work-dir $W --dataset-id 101 --preset demo --patch-size 32 32 32 --threads 2

# 3. training: fold 0 of nnU-Net's 5-fold split (40 train / 10 validation cases), CPU.
#    The shipped model was trained in two legs: 80 epochs planned, stopped (deadline, CPU contention) after the
#    checkpoint of epoch 70; then resumed from that checkpoint with the schedule stretched to 130 epochs
#    (cosine lr continuing at epoch 70 of 130: 4.4e-3 -> 0), i.e. 130 epochs x 24 iterations = 3 120 iterations.
$TRAIN train --work-dir $W --dataset-id 101 --preset demo --fold 0 \
    --epochs 80 --iterations 24 --val-iterations 3 --w-hd 0 --save-every 5 \
    --no-final-validation --device cpu --threads 2 --num-workers 1
$TRAIN train --work-dir $W --dataset-id 101 --preset demo --fold 0 \
    --epochs 130 --iterations 24 --val-iterations 3 --w-hd 0 --save-every 5 \
    --no-final-validation --device cpu --threads 2 --num-workers 1

# 4. export (safetensors + manifest), then evaluate on the held-out phantoms with the core engine
$TRAIN export --work-dir $W --dataset-id 101 --preset demo --folds 0 --checkpoint final \
    --out Resources/Models/pedtumorseg-demo.zip --name pedtumorseg-demo --version 0.2.0 \
    --description "Demo model: PedTumorSegNet demo preset trained on synthetic phantoms only. Not for clinical or research use on real data."

# 5. held-out evaluation: core engine + core post-processing (the `pedtumorseg predict` CLI, bundle defaults,
#    no mirroring TTA to keep it short on 2 shared cores), lesion-wise Dice with the core metrics (the BraTS
#    2024/2025 PED scorer)
.venv/bin/pedtumorseg predict --input-dir $D/phantoms_heldout --output-dir $D/heldout_pred \
    --model Resources/Models/pedtumorseg-demo.zip --device cpu --no-tta --raw --progress none
$PY - $D/phantoms_heldout $D/heldout_pred $D/heldout_eval.json <<'PYEOF'
import json, sys
from pathlib import Path
import numpy as np
import SimpleITK as sitk
from pedtumorseg.io import Geometry, find_cases, read_labels
from pedtumorseg.metrics import evaluate_case
held, preds, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
rows = []
for case in find_cases(held):
    geom = Geometry.from_image(sitk.ReadImage(str(case.seg)))
    gt = read_labels(case.seg, geom)
    for kind, suffix in (("postprocessed", "-seg.nii.gz"), ("raw", "-seg-raw.nii.gz")):
        pred = read_labels(preds / f"{case.case_id}{suffix}", geom)
        for r in evaluate_case(pred, gt, geom.spacing_zyx):
            rows.append({"case": case.case_id, "output": kind,
                         **{k: (v if isinstance(v, str) else float(v)) for k, v in r.items()}})
summary = {kind: {region: {"mean_lesion_dice": float(np.mean(v)), "min_lesion_dice": float(np.min(v)), "n": len(v)}
                  for region in ("ET", "NET", "CC", "ED", "TC", "WT")
                  for v in [[r["lesion_dice"] for r in rows if r["output"] == kind and r["region"] == region]]}
           for kind in ("postprocessed", "raw")}
out.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1) + "\n")
print(json.dumps(summary, indent=1))
PYEOF
