"""Retrieval with and without a reranker, on the same retriever: quality and cost per query.

:func:`evaluate_reranking` runs each mode once without a reranker and once per ``rerank_top``
with it, in batches of queries as a service would, and reports NDCG@10, MRR@10 and Recall@1
(:func:`~.metrics.ir_metrics`'s definitions) with the wall time per query. The training report
of ``bertino-rag train --task rerank``, ``bertino-rag eval --reranker`` and
``benchmarks/bench_rerank.py`` read the same rows.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .dataset import EvalSet
from .metrics import ir_metrics

__all__ = ["BLEND_WEIGHTS", "RerankRow", "best_weight", "blend_curve", "evaluate_reranking",
           "evaluate_reranking_dims", "rerank_markdown", "reranked_metrics"]

#: the reranker weights :func:`blend_curve` tries by default (1: the reranker's order alone)
BLEND_WEIGHTS = (1.0, 0.7, 0.5, 0.3)


@dataclass
class RerankRow:
    """One line of the table: a mode, with or without the reranker.

    Attributes:
        mode: ``"dense"``, ``"lexical"`` or ``"hybrid"``.
        rerank_top: candidates the reranker read per query (``None``: no reranker).
        metrics: ``ndcg@10``, ``mrr@10``, ``recall@1``.
        ms_per_query: wall time per query of the whole search (encoding, retrieval, reranking),
            in batches of ``batch_size`` queries.
        batch_size: queries per call.
    """

    mode: str
    rerank_top: int | None
    metrics: dict[str, float]
    ms_per_query: float
    batch_size: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def reranked_metrics(hits: Sequence[Sequence[Any]], evalset: EvalSet) -> dict[str, float]:
    """NDCG@10, MRR@10 and Recall@1 of hits in the order given (their position is the score:
    a reranked list is ordered by ``rerank_score``, not by ``score``)."""
    rankings = [[(h.id, float(len(row) - j)) for j, h in enumerate(row)] for row in hits]
    m = ir_metrics(rankings, evalset.query_ids, evalset.qrels)
    recall1 = 0.0
    for q, row in zip(evalset.query_ids, hits, strict=True):
        relevant = {d for d, r in evalset.qrels[q].items() if r > 0}
        recall1 += len({h.id for h in row[:1]} & relevant) / max(1, len(relevant))
    return {"ndcg@10": m["ndcg@10"], "mrr@10": m["mrr@10"],
            "recall@1": recall1 / max(1, len(hits))}


def _run(retriever: Any, evalset: EvalSet, batch_size: int, **kwargs: Any
         ) -> tuple[list[list[Any]], float]:
    texts = evalset.query_texts
    hits: list[list[Any]] = []
    t0 = time.perf_counter()
    for start in range(0, len(texts), batch_size):
        hits.extend(retriever.search_batch(texts[start:start + batch_size], **kwargs))
    return hits, (time.perf_counter() - t0) * 1000 / max(1, len(texts))


def evaluate_reranking(retriever: Any, evalset: EvalSet, reranker: Any, *,
                       modes: Sequence[str] = ("hybrid",), tops: Sequence[int] = (20,),
                       k: int = 10, batch_size: int = 16) -> list[RerankRow]:
    """For each mode: the retriever alone, then with ``reranker`` reading each of ``tops``
    candidates per query (a retriever over ``evalset``'s documents, indexed by the caller).

    Raises:
        ValueError: a ``rerank_top`` below ``k`` (the search's own check).
    """
    rows = []
    for mode in modes:
        hits, ms = _run(retriever, evalset, batch_size, k=k, mode=mode, reranker=False)
        rows.append(RerankRow(mode, None, reranked_metrics(hits, evalset), ms, batch_size))
        for top in tops:
            hits, ms = _run(retriever, evalset, batch_size, k=k, mode=mode, reranker=reranker,
                            rerank_top=top)
            rows.append(RerankRow(mode, int(top), reranked_metrics(hits, evalset), ms,
                                  batch_size))
    return rows


class _Scored:
    """Scores computed once, served to :func:`~bertino_rag.search.rerank.rerank_hits` at a
    ``weight``: every weight of :func:`blend_curve` is ordered by the serving stage itself."""

    def __init__(self, scores: Any, weight: float) -> None:
        self.scores, self.weight = scores, weight

    def score_pairs(self, queries: Sequence[str], texts: Sequence[str]) -> Any:
        return self.scores


def blend_curve(retriever: Any, evalset: EvalSet, reranker: Any, top: int,
                weights: Sequence[float] = BLEND_WEIGHTS, mode: str = "hybrid"
                ) -> dict[float, dict[str, float]]:
    """NDCG@10, MRR@10 and Recall@1 of ``mode``'s best ``top`` candidates ordered by
    :func:`~bertino_rag.search.rerank.blend` at each weight: the reranker reads each
    candidate list once, and the rerank stage reorders the same scores at every weight."""
    from ..search.rerank import rerank_hits

    texts = evalset.query_texts
    hits = retriever.search_batch(texts, k=top, mode=mode)
    pairs = [q for q, row in zip(texts, hits, strict=True) for _ in row]
    scores = reranker.score_pairs(pairs, [h.text for row in hits for h in row])
    return {float(w): reranked_metrics(rerank_hits(_Scored(scores, float(w)), texts, hits, top,
                                                   keep=10), evalset)
            for w in weights}


def best_weight(curve: dict[float, dict[str, float]]) -> float:
    """The weight with the highest NDCG@10; a tie goes to the larger weight (the reranker's
    own order is the simpler claim)."""
    return max(curve, key=lambda w: (round(curve[w]["ndcg@10"], 12), w))


def evaluate_reranking_dims(encoder: Any, evalset: EvalSet, dims: Sequence[int], reranker: Any,
                            *, modes: Sequence[str], tops: Sequence[int], store: str = "memory",
                            show_progress_bar: bool = False) -> dict[int, list[RerankRow]]:
    """:func:`evaluate_reranking` at each dim, on the hybrid collections
    :func:`~.modes.evaluate_modes` builds (every text encoded once)."""
    from .modes import _retrievers

    return {dim: evaluate_reranking(r, evalset, reranker, modes=modes, tops=tops)
            for dim, r in _retrievers(encoder, evalset, dims, store, show_progress_bar)}


def rerank_markdown(rows: Sequence[RerankRow]) -> str:
    """The rows as a Markdown table, each reranked row with its gain in NDCG@10 points."""
    lines = ["| mode | reranker | NDCG@10 | MRR@10 | Recall@1 | ms/query |",
             "|---|---|---:|---:|---:|---:|"]
    base: dict[str, float] = {}
    for r in rows:
        m = r.metrics
        if r.rerank_top is None:
            base[r.mode] = m["ndcg@10"]
            label = "none"
        else:
            gain = 100 * (m["ndcg@10"] - base.get(r.mode, m["ndcg@10"]))
            label = f"top {r.rerank_top} ({gain:+.1f} pt)"
        lines.append(f"| {r.mode} | {label} | {m['ndcg@10']:.4f} | {m['mrr@10']:.4f} | "
                     f"{m['recall@1']:.4f} | {r.ms_per_query:.1f} |")
    return "\n".join(lines)
