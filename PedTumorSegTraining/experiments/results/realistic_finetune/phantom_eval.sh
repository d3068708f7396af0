#!/usr/bin/env bash
set -euo pipefail
cd "$(dirname "$0")/../../../.."  # the repository root
REAL_LABELED=${REAL_LABELED:-}  # folder of real labeled cases (BraTS <= 2020 label numbers), optional
D=work_dirs/rt1; PY=.venv/bin/python; PTS=.venv/bin/pedtumorseg
export PEDTUMORSEG_CACHE=$D/cache
[ -d $D/fresh50 ] || $PY -c "
from pedtumorseg.phantoms.clean import write_phantoms
write_phantoms('$D/fresh50', 50, size='small', seed=30000)"
[ -d $D/real_fresh20 ] || $PY -c "
from pedtumorseg.phantoms.realistic import write_styled_phantoms
write_styled_phantoms('$D/real_fresh20', 20, size='small', seed=40000, style='realistic')"
for M in rt1 demo; do
  B=$D/rt1.zip; [ $M = demo ] && B=Resources/Models/pedtumorseg-demo.zip
  for S in fresh50 real_fresh20; do
    $PTS predict --input-dir $D/$S --output-dir $D/pred_${M}_$S --model $B --device cpu --no-tta > /dev/null 2>&1
    $PTS evaluate --pred $D/pred_${M}_$S --gt $D/$S --out $D/eval_${M}_$S.csv | head -12
  done
done
