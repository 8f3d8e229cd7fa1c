#!/usr/bin/env bash
# The GPU benchmark: run it whenever a GPU is lent (one CUDA GPU, at most 5 minutes). bf16, MAGVLT `base`,
# random weights: dense matmul rate, training tokens/s and MFU, MAGVLT vs ARGVLT sampling latency at batch 1
# and 32. Results: benchmarks/results/gpu_bench-<card>.json and .md; copy the table into
# docs/results/performance.md ("GPU runs") with the card's name. Extra arguments go to gpu_bench.py.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-.venv/bin/python}"
# 270 s of parts inside a hard 300 s limit: imports and CUDA start-up take the rest.
exec timeout 300 "$python" benchmarks/gpu_bench.py --budget 270 "$@"
