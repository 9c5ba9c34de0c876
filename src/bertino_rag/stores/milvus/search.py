"""MilvusStore's primitive searches: k-nearest on the index vectors, BM25 by Milvus's BM25
function, and Milvus's grouping search. A mixin of :class:`~.store.MilvusStore`.

Searches return ids and scores only (the funnel reads the documents of the final hits, once);
the grouping search, which ends a search, returns its hits whole. Queries go to Milvus in
calls whose hits fit in one gRPC response (:data:`RESPONSE_BUDGET`), and no call asks for more
than Milvus's :data:`MAX_LIMIT` hits per query.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from ...lexical import term_token
from ...search.filters import matches
from ...search.grouping import group_hits
from ...search.ranked import Ranked, ranked
from ...types import Document, Hit, Stamp
from ..base import lexical_config
from .catalogue import search_params
from .filters import compile_filter, filter_kwargs
from .schema import GROUP_FIELD, LEXICAL

if TYPE_CHECKING:
    from ..retry import Retry

__all__ = ["MAX_LIMIT", "RESPONSE_BUDGET"]

logger = logging.getLogger(__name__)

#: Milvus returns at most this many hits per query
MAX_LIMIT = 16_384
#: bytes of hits per search call (gRPC messages are capped)
RESPONSE_BUDGET = 32 << 20


class _Search:
    """The search side of a MilvusStore collection."""

    if TYPE_CHECKING:  # provided by MilvusStore and VectorStore
        _retry: Retry
        _index_type: str
        _metric: str
        _grouped: bool
        ef: int
        nprobe: int

        @property
        def client(self) -> Any: ...

        @property
        def _name(self) -> str: ...

        @property
        def is_lite(self) -> bool: ...

        @property
        def stamp(self) -> Stamp: ...

        def _templating(self) -> bool: ...

    def _searched(self, data: list[Any], limit: int, fields: list[str], what: str, *,
                  hits_per_query: int | None = None, **request: Any) -> list[Any]:
        """Milvus's results for ``data`` (query vectors or texts), in calls whose hits fit in
        one response (``hits_per_query``, default ``limit``, with their ``fields``). Ids alone
        are asked as ``["id"]``: an empty list makes Milvus return every field, vectors
        included (measured: 5x the memory and 4.7x the CPU of a two-stage batch)."""
        if limit > MAX_LIMIT:
            raise ValueError(f"Milvus returns at most {MAX_LIMIT} hits per query, asked {limit}")
        fields = fields or ["id"]
        per_hit = 2048 if "text" in fields else 640
        step = max(1, RESPONSE_BUDGET // ((hits_per_query or limit) * per_hit))
        results: list[Any] = []
        for start in range(0, len(data), step):
            results.extend(self._retry.call(
                partial(self.client.search, self._name, data=data[start : start + step],
                        limit=limit, output_fields=fields, **request), what))
        return results

    def _vectors_request(self, limit: int) -> dict[str, Any]:
        return {"anns_field": "vector",
                "search_params": search_params(self._index_type, self._metric, limit, self.ef,
                                               self.nprobe, self.is_lite)}

    @staticmethod
    def _rows(vectors: np.ndarray) -> list[np.ndarray]:
        return [np.ascontiguousarray(v, dtype=np.float32) for v in vectors]

    def _knn(self, vectors: np.ndarray, k: int, conditions: Any, *,
             documents: bool = False) -> list[Ranked]:
        compiled = compile_filter(conditions)
        if compiled is None:  # nothing can match
            return [Ranked.empty() for _ in vectors]
        results = self._searched(self._rows(vectors), k, _DOCUMENT_FIELDS if documents else [],
                                 "search", **self._vectors_request(k),
                                 **filter_kwargs(compiled, self._templating()))
        return [ranked([h["id"] for h in r], [float(h["distance"]) for h in r], k=k,
                       documents=[_document(h) for h in r] if documents else None)
                for r in results]

    def _knn_grouped(self, vectors: np.ndarray, k: int, group_size: int,
                     conditions: Any) -> list[list[Hit]] | None:
        """One hit per document with Milvus's grouping search (``group_by_field`` on the
        ``document`` field): ``k`` groups of up to ``group_size`` chunks, grouped as the
        funnel groups (:func:`~bertino_rag.search.grouping.group_hits`).

        Declared (``capabilities.grouping``) on collections that have the field; ``None``
        (the funnel's generic grouping) when ``k * group_size`` chunks exceed what Milvus
        returns. Two-stage and hybrid searches group the funnel's own candidates: a grouping
        search ranks on one vector field, and Milvus's multi-vector ``hybrid_search`` fuses
        the scores of separate searches, it does not rescore one search's candidates.
        """
        size = k * group_size
        if size > MAX_LIMIT:
            return None
        compiled = compile_filter(conditions)
        if compiled is None:
            return [[] for _ in vectors]
        results = self._searched(self._rows(vectors), k, ["text", "metadata"], "grouped search",
                                 hits_per_query=size, group_by_field=GROUP_FIELD,
                                 group_size=group_size, **self._vectors_request(k),
                                 **filter_kwargs(compiled, self._templating()))
        return [group_hits([Hit(id=h["id"], text=h["entity"]["text"],
                                score=float(h["distance"]),
                                metadata=h["entity"].get("metadata") or {}) for h in r],
                           k, group_size)
                for r in results]

    def _bm25(self, terms: list[list[str]], k: int, conditions: Any, *,
              documents: bool = False) -> list[Ranked]:
        """BM25 by Milvus on the library's terms, with the collection's statistics.

        Milvus computes BM25 statistics over the documents a filter lets through, where the
        protocol (and MemoryStore, Qdrant) scores with the whole collection's. A filtered query
        therefore searches unfiltered and keeps the matching hits
        (:func:`~bertino_rag.search.filters.matches`, the reference semantics Milvus's filters
        follow), widening the search 4x until ``k`` match or every document with a query term
        was seen; past Milvus's cap of ``MAX_LIMIT`` hits, the rest is searched with Milvus's
        filter and its statistics.
        """
        if k > MAX_LIMIT:
            raise ValueError(f"Milvus returns at most {MAX_LIMIT} hits per query, asked {k}")
        compiled = compile_filter(conditions)
        if compiled is None:
            return [Ranked.empty() for _ in terms]
        if not compiled.expr:
            return [_top(hits, k) for hits in self._lexical(terms, k, {}, [])]
        out = [Ranked.empty() for _ in terms]
        todo, limit = list(range(len(terms))), min(MAX_LIMIT, max(4 * k, 100))
        while todo:
            again = []
            for i, hits in zip(todo, self._lexical([terms[i] for i in todo], limit, {},
                                                   ["metadata"]), strict=True):
                out[i] = _top([h for h in hits if matches(h[2], conditions)], k)
                if len(out[i]) < k and len(hits) >= limit:
                    again.append(i)
            if again and limit >= MAX_LIMIT:
                logger.info("%d filtered lexical queries match fewer than %d of Milvus's first "
                            "%d hits: searched with the filter's statistics", len(again), k,
                            MAX_LIMIT)
                expr = filter_kwargs(compiled, self._templating())
                for i, hits in zip(again, self._lexical([terms[i] for i in again], k, expr, []),
                                   strict=True):
                    out[i] = _top(hits, k)
                again = []
            todo, limit = again, min(MAX_LIMIT, 4 * limit)
        return out

    def _lexical(self, terms: list[list[str]], limit: int, expr: dict[str, Any],
                 fields: list[str]) -> list[list[tuple[str, float, dict[str, Any]]]]:
        """One BM25 search per query: ``(id, score, metadata)`` of its hits scoring above 0,
        scores as MemoryStore's (Lucene's BM25 over ``k1 + 1``)."""
        scale = 1.0 + lexical_config(self.stamp.lexical or "")[1].k1
        texts = [" ".join(term_token(t) for t in q) for q in terms]
        out = []
        for result in self._searched(texts, limit, fields, "lexical search", anns_field=LEXICAL,
                                     search_params={"metric_type": "BM25"}, **expr):
            # Milvus Lite answers BM25 scores negated
            got = [(h["id"], abs(float(h["distance"])) / scale,
                    h["entity"].get("metadata") or {}) for h in result]
            out.append([g for g in got if g[1] > 0])
        return out


def _top(hits: list[tuple[str, float, dict[str, Any]]], k: int) -> Ranked:
    return ranked([h[0] for h in hits], [h[1] for h in hits], k=k)


#: what a search reads when its hits are final (``documents=True``)
_DOCUMENT_FIELDS = ["text", "metadata"]


def _document(hit: dict[str, Any]) -> Document:
    entity = hit.get("entity") or {}
    return Document(text=entity.get("text", ""), id=hit["id"],
                    metadata=entity.get("metadata") or {})
