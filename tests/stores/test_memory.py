"""MemoryStore: the conformance suite in memory and on disk, plus crash and lock behaviour."""

from __future__ import annotations

import pytest

from bertino_rag.stores import MemoryStore
from bertino_rag.testing.conformance import StoreConformance


class TestMemoryInRam(StoreConformance):
    full_vector_dtype = "float16"

    @pytest.fixture
    def make_store(self):
        store = MemoryStore()
        return lambda: store  # in RAM the data lives in the object: reopen = same object


class TestMemoryOnDisk(StoreConformance):
    persistent = True
    full_vector_dtype = "float16"

    @pytest.fixture
    def make_store(self, tmp_path):
        return lambda: MemoryStore(path=tmp_path / "index")


@pytest.mark.parametrize("where", ["ram", "disk"])
def test_hybrid_on_the_arrays_equals_the_generic_funnel(tmp_path, where):
    """MemoryStore's own hybrid funnel (candidates as segment rows, payloads of the final hits
    only) returns exactly what the store contract's generic funnel returns: same hits, same
    scores, same order, with and without a filter, on several segments and after a delete."""
    from bertino_rag.lexical import BM25, Analyzer, lexical_spec
    from bertino_rag.search.fusion import Fusion
    from bertino_rag.stores import VectorStore
    from bertino_rag.testing.conformance import random_corpus
    from bertino_rag.types import Document, Stamp

    corpus = random_corpus(seed=3)
    docs = [Document(text=d["text"], id=d["id"], metadata=d["metadata"])
            for d in corpus["docs"]]
    vec, queries = corpus["doc_vectors"], corpus["query_vectors"]
    store = MemoryStore(path=tmp_path if where == "disk" else None)
    store.open("h", Stamp(model=corpus["model"], full_dim=corpus["full_dim"], index_dim=128,
                          lexical=lexical_spec(Analyzer(), BM25())))
    half = len(docs) // 2
    store.upsert(docs[:half], vec.index[:half], vec.full[:half])  # two segments
    store.upsert(docs[half:], vec.index[half:], vec.full[half:])
    store.delete([docs[1].id, docs[half + 2].id])
    texts = corpus["queries"][:40]
    try:
        for flt, fusion in ((None, Fusion("minmax", 0.8)), ({"para": {"$lt": 6}}, Fusion("rrf"))):
            prepared = store._prepare_hybrid(queries.index[:40], texts, 7, flt,
                                             queries.full[:40], 25, fusion)
            got = store._hybrid_search(prepared)
            want = VectorStore._hybrid_search(store, prepared)
            assert got == want
            assert sum(len(h) for h in got) > 100
    finally:
        store.close()
