"""Evaluate saved training runs as they serve (float32, loaded from their folders) on the dev
and test articles of a run's own split.

A run's ``metrics.json`` holds the figures the trainer measured right after training; before
``training.hardware.end_autocast`` those were computed under the training's bf16. This script
measures the saved folders again, all on the split of ``--split-from`` (the first run by
default; runs made with the same data, seed and fractions share it).

Usage (alone on the machine; about a minute per run on 2 cores)::

    python benchmarks/reevaluate_runs.py /tmp/e5-run/plain /tmp/e5-run/scale100 \\
        /tmp/e5-study/lr3e-5 --split-from /tmp/e5-run/scale100
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="folders of finished training runs")
    ap.add_argument("--split-from", default=None,
                    help="the run whose config (data, seed, fractions) gives the split")
    ap.add_argument("--dims", type=int, nargs="+", default=[384, 128, 64])
    ap.add_argument("--funnel-dim", type=int, default=128)
    ap.add_argument("--out", default=None, help="also write the figures here (JSON)")
    args = ap.parse_args()
    for run in args.runs:
        if not (Path(run) / "metrics.json").is_file():
            raise SystemExit(f"{run}: no metrics.json (pass the folder of a finished run)")

    from sentence_transformers import SentenceTransformer

    from bertino_rag.training.config import TrainConfig
    from bertino_rag.training.evaluate import evaluate_dims
    from bertino_rag.training.train import split_data

    source = Path(args.split_from or args.runs[0]) / "metrics.json"
    cfg = TrainConfig(**json.loads(source.read_text(encoding="utf-8"))["config"])
    _, dev, test = split_data(cfg)
    kw = {"rescore_k": 100, "funnel_dims": [args.funnel_dim], "batch_size": 64}
    out = {}
    print("| run | " + " | ".join(f"dev {d}d" for d in args.dims) + " | dev funnel | "
          + " | ".join(f"test {d}d" for d in args.dims) + " |")
    for run in args.runs:
        model = SentenceTransformer(run, device="cpu")
        figures = {"dev": evaluate_dims(model, dev, None, args.dims, **kw),
                   "test": evaluate_dims(model, test, None, args.dims, **kw) if test else {}}
        out[run] = figures
        funnel = f"{args.funnel_dim}+rescore@100"
        cells = [figures["dev"][str(d)]["ndcg@10"] for d in args.dims]
        cells.append(figures["dev"][funnel]["ndcg@10"])
        cells += [figures["test"][str(d)]["ndcg@10"] for d in args.dims if figures["test"]]
        print(f"| {run} | " + " | ".join(f"{c:.4f}" for c in cells) + " |", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
