"""Qdrant Edge next to MemoryStore and qdrant-client's local mode, on the same vectors.

Random unit vectors (384-d full, the first 128 dims renormalized as the index vector; store
speed does not depend on what the vectors mean). Each configuration runs in its own process so
that its memory is its own. For every store: upsert rate, p50/p95 of single queries (top 10),
plain and two-stage (rerank_k=100), RSS and bytes per point on disk; for Edge also the search
before the HNSW build, the build time, exact search (the engine's brute force) and recall@10 of
HNSW (and of int8 with rescoring) against exact numpy search. ``binary`` measures the recall of
binary quantization of the 128-d vector (HNSW, oversampling 3, rescored) next to none and int8,
on the random vectors and on real squad-it-dev MiniLM vectors (cached by
``_indexing_common.squad_minilm_vectors``, encoded on first use). Run:

    python benchmarks/bench_edge.py --n 100000 --queries 200
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

FULL, DIM = 384, 128


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def vectors(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    full = rng.standard_normal((n, FULL), dtype=np.float32)
    full /= np.linalg.norm(full, axis=1, keepdims=True)
    index = full[:, :DIM] / np.linalg.norm(full[:, :DIM], axis=1, keepdims=True)
    return index, full


def pct(xs: list[float]) -> tuple[float, float]:
    return float(np.percentile(xs, 50)) * 1000, float(np.percentile(xs, 95)) * 1000


def timed(store: Any, qi: np.ndarray, qf: np.ndarray | None) -> tuple[list[float], list[Any]]:
    secs, hits = [], []
    for i in range(len(qi)):
        t0 = time.perf_counter()
        if qf is None:
            hits.append(store.search(qi[i], k=10))
        else:
            hits.append(store.search(qi[i], k=10, full_vector=qf[i], rerank_k=100))
        secs.append(time.perf_counter() - t0)
    return secs, hits


def du(path: Path) -> int:
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file())  # allocated


def exact_top10(index: np.ndarray, qi: np.ndarray) -> list[set[str]]:
    out = []
    for q in qi:
        scores = index @ q
        top = np.argpartition(-scores, 10)[:10]
        out.append({f"d{i}" for i in top})
    return out


def recall(got: list[Any], want: list[set[str]]) -> float:
    return float(np.mean([len({h.id for h in g} & w) / 10 for g, w in zip(got, want, strict=True)]))


def binary_recall(index: np.ndarray, qi: np.ndarray, label: str) -> dict[str, Any]:
    """recall@10 against exact of HNSW on the 128-d vector with no, int8 and binary
    quantization (rescored with the originals, oversampling 3), on a raw Edge shard."""
    import qdrant_edge as qe

    want = exact_top10(index, qi)
    out: dict[str, Any] = {"store": f"quantization recall ({label})", "n": len(index)}
    kinds = {
        "none": None,
        "int8": qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, quantile=0.99,
                                            memory=qe.Memory.Cached),
        "binary": qe.BinaryQuantizationConfig(memory=qe.Memory.Cached),
    }
    for name, quant in kinds.items():
        tmp = tempfile.mkdtemp(prefix="bench-edge-bq-")
        cfg = qe.EdgeConfig(
            vectors={"v": qe.EdgeVectorParams(
                size=index.shape[1], distance=qe.Distance.Cosine,
                hnsw_config=qe.HnswIndexConfig(m=16, ef_construct=100, full_scan_threshold=1),
                quantization_config=quant)},
            optimizers=qe.EdgeOptimizersConfig(indexing_threshold=1))
        shard = qe.EdgeShard.create(tmp + "/s", cfg)
        for s in range(0, len(index), 1024):
            shard.update(qe.UpdateOperation.upsert_points(
                [qe.Point(i, {"v": index[i]}, {}) for i in range(s, min(len(index), s + 1024))]))
        shard.optimize()
        params = None if quant is None else qe.SearchParams(
            quantization=qe.QuantizationSearchParams(rescore=True, oversampling=3.0))
        got = []
        for q in qi:
            pts = shard.query(qe.QueryRequest(limit=10, query=qe.Query.Nearest(q.tolist(),
                                                                             using="v"),
                                              params=params))
            got.append({f"d{p.id}" for p in pts})
        out[f"recall_{name}"] = float(np.mean([len(g & w) / 10
                                               for g, w in zip(got, want, strict=True)]))
        shard.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def run_binary(n: int, queries: int, cache: Path) -> list[dict[str, Any]]:
    index, _ = vectors(min(n, 100_000), 0)
    qi, _ = vectors(queries, 1)
    rows = [binary_recall(index, qi, "random unit vectors")]
    sys.path.insert(0, str(Path(__file__).parent))
    from _indexing_common import squad_minilm_vectors

    _, _, _, docs, qs = squad_minilm_vectors(cache)
    cut = docs[:, :DIM] / np.linalg.norm(docs[:, :DIM], axis=1, keepdims=True)
    qcut = qs[:, :DIM] / np.linalg.norm(qs[:, :DIM], axis=1, keepdims=True)
    rows.append(binary_recall(cut.astype(np.float32), qcut[:1000].astype(np.float32),
                              "squad-it-dev MiniLM, 1,128 paragraphs, 1,000 questions"))
    return rows


def run_one(kind: str, n: int, queries: int) -> dict[str, Any]:
    from bertino_rag.types import Document, Stamp

    index, full = vectors(n, 0)
    qi, qf = vectors(queries, 1)
    docs = [Document(text=f"documento {i}", id=f"d{i}", metadata={"i": i}) for i in range(n)]
    stamp = Stamp(model="bench", full_dim=FULL, index_dim=DIM)
    tmp = Path(tempfile.mkdtemp(prefix="bench-edge-"))
    base = rss_mb()
    if kind == "memory":
        from bertino_rag.stores import MemoryStore

        store: Any = MemoryStore(tmp)
    elif kind == "qdrant-local":
        from bertino_rag.stores.qdrant import QdrantStore

        store = QdrantStore()  # in memory: a local-mode folder writes under 100 points/s
    else:
        from bertino_rag.stores.qdrant.edge import QdrantEdgeStore

        store = QdrantEdgeStore(tmp, quantization="int8" if kind == "edge-int8" else None)
    store.open("bench", stamp)
    t0 = time.perf_counter()
    for s in range(0, n, 10_000):
        store.upsert(docs[s:s + 10_000], index[s:s + 10_000], full[s:s + 10_000])
    out: dict[str, Any] = {"store": kind, "n": n, "upsert_per_s": n / (time.perf_counter() - t0)}
    q = min(queries, 20) if kind == "qdrant-local" else queries
    want = exact_top10(index, qi[:q])
    if kind.startswith("edge"):
        from bertino_rag.stores.qdrant.edge import QdrantEdgeStore

        secs, before = timed(store, qi[:q], None)
        out["before_build_ms"] = pct(secs)
        out["before_build_recall"] = recall(before, want)
        t0 = time.perf_counter()
        store.build_index()
        out["build_s"] = time.perf_counter() - t0
        out["indexed_fraction"] = store.indexed_fraction()
        exact = QdrantEdgeStore(tmp, exact=True)
        exact.open("bench", stamp)
        secs, got_exact = timed(exact, qi[:q], None)
        out["exact_ms"] = pct(secs)
        out["exact_recall"] = recall(got_exact, want)
        secs, _ = timed(exact, qi[:q], qf[:q])
        out["exact_two_stage_ms"] = pct(secs)
        exact.close()
    secs, got = timed(store, qi[:q], None)
    out["search_ms"] = pct(secs)
    out["recall_at_10"] = recall(got, want)
    secs, _ = timed(store, qi[:q], qf[:q])
    out["two_stage_ms"] = pct(secs)
    out["rss_mb"] = rss_mb() - base
    if kind != "qdrant-local":
        out["disk_bytes_per_point"] = du(tmp) / n
    store.close()
    shutil.rmtree(tmp, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--stores", nargs="+",
                    default=["edge", "edge-int8", "memory", "qdrant-local", "binary"])
    ap.add_argument("--cache", default="/tmp/bertino-bench/squad_minilm.npz",
                    help="squad-it-dev MiniLM vectors (binary quantization recall)")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one == "binary":
        for row in run_binary(args.n, args.queries, Path(args.cache)):
            print(json.dumps(row))
        return
    if args.one:
        print(json.dumps(run_one(args.one, args.n, args.queries)))
        return
    print(json.dumps({"load_average": os.getloadavg(), "cpus": len(os.sched_getaffinity(0))}))
    for kind in args.stores:
        res = subprocess.run([sys.executable, __file__, "--one", kind, "--n", str(args.n),
                              "--queries", str(args.queries), "--cache", args.cache],
                             capture_output=True, text=True, env=os.environ)
        if res.returncode != 0:
            print(f"{kind}: failed\n{res.stderr[-2000:]}", file=sys.stderr)
            continue
        for line in res.stdout.strip().splitlines():
            if line.startswith("{"):
                print(line, flush=True)


if __name__ == "__main__":
    main()
