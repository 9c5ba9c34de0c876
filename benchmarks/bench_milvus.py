"""MilvusStore on Milvus Lite: insert rate, search latency, bytes per entity, NDCG@10.

Usage:
    HF_HUB_OFFLINE=1 python benchmarks/bench_milvus.py --sizes 10000 100000 --out results.json

1. Throughput and latency: MilvusStore next to plain pymilvus doing the same work (same
   schema minus the filter/lookup fields, insert in batches of 512, search with the full
   vectors returned and rescored in numpy), both on Milvus Lite, in the same run. Vectors are
   the real MiniLM vectors of squad-it-dev paragraphs, repeated with small Gaussian noise
   (renormalized) up to the wanted size: encoding 100k texts on 2 cores is out of reach.
2. Bytes per entity: size of the Milvus Lite folder after flush, for each layout.
3. NDCG@10 (pytrec_eval) on squad-it-dev, MiniLM, 128-d index, two-stage with
   rerank_k in {20, 50, 100, 200}, next to exact full-dim search (MemoryStore, 384-d).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _indexing_common import squad_minilm_vectors

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA = Path(os.environ.get("BERTINO_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def trunc(full: np.ndarray, dim: int) -> np.ndarray:
    t = full[:, :dim].astype(np.float32)
    return t / np.linalg.norm(t, axis=1, keepdims=True)


def synthetic(dfull: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = dfull[np.arange(n) % len(dfull)] + rng.normal(scale=0.02, size=(n, dfull.shape[1]))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000, q))


def bench_store(uri: str, full: np.ndarray, queries: np.ndarray, rerank: bool, nq: int):
    from bertino_rag.stores.milvus import MilvusStore
    from bertino_rag.types import Document, Stamp

    n, fd = full.shape
    index = trunc(full, 128)
    docs = [Document(text=f"Paragrafo sintetico numero {i}.", id=f"d{i}",
                     metadata={"n": i, "part": i % 7}) for i in range(n)]
    store = MilvusStore(uri=uri)
    store.open("bench", Stamp(model="minilm", full_dim=fd, index_dim=128, full_vectors=rerank),
                recreate=True)
    t0 = time.perf_counter()
    for s in range(0, n, 512):
        store.upsert(docs[s : s + 512], index[s : s + 512],
                     full[s : s + 512] if rerank else None)
    t_insert = time.perf_counter() - t0
    t0 = time.perf_counter()
    store.flush()
    t_flush = time.perf_counter() - t0
    qi = trunc(queries, 128)
    lat1, lat2 = [], []
    for i in range(nq):
        t0 = time.perf_counter()
        store.search(qi[i], k=10)
        lat1.append(time.perf_counter() - t0)
        if rerank:
            t0 = time.perf_counter()
            store.search(qi[i], k=10, full_vector=queries[i], rerank_k=100)
            lat2.append(time.perf_counter() - t0)
    store.close()
    return {"insert_per_s": n / t_insert, "flush_s": t_flush,
            "search_p50_ms": pct(lat1, 50), "search_p95_ms": pct(lat1, 95),
            **({"two_stage_p50_ms": pct(lat2, 50), "two_stage_p95_ms": pct(lat2, 95)}
               if rerank else {})}


def bench_plain(uri: str, full: np.ndarray, queries: np.ndarray, nq: int):
    """The same work written directly against pymilvus."""
    from pymilvus import DataType, MilvusClient

    n, fd = full.shape
    index = trunc(full, 128)
    half = full.astype(np.float16).astype(np.float32)
    client = MilvusClient(uri)
    if client.has_collection("plain"):
        client.drop_collection("plain")
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=512)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=128)
    schema.add_field("full_vector", DataType.FLOAT_VECTOR, dim=fd)
    schema.add_field("text", DataType.VARCHAR, max_length=65535)
    schema.add_field("metadata", DataType.JSON)
    ip = client.prepare_index_params()
    ip.add_index("vector", index_type="AUTOINDEX", metric_type="IP")
    client.create_collection("plain", schema=schema, index_params=ip, consistency_level="Strong")
    t0 = time.perf_counter()
    for s in range(0, n, 512):
        client.upsert("plain", [
            {"id": f"d{i}", "vector": index[i], "full_vector": half[i],
             "text": f"Paragrafo sintetico numero {i}.", "metadata": {"n": i, "part": i % 7}}
            for i in range(s, min(n, s + 512))
        ])
    t_insert = time.perf_counter() - t0
    t0 = time.perf_counter()
    client.flush("plain")
    t_flush = time.perf_counter() - t0
    qi = trunc(queries, 128)
    lat1, lat2 = [], []
    sp = {"metric_type": "IP", "params": {"ef": 128}}
    for i in range(nq):
        t0 = time.perf_counter()
        client.search("plain", data=[qi[i]], anns_field="vector", limit=10,
                      output_fields=["text", "metadata"], search_params=sp)
        lat1.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        res = client.search("plain", data=[qi[i]], anns_field="vector", limit=100,
                            output_fields=["text", "metadata", "full_vector"], search_params=sp)[0]
        mat = np.asarray([h["entity"]["full_vector"] for h in res], dtype=np.float32)
        order = np.argsort(-(mat @ queries[i]))[:10]
        _ = [res[j]["id"] for j in order]
        lat2.append(time.perf_counter() - t0)
    client.drop_collection("plain")
    client.close()
    return {"insert_per_s": n / t_insert, "flush_s": t_flush,
            "search_p50_ms": pct(lat1, 50), "search_p95_ms": pct(lat1, 95),
            "two_stage_p50_ms": pct(lat2, 50), "two_stage_p95_ms": pct(lat2, 95)}


def ndcg(data, doc_ids, qids, dfull, qfull, tmp: Path):
    import pytrec_eval

    from bertino_rag.stores import MemoryStore
    from bertino_rag.stores.milvus import MilvusStore
    from bertino_rag.types import Document, Stamp

    docs = [Document(text=data.corpus[d]["text"], id=d) for d in doc_ids]
    qrels = {q: {d: int(r) for d, r in data.qrels[q].items()} for q in qids}
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"})
    fd = dfull.shape[1]

    def score(results) -> float:
        run = {q: {h.id: h.score for h in hits} for q, hits in zip(qids, results, strict=True)}
        return statistics.fmean(v["ndcg_cut_10"] for v in evaluator.evaluate(run).values())

    exact = MemoryStore()
    exact.open("exact", Stamp(model="minilm", full_dim=fd, index_dim=fd, full_vectors=False))
    exact.upsert(docs, dfull)
    out = {"exact_full_dim": score(exact.search_batch(qfull, k=10))}
    store = MilvusStore(uri=str(tmp / "ndcg.db"))
    store.open("ndcg", Stamp(model="minilm", full_dim=fd, index_dim=128), recreate=True)
    store.upsert(docs, trunc(dfull, 128), dfull)
    store.flush()
    out["index_128_only"] = score(store.search_batch(trunc(qfull, 128), k=10))
    for rk in (20, 50, 100, 200):
        out[f"two_stage_rerank_k_{rk}"] = score(
            store.search_batch(trunc(qfull, 128), k=10, full_vectors=qfull, rerank_k=rk))
    store.drop()
    store.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--queries", type=int, default=200, help="timed queries per size")
    ap.add_argument("--cache", default="/tmp/bertino_squad_minilm.npz")
    ap.add_argument("--skip-ndcg", action="store_true")
    ap.add_argument("--ndcg-only", action="store_true")
    ap.add_argument("--ndcg-queries", type=int, default=None,
                    help="evaluate the first N questions only (default: all 4,332)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    data, doc_ids, qids, dfull, qfull = squad_minilm_vectors(Path(args.cache))
    results: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)",
                     "sizes": {}, "bytes_per_entity": {}}
    tmp = Path(tempfile.mkdtemp(prefix="bench_milvus_"))
    try:
        for n in [] if args.ndcg_only else args.sizes:
            full = synthetic(dfull, n)
            queries = qfull[: args.queries]
            row = {"plain_pymilvus": bench_plain(str(tmp / f"plain{n}.db"), full, queries,
                                                 args.queries),
                   "MilvusStore": bench_store(str(tmp / f"store{n}.db"), full, queries, True,
                                              args.queries)}
            results["sizes"][n] = row
            print(n, json.dumps(row, indent=1), flush=True)
        n = min(args.sizes)
        full = synthetic(dfull, n)
        for rerank in () if args.ndcg_only else (True, False):
            uri = tmp / f"layout_{rerank}.db"
            bench_store(str(uri), full, qfull[:5], rerank, 5)
            layout = "index_128+full_384" if rerank else "index_128_only"
            results["bytes_per_entity"][layout] = folder_bytes(uri) / n
            print(layout, results["bytes_per_entity"][layout], flush=True)
        if not args.skip_ndcg:
            m = args.ndcg_queries or len(qids)
            results["ndcg@10"] = ndcg(data, doc_ids, qids[:m], dfull, qfull[:m], tmp)
            results["ndcg_queries"] = m
            print(json.dumps(results["ndcg@10"], indent=1), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
