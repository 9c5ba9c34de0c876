"""Retrieval metrics with sentence-transformers' own definitions, exact search, STS correlation.

The IR figures are computed by ``InformationRetrievalEvaluator.compute_metrics`` (the code that
produces the model card's table) on rankings made here: exact numpy search, or a store's hits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..stores.base import ranking_key

__all__ = ["IR_KEYS", "STS_KEYS", "exact_search", "ir_metrics", "sts_correlations"]

#: metric keys, as they appear in the JSON report
IR_KEYS = ("ndcg@10", "map@100", "mrr@10", "accuracy@1", "accuracy@10", "recall@100")
STS_KEYS = ("spearman", "pearson")
#: depth of the rankings the IR metrics need (MAP@100, Recall@100)
DEPTH = 100

Ranking = Sequence[tuple[str, float]]


def _ir_evaluator_class() -> type:
    from .._deps import st_module

    return st_module("evaluation").InformationRetrievalEvaluator


def ir_metrics(
    rankings: Sequence[Ranking],
    query_ids: Sequence[str],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    accuracy_at: Sequence[int] = (1, 10),
) -> dict[str, float]:
    """NDCG@10, MAP@100, MRR@10, Accuracy@1/@10 (``accuracy_at``) and Recall@100 of ranked
    hits.

    Computed by sentence-transformers' ``InformationRetrievalEvaluator.compute_metrics``: the
    same definitions as the model card (binary relevance; MAP@k divides by
    ``min(k, #relevant)``; Recall@k divides by ``#relevant``). A ranking shorter than 100 is
    scored as it is (the documents it lacks count as not retrieved).

    Args:
        rankings: for each query, ``(doc_id, score)`` pairs, best first.
        query_ids: the query of each ranking; every one must have a relevant document.
        qrels: ``{query_id: {doc_id: relevance}}``.
    """
    if len(rankings) != len(query_ids):
        raise ValueError(f"{len(rankings)} rankings for {len(query_ids)} queries")
    missing = [q for q in query_ids if not qrels.get(q)]
    if missing:
        raise ValueError(f"{len(missing)} queries have no relevant document, e.g. {missing[0]!r}")
    if not query_ids:
        raise ValueError("no queries to evaluate")
    evaluator = _ir_evaluator_class()(
        queries={q: q for q in query_ids},
        corpus={},
        relevant_docs={q: set(qrels[q]) for q in query_ids},
        mrr_at_k=[10], ndcg_at_k=[10], accuracy_at_k=sorted(set(accuracy_at)),
        precision_recall_at_k=[DEPTH], map_at_k=[DEPTH], write_csv=False,
    )
    if list(evaluator.queries_ids) != list(query_ids):
        raise ValueError("query ids must be unique")
    results = [[{"corpus_id": d, "score": float(s)} for d, s in ranking] for ranking in rankings]
    out = evaluator.compute_metrics(results)
    return {
        "ndcg@10": float(out["ndcg@k"][10]),
        "map@100": float(out["map@k"][DEPTH]),
        "mrr@10": float(out["mrr@k"][10]),
        **{f"accuracy@{k}": float(out["accuracy@k"][k]) for k in sorted(set(accuracy_at))},
        "recall@100": float(out["recall@k"][DEPTH]),
    }


def exact_search(
    queries: np.ndarray, docs: np.ndarray, doc_ids: Sequence[str], k: int = DEPTH,
    *, block: int = 512,
) -> list[list[tuple[str, float]]]:
    """Exact top-``k`` by dot product (cosine for normalized rows), ties broken by id.

    The order is the stores' (:func:`bertino_rag.adapters.base.ranking_key`), so rankings
    compare.
    """
    queries = np.asarray(queries, dtype=np.float32)
    docs = np.asarray(docs, dtype=np.float32)
    if queries.ndim != 2 or docs.ndim != 2 or queries.shape[1] != docs.shape[1]:
        raise ValueError(f"shapes do not match: queries {queries.shape}, docs {docs.shape}")
    if len(doc_ids) != docs.shape[0]:
        raise ValueError(f"{len(doc_ids)} ids for {docs.shape[0]} documents")
    ids = np.asarray(doc_ids, dtype=object)
    take = min(k, docs.shape[0])
    out: list[list[tuple[str, float]]] = []
    for start in range(0, queries.shape[0], block):
        scores = queries[start : start + block] @ docs.T
        if take < docs.shape[0]:
            top = np.argpartition(-scores, take - 1, axis=1)[:, :take]
        else:
            top = np.tile(np.arange(docs.shape[0]), (scores.shape[0], 1))
        for row, cols in zip(scores, top, strict=True):
            pairs = sorted(((ids[c], float(row[c])) for c in cols),
                           key=lambda p: ranking_key(p[1], p[0]))
            out.append(pairs)
    return out


def sts_correlations(
    emb1: np.ndarray, emb2: np.ndarray, gold: Sequence[float]
) -> dict[str, float]:
    """Spearman and Pearson correlation of cosine similarity with the gold scores.

    The definitions of sentence-transformers' ``EmbeddingSimilarityEvaluator`` (cosine):
    ``scipy.stats.spearmanr`` / ``pearsonr`` of ``1 - cosine_distance`` against the gold scores.
    """
    from scipy.stats import pearsonr, spearmanr

    a = np.asarray(emb1, dtype=np.float64)
    b = np.asarray(emb2, dtype=np.float64)
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    cos = np.sum(a * b, axis=1)
    return {
        "spearman": float(spearmanr(gold, cos)[0]),
        "pearson": float(pearsonr(gold, cos)[0]),
    }
