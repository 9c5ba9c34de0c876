#!/usr/bin/env bash
# ONE GPU run: the same comparison as on the CPU (benchmarks/train_e5_compare.sh: `bertino-rag
# train` with configs/train-e5.yaml beside the plain sentence-transformers recipe, same base,
# data, held-apart articles and budget), from the same base: multilingual-e5-small exported here
# from .gpu/e5-it.bin. On the GPU `bertino-rag train` probes its mini-batch (the config's CPU
# value is unset) and runs bf16; the plain recipe keeps its mini-batch 16 and fp16.
# Prepare first on a CPU machine: benchmarks/gpu_pack.sh (fills .gpu/, to carry).
# Usage (repo root, on the GPU machine): bash benchmarks/gpu_train_compare.sh [--smoke]
#   --smoke: 2 steps each at batch 8 and 64 tokens (a dry run, also on CPU)
# Results go to $OUT (or /tmp/gpu-compare): compare.md, compare.json, both metrics.json, logs,
# nvidia-smi.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
RESULTS="${OUT:-/tmp/gpu-compare}"
WORK="${WORK:-/tmp/gpu-compare-work}"
PY="${PYTHON:-python3}"
mkdir -p "$RESULTS" "$WORK"
if ! $PY -c 'import datasets' 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$WORK/site" .gpu/whl/*.whl
  export PYTHONPATH="$WORK/site"
fi
export PYTHONPATH="$(pwd)/src${PYTHONPATH:+:$PYTHONPATH}"
(nvidia-smi || echo "no nvidia-smi") > "$RESULTS/nvidia-smi.txt" 2>&1
$PY -c 'import torch, sentence_transformers as st, transformers as t; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "st", st.__version__, "transformers", t.__version__)' | tee -a "$RESULTS/nvidia-smi.txt"
OUT="$RESULTS" WORK="$WORK" PYTHON="$PY" BERTINO_DATA="${BERTINO_DATA:-.gpu/data}" \
  E5="$WORK/e5" E5_SOURCE=.gpu/e5-it.bin TRAIN_FLAGS="--mini-batch-size none" \
  bash benchmarks/train_e5_compare.sh "$@"
