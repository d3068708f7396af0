#!/usr/bin/env bash
# fine-tune experiment: the shipped demo weights, 40 epochs on 100 realistic phantoms (issue 25 candidate)
set -euo pipefail
cd "$(dirname "$0")/../../../.."  # the repository root
REAL_LABELED=${REAL_LABELED:-}  # folder of real labeled cases (BraTS <= 2020 label numbers), optional
PY=.venv/bin/python; TRAIN=.venv/bin/pedtumorseg-train
D=work_dirs/rt1; W=$D/nnunet
export PEDTUMORSEG_CACHE=$D/cache OMP_NUM_THREADS=1
date
$PY -c "
from pedtumorseg.phantoms.realistic import write_styled_phantoms
write_styled_phantoms('$D/train', 100, size='small', seed=10000, style='realistic')
"
date
$TRAIN convert --work-dir $W --brats $D/train --dataset-id 103 --name PedTumorSegRealistic
$TRAIN plan --work-dir $W --dataset-id 103 --preset demo --patch-size 32 32 32 --threads 1
date
$TRAIN train --work-dir $W --dataset-id 103 --preset demo --fold 0 --tag rt1 --init-weights Resources/Models/pedtumorseg-demo.zip \
    --lr 5e-3 --seed 500 --epochs 40 --iterations 50 --val-iterations 4 --save-every 5 \
    --no-final-validation --device cpu --threads 1 --num-workers 0
date
unzip -p Resources/Models/pedtumorseg-demo.zip manifest.json | $PY -c "import json,sys; print(json.dumps(json.load(sys.stdin)['postprocessing']))" > $D/pp_demo.json
$TRAIN export --work-dir $W --dataset-id 103 --preset demo --tag rt1 --folds 0 --checkpoint final \
    --out $D/rt1.zip --name pedtumorseg-demo-rt1 --version 0.6.0-rc1 --postprocessing $D/pp_demo.json --intended-use demonstration
date
[ -z "$REAL_LABELED" ] || $PY benchmarks/real_labeled_scores.py "$REAL_LABELED" --model $D/rt1.zip --out $D/real_rt1.json
date
