"""Grouping by document: one hit per document, the funnel's last ranking stage.

A long document is stored as chunks whose ``doc_id`` metadata names it
(:mod:`bertino_rag.indexing.documents`). Grouping reads the ranked chunks, keeps each
document's best chunk as its hit (its score, text and metadata) with up to ``group_size``
matching chunks attached, and orders documents by their best score, ties by id. The funnel
searches wider until ``k`` documents are found or nothing is left (:func:`~.funnel.run`).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..indexing.documents import document_of
from ..types import Hit

__all__ = ["group_hits"]


def group_hits(hits: Sequence[Hit], k: int, group_size: int, *,
               ordered: bool = False) -> list[Hit]:
    """One hit per document from ``hits`` (best first): the document's id, its best chunk's
    score (and rerank score), text and metadata, and up to ``group_size`` of its chunks
    attached, best first. Documents are ordered by their best score, ties by id; with
    ``ordered`` (reranked hits) by the order of ``hits`` itself. The first ``k`` are
    returned."""
    groups: dict[str, list[Hit]] = {}
    for h in (hits if ordered else sorted(hits, key=lambda h: (-h.score, h.id))):
        groups.setdefault(document_of(h.id, h.metadata), []).append(h)
    items = list(groups.items())
    if not ordered:
        items.sort(key=lambda kv: (-kv[1][0].score, kv[0]))
    return [
        Hit(id=doc, text=chunks[0].text, score=chunks[0].score, metadata=chunks[0].metadata,
            chunks=tuple(chunks[:group_size]), rerank_score=chunks[0].rerank_score)
        for doc, chunks in items[:k]
    ]
