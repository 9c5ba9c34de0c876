"""Query latency p50/p95 (encode the query + search + rescore) at 10k and 100k points.

Usage:
    python benchmarks/bench_query.py --dir DIR [--queries 200] [--sizes 10000,100000]

DIR holds the ``synthetic`` collection written by ``bench_memory.py bertino --dir DIR``
(real MiniLM vectors of synthetic documents). For each size the first N documents' stored
vectors are copied into a collection of that size. Per query, interleaved:
- ``bertino``: ``Retriever.search(q, k=10)`` (128-d search of all points, 100 candidates
  rescored with the full 384-d vectors);
- ``plain``: ``SentenceTransformer.encode(q)`` then an exact numpy dot product over the full
  384-d vectors and ``argpartition`` (the plain way, vectors held in RAM).
Queries are squad-it-dev questions.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np
from _indexing_common import SQUAD, add_encoder_args, encoder_from, machine


def percentiles(xs: list[float]) -> dict:
    ms = np.asarray(xs) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p95_ms": round(float(np.percentile(ms, 95)), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--sizes", default="10000,100000")
    add_encoder_args(ap)
    args = ap.parse_args()
    from bertino_rag import MemoryStore, Retriever
    from bertino_rag.data import load_beir
    from bertino_rag.encoder import matryoshka_slice

    warnings.simplefilter("ignore")
    enc = encoder_from(args)
    queries = list(load_beir(SQUAD).queries.values())[: args.queries]
    source = MemoryStore(path=args.dir)
    src = Retriever(dim=128, encoder=enc, store=source, collection="synthetic")
    total = src.count()
    print(json.dumps({"machine": machine(), "args": vars(args), "points_available": total}),
          flush=True)
    for size in [int(s) for s in args.sizes.split(",")]:
        if size > total:
            print(json.dumps({"skip": size, "why": f"only {total} points in {args.dir}"}))
            continue
        ids = [f"syn-{i}" for i in range(size)]
        if size == total:
            r = src
        else:
            r = Retriever(dim=128, encoder=enc, collection=f"q{size}")
            for s in range(0, size, 5000):
                docs = source.get(ids[s : s + 5000])
                full = source.fetch_full([d.id for d in docs]).astype(np.float32)
                r.store.upsert(docs, matryoshka_slice(full, 128), matryoshka_slice(full, 384))
        full = np.concatenate([source.fetch_full(ids[s : s + 5000]).astype(np.float32)
                               for s in range(0, size, 5000)])
        plain_ids = np.asarray(ids)
        lat: dict[str, list[float]] = {"bertino": [], "plain": []}
        for q in queries[:5]:
            r.search(q, k=10)
        for i, q in enumerate(queries):
            for name in (["bertino", "plain"] if i % 2 == 0 else ["plain", "bertino"]):
                started = time.perf_counter()
                if name == "bertino":
                    r.search(q, k=10)
                else:
                    qv = enc.model.encode([q], convert_to_numpy=True)[0]
                    scores = full @ qv
                    top = np.argpartition(-scores, 10)[:10]
                    plain_ids[top[np.argsort(-scores[top])]]
                lat[name].append(time.perf_counter() - started)
        for name, xs in lat.items():
            print(json.dumps({"bench": "query", "store": "memory", "points": size, "name": name,
                              "queries": len(xs), **percentiles(xs)}), flush=True)


if __name__ == "__main__":
    main()
