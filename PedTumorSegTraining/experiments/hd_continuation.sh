#!/usr/bin/env bash
# Controlled experiment on the HD term's weight, the twin of fp_continuation.sh: one more continuation of the demo
# run from its epoch-150 checkpoint, identical to that script's "fp_on" arm (default loss, HD weight 1; same
# schedule epochs 150..299 of a 300-epoch cosine, same --seed 150 with augmentation in the main process, so the same
# batches) but for --w-hd 0. Scored like the two arms there (50 held-out phantoms, raw network output, BraTS PED
# scorer) and compared with the fp_on arm (absent_classes.py prints all regions too).
# Run after fp_continuation.sh. CPU: one arm, ~22 s per epoch, ~55 min.
set -euo pipefail
source "$(dirname "$0")/continuation_lib.sh"

arm hd_off --w-hd 0
score hd_off
$PY PedTumorSegTraining/experiments/absent_classes.py hd_on=$X/eval_fp_on.csv hd_off=$X/eval_hd_off.csv \
    --out $X/hd_absent_classes.json
