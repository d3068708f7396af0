# Shared by fp_continuation.sh and hd_continuation.sh (sourced, not run): the settings of the demo run's
# continuation experiments, `arm TAG FLAGS...` (continue the demo run's epoch-150 checkpoint under the variant tag
# TAG with extra train FLAGS: epochs 150..299 of a 300-epoch cosine, --seed 150, augmentation in the main process)
# and `score TAG` (export, predict the 50 held-out phantoms without post-processing, BraTS PED scorer).
set -euo pipefail
PY=${PY:-.venv/bin/python}
TRAIN=${TRAIN:-.venv/bin/pedtumorseg-train}
PTS=${PTS:-.venv/bin/pedtumorseg}
D=${D:-work_dirs/demo2}
W=$D/nnunet
X=${X:-$D/fp_experiment}
EPOCHS=${EPOCHS:-300}
THREADS=${THREADS:-1}
R=$W/nnUNet_results/Dataset102_PedTumorSegDemo
export PEDTUMORSEG_CACHE=$D/cache
mkdir -p $X
echo '{"normalization": "mean"}' > $X/pp_mean.json  # the ratio normalization the demo bundle declares

$PY -c "
from pathlib import Path
from pedtumorseg.phantoms.clean import write_phantoms
if not Path('$X/heldout50').is_dir():
    write_phantoms('$X/heldout50', 50, size='small', seed=20000)
"

arm() {  # tag, extra train flags
    local tag=$1
    shift
    local dst=$R/PedTumorSegTrainer__PedTumorSegPlans_demo_${tag}__3d_fullres/fold_0
    if [ ! -e $dst/checkpoint_final.pth ] && [ ! -e $dst/checkpoint_latest.pth ]; then
        mkdir -p $dst
        cp $R/PedTumorSegTrainer__PedTumorSegPlans_demo__3d_fullres/fold_0/checkpoint_final.pth $dst/checkpoint_latest.pth
    fi
    $TRAIN train --work-dir $W --dataset-id 102 --preset demo --fold 0 --tag $tag "$@" --seed 150 \
        --epochs $EPOCHS --iterations 50 --val-iterations 4 --save-every 5 \
        --no-final-validation --device cpu --threads $THREADS --num-workers 0 > $X/train_$tag.log 2>&1
}

score() {  # tag -> $X/eval_<tag>.csv
    local tag=$1
    $TRAIN export --work-dir $W --dataset-id 102 --preset demo --tag $tag --folds 0 --checkpoint final \
        --out $X/$tag.zip --name demo-$tag --postprocessing $X/pp_mean.json
    $PTS predict --input-dir $X/heldout50 --output-dir $X/pred_$tag --model $X/$tag.zip --device cpu \
        --no-tta --raw --progress none
    mkdir -p $X/raw_$tag && for f in $X/pred_$tag/*-seg-raw.nii.gz; do
        cp $f $X/raw_$tag/$(basename $f -seg-raw.nii.gz).nii.gz; done
    $PTS evaluate --pred $X/raw_$tag --gt $X/heldout50 --out $X/eval_$tag.csv
}
