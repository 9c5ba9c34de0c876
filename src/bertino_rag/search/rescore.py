"""Matryoshka rescoring: the funnel's second stage, scoring candidates with full vectors.

The first stage searches the truncated (index) vectors; this stage reads the distinct
candidates' full vectors once per block of queries and scores them all in one vectorized
product (:func:`rescore_rows`). Candidates whose full vector can no longer be read (deleted or
edited by a concurrent writer between the two reads) drop out. Sentence-transformers and
Qdrant call this step *rescoring*; *reranking* is left to a cross-encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..types import Hit
from .ranked import Ranked

if TYPE_CHECKING:
    from ..stores.protocol import StoreProtocol

__all__ = ["id_ranks", "rescore", "rescore_candidates", "rescore_hits", "rescore_rows"]


#: floats of full vectors gathered per rescoring block (64 MiB): bounds the memory of a batch
_RESCORE_BLOCK = 1 << 24


def id_ranks(ids: Sequence[str]) -> np.ndarray:
    """Position of each id in ascending id order: the tie-break of rescoring as an int key."""
    order = sorted(range(len(ids)), key=ids.__getitem__)
    ranks = np.empty(len(ids), dtype=np.int64)
    ranks[order] = np.arange(len(ids), dtype=np.int64)
    return ranks


def rescore_rows(
    candidates: np.ndarray, full: np.ndarray, full_queries: np.ndarray, k: int,
    ranks: np.ndarray, first_scores: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Rescore the candidates of many queries with full vectors, vectorized in bounded blocks.

    Args:
        candidates: ``(m, c)`` rows of ``full`` per query, in first-stage order (best first);
            ``-1`` marks no candidate (a query with fewer than ``c``).
        full: ``(u, d)`` full vectors of the distinct candidates (float16 or float32).
        full_queries: ``(m, d)`` full query vectors.
        k: results kept per query.
        ranks: ``(u,)`` tie-break key of each row of ``full`` (:func:`id_ranks` of their ids).
        first_scores: ``(m, c)`` first-stage scores, when ``candidates`` are not yet in
            first-stage order (by score, ties by id); they are sorted so first.

    Returns:
        ``(rows, scores)``, each ``(m, min(k, c))``, best first: by score, ties by id. Past a
        query's candidates, rows are ``-1`` and scores ``-inf``.

    Scores are float32 ``full[rows] @ query`` products computed exactly as rescoring one
    query at a time does (BLAS matrix-vector products of each query's candidates, in
    first-stage order): queries are grouped by their number of candidates and stacked, so
    the vectorized scores are bit for bit the per-query ones.
    """
    m, c = candidates.shape
    keep = min(k, c)
    rows = np.full((m, keep), -1, dtype=np.int64)
    scores = np.full((m, keep), -np.inf, dtype=np.float32)
    if m == 0 or keep == 0 or len(full) == 0:
        return rows, scores
    valid = candidates >= 0
    last = np.iinfo(np.int64).max
    if first_scores is not None:
        keys = np.where(valid, ranks[np.where(valid, candidates, 0)], last)
        first = np.where(valid, -np.asarray(first_scores, dtype=np.float64), np.inf)
        order = np.lexsort((keys, first), axis=-1)
    else:  # keep the given order, the missing candidates last
        order = np.argsort(~valid, axis=-1, kind="stable")
    candidates = np.take_along_axis(candidates, order, axis=1)
    counts = valid.sum(axis=1)
    full32 = full.astype(np.float32, copy=False)
    queries32 = np.ascontiguousarray(full_queries, dtype=np.float32)
    for n in np.unique(counts).tolist():
        if n == 0:
            continue
        group = np.flatnonzero(counts == n)
        step = max(1, _RESCORE_BLOCK // (n * full32.shape[1]))
        for start in range(0, len(group), step):
            sel = group[start : start + step]
            block = candidates[sel, :n]
            got = np.matmul(full32[block], queries32[sel, :, None])[..., 0]
            best = np.lexsort((ranks[block], -got), axis=-1)[:, :keep]
            rows[sel, : best.shape[1]] = np.take_along_axis(block, best, axis=1)
            scores[sel, : best.shape[1]] = np.take_along_axis(got, best, axis=1)
    return rows, scores


def rescore_hits(
    candidates: Sequence[Sequence[Hit]], ids: Sequence[str], full: np.ndarray,
    full_queries: np.ndarray, k: int,
) -> list[list[Hit]]:
    """Rescore each query's candidate hits with full vectors; the top ``k`` hits per query.

    ``full`` row i is the full vector of ``ids[i]``; every candidate's id is among ``ids``
    (the distinct candidates of the batch, each fetched once).
    """
    width = max((len(hits) for hits in candidates), default=0)
    if width == 0:
        return [[] for _ in candidates]
    row = {doc_id: i for i, doc_id in enumerate(ids)}
    matrix = np.full((len(candidates), width), -1, dtype=np.int64)
    for qi, hits in enumerate(candidates):
        matrix[qi, : len(hits)] = [row[h.id] for h in hits]
    top, scores = rescore_rows(matrix, full, full_queries, k, id_ranks(ids))
    out = []
    for hits, picked, got in zip(candidates, top.tolist(), scores.tolist(), strict=True):
        by_row = {row[h.id]: h for h in hits}
        out.append([
            Hit(id=by_row[r].id, text=by_row[r].text, score=s, metadata=by_row[r].metadata)
            for r, s in zip(picked, got, strict=True) if r >= 0
        ])
    return out


def rescore(
    candidates: Sequence[Hit], full: np.ndarray, full_query: np.ndarray, k: int
) -> list[Hit]:
    """Rescore one query's candidates with full-dim vectors; return the top ``k``.

    ``full`` holds the candidates' full vectors, row i for ``candidates[i]``. Ties are broken
    by id so that every store returns the same order for the same vectors.
    """
    if not candidates:
        return []
    ids = [h.id for h in candidates]
    top, scores = rescore_rows(np.arange(len(ids), dtype=np.int64)[None, :], full,
                               np.asarray(full_query)[None, :], k, id_ranks(ids))
    return [
        Hit(id=candidates[i].id, text=candidates[i].text, score=s,
            metadata=candidates[i].metadata)
        for i, s in zip(top[0].tolist(), scores[0].tolist(), strict=True) if i >= 0
    ]


def rescore_candidates(store: StoreProtocol, candidates: Sequence[Ranked],
                       full_queries: np.ndarray, keep: int | None = None) -> list[Ranked]:
    """The rescoring stage: each query's candidates scored with their full vectors, best
    first, the top ``keep`` (all of them when ``None``).

    The distinct candidates of the batch are read once (by the store's row handles when every
    candidate has one, else by id); a candidate whose full vector is gone drops out. Within a
    query, candidates keep their given order for the product, so the scores are bit for bit
    those of rescoring that query alone.
    """
    m = len(candidates)
    width = max((len(c) for c in candidates), default=0)
    if width == 0:
        return [Ranked.empty() for _ in candidates]
    by_rows = all(c.rows is not None for c in candidates if len(c))
    flat_ids = [i for c in candidates for i in c.ids]
    if by_rows:
        handles = np.concatenate([c.rows for c in candidates if c.rows is not None and len(c)])
        distinct, inverse = np.unique(handles, return_inverse=True)
        named = np.empty(len(distinct), dtype=object)
        named[inverse] = flat_ids  # one handle, one id
        ids = named.tolist()
        rows: np.ndarray | None = distinct
    else:
        at: dict[str, int] = {}
        inverse = np.fromiter((at.setdefault(i, len(at)) for i in flat_ids), dtype=np.int64,
                              count=len(flat_ids))
        ids, rows = list(at), None
    fetched = store._fetch(ids, rows, full=True)
    assert fetched.full is not None
    found = np.asarray(fetched.found, dtype=bool)
    matrix = np.full((m, width), -1, dtype=np.int64)
    start = 0
    for qi, c in enumerate(candidates):
        n = len(c)
        part = inverse[start : start + n]
        matrix[qi, :n] = np.where(found[part], part, -1)
        start += n
    top, scores = rescore_rows(matrix, fetched.full, full_queries, keep or width, id_ranks(ids))
    out = []
    for picked, got in zip(top, scores, strict=True):
        sel = picked[picked >= 0]
        out.append(Ranked([ids[r] for r in sel.tolist()], got[: len(sel)].astype(np.float64),
                          None if rows is None else rows[sel]))
    return out
