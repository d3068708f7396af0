#!/usr/bin/env bash
# Controlled experiment on the HD term's weight, the twin of fp_continuation.sh: one more continuation of the demo
# run from its epoch-150 checkpoint, identical to that script's "fp_on" arm (default loss, HD weight 1; same
# schedule epochs 150..299 of a 300-epoch cosine, same --seed 150 with augmentation in the main process, so the same
# batches) but for --w-hd 0. Scored like the two arms there (50 held-out phantoms, raw network output, BraTS PED
# scorer) and compared with the fp_on arm (absent_classes.py prints all regions too).
# Run after fp_continuation.sh. CPU: one arm, ~22 s per epoch, ~55 min.
set -euo pipefail
PY=${PY:-.venv/bin/python}
TRAIN=${TRAIN:-.venv/bin/pedtumorseg-train}
PTS=${PTS:-.venv/bin/pedtumorseg}
D=${D:-work_dirs/demo2}
W=$D/nnunet
X=${X:-$D/fp_experiment}
R=$W/nnUNet_results/Dataset102_PedTumorSegDemo
THREADS=${THREADS:-1}
export PEDTUMORSEG_CACHE=$D/cache
mkdir -p $X
echo '{"normalization": "mean"}' > $X/pp_mean.json  # the ratio normalization the demo bundle declares

dst=$R/PedTumorSegTrainer__PedTumorSegPlans_demo_hd_off__3d_fullres/fold_0
if [ ! -e $dst/checkpoint_final.pth ] && [ ! -e $dst/checkpoint_latest.pth ]; then
    mkdir -p $dst
    cp $R/PedTumorSegTrainer__PedTumorSegPlans_demo__3d_fullres/fold_0/checkpoint_final.pth $dst/checkpoint_latest.pth
fi
$TRAIN train --work-dir $W --dataset-id 102 --preset demo --fold 0 --tag hd_off --w-hd 0 --seed 150 \
    --epochs 300 --iterations 50 --val-iterations 4 --save-every 5 \
    --no-final-validation --device cpu --threads $THREADS --num-workers 0 > $X/train_hd_off.log 2>&1
$TRAIN export --work-dir $W --dataset-id 102 --preset demo --tag hd_off --folds 0 --checkpoint final \
    --out $X/hd_off.zip --name demo-hd_off --postprocessing $X/pp_mean.json
$PTS predict --input-dir $X/heldout50 --output-dir $X/pred_hd_off --model $X/hd_off.zip --device cpu \
    --no-tta --raw --progress none
mkdir -p $X/raw_hd_off && for f in $X/pred_hd_off/*-seg-raw.nii.gz; do
    cp $f $X/raw_hd_off/$(basename $f -seg-raw.nii.gz).nii.gz; done
$PTS evaluate --pred $X/raw_hd_off --gt $X/heldout50 --out $X/eval_hd_off.csv
$PY PedTumorSegTraining/experiments/absent_classes.py hd_on=$X/eval_fp_on.csv hd_off=$X/eval_hd_off.csv \
    --out $X/hd_absent_classes.json
