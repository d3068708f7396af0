#!/usr/bin/env bash
# Controlled experiment on the false-positive term (theta * N_FP / (N_pred + N_gt)) with a network that already
# predicts every subregion: two continuations of the demo run (make_demo_model.sh, step 3: fold 0, 150 epochs),
# identical but for --theta, trained side by side:
#   - same starting checkpoint (epoch 150), same schedule (cosine of a 300-epoch run, epochs 150..299: lr 5e-3
#     -> 0), same data, same --seed with augmentation in the main process (--num-workers 0), so both arms see the
#     same patches and augmentations in the same order (Testing/test_training_chain.py checks the seeding);
#   - fp_on: the default loss (-Dice + CE + 1*HD + 0.1*FP); fp_off: --theta 0.
# Scored on 50 held-out phantoms (seeds 20000..20049) by the BraTS PED scorer (`pedtumorseg evaluate`, raw network
# output: no post-processing, so only the training differs), then absent_classes.py: lesion-wise Dice on the
# cases where a subregion is absent (ED is absent in about half of the phantoms), and on those where it is present.
# Run from the repository root with the project venv after make_demo_model.sh steps 1-3.
# CPU, 2 cores, one thread per arm: 22 s per epoch and arm, ~60 min in all.
set -euo pipefail
source "$(dirname "$0")/continuation_lib.sh"

arm fp_on --theta 0.1 &
arm fp_off --theta 0 &
wait
score fp_on
score fp_off
$PY PedTumorSegTraining/experiments/absent_classes.py fp_on=$X/eval_fp_on.csv fp_off=$X/eval_fp_off.csv \
    --out $X/absent_classes.json
