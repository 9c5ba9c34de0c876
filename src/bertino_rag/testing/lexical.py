"""Conformance, lexical and hybrid search: BM25 against bm25s, the hybrid funnel."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from ..lexical import BM25, Analyzer, EmptyQueryError, LexicalUnavailableError, lexical_spec
from ..search.fusion import Fusion
from ..types import Document, Stamp, StampMismatchError
from .corpus import bm25_reference, exact_topk, same_ranking
from .fixtures import Fixtures


class LexicalTests(Fixtures):
    """BM25 beside the vectors, and hybrid search."""

    # ------------------------------------------------------------------ lexical and hybrid
    LEX_TOL = 1e-3  # BM25 scores: float32 in some stores


    def test_lexical_stamp_refused_without_support(self, make_store, name, lex_stamp):
        store = make_store()
        if store.supports_lexical:
            pytest.skip("this store keeps a lexical index")
        with pytest.raises(ValueError, match="cannot keep a lexical index"):
            store.open(name, lex_stamp)
        assert not store.is_open

    def test_lexical_matches_bm25s(self, lex_filled, corpus, data):
        docs, _, _ = data
        for query in corpus["queries"][:40:4]:
            hits = lex_filled.lexical_search(query, k=10)
            want_ids, want_scores = bm25_reference(docs, query, 10,
                                                   avgdl=lex_filled.lexical_avgdl)
            same_ranking([h.id for h in hits], [h.score for h in hits], want_ids, want_scores,
                         tol=self.LEX_TOL)
            assert all(h.text == docs[[d.id for d in docs].index(h.id)].text for h in hits)

    def test_lexical_batch_equals_single(self, lex_filled, corpus):
        queries = corpus["queries"][:6]
        batch = lex_filled.lexical_search_batch(queries, k=5)
        assert [[h.id for h in hits] for hits in batch] == [
            [h.id for h in lex_filled.lexical_search(q, k=5)] for q in queries
        ]

    def test_lexical_delete_replace_and_idempotent_upsert(self, lex_filled, corpus, data):
        docs, vec, _ = data
        query = corpus["queries"][0]
        before = lex_filled.lexical_search(query, k=5)
        gone = [h.id for h in before[:2]]
        lex_filled.delete(gone)
        left = [d for d in docs if d.id not in gone]
        hits = lex_filled.lexical_search(query, k=10)
        assert not {h.id for h in hits} & set(gone)
        want_ids, want_scores = bm25_reference(left, query, 10, avgdl=lex_filled.lexical_avgdl)
        same_ranking([h.id for h in hits], [h.score for h in hits], want_ids, want_scores,
                     tol=self.LEX_TOL)
        # the same documents again: back to the first state, nothing counted twice
        rows = [i for i, d in enumerate(docs) if d.id in gone]
        for _ in range(2):
            lex_filled.upsert([docs[i] for i in rows], vec.index[rows], vec.full[rows])
        assert lex_filled.count() == len(docs)
        again = lex_filled.lexical_search(query, k=5)
        assert [h.id for h in again] == [h.id for h in before]
        np.testing.assert_allclose([h.score for h in again], [h.score for h in before],
                                   atol=self.LEX_TOL)
        # a replaced text is searched by its new words only
        new = Document(text="Zanzibar ospita la tartaruga gigante.", id=docs[3].id,
                       metadata=docs[3].metadata)
        lex_filled.upsert([new], vec.index[3:4], vec.full[3:4])
        assert [h.id for h in lex_filled.lexical_search("tartarughe di Zanzibar", k=3)] == [
            docs[3].id]
        assert lex_filled.count() == len(docs)

    def test_lexical_filter(self, lex_filled, corpus, data):
        docs, _, _ = data
        flt = {"para": {"$lt": 8}}
        allowed = [d for d in docs if d.metadata["para"] < 8]
        query = corpus["queries"][1]
        hits = lex_filled.lexical_search(query, k=5, filter=flt)
        assert hits and all(h.metadata["para"] < 8 for h in hits)
        # statistics are the collection's: the reference scores every document, then filters
        ids, scores = bm25_reference(docs, query, len(docs), avgdl=lex_filled.lexical_avgdl)
        keep = {d.id for d in allowed}
        want = [(i, s) for i, s in zip(ids, scores, strict=True) if i in keep][:5]
        same_ranking([h.id for h in hits], [h.score for h in hits], [i for i, _ in want],
                     [s for _, s in want], tol=self.LEX_TOL)

    def test_hybrid_matches_funnel_oracle(self, lex_filled, corpus, data):
        docs, vec, queries = data
        ids = [d.id for d in docs]
        fusion = Fusion("minmax", 0.8)
        for qi in range(0, 30, 6):
            text = corpus["queries"][qi]
            hits = lex_filled.hybrid_search(queries.index[qi], text, k=5,
                                            full_vector=queries.full[qi], rescore_k=20,
                                            fusion=fusion)
            dense_ids, _ = exact_topk(vec.index, queries.index[qi], ids, 20)
            lex_ids, lex_scores = bm25_reference(docs, text, 20, avgdl=lex_filled.lexical_avgdl)
            union = list(dict.fromkeys([*lex_ids, *dense_ids]))
            full16 = vec.full[[ids.index(i) for i in union]].astype(np.float16)
            dense_scores = full16.astype(np.float32) @ queries.full[qi]
            from bertino_rag.types import Hit

            want = fusion.fuse(
                [Hit(id=i, text="", score=float(s)) for i, s in zip(union, dense_scores,
                                                                    strict=True)],
                [Hit(id=i, text="", score=s) for i, s in zip(lex_ids, lex_scores, strict=True)],
                5,
            )
            assert [h.id for h in hits][:3] == [h.id for h in want][:3]
            np.testing.assert_allclose([h.score for h in hits], [h.score for h in want],
                                       atol=5e-3)

    def test_hybrid_rrf_and_rescore_off(self, lex_filled, corpus, data):
        _, _, queries = data
        text = corpus["queries"][2]
        rrf = lex_filled.hybrid_search(queries.index[2], text, k=5, fusion=Fusion("rrf", 0.5))
        assert len(rrf) == 5 and all(0 < h.score <= 1 / 61 + 1e-9 for h in rrf)
        lexical = lex_filled.lexical_search(text, k=1)[0].id
        only_lex = lex_filled.hybrid_search(queries.index[2], text, k=1,
                                            fusion=Fusion("minmax", 1.0))
        assert only_lex[0].id == lexical
        only_dense = lex_filled.hybrid_search(queries.index[2], text, k=3,
                                              fusion=Fusion("minmax", 0.0))
        assert [h.id for h in only_dense] == [h.id for h in lex_filled.search(
            queries.index[2], k=3)]

    def test_lexical_bad_input(self, lex_filled, make_store, name, stamp, data):
        _, vec, queries = data
        with pytest.raises(EmptyQueryError, match="no searchable term"):
            lex_filled.lexical_search("E di che? ...", k=3)
        # hybrid answers a stopword-only query with its dense side
        hybrid = lex_filled.hybrid_search(queries.index[0], "e di che?", k=3,
                                          fusion=Fusion("minmax", 0.8))
        assert [h.id for h in hybrid] == [h.id for h in lex_filled.search(queries.index[0], k=3)]
        with pytest.raises(ValueError, match="k must be a positive int"):
            lex_filled.lexical_search("foresta", k=0)
        with pytest.raises(ValueError, match="list of query texts"):
            lex_filled.lexical_search_batch("foresta", k=3)
        # a failed upsert writes neither side
        n = lex_filled.count()
        with pytest.raises(ValueError, match="128 dims"):
            lex_filled.upsert([Document(text="Zanzibar", id="zz")], vec.full[:1], vec.full[:1])
        assert lex_filled.count() == n
        assert lex_filled.lexical_search("Zanzibar", k=3) == []  # the term was never written
        assert lex_filled.lexical_search("Zanzibar foresta", k=3)

    def test_lexical_modes_on_a_dense_collection(self, filled, data):
        _, _, queries = data
        with pytest.raises(LexicalUnavailableError, match="hybrid=True"):
            filled.lexical_search("foresta", k=3)
        with pytest.raises(LexicalUnavailableError, match="built without one"):
            filled.hybrid_search(queries.index[0], "foresta", k=3)

    def test_other_analyzer_is_refused(self, make_store, lex_filled, name, lex_stamp, data):
        docs, _, _ = data
        for analyzer in (Analyzer(stemmer=False), Analyzer(stopwords=False)):
            other = Stamp(model=lex_stamp.model, full_dim=lex_stamp.full_dim,
                          index_dim=lex_stamp.index_dim,
                          lexical=lexical_spec(analyzer, BM25()))
            second = make_store()
            with pytest.raises(StampMismatchError, match="lexical"):
                second.open(name, other)
            if second is not lex_filled:
                second.close()
        dense_only = Stamp(model=lex_stamp.model, full_dim=lex_stamp.full_dim,
                           index_dim=lex_stamp.index_dim)
        second = make_store()
        with pytest.raises(StampMismatchError, match="lexical"):
            second.open(name, dense_only)
        if second is not lex_filled:
            second.close()
        assert lex_filled.count() == len(docs)

    def test_lexical_persistence_and_async(self, make_store, lex_filled, name, lex_stamp,
                                           corpus, data):
        _, _, queries = data
        query = corpus["queries"][5]
        before = lex_filled.lexical_search(query, k=5)
        got = asyncio.run(lex_filled.alexical_search(query, k=5))
        assert [h.id for h in got] == [h.id for h in before]
        sync = lex_filled.hybrid_search(queries.index[5], query, k=5,
                                        full_vector=queries.full[5])
        got = asyncio.run(lex_filled.ahybrid_search(queries.index[5], query, k=5,
                                                    full_vector=queries.full[5]))
        assert [h.id for h in got] == [h.id for h in sync]
        if not self.persistent:
            return
        lex_filled.close()
        again = make_store()
        again.open(name, lex_stamp)
        try:
            after = again.lexical_search(query, k=5)
            assert [h.id for h in after] == [h.id for h in before]
        finally:
            again.close()
        lex_filled.open(name, lex_stamp)
