#!/bin/sh
# One prepared accelerator run (issue 19); options and outputs: benchmarks/paper_gpu.py --help.
#   benchmarks/paper_gpu.sh --data PACK --out OUT --budget-min 9    (one NVIDIA GPU, no pip, no network)
#   benchmarks/paper_gpu.sh --data PACK --out OUT --dry-run         (CPU, smoke profile, seed 0: CI)
# PACK comes from `algan pack --for paper-gpu PACK`; PYTHON picks the interpreter (default: python3).
set -e
cd "$(dirname "$0")/.."
PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" exec "${PYTHON:-python3}" benchmarks/paper_gpu.py "$@"
