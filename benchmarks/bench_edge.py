"""Qdrant Edge next to MemoryStore and qdrant-client's local mode, on the same vectors.

Random unit vectors (384-d full, the first 128 dims renormalized as the index vector; store
speed does not depend on what the vectors mean). Each configuration runs in its own process so
that its memory is its own. For every store: upsert rate, p50/p95 of single queries (top 10),
plain and two-stage (rerank_k=100); for Edge also the HNSW build time, exact search (the
engine's brute force), int8 quantization, recall@10 of HNSW against exact, and bytes per point
on disk. Run:

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


def run_one(kind: str, n: int, queries: int) -> dict[str, Any]:
    from bertino_rag.types import Document, Stamp

    index, full = vectors(n, 0)
    qi, qf = vectors(queries, 1)
    docs = [Document(text=f"documento {i}", id=f"d{i}", metadata={"i": i}) for i in range(n)]
    stamp = Stamp(model="bench", full_dim=FULL, index_dim=DIM)
    tmp = Path(tempfile.mkdtemp(prefix="bench-edge-"))
    base = rss_mb()
    if kind == "memory":
        from bertino_rag.adapters import MemoryStore

        store: Any = MemoryStore(tmp)
    elif kind == "qdrant-local":
        from bertino_rag.adapters.qdrant import QdrantStore

        store = QdrantStore()  # in memory: a local-mode folder writes under 100 points/s
    else:
        from bertino_rag.adapters.qdrant_edge import QdrantEdgeStore

        store = QdrantEdgeStore(tmp, quantization="int8" if kind == "edge-int8" else None)
    store.open("bench", stamp)
    t0 = time.perf_counter()
    for s in range(0, n, 10_000):
        store.upsert(docs[s:s + 10_000], index[s:s + 10_000], full[s:s + 10_000])
    out: dict[str, Any] = {"store": kind, "n": n, "upsert_per_s": n / (time.perf_counter() - t0)}
    q = min(queries, 20) if kind == "qdrant-local" else queries
    if kind.startswith("edge"):
        from bertino_rag.adapters.qdrant_edge import QdrantEdgeStore

        secs, before = timed(store, qi[:q], None)
        out["before_build_ms"] = pct(secs)
        t0 = time.perf_counter()
        store.build_index()
        out["build_s"] = time.perf_counter() - t0
        exact = QdrantEdgeStore(tmp, exact=True)
        exact.open("bench", stamp)
        secs, want = timed(exact, qi[:q], None)
        out["exact_ms"] = pct(secs)
        exact.close()
    secs, got = timed(store, qi[:q], None)
    out["search_ms"] = pct(secs)
    secs, _ = timed(store, qi[:q], qf[:q])
    out["two_stage_ms"] = pct(secs)
    if kind.startswith("edge"):
        out["recall_at_10"] = float(np.mean([
            len({h.id for h in g} & {h.id for h in w}) / 10 for g, w in zip(got, want, strict=True)
        ]))
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
                    default=["edge", "edge-int8", "memory", "qdrant-local"])
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.n, args.queries)))
        return
    for kind in args.stores:
        res = subprocess.run([sys.executable, __file__, "--one", kind, "--n", str(args.n),
                              "--queries", str(args.queries)], capture_output=True, text=True,
                             env=os.environ)
        if res.returncode != 0:
            print(f"{kind}: failed\n{res.stderr[-2000:]}", file=sys.stderr)
            continue
        print(res.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
