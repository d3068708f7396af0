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
PY=${PY:-.venv/bin/python}
TRAIN=${TRAIN:-.venv/bin/pedtumorseg-train}
PTS=${PTS:-.venv/bin/pedtumorseg}
D=${D:-work_dirs/demo2}
W=$D/nnunet
X=${X:-$D/fp_experiment}
EPOCHS=${EPOCHS:-300}
R=$W/nnUNet_results/Dataset102_PedTumorSegDemo
export PEDTUMORSEG_CACHE=$D/cache
mkdir -p $X
echo '{"normalization": "mean"}' > $X/pp_mean.json  # the ratio normalization the demo bundle declares

$PY -c "
from pathlib import Path
from pedtumorseg.phantom import write_phantoms
if not Path('$X/heldout50').is_dir():
    write_phantoms('$X/heldout50', 50, size='small', seed=20000)
"

arm() {  # tag, theta
    local dst=$R/PedTumorSegTrainer__PedTumorSegPlans_demo_$1__3d_fullres/fold_0
    if [ ! -e $dst/checkpoint_final.pth ] && [ ! -e $dst/checkpoint_latest.pth ]; then
        mkdir -p $dst
        cp $R/PedTumorSegTrainer__PedTumorSegPlans_demo__3d_fullres/fold_0/checkpoint_final.pth $dst/checkpoint_latest.pth
    fi
    $TRAIN train --work-dir $W --dataset-id 102 --preset demo --fold 0 --tag $1 --theta $2 --seed 150 \
        --epochs $EPOCHS --iterations 50 --val-iterations 4 --save-every 5 \
        --no-final-validation --device cpu --threads 1 --num-workers 0 > $X/train_$1.log 2>&1
}
arm fp_on 0.1 &
arm fp_off 0 &
wait

for tag in fp_on fp_off; do
    $TRAIN export --work-dir $W --dataset-id 102 --preset demo --tag $tag --folds 0 --checkpoint final \
        --out $X/$tag.zip --name demo-$tag --postprocessing $X/pp_mean.json
    $PTS predict --input-dir $X/heldout50 --output-dir $X/pred_$tag --model $X/$tag.zip --device cpu \
        --no-tta --raw --progress none
    mkdir -p $X/raw_$tag && for f in $X/pred_$tag/*-seg-raw.nii.gz; do
        cp $f $X/raw_$tag/$(basename $f -seg-raw.nii.gz).nii.gz; done
    $PTS evaluate --pred $X/raw_$tag --gt $X/heldout50 --out $X/eval_$tag.csv
done
$PY PedTumorSegTraining/experiments/absent_classes.py fp_on=$X/eval_fp_on.csv fp_off=$X/eval_fp_off.csv \
    --out $X/absent_classes.json
