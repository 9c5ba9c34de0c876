"""Query latency per search mode at 100k documents, and the cost of lexical indexing.

Documents are real Italian text: each is three sentences drawn at random from squad-it-dev's
paragraphs (so term statistics are those of Italian prose, not of one repeated paragraph).
Vectors are random unit vectors (``--full-dim``, searched at ``--dim``): the store's work
does not depend on what the vectors mean, and query encoding, the same in every mode, is left
out. Each mode answers the same squad-it-dev questions one at a time:

- dense: two-stage, ``--rerank-k`` candidates on the truncated vectors, rescored with full;
- lexical: BM25 on the analyzed question;
- hybrid: both candidate sets, the union rescored with full vectors, min-max fused.

Each store in ``--stores`` gets the same documents, vectors and questions, so their rows
compare; the ratio to dense is each store's own.

Usage:
    python benchmarks/bench_hybrid_latency.py [--docs 100000] [--queries 300]
        [--stores memory,qdrant,qdrant-edge:DIR]

Each store's search index is built after its writes (``build_index``, as ``Retriever.index``
does: HNSW on Qdrant Edge), and its time is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np

from bertino_rag.data import load_beir
from bertino_rag.evaluation.cost import percentiles_ms
from bertino_rag.lexical import BM25, Analyzer, lexical_spec
from bertino_rag.stores import make_store
from bertino_rag.types import Document, Stamp

REPO = Path(__file__).resolve().parents[1]


def corpus(data: str, n: int, seed: int) -> list[str]:
    beir = load_beir(data)
    sentences = [s for d in beir.corpus.values() for s in re.split(r"(?<=[.!?])\s+", d["text"])
                 if len(s) > 20]
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(sentences), size=(n, 3))
    return [" ".join(sentences[i] for i in row) + f" (doc {j})" for j, row in enumerate(picks)]


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    v = rng.standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def latencies(store, qfull: np.ndarray, dim: int, questions: list[str],
              rerank_k: int) -> dict[str, dict[str, float] | None]:
    """p50/p95 of single-query calls per mode, after a short warm-up."""
    qidx = qfull[:, :dim] / np.linalg.norm(qfull[:, :dim], axis=1, keepdims=True)
    calls = {
        "dense": lambda i: store.search(qidx[i], 10, full_vector=qfull[i], rerank_k=rerank_k),
        "lexical": lambda i: store.lexical_search(questions[i], 10),
        "hybrid": lambda i: store.hybrid_search(qidx[i], questions[i], 10,
                                                full_vector=qfull[i], rerank_k=rerank_k),
    }
    out: dict[str, dict[str, float] | None] = {}
    for mode, call in calls.items():
        for i in range(5):
            call(i)
        seconds = []
        for i in range(len(questions)):
            t0 = time.perf_counter()
            call(i)
            seconds.append(time.perf_counter() - t0)
        out[mode] = percentiles_ms(seconds)
    return out


def run_store(spec: str, args, texts: list[str], questions: list[str], analyzer: Analyzer
              ) -> tuple[dict[str, dict[str, float] | None], dict[str, float]]:
    """Write the documents dense-only, then hybrid; latencies per mode on the hybrid one."""
    rng = np.random.default_rng(0)  # the same vectors for every store
    results: dict[str, dict[str, float] | None] = {}
    write_s: dict[str, float] = {}
    build_s: dict[str, float] = {}
    for hybrid in (False, True):
        store = make_store(spec)
        stamp = Stamp(model="bench", full_dim=args.full_dim, index_dim=args.dim,
                      lexical=lexical_spec(analyzer, BM25()) if hybrid else None)
        store.open("bench_hybrid_latency", stamp, recreate=True)
        spent = 0.0
        for start in range(0, args.docs, args.batch):
            chunk = texts[start : start + args.batch]
            full = unit(rng, len(chunk), args.full_dim)
            index = full[:, : args.dim] / np.linalg.norm(full[:, : args.dim], axis=1,
                                                          keepdims=True)
            docs = [Document(text=t, id=f"d{start + i}") for i, t in enumerate(chunk)]
            t0 = time.perf_counter()
            store.upsert(docs, index, full)
            spent += time.perf_counter() - t0
        t0 = time.perf_counter()
        store.build_index()  # what Retriever.index does last (HNSW on Qdrant Edge; else nothing)
        write_s["hybrid" if hybrid else "dense"] = spent
        build_s["hybrid" if hybrid else "dense"] = time.perf_counter() - t0
        if not hybrid:
            store.drop()
            store.close()
            continue
        qfull = unit(rng, len(questions), args.full_dim)
        results = latencies(store, qfull, args.dim, questions, args.rerank_k)
        store.drop()
        store.close()
    write_s.update({f"build_{k}": v for k, v in build_s.items()})
    return results, write_s


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "squad-it-dev"))
    p.add_argument("--docs", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=300)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--full-dim", type=int, default=768)
    p.add_argument("--rerank-k", type=int, default=100)
    p.add_argument("--stores", "--store", default="memory",
                   help="comma-separated store specs (memory, qdrant, milvus:FILE.db...)")
    p.add_argument("--batch", type=int, default=2048)
    p.add_argument("--json", action="store_true",
                   help="also print one JSON line per store and mode (for ab_trees.py)")
    args = p.parse_args(argv)

    texts = corpus(args.data, args.docs, seed=1)
    questions = list(load_beir(args.data).queries.values())[: args.queries]
    analyzer = Analyzer()
    t0 = time.perf_counter()
    for t in texts:
        analyzer.counts(t)
    analyze_s = time.perf_counter() - t0

    specs = args.stores.split(",")
    runs = {spec: run_store(spec, args, texts, questions, analyzer) for spec in specs}

    print(f"\n{args.docs} documents, {len(questions)} questions, stores {', '.join(specs)}, "
          f"{args.dim} of {args.full_dim} dims, rerank_k={args.rerank_k}; "
          f"{platform.machine()}, {os.cpu_count()} CPUs\n")
    print("| Store | Mode | p50 ms | p95 ms | p50 vs dense |\n|:--|:--|--:|--:|--:|")
    for spec, (results, _) in runs.items():
        base = results["dense"]
        for mode, lat in results.items():
            assert lat is not None and base is not None
            print(f"| {spec} | {mode} | {lat['p50']:.2f} | {lat['p95']:.2f} | "
                  f"{lat['p50'] / base['p50']:.2f}x |")
    if args.json:
        for spec, (results, writes) in runs.items():
            for mode, lat in results.items():
                assert lat is not None
                print(json.dumps({"bench": "hybrid_latency", "store": spec, "mode": mode,
                                  "p50_ms": lat["p50"], "p95_ms": lat["p95"]}))
            print(json.dumps({"bench": "hybrid_latency", "store": spec, "mode": "writes",
                              **{f"{k}_s": v for k, v in writes.items()}}))
    print(f"\nIndexing {args.docs} documents: analysis {analyze_s:.1f} s; store writes "
          + "; ".join(
        f"{spec} dense {w['dense']:.1f} s, hybrid {w['hybrid']:.1f} s "
        f"(+{w['hybrid'] - w['dense']:.1f} s, analysis included)"
        + (f", index build dense {w['build_dense']:.1f} s, hybrid {w['build_hybrid']:.1f} s"
           if w["build_hybrid"] > 0.5 else "")
        for spec, (_, w) in runs.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
