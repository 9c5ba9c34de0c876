"""Vectorized rescoring gives exactly the results of rescoring each query on its own.

The oracle is the per-query rule stores followed before rescoring was vectorized: one
``full @ query`` float32 product per query, then a Python sort by (-score, id).
"""

from __future__ import annotations

import numpy as np
import pytest

from bertino_rag.search.rescore import id_ranks, rescore, rescore_hits, rescore_rows
from bertino_rag.types import Hit


def oracle(hits: list[Hit], full: np.ndarray, query: np.ndarray, k: int) -> list[Hit]:
    scores = full.astype(np.float32) @ query.astype(np.float32)
    ids = [h.id for h in hits]
    order = sorted(range(len(hits)), key=lambda i: (-float(scores[i]), ids[i]))[:k]
    return [Hit(id=hits[i].id, text=hits[i].text, score=float(scores[i]),
                metadata=hits[i].metadata) for i in order]


@pytest.fixture
def batch():
    """60 documents (10 exact duplicates: ties), 40 queries with 0 to 30 candidates each."""
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(60, 48)).astype(np.float32)
    vectors[50:] = vectors[:10]  # identical vectors: equal scores, broken by id
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float16)
    ids = [f"doc-{(i * 37) % 60:02d}" for i in range(60)]  # id order != row order
    queries = rng.normal(size=(40, 48)).astype(np.float32)
    candidates = []
    for qi in range(40):
        n = int(rng.integers(0, 31)) if qi else 0
        rows = rng.choice(60, size=n, replace=False)
        candidates.append([Hit(id=ids[r], text=f"text {r}", score=0.0, metadata={"r": int(r)})
                           for r in rows])
    return ids, vectors, queries, candidates


def test_rescore_hits_equals_per_query_oracle(batch):
    ids, vectors, queries, candidates = batch
    row = {d: i for i, d in enumerate(ids)}
    for k in (1, 5, 30, 50):
        got = rescore_hits(candidates, ids, vectors, queries, k)
        want = [oracle(hits, vectors[[row[h.id] for h in hits]], q, k)
                for hits, q in zip(candidates, queries, strict=True)]
        assert got == want  # ids, order, float scores, texts, metadata: all equal


def test_ties_are_broken_by_id(batch):
    ids, vectors, queries, _ = batch
    twins = [Hit(id=ids[i], text="", score=0.0) for i in (55, 5, 51, 1)]  # 55 == 5, 51 == 1
    got = rescore_hits([twins], ids, vectors, queries[:1], 4)[0]
    assert got == oracle(twins, vectors[[55, 5, 51, 1]], queries[0], 4)
    for a, b in zip(got, got[1:], strict=False):
        assert a.score > b.score or (a.score == b.score and a.id < b.id)


def test_blocks_do_not_change_results(batch, monkeypatch):
    ids, vectors, queries, candidates = batch
    whole = rescore_hits(candidates, ids, vectors, queries, 7)
    monkeypatch.setattr("bertino_rag.search.rescore._RESCORE_BLOCK", 48 * 30 * 3)  # 3 queries
    assert rescore_hits(candidates, ids, vectors, queries, 7) == whole


def test_rescore_rows_pads_short_candidate_lists():
    full = np.eye(3, dtype=np.float32)
    cand = np.array([[0, 1, 2], [2, -1, -1], [-1, -1, -1]])
    q = np.array([[0.1, 0.2, 0.3], [1.0, 0.0, 0.5], [1.0, 1.0, 1.0]], dtype=np.float32)
    rows, scores = rescore_rows(cand, full, q, 2, id_ranks(["a", "b", "c"]))
    assert rows.tolist() == [[2, 1], [2, -1], [-1, -1]]
    np.testing.assert_array_equal(scores[0], np.array([0.3, 0.2], dtype=np.float32))
    assert scores[1, 0] == np.float32(0.5) and np.isneginf(scores[1, 1])
    assert np.isneginf(scores[2]).all()


def test_single_query_rescore_is_the_batch_rule(batch):
    ids, vectors, queries, candidates = batch
    hits = candidates[3]
    rows = [ids.index(h.id) for h in hits]
    assert rescore(hits, vectors[rows], queries[3], 6) == oracle(hits, vectors[rows],
                                                                 queries[3], 6)
    assert rescore([], vectors[:0], queries[3], 6) == []


def test_id_ranks_follow_string_order():
    ids = ["b", "a10", "a9", "", "é", "Z"]
    ranks = id_ranks(ids)
    assert [ids[i] for i in np.argsort(ranks)] == sorted(ids)
