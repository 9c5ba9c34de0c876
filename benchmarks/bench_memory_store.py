"""MemoryStore latency and memory at 100k / 1M points, next to plain numpy on the same vectors.

Vectors are random unit vectors (768-d full, first 128 dims renormalized as the index vector):
store latency does not depend on what the vectors mean, and encoding a million texts is out of
reach of this machine. Run:

    python benchmarks/bench_memory_store.py --sizes 100000 1000000 --queries 200
"""

from __future__ import annotations

import argparse
import functools
import resource
import tempfile
import time

import numpy as np

from bertino_rag.encoder import matryoshka_slice
from bertino_rag.stores import MemoryStore
from bertino_rag.types import Document, Stamp

FULL, DIM = 768, 128


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, FULL), dtype=np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def pct(xs: list[float]) -> tuple[float, float]:
    return float(np.percentile(xs, 50)), float(np.percentile(xs, 95))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--batch", type=int, default=10_000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            store = MemoryStore(path=tmp)
            store.open("bench", Stamp(model="synthetic", full_dim=FULL, index_dim=DIM))
            plain_index = np.empty((n, DIM), dtype=np.float32)  # the plain-numpy baseline
            plain_full = np.empty((n, FULL), dtype=np.float16)
            t0 = time.perf_counter()
            for start in range(0, n, args.batch):
                full = unit(rng, min(args.batch, n - start))
                idx = matryoshka_slice(full, DIM)
                plain_index[start:start + len(full)] = idx
                plain_full[start:start + len(full)] = full
                docs = [Document(text=f"doc {start + i}", id=str(start + i),
                                 metadata={"bucket": (start + i) % 10})
                        for i in range(len(full))]
                store.upsert(docs, idx, full)
            upsert_s = time.perf_counter() - t0
            queries = unit(rng, args.queries)
            qidx = matryoshka_slice(queries, DIM)
            lat = {"numpy": [], "store": [], "numpy_2stage": [], "store_2stage": [],
                   "store_filter": []}
            agree = 0
            for qi in range(args.queries):  # interleaved, so both see the same machine load
                t = time.perf_counter()
                s = plain_index @ qidx[qi]
                top = np.argpartition(-s, 10)[:10]
                top = top[np.argsort(-s[top])]
                lat["numpy"].append(time.perf_counter() - t)
                t = time.perf_counter()
                hits = store.search(qidx[qi], k=10)
                lat["store"].append(time.perf_counter() - t)
                agree += [h.id for h in hits] == [str(i) for i in top]
                t = time.perf_counter()
                cand = np.argpartition(-s, 100)[:100]
                fs = plain_full[cand].astype(np.float32) @ queries[qi]
                _ = cand[np.argsort(-fs)[:10]]
                lat["numpy_2stage"].append(time.perf_counter() - t + lat["numpy"][-1])
                t = time.perf_counter()
                store.search(qidx[qi], k=10, full_vector=queries[qi], rerank_k=100)
                lat["store_2stage"].append(time.perf_counter() - t)
                t = time.perf_counter()
                store.search(qidx[qi], k=10, filter={"bucket": 3})
                lat["store_filter"].append(time.perf_counter() - t)
            segments = len(store._segments)
            store.close()
            # the same filter once the field has a SQLite expression index
            t = time.perf_counter()
            store = MemoryStore(path=tmp, index_fields=["bucket"])
            store.open("bench", Stamp(model="synthetic", full_dim=FULL, index_dim=DIM))
            build_s = time.perf_counter() - t
            lat["store_filter_indexed"] = []
            for qi in range(args.queries):
                t = time.perf_counter()
                store.search(qidx[qi], k=10, filter={"bucket": 3})
                lat["store_filter_indexed"].append(time.perf_counter() - t)
            store.close()
            rows.append((n, upsert_s, {k: pct(v) for k, v in lat.items()}, agree, rss_mb(),
                         segments, build_s))
    print("| points | upsert s | segments | numpy 128-d p50/p95 ms | store 128-d p50/p95 ms | "
          "numpy 2-stage p50/p95 ms | store 2-stage (rerank_k=100) p50/p95 ms | "
          "store filtered (10% match) p50/p95 ms | same, field indexed (index build s) | "
          "same top-10 | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")

    def ms(p: dict, k: str) -> str:
        return f"{p[k][0] * 1e3:.1f} / {p[k][1] * 1e3:.1f}"

    for n, up, p, agree, rss, segs, build in rows:
        f = functools.partial(ms, p)
        print(f"| {n:,} | {up:.1f} | {segs} | {f('numpy')} | {f('store')} | {f('numpy_2stage')} | "
              f"{f('store_2stage')} | {f('store_filter')} | "
              f"{f('store_filter_indexed')} ({build:.1f}) | {agree}/{args.queries} | {rss:.0f} |")


if __name__ == "__main__":
    main()
