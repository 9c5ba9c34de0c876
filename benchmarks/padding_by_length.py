"""How much a cached loss's mini-batches pad, in the batch's order and sorted by length: the
figures behind ``TrainConfig.sort_by_length`` (docs/training.md).

The corpus's passages are tokenized as training reads them (the model's document prompt, its
length limit); batches of ``--batch-size`` passages are drawn at random (as a shuffled epoch
draws them) and cut into mini-batches of ``--mini-batch-size``, each padded to its longest
passage. Printed: the passages' token lengths, and padded tokens per real token in each order.

Usage:
    python benchmarks/padding_by_length.py --model E5_FOLDER [--data DATA/squad-it-dev]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def padding(lengths: np.ndarray, batch: int, mini: int, batches: int, seed: int
            ) -> dict[str, float]:
    """Padded tokens per real token of random batches, in their order and sorted."""
    rng = np.random.default_rng(seed)
    padded = {"batch order": 0, "sorted": 0}
    real = 0
    for _ in range(batches):
        drawn = lengths[rng.integers(0, len(lengths), batch)]
        real += int(drawn.sum())
        for name, column in (("batch order", drawn), ("sorted", np.sort(drawn))):
            padded[name] += sum(int(column[i:i + mini].max()) * len(column[i:i + mini])
                                for i in range(0, batch, mini))
    return {name: round(p / real, 3) for name, p in padded.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a sentence-transformers folder")
    ap.add_argument("--data", default=str(Path(os.environ.get("BERTINO_DATA", str(DATA)))
                                          / "squad-it-dev"), help="a BEIR folder")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--mini-batch-size", type=int, default=16)
    ap.add_argument("--batches", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(args.model, device="cpu")
    prompt = (model.prompts or {}).get("document", "")
    with open(Path(args.data) / "corpus.jsonl", encoding="utf-8") as fh:
        texts = [prompt + json.loads(line)["text"] for line in fh]
    ids = model.tokenizer(texts, truncation=True, max_length=model.max_seq_length)["input_ids"]
    lengths = np.array([len(x) for x in ids])
    print(f"{len(lengths)} passages, tokens with the prompt {prompt!r}: mean "
          f"{lengths.mean():.1f}, median {np.median(lengths):.0f}, p95 "
          f"{np.percentile(lengths, 95):.0f}, max {lengths.max()} (limit {model.max_seq_length})")
    ratios = padding(lengths, args.batch_size, args.mini_batch_size, args.batches, args.seed)
    print(f"padded tokens per real token, {args.batches} random batches of {args.batch_size} in "
          f"mini-batches of {args.mini_batch_size}: " + ", ".join(f"{k} {v}"
                                                                  for k, v in ratios.items()))


if __name__ == "__main__":
    main()
