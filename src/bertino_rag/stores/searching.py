"""The search methods of every store: checked requests run by the funnel.

A mixin of :class:`~bertino_rag.stores.base.VectorStore`: :meth:`Searching.request` checks a
search once (against the open collection, before any query is encoded), :meth:`Searching.query`
runs it through :func:`bertino_rag.search.funnel.run`, and the named methods (``search`` on
vectors, ``lexical_search``, ``hybrid_search``, their batch and async forms) build both.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import EmptyQueryError, LexicalUnavailableError, StoreError
from ..lexical import parse_lexical_spec
from ..search.funnel import run
from ..search.fusion import Fusion
from ..search.request import Queries, SearchRequest
from ..types import Hit, Stamp
from ..validation import check_vectors, renamed

__all__ = ["Searching", "lexical_config"]

logger = logging.getLogger(__name__)


#: the analyzer and BM25 parameters of a stamp's ``lexical`` field (parsed once per spec)
lexical_config = parse_lexical_spec


class Searching:
    """Search methods over the store protocol (see the module docstring)."""

    _collection: str | None

    if TYPE_CHECKING:  # provided by VectorStore
        @property
        def stamp(self) -> Stamp: ...

        @property
        def collection(self) -> str: ...

        def _parse_filter(self, filter: Any) -> Any: ...

    # ------------------------------------------------------------------ lexical
    @property
    def has_lexical(self) -> bool:
        """Whether the open collection keeps a lexical index."""
        return self.stamp.lexical is not None

    @property
    def lexical_avgdl(self) -> float | None:
        """The mean document length BM25 normalizes by, when the store fixes it at write time
        (sparse vectors written once: Qdrant); ``None`` where BM25 is exact on the live
        collection (MemoryStore, Milvus)."""
        return None

    def require_lexical(self, mode: str) -> str:
        """The collection's lexical spec.

        Raises:
            LexicalUnavailableError: the collection was built without a lexical index.
        """
        lexical = self.stamp.lexical
        if lexical is None:
            raise LexicalUnavailableError(
                f"mode={mode!r} needs a lexical index, and collection {self.collection!r} was "
                "built without one: build it with Retriever(..., hybrid=True, recreate=True) "
                "(or a Stamp with lexical=...) and index the documents again"
            )
        return lexical

    def query_terms(self, queries: Sequence[str], mode: str) -> list[list[str]]:
        """Each query's distinct terms, analyzed with the collection's analyzer.

        Raises:
            LexicalUnavailableError: the collection keeps no lexical index.
            EmptyQueryError: ``mode="lexical"`` and a query has no searchable term (in hybrid
                mode such a query is answered by its dense side alone, logged at INFO).
        """
        lexical = self.require_lexical(mode)
        if isinstance(queries, str):
            raise ValueError("pass a list of query texts (use the single-query method for one)")
        for i, q in enumerate(queries):
            if not isinstance(q, str):
                raise ValueError(f"query at position {i} is {type(q).__name__}, expected str")
        analyzer = lexical_config(lexical)[0]
        terms = [list(dict.fromkeys(analyzer.terms(q))) for q in queries]
        for q, t in zip(queries, terms, strict=True):
            if t:
                continue
            if mode == "lexical":
                raise EmptyQueryError(
                    f"query {q!r} has no searchable term after analysis (only stopwords or "
                    "punctuation): search it with mode='dense' or 'hybrid'"
                )
            logger.info("query %r has no searchable term: answered by dense search only", q)
        return terms

    # ------------------------------------------------------------------ search
    def request(self, *, mode: str = "dense", k: Any = 10, filter: Any = None,
                two_stage: bool = False, rescore_k: Any = None, fusion: Any = None,
                group_by: Any = None, group_size: Any = 3, expand: Any = 0,
                rescore_k_name: str = "rescore_k") -> SearchRequest:
        """A search request checked against this collection, before any query is encoded.

        Raises:
            ValueError: a bad count, mode or ``group_by`` (see :meth:`SearchRequest.build`),
                or a filter that cannot be understood (:class:`FilterError`).
            LexicalUnavailableError: a lexical mode on a collection without a lexical index.
            StoreError: two-stage search on a collection that keeps no full vectors.
        """
        stamp = self.stamp
        if mode in ("lexical", "hybrid"):
            self.require_lexical(mode)
        request = SearchRequest.build(
            mode=mode, k=k, conditions=None, two_stage=two_stage, rescore_k=rescore_k,
            fusion=None if fusion is None else Fusion.coerce(fusion), group_by=group_by,
            group_size=group_size, expand=expand, rescore_k_name=rescore_k_name)
        if two_stage and not stamp.full_vectors:
            raise StoreError(
                f"collection {self.collection!r} stores no full vectors (built with rescore "
                "off); search without full vectors, or re-index with rescore on"
            )
        return replace(request, conditions=self._parse_filter(filter))

    def query(self, request: SearchRequest, queries: Queries) -> list[list[Hit]]:
        """Run a request (from :meth:`request`) on query vectors and terms: the funnel."""
        stamp = self.stamp
        index = full = None
        if queries.index is not None:
            index = check_vectors(queries.index, stamp.index_dim, "query vectors",
                                  collection=self._collection)
        if queries.full is not None and request.two_stage:
            full = check_vectors(queries.full, stamp.full_dim, "full query vectors",
                                 n=len(index) if index is not None else None,
                                 collection=self._collection)
        if queries.terms is not None and index is not None and len(queries.terms) != len(index):
            raise ValueError(f"{len(index)} query vectors for {len(queries.terms)} query texts")
        return run(self, request,  # type: ignore[arg-type]
                   Queries(index, full, queries.terms, queries.texts))

    def search(self, vector: np.ndarray, k: int = 10, filter: Any = None, *,
               full_vector: np.ndarray | None = None, rescore_k: int | None = None,
               group_by: str | None = None, group_size: int = 3, expand: int = 0,
               rerank_k: int | None = None) -> list[Hit]:
        """Top ``k`` documents for one query vector, best first.

        With ``full_vector`` (and a collection that keeps full vectors) the search is
        two-stage: ``rescore_k`` candidates on the index vectors, rescored with full vectors.
        With ``group_by="document"``, ``k`` documents, each the hit of its best chunk with up
        to ``group_size`` matching chunks in :attr:`Hit.chunks`; ``expand`` joins each hit with
        that many neighbouring chunks on each side. ``rerank_k`` is the deprecated name of
        ``rescore_k``.
        """
        full = None if full_vector is None else np.asarray(full_vector)[None, ...]
        return self.search_batch(
            np.asarray(vector)[None, ...] if np.ndim(vector) == 1 else vector, k, filter,
            full_vectors=full, rescore_k=rescore_k, group_by=group_by, group_size=group_size,
            expand=expand, rerank_k=rerank_k)[0]

    def search_batch(self, vectors: np.ndarray, k: int = 10, filter: Any = None, *,
                     full_vectors: np.ndarray | None = None, rescore_k: int | None = None,
                     group_by: str | None = None, group_size: int = 3, expand: int = 0,
                     rerank_k: int | None = None) -> list[list[Hit]]:
        """:meth:`search` for many query vectors at once."""
        rescore_k, name = renamed(rescore_k, rerank_k, "rescore_k", "rerank_k")
        request = self.request(mode="dense", k=k, filter=filter,
                               two_stage=full_vectors is not None, rescore_k=rescore_k,
                               group_by=group_by, group_size=group_size, expand=expand,
                               rescore_k_name=name)
        return self.query(request, Queries(index=vectors, full=full_vectors))

    def lexical_search(self, query: str, k: int = 10, filter: Any = None, *,
                       group_by: str | None = None, group_size: int = 3,
                       expand: int = 0) -> list[Hit]:
        """Top ``k`` documents for ``query`` by BM25, best first (scores: BM25 scores).

        Raises:
            LexicalUnavailableError: the collection has no lexical index.
            EmptyQueryError: nothing searchable is left of the query after analysis.
        """
        return self.lexical_search_batch([query], k, filter, group_by=group_by,
                                         group_size=group_size, expand=expand)[0]

    def lexical_search_batch(self, queries: Sequence[str], k: int = 10, filter: Any = None, *,
                             group_by: str | None = None, group_size: int = 3,
                             expand: int = 0) -> list[list[Hit]]:
        """:meth:`lexical_search` for many queries."""
        terms = self.query_terms(queries, "lexical")
        request = self.request(mode="lexical", k=k, filter=filter, group_by=group_by,
                               group_size=group_size, expand=expand)
        return self.query(request, Queries(terms=terms))

    def hybrid_search(self, vector: np.ndarray, query: str, k: int = 10, filter: Any = None,
                      *, full_vector: np.ndarray | None = None, rescore_k: int | None = None,
                      fusion: Fusion | None = None, group_by: str | None = None,
                      group_size: int = 3, expand: int = 0,
                      rerank_k: int | None = None) -> list[Hit]:
        """Dense and lexical search fused: see :meth:`hybrid_search_batch`."""
        full = None if full_vector is None else np.asarray(full_vector)[None, ...]
        return self.hybrid_search_batch(
            np.asarray(vector)[None, ...] if np.ndim(vector) == 1 else vector, [query], k,
            filter, full_vectors=full, rescore_k=rescore_k, fusion=fusion, group_by=group_by,
            group_size=group_size, expand=expand, rerank_k=rerank_k)[0]

    def hybrid_search_batch(self, vectors: np.ndarray, queries: Sequence[str], k: int = 10,
                            filter: Any = None, *, full_vectors: np.ndarray | None = None,
                            rescore_k: int | None = None, fusion: Fusion | None = None,
                            group_by: str | None = None, group_size: int = 3, expand: int = 0,
                            rerank_k: int | None = None) -> list[list[Hit]]:
        """Hybrid search as a funnel: ``rescore_k`` candidates from the index vectors and
        ``rescore_k`` from BM25, rescored with the full vectors when given, then fused. A query
        with no searchable term is answered by its dense side alone (logged at INFO). Each
        hit's score is its fused score."""
        rescore_k, name = renamed(rescore_k, rerank_k, "rescore_k", "rerank_k")
        terms = self.query_terms(queries, "hybrid")
        request = self.request(mode="hybrid", k=k, filter=filter,
                               two_stage=full_vectors is not None, rescore_k=rescore_k,
                               fusion=fusion, group_by=group_by, group_size=group_size,
                               expand=expand, rescore_k_name=name)
        return self.query(request, Queries(index=vectors, full=full_vectors, terms=terms))

    async def asearch(self, *args: Any, **kwargs: Any) -> list[Hit]:
        """Async :meth:`search` (the same code, in a worker thread)."""
        return await asyncio.to_thread(self.search, *args, **kwargs)

    async def alexical_search(self, *args: Any, **kwargs: Any) -> list[Hit]:
        """Async :meth:`lexical_search` (a worker thread)."""
        return await asyncio.to_thread(self.lexical_search, *args, **kwargs)

    async def ahybrid_search(self, *args: Any, **kwargs: Any) -> list[Hit]:
        """Async :meth:`hybrid_search` (a worker thread)."""
        return await asyncio.to_thread(self.hybrid_search, *args, **kwargs)
