"""The conformance suite on real data: MiniLM embeddings of a squad-it-dev slice and its
questions, instead of the suite's random unit vectors and texts.

The suite itself (``conformance.py``) needs no model and no data set; this file checks that
every assertion also holds on the vectors and Italian texts a real encoder produces (near-ties,
skewed score distributions, real BM25 statistics). MemoryStore runs by default; Qdrant and
Milvus Lite, which repeat the same checks at a higher cost, under ``-m slow``.
"""

from __future__ import annotations

import pytest

from bertino_rag.stores import MemoryStore
from bertino_rag.testing.conformance import StoreConformance


class RealVectors:
    @pytest.fixture
    def corpus(self, encoder, squad_slice, slice_vectors) -> dict:
        return {"model": encoder.model_id, "full_dim": encoder.full_dim,
                "docs": squad_slice["docs"], "queries": squad_slice["queries"],
                "doc_vectors": slice_vectors["docs"], "query_vectors": slice_vectors["queries"]}


class TestMemoryInRamRealVectors(RealVectors, StoreConformance):
    @pytest.fixture
    def make_store(self):
        store = MemoryStore()
        return lambda: store


class TestMemoryOnDiskRealVectors(RealVectors, StoreConformance):
    persistent = True

    @pytest.fixture
    def make_store(self, tmp_path):
        return lambda: MemoryStore(path=tmp_path / "index")


@pytest.mark.slow
class TestQdrantRealVectors(RealVectors, StoreConformance):
    persistent = True
    full_tol = 1e-4

    @pytest.fixture
    def make_store(self, tmp_path):
        pytest.importorskip("qdrant_client")
        from bertino_rag.stores.qdrant import QdrantStore

        return lambda: QdrantStore(path=tmp_path / "qdrant")


@pytest.mark.slow
class TestMilvusLiteRealVectors(RealVectors, StoreConformance):
    persistent = True
    full_tol = 1e-4

    @pytest.fixture
    def make_store(self, tmp_path):
        pytest.importorskip("pymilvus")
        pytest.importorskip("milvus_lite")
        from bertino_rag.stores.milvus import MilvusStore

        uri = str(tmp_path / "milvus.db")
        return lambda: MilvusStore(uri=uri)
