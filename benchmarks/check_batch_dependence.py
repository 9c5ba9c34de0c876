"""Does a reranker's score of a pair, or an encoder's vector of a text, depend on the batch?

    python benchmarks/check_batch_dependence.py /tmp/bench-rerank-12l/reranker
    python benchmarks/check_batch_dependence.py --encoder /tmp/e5-small

Scores ``--pairs`` (question, paragraph) pairs of squad-it-dev twice with each backend: all in
one ``score_pairs`` call, then each alone, and prints the largest difference of a pair's score
between the two and the rank correlation of the two orders. With ``--encoder``, encodes
``--pairs`` paragraphs the same two ways and prints the lowest cosine between a text's two
full vectors. Dynamic int8 quantization (the ``onnx-int8`` backend) scales each run's
activations by that run's range, so its outputs can move with the batch; the float backend's
should not.
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


def _check_encoder(model: str, texts: list[str], backend: str, kwargs: dict) -> None:
    from bertino_rag import Encoder

    encoder = Encoder(model, device="cpu", **kwargs)
    together = np.asarray(encoder.encode(texts, warn_truncation=False).full, dtype=np.float64)
    alone = np.concatenate([np.asarray(encoder.encode([t], warn_truncation=False).full,
                                       dtype=np.float64) for t in texts])
    cos = (together * alone).sum(1) / (np.linalg.norm(together, axis=1)
                                       * np.linalg.norm(alone, axis=1))
    print(json.dumps({"encoder": model, "backend": backend, "texts": len(texts),
                      "min_cosine": round(float(cos.min()), 6)}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="a cross-encoder folder (with --encoder: a "
                                  "sentence-transformers folder)")
    ap.add_argument("--encoder", action="store_true", help="check an encoder instead")
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
        if args.encoder:
            _check_encoder(args.model, texts, backend, kwargs)
            continue
        reranker = CrossEncoderReranker(str(Path(args.model)), device="cpu",
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
