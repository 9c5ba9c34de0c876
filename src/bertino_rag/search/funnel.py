"""The search funnel: one implementation of every stage, for every store and every mode.

A validated :class:`~.request.SearchRequest` runs as a plan of stages over a store's
primitives (:mod:`bertino_rag.stores.protocol`):

1. **candidates**: the best on the truncated index vectors (``_knn``) and/or by BM25
   (``_bm25``), ``rescore_k`` per side, or ``k`` in single-stage dense and lexical search;
2. **union** (hybrid): each query's candidates of both sides, lexical first;
3. **rescoring** (two-stage): the candidates scored with their full vectors
   (:func:`~.rescore.rescore_candidates`), the Matryoshka second stage;
4. **fusion** (hybrid): the two sides fused (:class:`~.fusion.Fusion`);
5. **hits**: the documents of the final candidates read once, in one call per block;
6. **reranking** (a ``reranker``): the hits of each query's best ``rerank_top`` candidates,
   read once in step 5, ordered by a cross-encoder over the whole batch and cut to ``k``
   (:mod:`.rerank`); chunks are reranked before grouping and expansion;
7. **grouping** (``group_by="document"``): one hit per document, searching wider until ``k``
   documents are found (:mod:`.grouping`);
8. **expansion** (``expand``): each chunk hit joined with its neighbours (:mod:`.expand`).

Where a store declares a capability the matching stage is pushed down to it (both stages in
one call, the engine scoring candidates, native grouping, both sides in one call); the
results are the generic stage's. Queries run in blocks whose candidates fit in
``store.candidate_block``, so a batch of any size runs in flat memory. The whole plan runs
inside the store's snapshot (``_snapshot``); a candidate deleted by a concurrent writer between
two reads drops out, never raises. Async callers run the same plan in a worker thread.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..types import Document, Hit
from .expand import expand_hits
from .grouping import group_hits
from .ranked import Ranked
from .request import Queries, SearchRequest
from .rerank import rerank_hits
from .rescore import rescore_candidates

if TYPE_CHECKING:
    from ..stores.base import VectorStore

__all__ = ["run"]

logger = logging.getLogger(__name__)


def run(store: VectorStore, request: SearchRequest, queries: Queries) -> list[list[Hit]]:
    """The hits of each query, best first (see the module docstring)."""
    if len(queries) == 0:
        return []
    if request.reranker is not None and (queries.texts is None
                                         or len(queries.texts) != len(queries)):
        raise ValueError("a reranker reads the query texts: search with text queries "
                         "(Retriever.search), not vectors alone")
    if request.reranker is not None:
        return _reranked(store, request, queries)
    with store._snapshot():
        if request.group_by is not None:
            hits = _grouped(store, request, queries)
        else:
            hits = hits_of(store, ranked_candidates(store, request, queries, request.k))
        if request.expand:
            hits = [expand_hits(store, h, request.expand) for h in hits]
    return hits


def _reranked(store: VectorStore, request: SearchRequest, queries: Queries) -> list[list[Hit]]:
    """The plan with a reranker. The store's reads run in snapshots and the cross-encoder
    outside them: a snapshot may hold the store's lock (MemoryStore), and a model call of
    hundreds of milliseconds must not block writers and other searches. Hits carry their
    texts, so nothing read before the model call depends on the snapshot after it."""
    assert request.reranker is not None and queries.texts is not None
    if request.group_by is not None:
        hits = _grouped(store, request, queries)
    else:
        with store._snapshot():
            found = hits_of(store, ranked_candidates(store, request, queries,
                                                     request.rerank_top))
        hits = rerank_hits(request.reranker, queries.texts, found, request.rerank_top,
                           request.k)
    if request.expand:
        with store._snapshot():
            hits = [expand_hits(store, h, request.expand) for h in hits]
    return hits


def ranked_candidates(store: VectorStore, request: SearchRequest, queries: Queries,
                      keep: int) -> list[Ranked]:
    """Each query's best ``keep`` candidates through the stages of its mode, by blocks of
    queries whose candidates fit in ``store.candidate_block``."""
    n = max(keep, request.rescore_k) if _two_sided(request) else keep
    step = max(1, store.candidate_block // n)
    out: list[Ranked] = []
    for start in range(0, len(queries), step):
        out.extend(_stages(store, request, queries.take(slice(start, start + step)), keep, n))
    return out


def _two_sided(request: SearchRequest) -> bool:
    """Whether candidates are taken wider than ``k``: to rescore, or to fuse."""
    return request.two_stage or request.mode == "hybrid"


def _stages(store: VectorStore, request: SearchRequest, q: Queries, keep: int,
            n: int) -> list[Ranked]:
    caps = store.capabilities
    conditions = request.conditions
    # Where the candidates are the hits, a single query reads its documents in the same call
    # (one round trip less); a batch reads them afterwards, once per distinct document (the
    # questions of a batch share hits: per hit, Qdrant and Milvus copy each payload again).
    documents = len(q) == 1
    if request.mode == "lexical":
        assert q.terms is not None
        return _lexical(store, q.terms, keep, conditions, documents=documents)
    assert q.index is not None
    if request.mode == "dense":
        if not request.two_stage:
            return store._knn(q.index, keep, conditions, documents=documents)
        assert q.full is not None
        if caps.rescore:
            return store._knn_rescored(q.index, q.full, keep, n, conditions,
                                       documents=documents)
        return rescore_candidates(store, store._knn(q.index, n, conditions), q.full, keep)
    assert q.terms is not None
    if caps.joint_candidates:
        dense, lexical = store._candidates(q.index, q.terms, n, conditions)
    else:
        dense = store._knn(q.index, n, conditions)
        lexical = _lexical(store, q.terms, n, conditions)
    if request.two_stage:
        assert q.full is not None
        unions = [union(lex, den) for den, lex in zip(dense, lexical, strict=True)]
        if caps.score:
            dense = store._score(unions, q.full)
        else:
            dense = rescore_candidates(store, unions, q.full)
        # a candidate with no full vector left was deleted meanwhile: gone from both sides
        lexical = [_alive(lex, den) for den, lex in zip(dense, lexical, strict=True)]
    return [request.fusion.fuse_ranked(den, lex, keep)
            for den, lex in zip(dense, lexical, strict=True)]


def _alive(lexical: Ranked, rescored: Ranked) -> Ranked:
    """The lexical candidates that rescoring still found (the others were deleted)."""
    if len(lexical) == 0:
        return lexical
    live = set(rescored.ids)
    return lexical.keep([i in live for i in lexical.ids])


def _lexical(store: VectorStore, terms: list[list[str]], k: int, conditions: object, *,
             documents: bool = False) -> list[Ranked]:
    """``_bm25`` for the queries that have terms; nothing for the others (answered by their
    dense side alone in hybrid mode)."""
    asked = [i for i, t in enumerate(terms) if t]
    out = [Ranked.empty() for _ in terms]
    if asked:
        for i, got in zip(asked, store._bm25([terms[i] for i in asked], k, conditions,
                                             documents=documents), strict=True):
            out[i] = got
    return out


def union(first: Ranked, second: Ranked) -> Ranked:
    """The candidates of both, ``first``'s first, each once (scores are not kept: the union is
    rescored)."""
    if not len(second):
        return first
    seen = set(first.ids)
    extra = [j for j, i in enumerate(second.ids) if i not in seen]
    ids = [*first.ids, *(second.ids[j] for j in extra)]
    rows = None
    if first.rows is not None and second.rows is not None:
        rows = np.concatenate([first.rows, second.rows[extra]])
    return Ranked(ids, np.zeros(len(ids)), rows)


def hits_of(store: VectorStore, ranked: Sequence[Ranked]) -> list[list[Hit]]:
    """Hits with text and metadata for ranked candidates: the documents the store did not
    already give are read in one call; a candidate deleted meanwhile drops out."""
    wanted: dict[str, int | None] = {}
    for r in ranked:
        if r.documents is None:
            rows = r.rows.tolist() if r.rows is not None else None
            for j, i in enumerate(r.ids):
                wanted.setdefault(i, None if rows is None else rows[j])
    docs = {}
    if wanted:
        ids = list(wanted)
        handles = list(wanted.values())
        rows = None if any(h is None for h in handles) else np.asarray(handles, dtype=np.int64)
        fetched = store._fetch(ids, rows, documents=True)
        assert fetched.documents is not None
        docs = {i: d for i, d in zip(ids, fetched.documents, strict=True) if d is not None}
    out = []
    given: set[int] = set()  # documents read once here and already given to a hit
    for r in ranked:
        own = r.documents is not None  # the store built these for this query's hits
        found: list[Document | None] = (list(r.documents) if r.documents is not None
                                        else [docs.get(i) for i in r.ids])
        hits = []
        for d, s in zip(found, r.scores.tolist(), strict=True):
            if d is None:
                continue
            meta = d.metadata
            if not own:  # each hit owns its metadata: a document two queries found is copied
                if id(d) in given:
                    meta = _copied(meta)
                given.add(id(d))
            hits.append(Hit(id=d.id, text=d.text, score=float(s), metadata=meta))
        out.append(hits)
    return out


def _copied(value: Any) -> Any:
    """A copy of JSON metadata (dicts, lists and scalars: what stores keep), several times
    faster than ``copy.deepcopy`` on it."""
    if isinstance(value, dict):
        return {k: _copied(v) if isinstance(v, (dict, list)) else v for k, v in value.items()}
    if isinstance(value, list):
        return [_copied(v) if isinstance(v, (dict, list)) else v for v in value]
    return value


def _grouped(store: VectorStore, request: SearchRequest, q: Queries) -> list[list[Hit]]:
    """One hit per document: ``k * group_size`` chunks (at least ``4k``) grouped, then wider
    (4x each time) for the queries that found fewer than ``k`` documents while more chunks
    were left, up to ``store.max_group_candidates``. With a reranker, the best
    ``rerank_top`` chunks (at least that many are read) are reranked first and rank above
    the others, which follow in their retrieval order."""
    k, size = request.k, request.group_size
    reranker = request.reranker
    if (reranker is None and store.capabilities.grouping and request.mode == "dense"
            and not request.two_stage):
        assert q.index is not None
        native = store._knn_grouped(q.index, k, size, request.conditions)
        if native is not None:  # None: the store declines this one (e.g. over an engine cap)
            return native
    limit = min(store._count(), store.max_group_candidates)
    least = max(k * size, 4 * k, request.rerank_top if reranker is not None else 0)
    fetch = min(least, limit)
    rows = list(range(len(q)))
    out: list[list[Hit]] = [[] for _ in rows]
    while rows and fetch > 0:
        wide = request.widened(fetch)
        taken = q.take(rows)
        if reranker is None:  # run() holds the snapshot
            hits = hits_of(store, ranked_candidates(store, wide, taken, fetch))
        else:  # reads in a snapshot, the model outside it (see _reranked)
            assert taken.texts is not None
            with store._snapshot():
                hits = hits_of(store, ranked_candidates(store, wide, taken, fetch))
            hits = rerank_hits(reranker, taken.texts, hits, request.rerank_top, None)
        again = []
        for row, found in zip(rows, hits, strict=True):
            out[row] = group_hits(found, k, size, ordered=reranker is not None)
            if len(out[row]) < k and len(found) >= fetch:
                again.append(row)
        if fetch >= limit:
            break
        rows, fetch = again, min(4 * fetch, limit)
    return out
