"""Two-stage batch search runs in flat memory, whatever the number of queries, on every store.

A batch is searched and rescored in blocks of ``candidate_block`` candidates, and full vectors
travel as numpy arrays, never as a Python float per value inside search results (that held
9 GB for 4,332 questions on a 1,128-document Milvus Lite collection). Memory is traced with
``tracemalloc`` (numpy arrays and the in-process Milvus Lite and Qdrant local engines
included); what a search keeps is its results, what it needs beyond them must not grow with the
number of queries. Random unit vectors: this is about the stores, not the model.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from bertino_rag.stores import MemoryStore, VectorStore
from bertino_rag.types import Document, Stamp

N_DOCS, FULL_DIM, INDEX_DIM = 500, 384, 64
RERANK_K, K = 40, 10
BLOCK_QUERIES = 8


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make(kind: str, tmp_path) -> VectorStore:
    if kind == "memory":
        return MemoryStore()
    if kind == "qdrant":
        pytest.importorskip("qdrant_client")
        from bertino_rag.stores.qdrant import QdrantStore

        return QdrantStore()
    if kind == "edge":
        pytest.importorskip("qdrant_edge")
        from bertino_rag.stores.qdrant_edge import QdrantEdgeStore

        return QdrantEdgeStore(tmp_path / "edge")
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    from bertino_rag.stores.milvus import MilvusStore

    return MilvusStore(uri=str(tmp_path / "memory.db"))


@pytest.fixture(params=["memory", "qdrant", "edge", "milvus"])
def store(request, tmp_path):
    rng = np.random.default_rng(3)
    full = unit(rng, N_DOCS, FULL_DIM)
    store = make(request.param, tmp_path)
    store.open("batch_memory", Stamp(model="random", full_dim=FULL_DIM, index_dim=INDEX_DIM))
    docs = [Document(text=f"documento numero {i} " * 10, id=f"d{i}", metadata={"i": i})
            for i in range(N_DOCS)]
    store.upsert(docs, unit(rng, N_DOCS, INDEX_DIM), full)
    store.candidate_block = BLOCK_QUERIES * RERANK_K
    if request.param == "edge":
        store.query_block = BLOCK_QUERIES  # queries per engine call
    yield store
    store.drop()
    store.close()


def transient_bytes(store: VectorStore, n: int) -> tuple[int, int]:
    """(bytes a batch of ``n`` queries needed beyond what it returned, bytes it returned)."""
    rng = np.random.default_rng(n)
    full = unit(rng, n, FULL_DIM)
    index = unit(rng, n, INDEX_DIM)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        hits = store.search_batch(index, K, full_vectors=full, rescore_k=RERANK_K)
        kept, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(hits) == n and all(len(h) == K for h in hits)
    return peak - kept, kept - before


def test_two_stage_batch_memory_is_flat_in_queries(store):
    store.search_batch(unit(np.random.default_rng(0), 5, INDEX_DIM), K,
                       full_vectors=unit(np.random.default_rng(1), 5, FULL_DIM),
                       rescore_k=RERANK_K)  # warm-up: lazy loads of the engine
    small, _ = transient_bytes(store, 2 * BLOCK_QUERIES)
    large, kept = transient_bytes(store, 8 * BLOCK_QUERIES)
    # 4x the queries, the same bounded blocks. Candidates' full vectors as Python floats in
    # the results would need 64 x 40 x 384 x 32 bytes (~31 MB) here.
    assert large < 1.25 * small + (256 << 10), (store.kind, small, large)
    assert large < 8 << 20, (store.kind, large)
    assert kept < 4 << 20, (store.kind, kept)  # 640 hits
