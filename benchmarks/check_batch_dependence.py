"""Does a reranker's score of a pair, or an encoder's vector of a text, depend on the batch?
And what does one pass per pair (the int8 default) cost against batches?

    python benchmarks/check_batch_dependence.py /tmp/bench-rerank-12l/reranker
    python benchmarks/check_batch_dependence.py --encoder /tmp/e5-small

Reranker: ``--queries`` squad-it-dev questions, each with ``--candidates`` paragraphs (its own
and the ones after it in the corpus, mostly of its article). Each setting scores a query's
candidates in one ``score_pairs`` call (timed: the latency of reranking one query) and then
each pair alone; printed per setting: the largest difference of a pair's score between the two,
the median latency, and its agreement with torch (largest score difference, mean rank
correlation within a query, top-1 agreement). With ``--encoder``: ``--candidates`` paragraphs
encoded in one call and each alone; the lowest cosine between a text's two vectors and with
torch's, and the seconds of the one call.

Settings: ``torch`` (32 per pass), ``onnx-int8`` (the default for dynamic int8: one per pass),
``onnx-int8-b32`` (dynamic int8, 32 per pass), ``openvino`` (float; bf16 where the CPU has
it) and ``openvino-b1`` (one per pass). Dynamic quantization scales each pass's activations
by that pass's range, so batched int8 outputs move with their batch.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _indexing_common import SQUAD  # noqa: E402

from bertino_rag.rerank.cross_encoder import CrossEncoderReranker  # noqa: E402
from bertino_rag.training.data import load_pairs  # noqa: E402

SETTINGS = {"torch": {"backend": "torch"},
            "onnx-int8": {"backend": "onnx", "quantize": "int8"},
            "onnx-int8-b32": {"backend": "onnx", "quantize": "int8", "batch_size": 32},
            # float OpenVINO (bf16 where the CPU has it), 32 per pass
            "openvino": {"backend": "openvino"},
            "openvino-b1": {"backend": "openvino", "batch_size": 1}}


def _ranks(x: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(x, kind="stable"), kind="stable")


def _rank_corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _check_encoder(model: str, texts: list[str], settings: list[str]) -> None:
    from bertino_rag import Encoder

    ref = None
    for name in settings:
        encoder = Encoder(model, device="cpu", **SETTINGS[name])
        encoder.encode(texts[:2], warn_truncation=False)  # warm-up
        t0 = time.perf_counter()
        together = _unit(encoder.encode(texts, warn_truncation=False).full)
        secs = time.perf_counter() - t0
        alone = _unit(np.concatenate([encoder.encode([t], warn_truncation=False).full
                                      for t in texts]))
        ref = together if ref is None else ref
        print(json.dumps({"encoder": model, "setting": name, "batch_size": encoder.batch_size,
                          "texts": len(texts), "one_call_s": round(secs, 3),
                          "min_cosine_alone_vs_together": round(float(
                              (together * alone).sum(1).min()), 6),
                          f"min_cosine_vs_{settings[0]}": round(float(
                              (together * ref).sum(1).min()), 6)}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="a cross-encoder folder (with --encoder: a "
                                  "sentence-transformers folder)")
    ap.add_argument("--encoder", action="store_true", help="check an encoder instead")
    ap.add_argument("--data", default=str(SQUAD))
    ap.add_argument("--queries", type=int, default=10)
    ap.add_argument("--candidates", type=int, default=20)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--settings", nargs="+", default=["torch", "onnx-int8", "onnx-int8-b32"],
                    choices=list(SETTINGS),
                    help="the first is the reference the others are compared with")
    args = ap.parse_args()
    data = load_pairs(args.data)
    ids = list(data.corpus)
    if args.encoder:
        _check_encoder(args.model, [data.corpus[i] for i in ids[: args.candidates]],
                       args.settings)
        return
    step = max(1, len(data.pairs) // args.queries)
    groups = []
    for pair in data.pairs[::step][: args.queries]:
        start = min(ids.index(pair.doc_id), len(ids) - args.candidates)
        groups.append((pair.query, [data.corpus[i] for i in ids[start:start + args.candidates]]))
    ref: list[np.ndarray] | None = None
    for name in args.settings:
        reranker = CrossEncoderReranker(str(Path(args.model)), device="cpu",
                                        max_length=args.max_length, **SETTINGS[name])
        reranker.score_pairs([groups[0][0]] * 2, groups[0][1][:2])  # warm-up
        together, ms, drift = [], [], 0.0
        for q, texts in groups:
            t0 = time.perf_counter()
            got = np.asarray(reranker.score_pairs([q] * len(texts), texts), np.float64)
            ms.append((time.perf_counter() - t0) * 1000)
            together.append(got)
            alone = np.asarray([reranker.score_pairs([q], [t])[0] for t in texts], np.float64)
            drift = max(drift, float(np.abs(got - alone).max()))
        ref = together if ref is None else ref
        print(json.dumps({
            "setting": name, "batch_size": reranker.batch_size, "queries": len(groups),
            "candidates": args.candidates,
            "max_abs_difference_alone_vs_together": round(drift, 6),
            "ms_per_query_p50": round(statistics.median(ms), 1),
            f"max_abs_difference_vs_{args.settings[0]}": round(float(max(
                np.abs(a - b).max() for a, b in zip(together, ref, strict=True))), 6),
            f"rank_correlation_vs_{args.settings[0]}": round(float(np.mean([
                _rank_corr(a, b) for a, b in zip(together, ref, strict=True)])), 4),
            f"top1_agreement_vs_{args.settings[0]}": round(float(np.mean([
                int(np.argmax(a) == np.argmax(b)) for a, b in zip(together, ref, strict=True)])),
                3)}), flush=True)


if __name__ == "__main__":
    main()
