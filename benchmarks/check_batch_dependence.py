"""Does a reranker's score of a pair depend on the batch it is scored in?

    python benchmarks/check_batch_dependence.py /tmp/bench-rerank-12l/reranker

Scores ``--pairs`` (question, paragraph) pairs of squad-it-dev twice with each backend: all in
one ``score_pairs`` call, then each alone, and prints the largest difference of a pair's score
between the two and the rank correlation of the two orders. Dynamic int8 quantization (the
``onnx-int8`` backend) scales each run's activations by that run's range, so its scores can
move with the batch; the float backend's should not.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _indexing_common import SQUAD  # noqa: E402

from bertino_rag.rerank.cross_encoder import CrossEncoderReranker  # noqa: E402
from bertino_rag.training.data import load_pairs  # noqa: E402


def _ranks(x: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(x, kind="stable"), kind="stable")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("reranker", help="a cross-encoder folder")
    ap.add_argument("--data", default=str(SQUAD))
    ap.add_argument("--pairs", type=int, default=24)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--backends", nargs="+", default=["onnx-int8", "torch"])
    args = ap.parse_args()
    data = load_pairs(args.data)
    docs = list(data.corpus.values())
    questions = [p.query for p in data.pairs[: -(-args.pairs // 3)] for _ in range(3)]
    questions, texts = questions[: args.pairs], docs[: args.pairs]
    for backend in args.backends:
        kwargs = ({"backend": "onnx", "quantize": "int8"} if backend == "onnx-int8"
                  else {"backend": backend})
        reranker = CrossEncoderReranker(str(Path(args.reranker)), device="cpu",
                                        max_length=args.max_length, **kwargs)
        together = np.asarray(reranker.score_pairs(questions, texts), dtype=np.float64)
        alone = np.asarray([reranker.score_pairs([q], [t])[0]
                            for q, t in zip(questions, texts, strict=True)], dtype=np.float64)
        print(json.dumps({
            "backend": backend, "pairs": len(texts),
            "max_abs_difference": round(float(np.abs(together - alone).max()), 6),
            "score_range": [round(float(together.min()), 4), round(float(together.max()), 4)],
            "rank_correlation": round(float(np.corrcoef(_ranks(together), _ranks(alone))[0, 1]),
                                      4)}), flush=True)


if __name__ == "__main__":
    main()
