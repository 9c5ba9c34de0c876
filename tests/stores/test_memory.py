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
def test_funnel_on_row_handles_equals_the_reference_store(tmp_path, where):
    """MemoryStore's candidates carry segment-row handles, so the funnel rescores from the
    segment arrays and reads only the final hits from SQLite. On several segments, after
    deletes, with and without a filter, in dense two-stage and hybrid mode, it returns what the
    reference store (exact numpy and BM25, no handles) returns: same hits, same order, same
    scores."""
    from bertino_rag.lexical import BM25, Analyzer, lexical_spec
    from bertino_rag.search.fusion import Fusion
    from bertino_rag.stores import ReferenceStore
    from bertino_rag.testing.conformance import random_corpus
    from bertino_rag.types import Document, Stamp

    corpus = random_corpus(seed=3)
    docs = [Document(text=d["text"], id=d["id"], metadata=d["metadata"])
            for d in corpus["docs"]]
    vec, queries = corpus["doc_vectors"], corpus["query_vectors"]
    stamp = Stamp(model=corpus["model"], full_dim=corpus["full_dim"], index_dim=128,
                  lexical=lexical_spec(Analyzer(), BM25()))
    store, oracle = MemoryStore(path=tmp_path if where == "disk" else None), ReferenceStore(where)
    half = len(docs) // 2
    for s in (store, oracle):
        s.open("h", stamp, recreate=True)
        s.upsert(docs[:half], vec.index[:half], vec.full[:half])  # two segments
        s.upsert(docs[half:], vec.index[half:], vec.full[half:])
        s.delete([docs[1].id, docs[half + 2].id])
    texts = corpus["queries"][:40]
    try:
        for flt, fusion in ((None, Fusion("minmax", 0.8)), ({"para": {"$lt": 6}}, Fusion("rrf"))):
            for s_got, s_want in (
                (store.hybrid_search_batch(queries.index[:40], texts, 7, flt,
                                           full_vectors=queries.full[:40], rescore_k=25,
                                           fusion=fusion),
                 oracle.hybrid_search_batch(queries.index[:40], texts, 7, flt,
                                            full_vectors=queries.full[:40], rescore_k=25,
                                            fusion=fusion)),
                (store.search_batch(queries.index[:40], 7, flt, full_vectors=queries.full[:40],
                                    rescore_k=25),
                 oracle.search_batch(queries.index[:40], 7, flt, full_vectors=queries.full[:40],
                                     rescore_k=25)),
            ):
                assert [[h.id for h in q] for q in s_got] == [[h.id for h in q] for q in s_want]
                for got, want in zip(s_got, s_want, strict=True):
                    assert [h.score for h in got] == pytest.approx([h.score for h in want],
                                                                   abs=1e-9)
                    assert [(h.text, h.metadata) for h in got] == [(h.text, h.metadata)
                                                                   for h in want]
                assert sum(len(h) for h in s_got) > 100
    finally:
        store.close()
        oracle.drop()
