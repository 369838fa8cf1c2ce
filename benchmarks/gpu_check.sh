#!/usr/bin/env bash
# Issue 7's GPU check (< 5 min on one H100): COCO-size full-graph training (5,000 nodes,
# 4,096-d, 32 bits, 300 epochs) and one sampled epoch of a 1M-node graph; peak GPU memory.
#   benchmarks/gpu_check.sh           # on the GPU machine (--device auto picks CUDA + GPU FAISS)
#   benchmarks/gpu_check.sh --smoke   # tiny sizes: checks the script on a CPU
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
exec "$PY" benchmarks/gpu_check.py "$@"
