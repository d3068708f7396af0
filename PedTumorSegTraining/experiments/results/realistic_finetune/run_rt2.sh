#!/usr/bin/env bash
# candidate 2: the shipped weights fine-tuned 40 epochs on 100 realistic + 100 clean phantoms
set -euo pipefail
cd "$(dirname "$0")/../../../.."  # the repository root
REAL_LABELED=${REAL_LABELED:-}  # folder of real labeled cases (BraTS <= 2020 label numbers), optional
PY=.venv/bin/python; TRAIN=.venv/bin/pedtumorseg-train; PTS=.venv/bin/pedtumorseg
D=work_dirs/rt1; W=$D/nnunet2
export PEDTUMORSEG_CACHE=$D/cache OMP_NUM_THREADS=1
date
mkdir -p $D/mixed
[ -d $D/clean100 ] || $PY -c "
from pedtumorseg.phantoms.clean import write_phantoms
write_phantoms('$D/clean100', 100, size='small', seed=10000)"
for f in $D/train/* $D/clean100/*; do ln -sfn $(realpath $f) $D/mixed/; done
$TRAIN convert --work-dir $W --brats $D/mixed --dataset-id 104 --name PedTumorSegMixed
$TRAIN plan --work-dir $W --dataset-id 104 --preset demo --patch-size 32 32 32 --threads 1
date
$TRAIN train --work-dir $W --dataset-id 104 --preset demo --fold 0 --tag rt2 --init-weights Resources/Models/pedtumorseg-demo.zip \
    --lr 5e-3 --seed 501 --epochs 40 --iterations 50 --val-iterations 4 --save-every 5 \
    --no-final-validation --device cpu --threads 1 --num-workers 0
date
$TRAIN export --work-dir $W --dataset-id 104 --preset demo --tag rt2 --folds 0 --checkpoint final \
    --out $D/rt2.zip --name pedtumorseg-demo-rt2 --version 0.6.0-rc2 --postprocessing $D/pp_demo.json --intended-use demonstration
[ -z "$REAL_LABELED" ] || $PY benchmarks/real_labeled_scores.py "$REAL_LABELED" --model $D/rt2.zip --out $D/real_rt2.json
for S in fresh50 real_fresh20; do
  $PTS predict --input-dir $D/$S --output-dir $D/pred_rt2_$S --model $D/rt2.zip --device cpu --no-tta > /dev/null 2>&1
  $PTS evaluate --pred $D/pred_rt2_$S --gt $D/$S --out $D/eval_rt2_$S.csv | head -8
done
date
