"""The reranking stage on every store and mode, with a small real cross-encoder.

Each case checks the stage against its definition, computed apart from the funnel: the hits
the same store gives without a reranker (``k = rerank_top``), scored by the cross-encoder
directly, ordered by that score (ties keep the retrieval order) and cut to ``k``. The memory
store runs by default; the other stores with ``-m slow``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import uuid

import numpy as np
import pytest

from bertino_rag import Retriever
from bertino_rag.indexing.documents import document_of
from bertino_rag.stores import ReferenceStore

TOP = 8
K = 3


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


STORES = [
    pytest.param("memory", id="memory"),
    pytest.param("memory:DIR", id="memory-dir", marks=pytest.mark.slow),
    pytest.param("reference", id="reference", marks=pytest.mark.slow),
    pytest.param("qdrant", id="qdrant-local", marks=[
        pytest.mark.slow, pytest.mark.skipif(not _has("qdrant_client"), reason="no qdrant")]),
    pytest.param("qdrant-edge:DIR", id="qdrant-edge", marks=[
        pytest.mark.slow, pytest.mark.skipif(not _has("qdrant_edge"), reason="no edge")]),
    pytest.param("milvus:DIR/m.db", id="milvus-lite", marks=[
        pytest.mark.slow, pytest.mark.skipif(not _has("milvus_lite"), reason="no milvus")]),
]


class Spy:
    """A reranker that counts its calls and pairs, scoring with the real cross-encoder."""

    def __init__(self, inner):
        self.inner = inner
        self.calls: list[int] = []

    def score_pairs(self, queries, texts):
        self.calls.append(len(texts))
        return self.inner.score_pairs(queries, texts)


@pytest.fixture(scope="module", params=STORES)
def retriever(request, encoder, squad_slice, tmp_path_factory):
    spec = request.param
    if "DIR" in spec:
        spec = spec.replace("DIR", str(tmp_path_factory.mktemp("store")))
    store = ReferenceStore(uuid.uuid4().hex) if spec == "reference" else spec
    r = Retriever(dim=128, encoder=encoder, store=store, hybrid=True,
                  collection=f"rr{uuid.uuid4().hex[:8]}")
    r.index(squad_slice["docs"][:30])
    yield r
    r.close()


@pytest.fixture(scope="module")
def questions(squad_slice):
    return squad_slice["queries"][:4]


def _expected(cross_encoder, questions, plain, k):
    out = []
    for q, hits in zip(questions, plain, strict=True):
        scores = cross_encoder.score_pairs([q] * len(hits), [h.text for h in hits])
        order = sorted(range(len(hits)), key=lambda j: -scores[j])[:k]
        out.append([(hits[j].id, hits[j].score, float(scores[j])) for j in order])
    return out


def _got(hits):
    return [[(h.id, h.score, h.rerank_score) for h in row] for row in hits]


def _same(got, want):
    assert [[g[0] for g in row] for row in got] == [[w[0] for w in row] for row in want]
    for grow, wrow in zip(got, want, strict=True):
        for g, w in zip(grow, wrow, strict=True):
            assert g[1] == pytest.approx(w[1], abs=1e-5)  # the retrieval score, kept
            assert g[2] == pytest.approx(w[2], abs=1e-4)  # the reranker's


@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
def test_reranked_hits_are_the_cross_encoders_order_of_the_best_candidates(
        retriever, cross_encoder, questions, mode):
    spy = Spy(cross_encoder)
    plain = retriever.search_batch(questions, k=TOP, mode=mode, reranker=False)
    got = retriever.search_batch(questions, k=K, mode=mode, reranker=spy, rerank_top=TOP)
    _same(_got(got), _expected(cross_encoder, questions, plain, K))
    # the whole batch is scored in one call, one pair per candidate read
    assert spy.calls == [sum(len(p) for p in plain)]
    # one query alone, and async, give that query's row of the batch
    # (scores within float noise: a batch pads its pairs to other lengths)
    one = retriever.search(questions[1], k=K, mode=mode, reranker=spy, rerank_top=TOP)
    _same(_got([one]), _got(got[1:2]))
    again = asyncio.run(retriever.asearch(questions[2], k=K, mode=mode, reranker=spy,
                                          rerank_top=TOP))
    _same(_got([again]), _got(got[2:3]))


@pytest.mark.parametrize("mode", ["dense", "hybrid"])
def test_grouped_results_group_the_reranked_chunks(retriever, cross_encoder, questions, mode):
    k = 2
    fetch = max(k * 3, 4 * k, TOP)  # what the funnel reads for k documents of 3 chunks
    plain = retriever.search_batch(questions, k=fetch, mode=mode, reranker=False)
    got = retriever.search_batch(questions, k=k, mode=mode, group_by="document",
                                 reranker=cross_encoder, rerank_top=TOP)
    for q, hits, row in zip(questions, plain, got, strict=True):
        scores = cross_encoder.score_pairs([q] * TOP, [h.text for h in hits[:TOP]])
        order = [hits[j] for j in np.argsort(-scores, kind="stable")] + hits[TOP:]
        docs: list[str] = []
        best: dict[str, float] = {}
        for j, h in enumerate(order):
            d = document_of(h.id, h.metadata)
            if d not in docs:
                docs.append(d)
                best[d] = float(scores[np.argsort(-scores, kind="stable")[j]]) \
                    if j < TOP else None
        assert [h.id for h in row] == docs[:k]
        for h in row:
            assert h.rerank_score == pytest.approx(best[h.id], abs=1e-4)
            assert h.chunks[0].rerank_score == h.rerank_score


def test_expanded_hits_keep_the_reranked_order_and_scores(retriever, cross_encoder, questions):
    q = questions[0]
    chunks = retriever.search(q, k=K, reranker=cross_encoder, rerank_top=TOP)
    wide = retriever.search(q, k=K, expand=1, reranker=cross_encoder, rerank_top=TOP)
    assert [h.id for h in wide] == [h.id for h in chunks]
    for w, c in zip(wide, chunks, strict=True):
        assert w.rerank_score == c.rerank_score
        assert c.text in w.text


def test_a_filter_that_matches_nothing_reranks_nothing(retriever, cross_encoder, questions):
    spy = Spy(cross_encoder)
    assert retriever.search_batch(questions[:2], k=K, filter={"title": "nessuno"},
                                  reranker=spy) == [[], []]
    assert spy.calls == []
