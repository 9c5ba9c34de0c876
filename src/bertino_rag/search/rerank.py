"""Reranking: the funnel's last ranking stage, a cross-encoder reading each query with the
texts of its best candidates.

The funnel reads the documents of each query's best ``rerank_top`` candidates once (the hits),
then this stage scores every (query, hit text) pair of the whole batch in one
:meth:`~bertino_rag.rerank.Reranker.score_pairs` call, orders each query's hits by that score
(ties keep the retrieval order) and keeps ``k``. ``Hit.score`` stays the retrieval score;
``Hit.rerank_score`` holds the reranker's. A query with no candidates gets no hits and costs
no pair. Grouping and expansion run on the reranked chunks (:mod:`.funnel`).

A reranker with a ``weight`` below 1 (``CrossEncoderReranker(..., weight=0.5)``) orders by
:func:`blend`: ``weight`` times its score plus ``1 - weight`` times the retrieval score, each
min-max scaled within the query's candidates, and ``Hit.rerank_score`` holds that blend (so
hits are always in ``rerank_score`` order). A reranker trained on a few thousand questions can
rank worse alone than hybrid search and still add to it: measured on held-apart squad-it-dev
articles in docs/benchmarks.md (reranking section).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from ..rerank import Reranker, check_scores
from ..types import Hit
from ..validation import reranker_weight

__all__ = ["DEFAULT_RERANK_TOP", "blend", "rerank_hits"]

#: fused candidates a reranker reads per query by default
DEFAULT_RERANK_TOP = 20


def _scaled(x: np.ndarray) -> np.ndarray:
    """``x`` min-max scaled to [0, 1] (all zeros when its values are equal)."""
    span = float(x.max() - x.min()) if len(x) else 0.0
    return (x - x.min()) / span if span > 0 else np.zeros_like(x)


def blend(rerank: np.ndarray, retrieval: np.ndarray, weight: float) -> np.ndarray:
    """One query's candidates: ``weight`` times the reranker's scores plus ``1 - weight``
    times the retrieval scores, each min-max scaled within the candidates (the two have
    unrelated ranges: logits or probabilities against cosines or fused scores)."""
    rerank = np.asarray(rerank, dtype=np.float64)
    if weight >= 1.0:
        return rerank
    return weight * _scaled(rerank) + (1.0 - weight) * _scaled(
        np.asarray(retrieval, dtype=np.float64))


def rerank_hits(reranker: Reranker, queries: Sequence[str], hits: Sequence[Sequence[Hit]],
                top: int, keep: int | None) -> list[list[Hit]]:
    """Each query's first ``top`` hits ordered by ``reranker`` (blended with their retrieval
    scores when its ``weight`` is below 1), then cut to ``keep`` (``None``: the hits past
    ``top`` follow, unreranked, in their retrieval order).

    Raises:
        RerankerError: the reranker returned other than one finite score per pair (before any
            hit is changed).
    """
    heads = [list(h[:top]) for h in hits]
    pair_queries = [q for q, head in zip(queries, heads, strict=True) for _ in head]
    texts = [h.text for head in heads for h in head]
    scores = (check_scores(reranker.score_pairs(pair_queries, texts), len(texts), reranker)
              if texts else np.empty(0))
    weight = reranker_weight(getattr(reranker, "weight", 1.0))
    out = []
    start = 0
    for found, head in zip(hits, heads, strict=True):
        mine = blend(scores[start:start + len(head)], np.asarray([h.score for h in head]),
                     weight).tolist()
        start += len(head)
        order = sorted(range(len(head)), key=lambda j: -mine[j])  # stable: ties keep order
        ranked = [replace(head[j], rerank_score=float(mine[j])) for j in order]
        if keep is None:
            ranked.extend(found[top:])
        else:
            ranked = ranked[:keep]
        out.append(ranked)
    return out
