#!/usr/bin/env bash
# ONE GPU run: `bertino-rag train` and the plain sentence-transformers recipe
# (benchmarks/train_plain_recipe.py) back to back on the same card, same data, same held-apart
# articles; then benchmarks/train_compare.py writes the speed and quality tables.
# Prepare first on a CPU machine: benchmarks/gpu_pack.sh (fills .gpu/, to carry).
# Usage (repo root, on the GPU machine): bash benchmarks/gpu_train_compare.sh [--smoke]
#   --smoke: 2 steps each at batch 16 and 64 tokens (a dry run, also on CPU)
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
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
DATA="${BERTINO_DATA:-.gpu/data}"
SMOKE=(); PLAIN_SMOKE=()
if [[ "${1:-}" == "--smoke" ]]; then
  SMOKE=(--max-steps 2 --batch-size 16 --max-seq-length 64 --eval-steps 1 --logging-steps 1)
  PLAIN_SMOKE=(--max-steps 2 --batch-size 16 --max-seq-length 64 --eval-steps 1)
fi
(nvidia-smi || echo "no nvidia-smi") > "$RESULTS/nvidia-smi.txt" 2>&1
$PY -c 'import torch, sentence_transformers as st, transformers as t; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "st", st.__version__, "transformers", t.__version__)' | tee -a "$RESULTS/nvidia-smi.txt"
$PY benchmarks/gpu_model.py unpack .gpu/minilm-fp16 "$WORK/minilm"
rm -rf "$WORK/bertino" "$WORK/plain"
set -o pipefail
$PY -m bertino_rag.training --config configs/train-gpu-recipe.yaml \
  --base-model "$WORK/minilm" --train-data "$DATA/squad-it-dev" \
  --sts-data "$DATA/stsb-it/train.csv" --sts-dev-data "$DATA/stsb-it/dev.csv" \
  --output-dir "$WORK/bertino" "${SMOKE[@]}" 2>&1 | tee "$RESULTS/bertino.log"
$PY benchmarks/train_plain_recipe.py --base-model "$WORK/minilm" \
  --data "$DATA/squad-it-dev" --sts-train "$DATA/stsb-it/train.csv" \
  --sts-dev "$DATA/stsb-it/dev.csv" --dev-fraction 0.1 --test-fraction 0.1 \
  --output-dir "$WORK/plain" "${PLAIN_SMOKE[@]}" 2>&1 | tee "$RESULTS/plain.log"
cp "$WORK/bertino/metrics.json" "$RESULTS/bertino-metrics.json"
cp "$WORK/plain/metrics.json" "$RESULTS/plain-metrics.json"
$PY benchmarks/train_compare.py "$WORK/bertino" "$WORK/plain" --json "$RESULTS/compare.json" \
  | tee "$RESULTS/compare.md"
