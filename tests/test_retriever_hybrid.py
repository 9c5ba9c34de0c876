"""Retriever(hybrid=True): one index() pass for both signals, and the three search modes."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pytest

from bertino_rag import MemoryStore, Retriever, StampMismatchError
from bertino_rag.evaluation import PrecomputedEncoder, ir_metrics
from bertino_rag.lexical import Analyzer, EmptyQueryError, LexicalUnavailableError
from bertino_rag.search.fusion import Fusion


@pytest.fixture(scope="module")
def cached(encoder, squad_slice, slice_vectors):
    """The session's MiniLM, answering the slice's texts from their vectors (encoded once)."""
    table = {("document", d["text"]): v
             for d, v in zip(squad_slice["docs"], slice_vectors["docs"].full, strict=True)}
    table.update({("query", q): v for q, v in zip(squad_slice["queries"],
                                                  slice_vectors["queries"].full, strict=True)})
    return PrecomputedEncoder(encoder, table)


@pytest.fixture(scope="module")
def hybrid(cached, squad_slice):
    r = Retriever(dim=128, encoder=cached, rescore_k=50, hybrid=True, chunking=False)
    r.index(squad_slice["docs"], show_progress_bar=False)
    return r


def _ndcg(results, squad_slice, n):
    return ir_metrics([[(h.id, h.score) for h in hits] for hits in results],
                      squad_slice["qids"][:n], squad_slice["qrels"])["ndcg@10"]


def test_modes_on_the_slice(hybrid, cached, squad_slice):
    queries = squad_slice["queries"]
    dense = hybrid.search_batch(queries, k=10, mode="dense")
    lexical = hybrid.search_batch(queries, k=10, mode="lexical")
    fused = hybrid.search_batch(queries, k=10)  # default on a hybrid collection: hybrid
    assert fused == hybrid.search_batch(queries, k=10, mode="hybrid")
    # dense mode is exactly what a dense-only retriever returns
    plain = Retriever(dim=128, encoder=cached, rescore_k=50, chunking=False)
    plain.index(squad_slice["docs"], show_progress_bar=False)
    assert [[h.id for h in hits] for hits in dense] == [
        [h.id for h in hits] for hits in plain.search_batch(queries, k=10)]
    # lexical mode is the store's BM25
    assert [h.id for h in lexical[3]] == [
        h.id for h in hybrid.store.lexical_search(queries[3], k=10)]
    scores = {m: _ndcg(r, squad_slice, len(queries))
              for m, r in (("dense", dense), ("lexical", lexical), ("hybrid", fused))}
    # the default fusion is never below the better side (here BM25, far above MiniLM)
    assert scores["lexical"] > scores["dense"] + 0.2
    assert scores["hybrid"] >= max(scores["dense"], scores["lexical"]) - 0.005, scores
    # equal-weight RRF is the fusion the default avoids: below BM25 alone on this data
    rrf = hybrid.search_batch(queries, k=10, fusion=Fusion("rrf", 0.5))
    assert _ndcg(rrf, squad_slice, len(queries)) < scores["lexical"]


def test_single_batch_and_async_agree(hybrid, squad_slice):
    q = squad_slice["queries"][7]
    for mode in ("dense", "lexical", "hybrid"):
        single = hybrid.search(q, k=5, mode=mode)
        assert [h.id for h in single] == [
            h.id for h in hybrid.search_batch([q, squad_slice["queries"][8]], k=5,
                                              mode=mode)[0]]
        got = asyncio.run(hybrid.asearch(q, k=5, mode=mode))
        assert [h.id for h in got] == [h.id for h in single]
        np.testing.assert_allclose([h.score for h in got], [h.score for h in single],
                                   atol=1e-6)


def test_index_delete_and_reindex_keep_both_sides(cached, squad_slice):
    r = Retriever(dim=128, encoder=cached, hybrid=True, chunking=False)
    docs = squad_slice["docs"][:40]
    ids = r.index(docs)
    query = squad_slice["queries"][0]
    before = r.search(query, k=5, mode="lexical")
    r.index(docs)  # the same texts again: stored once, the same scores
    assert r.count() == 40
    again = r.search(query, k=5, mode="lexical")
    assert [h.id for h in again] == [h.id for h in before]
    np.testing.assert_allclose([h.score for h in again], [h.score for h in before])
    r.delete([before[0].id])
    for mode in ("dense", "lexical", "hybrid"):
        assert before[0].id not in {h.id for h in r.search(query, k=40, mode=mode)}
    assert set(ids) - {before[0].id} == {h.id for h in r.search(query, k=40, mode="dense")}


def test_filter_applies_to_both_sides(hybrid, squad_slice):
    flt = {"para": {"$lt": 5}}
    for mode in ("dense", "lexical", "hybrid"):
        hits = hybrid.search(squad_slice["queries"][4], k=5, filter=flt, mode=mode)
        assert hits and all(h.metadata["para"] < 5 for h in hits)


def test_bad_input(hybrid, cached, squad_slice, caplog):
    with pytest.raises(ValueError, match="unknown search mode 'sparse'"):
        hybrid.search("foresta", mode="sparse")
    with pytest.raises(EmptyQueryError, match="mode='dense' or 'hybrid'"):
        hybrid.search("e di che?", mode="lexical")
    with caplog.at_level(logging.INFO, logger="bertino_rag"):
        only_dense = hybrid.search("e di che?", k=3)
    assert "no searchable term" in caplog.text
    assert [h.id for h in only_dense] == [h.id for h in hybrid.search("e di che?", k=3,
                                                                      mode="dense")]
    with pytest.raises(ValueError, match="pass hybrid=True"):
        Retriever(dim=128, encoder=cached, analyzer=Analyzer())
    plain = Retriever(dim=128, encoder=cached)
    plain.index(squad_slice["docs"][:5])
    for mode in ("hybrid", "lexical"):
        with pytest.raises(LexicalUnavailableError, match=r"hybrid=True, recreate=True"):
            plain.search("foresta", mode=mode)


def test_the_collection_keeps_its_analyzer(tmp_path, cached, squad_slice):
    encoder = cached
    store = tmp_path / "idx"
    r = Retriever(dim=128, encoder=encoder, store=f"memory:{store}", hybrid=True,
                  chunking=False)
    r.index(squad_slice["docs"][:10])
    r.close()
    for kwargs in ({"hybrid": True, "analyzer": Analyzer(stemmer=False)}, {"hybrid": False}):
        with pytest.raises(StampMismatchError, match="lexical"):
            Retriever(dim=128, encoder=encoder, store=MemoryStore(path=store), **kwargs)
    again = Retriever(dim=128, encoder=encoder, store=MemoryStore(path=store), hybrid=True)
    assert again.count() == 10
    assert again.search("foresta pluviale", k=1, mode="lexical")


def test_fusion_from_a_tuned_file(tmp_path, hybrid, cached, squad_slice):
    encoder = cached
    path = tmp_path / "fusion.json"
    Fusion("rrf", 0.7, 20).save(path)
    r = Retriever(dim=128, encoder=encoder, store=hybrid.store, hybrid=True, fusion=path,
                  rescore_k=50)
    assert r.fusion == Fusion("rrf", 0.7, 20)
    q = squad_slice["queries"][9]
    assert [h.id for h in r.search(q, k=5)] == [
        h.id for h in hybrid.search(q, k=5, fusion=Fusion("rrf", 0.7, 20))]
