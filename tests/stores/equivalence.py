"""Checks the stores' own test files share: a store's pushdowns (its declared capabilities)
return what the reference store returns on the same data, and candidates deleted between two
reads of one search drop out instead of raising."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import numpy as np

from bertino_rag.lexical import BM25, Analyzer, lexical_spec
from bertino_rag.search.fusion import Fusion
from bertino_rag.stores import ReferenceStore, VectorStore
from bertino_rag.testing.conformance import random_corpus, same_ranking
from bertino_rag.types import Document, Hit, Stamp

K, RESCORE_K, N_QUERIES = 7, 25, 24


def corpus() -> dict:
    return random_corpus(seed=5, n_queries=N_QUERIES)


def fill(store: VectorStore, data: dict, name: str = "pushdowns") -> None:
    """Open a hybrid collection of ``data`` in ``store`` and write it in one call."""
    stamp = Stamp(model=data["model"], full_dim=data["full_dim"], index_dim=128,
                  lexical=lexical_spec(Analyzer(), BM25()))
    docs = [Document(text=d["text"], id=d["id"], metadata=d["metadata"]) for d in data["docs"]]
    vec = data["doc_vectors"]
    store.open(name, stamp, recreate=True)
    store.upsert(docs, vec.index, vec.full)


def searches(store: VectorStore, data: dict, flt: object = None
             ) -> dict[str, Callable[[], list[list[Hit]]]]:
    """One batch search per mode and stage, by name."""
    q, texts = data["query_vectors"], data["queries"]
    fusion = Fusion("minmax", 0.8)
    return {
        "dense": lambda: store.search_batch(q.index, K, flt),
        "two-stage": lambda: store.search_batch(q.index, K, flt, full_vectors=q.full,
                                                rescore_k=RESCORE_K),
        "lexical": lambda: store.lexical_search_batch(texts, K, flt),
        "hybrid": lambda: store.hybrid_search_batch(q.index, texts, K, flt, rescore_k=RESCORE_K,
                                                    fusion=fusion),
        "hybrid two-stage": lambda: store.hybrid_search_batch(
            q.index, texts, K, flt, full_vectors=q.full, rescore_k=RESCORE_K, fusion=fusion),
        "grouped": lambda: store.search_batch(q.index, K, flt, group_by="document"),
    }


def assert_same_as_reference(store: VectorStore, data: dict, flt: object = None,
                             tol: float = 1e-4) -> None:
    """Every search of :func:`searches` on ``store`` (filled with :func:`fill`) returns the
    reference store's hits: the same ids (near-ties may swap), scores within ``tol``, texts
    and metadata."""
    oracle = ReferenceStore(uuid.uuid4().hex)
    fill(oracle, data)
    try:
        want = {name: run() for name, run in searches(oracle, data, flt).items()}
        for name, run in searches(store, data, flt).items():
            got = run()
            assert sum(len(h) for h in got) > 0, name
            for g, w in zip(got, want[name], strict=True):
                same_ranking([h.id for h in g], [h.score for h in g], [h.id for h in w],
                             [h.score for h in w], tol=tol)
                docs = {h.id: (h.text, h.metadata) for h in w}
                assert all(docs.get(h.id, (h.text, h.metadata)) == (h.text, h.metadata)
                           for h in g), name
    finally:
        oracle.drop()


def race(store: VectorStore, monkeypatch) -> list[str]:
    """Make every read after a search's first stage find a candidate deleted meanwhile: the
    first id ``_fetch`` is asked for, and the first candidate ``_score`` is given, are deleted
    just before the read. Returns the deleted ids."""
    gone: list[str] = []
    fetch, score = store._fetch, store._score

    def delete(doc_id: str) -> None:
        gone.append(doc_id)
        store.delete([doc_id])

    def racing_fetch(ids, rows=None, **kwargs):
        if ids:
            delete(ids[0])
        return fetch(ids, rows, **kwargs)

    def racing_score(candidates, full_queries):
        first = next((c.ids[0] for c in candidates if len(c)), None)
        if first is not None:
            delete(first)
        return score(candidates, full_queries)

    monkeypatch.setattr(store, "_fetch", racing_fetch)
    monkeypatch.setattr(store, "_score", racing_score)
    return gone


def assert_deleted_candidates_drop_out(store: VectorStore, data: dict, monkeypatch) -> None:
    """Every search of :func:`searches` on ``store`` (filled with :func:`fill`) returns hits,
    none of them deleted, while :func:`race` deletes candidates under it."""
    for name, run in searches(store, data).items():
        with monkeypatch.context() as patched:
            gone = race(store, patched)
            hits = run()
        found = {h.id for row in hits for h in row}
        assert found and not found & set(gone), name
        assert all(np.all(np.diff([h.score for h in row]) <= 0) for row in hits), name
