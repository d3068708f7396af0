#!/usr/bin/env bash
# GPU check on a fresh CUDA machine: installs what it needs into .venv-gpu (unless torch with CUDA is already
# importable by $PYTHON), then runs benchmarks/gpu_check.py: the engine and nnU-Net's predictor on the real case,
# paper preset, random weights, 5 folds x 8 mirrors; prints labels agreement, wall time of each and peak GPU memory.
#
#   bash benchmarks/gpu_check.sh [gpu_check.py options, e.g. --compile --precision bf16]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c "import torch, nnunetv2, pedtumorseg, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    if [ ! -x .venv-gpu/bin/python ]; then
        "$PYTHON" -m venv .venv-gpu
    fi
    PYTHON=.venv-gpu/bin/python
    "$PYTHON" -m pip install -q --upgrade pip
    # the default PyPI torch wheel for Linux x86_64 is the CUDA build; nnunetv2 in the same command (DEVELOPING.md)
    "$PYTHON" -m pip install -q torch==2.13.0 nnunetv2==2.8.1
    "$PYTHON" -m pip install -q -e .
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
export PYTHONPATH="$PWD/PedTumorSeg:$PWD/PedTumorSegTraining${PYTHONPATH:+:$PYTHONPATH}"
exec timeout 900 "$PYTHON" benchmarks/gpu_check.py "$@"
