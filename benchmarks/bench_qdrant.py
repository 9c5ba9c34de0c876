"""QdrantStore benchmark: bytes per point per layout, local-mode write/query speed, NDCG@10.

Three parts, each printed as a Markdown table:

1. ``layout``: bytes per point of each collection layout, computed from the collection config
   (vector sizes, datatypes, on_disk, quantization, HNSW ``m``) for BERTino's 768-d vectors
   indexed at 128 dims.
2. ``speed``: upsert rate and p50/p95 query latency in qdrant-client's local mode at the given
   sizes, QdrantStore next to the plain qdrant-client doing the same work in the same run.
3. ``ndcg``: NDCG@10 (pytrec_eval) on squad-it-dev with the packaged MiniLM indexed at 128
   dims: first stage only, two-stage for each ``rerank_k``, exact full-dim search.

Usage:
    python benchmarks/bench_qdrant.py --parts layout speed ndcg --sizes 10000 100000
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from _indexing_common import squad_minilm_vectors

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from qdrant_client import QdrantClient, models  # noqa: E402

from bertino_rag.stores import MemoryStore  # noqa: E402
from bertino_rag.stores.qdrant import QdrantStore, point_id  # noqa: E402
from bertino_rag.types import Document, Stamp  # noqa: E402

BYTES = {None: 4, models.Datatype.FLOAT32: 4, models.Datatype.FLOAT16: 2,
         models.Datatype.UINT8: 1}
DEFAULT_M = 16  # Qdrant's default HNSW m


def point_bytes(params: models.VectorParams) -> dict[str, float]:
    """RAM and disk bytes of one point's vector, from its VectorParams."""
    raw = params.size * BYTES[params.datatype]
    m = DEFAULT_M if params.hnsw_config is None or params.hnsw_config.m is None \
        else params.hnsw_config.m
    graph = 2 * m * 4  # level-0 links, 4-byte ids (upper levels add ~1/m more)
    quant = params.quantization_config
    q = 0.0
    if isinstance(quant, models.ScalarQuantization):
        q = params.size + 4  # one byte per dim + a float offset
    elif isinstance(quant, models.BinaryQuantization):
        q = math.ceil(params.size / 8)
    out = {"ram": q + graph, "disk": 0.0}  # quantized codes are always_ram
    out["disk" if params.on_disk else "ram"] += raw
    return out


def part_layout() -> str:
    stamp = Stamp("nickprock/multi-sentence-BERTino", 768, 128)
    slim = Stamp(stamp.model, 768, 128, full_vectors=False)
    layouts = [
        ("128-d only (rerank off)", QdrantStore(), slim, None),
        ("+ full float32 on disk", QdrantStore(), stamp, "float32"),
        ("+ full float16 on disk (default)", QdrantStore(), stamp, None),
        ("+ int8 quantized 128-d", QdrantStore(quantization="int8"), stamp, None),
        ("+ binary quantized 128-d", QdrantStore(quantization="binary"), stamp, None),
    ]
    rows = ["| layout | RAM B/point (vectors + HNSW links) | disk B/point | "
            "RAM for 1M points |", "|---|---:|---:|---:|"]
    for label, store, st, override in layouts:
        store.open("layout", st)
        vectors = store.client.get_collection("layout").config.params.vectors
        if override == "float32":
            vectors = dict(vectors)
            vectors["full"] = vectors["full"].model_copy(update={"datatype": None})
        ram = sum(point_bytes(p)["ram"] for p in vectors.values())
        disk = sum(point_bytes(p)["disk"] for p in vectors.values())
        rows.append(f"| {label} | {ram:.0f} | {disk:.0f} | {ram * 1e6 / 2**20:.0f} MiB |")
    return "\n".join(rows)


# --------------------------------------------------------------------------- speed
def synthetic(n: int, full_dim: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    full = rng.standard_normal((n, full_dim), dtype=np.float32)
    full /= np.linalg.norm(full, axis=1, keepdims=True)
    index = full[:, :dim] / np.linalg.norm(full[:, :dim], axis=1, keepdims=True)
    return index, full


def pct(values: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, p))


def interleaved(fns: dict[str, object], rounds: int) -> dict[str, list[float]]:
    """Time each function once per round, in turn: the same machine noise falls on all."""
    out: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(rounds):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn(i)  # type: ignore[operator]
            out[name].append(time.perf_counter() - t)
    return out


def part_speed(sizes: list[int], queries: int, batch: int, rerank_k: int,
               prefetch_queries: int) -> str:
    qi, qf = synthetic(queries, 768, 128, seed=1)
    rows = ["| points | client | upsert points/s | 128-d query p50 / p95 ms | "
            f"two-stage (rerank_k={rerank_k}) p50 / p95 ms | two-stage strategy |",
            "|---:|---|---:|---:|---:|---|"]
    for n in sizes:
        rows += _speed_rows(n, qi, qf, batch, rerank_k, prefetch_queries)
        print("\n".join(rows[-3:]), flush=True)
    return "\n".join(rows)


def _speed_rows(n: int, qi: np.ndarray, qf: np.ndarray, batch: int, rerank_k: int,
                prefetch_queries: int) -> list[str]:
    """The three table rows for ``n`` points (its stores are freed on return)."""
    full_dim, dim, k = 768, 128, 10
    index, full = synthetic(n, full_dim, dim, seed=0)
    docs = [Document(text=f"documento sintetico {i}", id=f"doc-{i}",
                     metadata={"n": i}) for i in range(n)]
    store = QdrantStore()
    store.open("bench", Stamp("synthetic", full_dim, dim))
    # the server strategy on the same local-mode collection: one prefetch query
    prefetch = QdrantStore(client=store.client, two_stage="prefetch")
    prefetch.open("bench", store.stamp)
    # the plain client: the same layout, batches and queries, written by hand
    client = QdrantClient(":memory:")
    client.create_collection("bench", vectors_config={
        "dim128": models.VectorParams(size=dim, distance=models.Distance.COSINE),
        "full": models.VectorParams(size=full_dim, distance=models.Distance.COSINE,
                                    on_disk=True, hnsw_config=models.HnswConfigDiff(m=0),
                                    datatype=models.Datatype.FLOAT16)})

    def ours_write(b: int) -> None:
        sl = slice(b * batch, (b + 1) * batch)
        store.upsert(docs[sl], index[sl], full[sl])

    def plain_write(b: int) -> None:
        sl = slice(b * batch, (b + 1) * batch)
        client.upsert("bench", points=models.Batch(
            ids=[point_id(d.id) for d in docs[sl]],
            vectors={"dim128": index[sl].tolist(), "full": full[sl].tolist()},
            payloads=[{"doc_id": d.id, "text": d.text, "metadata": d.metadata}
                      for d in docs[sl]]))

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Local mode is not recommended")
        w = interleaved({"ours": ours_write, "plain": plain_write}, -(-n // batch))
    rate = {name: n / sum(t) for name, t in w.items()}
    q = interleaved({
        "ours": lambda i: store.search(qi[i], k),
        "plain": lambda i: client.query_points("bench", query=qi[i].tolist(),
                                               using="dim128", limit=k),
    }, len(qi))
    two = interleaved({
        "ours": lambda i: store.search(qi[i], k, full_vector=qf[i], rerank_k=rerank_k),
        "ours_prefetch": lambda i: prefetch.search(qi[i], k, full_vector=qf[i],
                                                   rescore_k=rerank_k),
        "plain": lambda i: client.query_points(
            "bench", prefetch=models.Prefetch(query=qi[i].tolist(), using="dim128",
                                              limit=rerank_k),
            query=qf[i].tolist(), using="full", limit=k),
    }, prefetch_queries)
    a = store.search(qi[0], k, full_vector=qf[0], rerank_k=rerank_k)
    b = prefetch.search(qi[0], k, full_vector=qf[0], rescore_k=rerank_k)
    assert [h.id for h in a] == [h.id for h in b], "strategies disagree"

    def ms(t: list[float]) -> str:
        return f"{pct(t, 50):.0f} / {pct(t, 95):.0f}"

    rows = [
        f"| {n:,} | QdrantStore | {rate['ours']:,.0f} | {ms(q['ours'])} | "
        f"{ms(two['ours'])} | 128-d query, fetch full, numpy rescore (local default) |",
        f"| {n:,} | QdrantStore | | | {ms(two['ours_prefetch'])} | one prefetch query "
        "(server default) |",
        f"| {n:,} | qdrant-client | {rate['plain']:,.0f} | {ms(q['plain'])} | "
        f"{ms(two['plain'])} | one prefetch query |",
    ]
    store.drop()
    client.close()
    return rows


# --------------------------------------------------------------------------- ndcg
def ndcg10(qrels: dict, qids: list[str], hits: list) -> float:
    import pytrec_eval

    run = {q: {h.id: float(h.score) for h in hs} for q, hs in zip(qids, hits, strict=True)}
    ev = pytrec_eval.RelevanceEvaluator({q: qrels[q] for q in qids}, {"ndcg_cut.10"})
    return statistics.fmean(v["ndcg_cut_10"] for v in ev.evaluate(run).values())


def part_ndcg(cache: Path, rerank_ks: list[int]) -> str:
    from bertino_rag.encoder import matryoshka_slice

    beir, doc_ids, qids, dfull, qfull = squad_minilm_vectors(cache / "squad_minilm.npz")
    full_dim, dim = dfull.shape[1], 128
    docs = [Document(text=beir.corpus[d]["text"], id=d) for d in doc_ids]
    dind, qind = matryoshka_slice(dfull, dim), matryoshka_slice(qfull, dim)
    exact = MemoryStore()
    exact.open("exact", Stamp("minilm", full_dim, full_dim, full_vectors=False))
    exact.upsert(docs, dfull)
    base = ndcg10(beir.qrels, qids, exact.search_batch(qfull, 10))
    store = QdrantStore()
    store.open("squad", Stamp("minilm", full_dim, dim))
    store.upsert(docs, dind, dfull)
    rows = [f"Queries: {len(qids):,}; corpus: {len(docs):,} paragraphs; MiniLM "
            f"({full_dim}-d) indexed at {dim} dims.", "",
            "| search | NDCG@10 | of exact full-dim |", "|---|---:|---:|",
            f"| exact full-dim ({full_dim}-d, numpy) | {base:.4f} | 100.0% |"]
    first = ndcg10(beir.qrels, qids, store.search_batch(qind, 10))
    rows.append(f"| {dim}-d only (QdrantStore) | {first:.4f} | {100 * first / base:.1f}% |")
    for rk in rerank_ks:
        hits = store.search_batch(qind, 10, full_vectors=qfull, rerank_k=rk)
        score = ndcg10(beir.qrels, qids, hits)
        rows.append(f"| two-stage, rerank_k={rk} (QdrantStore) | {score:.4f} | "
                    f"{100 * score / base:.1f}% |")
    sample = slice(0, 300)
    a = store.search_batch(qind[sample], 10, full_vectors=qfull[sample], rerank_k=100)
    prefetch = QdrantStore(client=store.client, two_stage="prefetch")
    prefetch.open("squad", store.stamp)
    b = prefetch.search_batch(qind[sample], 10, full_vectors=qfull[sample], rescore_k=100)
    same = sum([h.id for h in x] == [h.id for h in y] for x, y in zip(a, b, strict=True))
    rows += ["", f"Prefetch (server) strategy vs numpy rescore on {len(a)} queries, "
             f"rerank_k=100: identical top-10 for {same} of {len(a)}."]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", nargs="+", default=["layout", "speed", "ndcg"],
                    choices=["layout", "speed", "ndcg"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[10_000, 100_000])
    ap.add_argument("--queries", type=int, default=30, help="timed 128-d queries per size")
    ap.add_argument("--prefetch-queries", type=int, default=10,
                    help="timed two-stage queries per size (slow in local mode)")
    ap.add_argument("--batch", type=int, default=512, help="documents per upsert call")
    ap.add_argument("--rerank-k", type=int, default=100)
    ap.add_argument("--rerank-ks", nargs="+", type=int, default=[20, 50, 100, 200])
    ap.add_argument("--cache", type=Path, default=Path("/tmp/bertino-bench-cache"),
                    help="folder for the squad-it-dev embeddings")
    args = ap.parse_args(argv)
    print(f"python {sys.version.split()[0]}, cores: {os.cpu_count()}", flush=True)
    if "layout" in args.parts:
        print("\n## Bytes per point\n\n" + part_layout(), flush=True)
    if "speed" in args.parts:
        print("\n## Local mode speed\n", flush=True)
        print(part_speed(args.sizes, args.queries, args.batch, args.rerank_k,
                         args.prefetch_queries), flush=True)
    if "ndcg" in args.parts:
        print("\n## NDCG@10 on squad-it-dev\n\n" + part_ndcg(args.cache, args.rerank_ks),
              flush=True)


if __name__ == "__main__":
    main()
