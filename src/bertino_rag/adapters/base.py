"""The store contract every backend implements, with validation and two-stage search shared.

A store holds one open collection at a time. :meth:`VectorStore.open` creates it, or opens it
and checks its :class:`~bertino_rag.types.Stamp` (model, dims, layout): vectors of another model
or dimension are never mixed into it. The public methods validate their input and then call the
backend's underscore methods, so every backend gets the same errors for the same mistakes.

Backends implement: ``_open``, ``_upsert``, ``_search``, ``_fetch_full``, ``_get``,
``_delete``, ``_count``, ``_drop``, ``_export`` (read every stored point back with its
vectors) and, when they can do better than the generic "search, fetch full vectors, rescore"
path, ``_search_two_stage``. A store with an index to build after bulk writes overrides
``build_index``. Backends with a native
async client also override ``_aupsert`` and ``_asearch``, which receive input already
validated by :meth:`VectorStore._prepare_upsert` / :meth:`VectorStore._prepare_search`.

Two rules every backend shares live here once: the order of results
(:func:`ranking_key`: higher score first, ties by id) and the error for ids that are not
stored (:func:`check_found`).

Lexical (BM25) search beside the vectors: a collection whose stamp has ``lexical`` set keeps a
lexical index of every document, written by the same ``upsert`` (same ids, same write) and
removed by the same ``delete``. The analysis happens here, once, with the analyzer the stamp
names, so every store indexes and queries the same terms. Stores that can hold it set
``supports_lexical = True`` and implement ``_upsert_lexical`` (the write, vectors and term
counts together, as atomic as ``_upsert``) and ``_lexical_search`` (exact BM25 on the live
documents, :class:`~bertino_rag.lexical.BM25`). Hybrid search is a funnel that works on those
hooks (``_hybrid_search``); a store with a native fused query overrides it.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Container, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np

from ..fusion import Fusion
from ..lexical import BM25, Analyzer, EmptyQueryError, LexicalUnavailableError, parse_lexical_spec
from ..types import Document, Hit, Stamp
from .filters import Condition, parse_filter

__all__ = [
    "ExportBatch",
    "HybridQuery",
    "SearchQuery",
    "StoreError",
    "UpsertBatch",
    "VectorStore",
    "check_found",
    "ranking_key",
    "rescore",
]

logger = logging.getLogger(__name__)


@lru_cache(maxsize=16)
def lexical_config(spec: str) -> tuple[Analyzer, BM25]:
    """The analyzer and BM25 parameters of a stamp's ``lexical`` field (parsed once)."""
    return parse_lexical_spec(spec)


@dataclass(frozen=True)
class SearchQuery:
    """A validated search: query vectors, k, parsed filter and, for two-stage, full vectors."""

    vectors: np.ndarray
    k: int
    conditions: Any
    full: np.ndarray | None = None
    rerank_k: int | None = None


@dataclass(frozen=True)
class ExportBatch:
    """Stored points read back by :meth:`VectorStore.export`: documents and their vectors.

    ``vectors[i]`` (index dim, float32) and ``full_vectors[i]`` (full dim, float32 holding the
    stored values; ``None`` when the collection keeps no full vectors) belong to
    ``documents[i]``. Passing a batch to another store's ``upsert`` copies it as stored.
    """

    documents: list[Document]
    vectors: np.ndarray
    full_vectors: np.ndarray | None


@dataclass(frozen=True)
class UpsertBatch:
    """A validated upsert: unique-id documents with their index (and full) vectors, and their
    analyzed term counts when the collection keeps a lexical index."""

    documents: list[Document]
    vectors: np.ndarray
    full: np.ndarray | None
    terms: list[dict[str, int]] | None = None


@dataclass(frozen=True)
class HybridQuery:
    """A validated hybrid search: the dense side, the analyzed query terms and the fusion.

    ``dense.k`` is the number of candidates taken on each side; ``k`` the hits returned.
    """

    dense: SearchQuery
    terms: list[list[str]]
    k: int
    fusion: Fusion


class StoreError(RuntimeError):
    """A store operation failed (unreachable server, failed write, closed store)."""


def ranking_key(score: float, doc_id: str) -> tuple[float, str]:
    """Sort key of a result: higher score first, ties broken by id.

    Every store and the exact evaluation search order results with it, so the same vectors
    give the same ranking everywhere.
    """
    return (-float(score), doc_id)


def check_found(ids: Sequence[str], found: Container[str], collection: str) -> None:
    """Raise ``KeyError`` naming (up to ten of) the ``ids`` missing from ``found``."""
    missing = [i for i in ids if i not in found]
    if missing:
        raise KeyError(f"ids not in collection {collection!r}: {missing[:10]}")


def rescore(
    candidates: Sequence[Hit], full: np.ndarray, full_query: np.ndarray, k: int
) -> list[Hit]:
    """Rescore candidates with full-dim vectors in one vectorized step; return the top ``k``.

    ``full`` holds the candidates' full vectors, row i for ``candidates[i]``. Ties are broken
    by id so that every store returns the same order for the same vectors.
    """
    if not candidates:
        return []
    scores = full.astype(np.float32, copy=False) @ full_query.astype(np.float32, copy=False)
    ids = [h.id for h in candidates]
    order = sorted(range(len(candidates)), key=lambda i: ranking_key(float(scores[i]), ids[i]))[:k]
    return [
        Hit(id=candidates[i].id, text=candidates[i].text, score=float(scores[i]),
            metadata=candidates[i].metadata)
        for i in order
    ]


class VectorStore(ABC):
    """Abstract vector store holding one collection of Matryoshka vectors.

    Setup:
        ``store.open("docs", Stamp(model=..., full_dim=768, index_dim=128))``
    Index:
        ``store.upsert(documents, index_vectors, full_vectors)``
    Search:
        ``store.search(query_vector, k=10, filter={"lang": "it"})``, or two-stage with
        ``full_vector=`` and ``rerank_k=``.
    """

    #: short backend name, used in messages and reports
    backend: str = "abstract"
    #: whether the store can keep a lexical index beside the vectors (``Stamp.lexical``)
    supports_lexical: ClassVar[bool] = False

    def __init__(self) -> None:
        self._stamp: Stamp | None = None
        self._collection: str | None = None

    # ------------------------------------------------------------------ lifecycle
    def open(self, collection: str, stamp: Stamp, *, recreate: bool = False) -> None:
        """Create the collection, or open it and check that its stamp equals ``stamp``.

        Raises:
            StampMismatchError: the collection exists with another model, dim or layout
                (and ``recreate`` is False). Nothing is changed in that case.
        """
        if not isinstance(collection, str) or not collection.strip():
            raise ValueError("collection name must be a non-empty string")
        if stamp.index_dim <= 0 or stamp.index_dim > stamp.full_dim:
            raise ValueError(
                f"index_dim must be in 1..{stamp.full_dim}, got {stamp.index_dim}"
            )
        if stamp.lexical is not None:
            lexical_config(stamp.lexical)  # an unknown analyzer fails before anything opens
            if not self.supports_lexical:
                raise ValueError(
                    f"{type(self).__name__} cannot keep a lexical index: build the collection "
                    "with hybrid=False, or use a store that has one (memory, qdrant, milvus)"
                )
        self._open(collection, stamp, recreate)
        self._collection = collection
        self._stamp = stamp

    def stored_stamp(self, collection: str) -> Stamp | None:
        """The stamp of an existing ``collection`` in this store; ``None`` when there is no
        such collection. Opens nothing.

        Raises:
            StoreError: the collection exists but was not created by bertino-rag.
        """
        if not isinstance(collection, str) or not collection.strip():
            raise ValueError("collection name must be a non-empty string")
        return self._stored_stamp(collection)

    def open_existing(self, collection: str) -> Stamp:
        """Open an existing collection with the stamp it was created with; return the stamp.

        Raises:
            StoreError: there is no such collection (nothing is created).
        """
        found = self.stored_stamp(collection)
        if found is None:
            raise StoreError(f"{self!r} has no collection {collection!r}")
        self.open(collection, found)
        return found
    def ensure_open(self, collection: str, stamp: Stamp, *, recreate: bool = False) -> None:
        """Make ``collection`` the open one, built with ``stamp``.

        When it is already open here (a store shared by several retrievers), only its stamp
        is checked; otherwise (or with ``recreate``) this is :meth:`open`.

        Raises:
            StampMismatchError: the collection was built with another model, dim or layout.
        """
        if not recreate and self.is_open and self._collection == collection:
            stamp.check(self.stamp, collection)
        else:
            self.open(collection, stamp, recreate=recreate)

    @property
    def stamp(self) -> Stamp:
        if self._stamp is None:
            raise StoreError(f"{type(self).__name__}: no collection is open; call open() first")
        return self._stamp

    @property
    def collection(self) -> str:
        self.stamp  # noqa: B018 - raises when not open
        assert self._collection is not None
        return self._collection

    @property
    def is_open(self) -> bool:
        return self._stamp is not None

    def drop(self) -> None:
        """Delete the open collection and everything in it."""
        self.stamp  # noqa: B018
        self._drop()
        self._stamp = None
        self._collection = None

    def close(self) -> None:
        """Release connections, files and locks. The data stays."""
        self._stamp = None
        self._collection = None

    def __enter__(self) -> VectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ validation
    def _check_matrix(self, vectors: Any, dim: int, what: str, n: int | None = None) -> np.ndarray:
        arr = np.asarray(vectors, dtype=np.float32)
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[1] != dim:
            raise ValueError(
                f"{what} must have {dim} dims for collection {self._collection!r}, "
                f"got shape {tuple(np.shape(vectors))}"
            )
        if n is not None and arr.shape[0] != n:
            raise ValueError(f"{what}: expected {n} rows, got {arr.shape[0]}")
        if not np.isfinite(arr).all():
            raise ValueError(f"{what} contain NaN or infinite values")
        return arr

    def _check_k(self, k: int, name: str = "k") -> int:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
            raise ValueError(f"{name} must be a positive int, got {k!r}")
        return int(k)

    def _parse_filter(self, filter: Any) -> Any:
        """Dicts are parsed into conditions; a backend's native filter object passes through."""
        if filter is None or isinstance(filter, Mapping):
            return parse_filter(filter)
        return self._native_filter(filter)

    def _native_filter(self, filter: Any) -> Any:
        raise TypeError(
            f"{type(self).__name__} takes filters as a dict, got {type(filter).__name__}"
        )

    # ------------------------------------------------------------------ writes
    def upsert(
        self,
        documents: Sequence[Document],
        vectors: np.ndarray,
        full_vectors: np.ndarray | None = None,
    ) -> None:
        """Insert or replace documents with their index (and full) vectors.

        The whole call is validated before anything is written.
        """
        batch = self._prepare_upsert(documents, vectors, full_vectors)
        if batch is not None:
            self._write(batch)

    def _prepare_upsert(
        self,
        documents: Sequence[Document],
        vectors: Any,
        full_vectors: Any | None,
    ) -> UpsertBatch | None:
        """Validate an upsert once, for the sync and async paths alike (``None``: no rows)."""
        stamp = self.stamp
        n = len(documents)
        if n == 0:
            return None
        ids = [d.id for d in documents]
        if len(set(ids)) != n:
            raise ValueError("upsert: ids must be unique within one call")
        vec = self._check_matrix(vectors, stamp.index_dim, "index vectors", n)
        full: np.ndarray | None = None
        if stamp.full_vectors:
            if full_vectors is None:
                raise ValueError(
                    f"collection {self.collection!r} stores full vectors for rescoring: "
                    "pass full_vectors"
                )
            full = self._check_matrix(full_vectors, stamp.full_dim, "full vectors", n)
        if stamp.lexical is None:
            return UpsertBatch(list(documents), vec, full)
        analyzer = lexical_config(stamp.lexical)[0]
        terms = analyzer.counts_batch(d.text for d in documents)
        return UpsertBatch(list(documents), vec, full, list(terms))

    def _write(self, batch: UpsertBatch) -> None:
        """Write a validated batch: vectors, and term counts when the collection has them."""
        if batch.terms is None:
            self._upsert(batch.documents, batch.vectors, batch.full)
        else:
            self._upsert_lexical(batch.documents, batch.vectors, batch.full, batch.terms)

    def delete(self, ids: Sequence[str]) -> None:
        """Delete documents by id; unknown ids are ignored."""
        self.stamp  # noqa: B018
        ids = [str(i) for i in ids]
        if ids:
            self._delete(ids)

    # ------------------------------------------------------------------ reads
    def count(self) -> int:
        """Number of documents in the collection."""
        self.stamp  # noqa: B018
        return int(self._count())

    def get(self, ids: Sequence[str]) -> list[Document]:
        """The stored documents for ``ids`` (in that order); unknown ids are skipped."""
        self.stamp  # noqa: B018
        return self._get([str(i) for i in ids]) if ids else []

    def fetch_full(self, ids: Sequence[str]) -> np.ndarray:
        """Full vectors of ``ids``, row i for ``ids[i]``.

        Raises:
            KeyError: naming ids that are not stored.
            StoreError: when the collection keeps no full vectors.
        """
        stamp = self.stamp
        if not stamp.full_vectors:
            raise StoreError(
                f"collection {self.collection!r} stores no full vectors (built with rerank off)"
            )
        if not ids:
            return np.zeros((0, stamp.full_dim), dtype=np.float32)
        return self._fetch_full([str(i) for i in ids])

    def export(self, batch_size: int = 512) -> Iterator[ExportBatch]:
        """Every stored document with its vectors, in batches of up to ``batch_size``.

        Each document comes exactly once, in a backend-defined order. Writes made while the
        export runs may or may not be seen.
        """
        stamp = self.stamp
        batch_size = self._check_k(batch_size, "batch_size")
        for docs, vectors, full in self._export(batch_size):
            if not docs:
                continue
            vectors = np.asarray(vectors, dtype=np.float32).reshape(len(docs), stamp.index_dim)
            if full is not None:
                full = np.asarray(full, dtype=np.float32).reshape(len(docs), stamp.full_dim)
            yield ExportBatch(list(docs), vectors, full if stamp.full_vectors else None)

    def build_index(self) -> bool:
        """Build the store's search index after bulk writes, where it has one to build.

        Called by ``Retriever.index`` after writing. Returns True when anything was built;
        searches are correct before and after. Default: nothing to do.
        """
        self.stamp  # noqa: B018
        return False

    def search(
        self,
        vector: np.ndarray,
        k: int = 10,
        filter: Any = None,
        *,
        full_vector: np.ndarray | None = None,
        rerank_k: int | None = None,
    ) -> list[Hit]:
        """Top ``k`` documents for one query vector, best first.

        With ``full_vector`` (and a collection that keeps full vectors), the search is
        two-stage: ``rerank_k`` candidates on the index vectors, rescored with full vectors.
        """
        full = None if full_vector is None else np.asarray(full_vector)[None, ...]
        return self.search_batch(
            np.asarray(vector)[None, ...] if np.ndim(vector) == 1 else vector,
            k, filter, full_vectors=full, rerank_k=rerank_k,
        )[0]

    def search_batch(
        self,
        vectors: np.ndarray,
        k: int = 10,
        filter: Any = None,
        *,
        full_vectors: np.ndarray | None = None,
        rerank_k: int | None = None,
    ) -> list[list[Hit]]:
        """:meth:`search` for many query vectors at once."""
        query = self._prepare_search(vectors, k, filter, full_vectors, rerank_k)
        return self._run_search(query)

    def _prepare_search(
        self,
        vectors: Any,
        k: int,
        filter: Any,
        full_vectors: Any | None,
        rerank_k: int | None,
    ) -> SearchQuery:
        """Validate a search once, for the sync and async paths alike."""
        stamp = self.stamp
        k = self._check_k(k)
        vec = self._check_matrix(vectors, stamp.index_dim, "query vectors")
        conditions = self._parse_filter(filter)
        if full_vectors is None:
            return SearchQuery(vec, k, conditions)
        if not stamp.full_vectors:
            raise StoreError(
                f"collection {self.collection!r} stores no full vectors (built with rerank off); "
                "search without full_vector, or re-index with rerank on"
            )
        full = self._check_matrix(full_vectors, stamp.full_dim, "full query vectors", len(vec))
        rerank_k = max(k, self._check_k(rerank_k if rerank_k is not None else 100, "rerank_k"))
        return SearchQuery(vec, k, conditions, full, rerank_k)

    def _run_search(self, query: SearchQuery) -> list[list[Hit]]:
        if query.full is None:
            return self._search(query.vectors, query.k, query.conditions)
        assert query.rerank_k is not None
        return self._search_two_stage(
            query.vectors, query.full, query.k, query.rerank_k, query.conditions
        )

    # ------------------------------------------------------------------ lexical and hybrid
    @property
    def has_lexical(self) -> bool:
        """Whether the open collection keeps a lexical index."""
        return self.stamp.lexical is not None

    def require_lexical(self, mode: str) -> str:
        """The collection's lexical spec; raises when it was built without a lexical index.

        Raises:
            LexicalUnavailableError: naming how to build one.
        """
        lexical = self.stamp.lexical
        if lexical is None:
            raise LexicalUnavailableError(
                f"mode={mode!r} needs a lexical index, and collection {self.collection!r} was "
                "built without one: build it with Retriever(..., hybrid=True, recreate=True) "
                "(or a Stamp with lexical=...) and index the documents again"
            )
        return lexical

    def _query_terms(self, queries: Sequence[str], mode: str) -> list[list[str]]:
        """Analyze queries with the collection's analyzer; distinct terms, first-seen order."""
        lexical = self.require_lexical(mode)
        if isinstance(queries, str):
            raise ValueError("pass a list of query texts (use the single-query method for one)")
        for i, q in enumerate(queries):
            if not isinstance(q, str):
                raise ValueError(f"query at position {i} is {type(q).__name__}, expected str")
        analyzer = lexical_config(lexical)[0]
        return [list(dict.fromkeys(analyzer.terms(q))) for q in queries]

    def lexical_search(self, query: str, k: int = 10, filter: Any = None) -> list[Hit]:
        """Top ``k`` documents for ``query`` by BM25, best first (score: the BM25 score).

        Raises:
            LexicalUnavailableError: the collection has no lexical index.
            EmptyQueryError: nothing searchable is left of the query after analysis (only
                stopwords or punctuation).
        """
        return self.lexical_search_batch([query], k, filter)[0]

    def lexical_search_batch(
        self, queries: Sequence[str], k: int = 10, filter: Any = None
    ) -> list[list[Hit]]:
        """:meth:`lexical_search` for many queries."""
        terms, k, conditions = self._prepare_lexical(queries, k, filter)
        return self._lexical_search(terms, k, conditions)

    def _prepare_lexical(
        self, queries: Sequence[str], k: int, filter: Any
    ) -> tuple[list[list[str]], int, Any]:
        terms = self._query_terms(queries, "lexical")
        k = self._check_k(k)
        conditions = self._parse_filter(filter)
        for i, t in enumerate(terms):
            if not t:
                raise EmptyQueryError(
                    f"query {queries[i]!r} has no searchable term after analysis (only "
                    "stopwords or punctuation): search it with mode='dense' or 'hybrid'"
                )
        return terms, k, conditions

    def hybrid_search(
        self,
        vector: np.ndarray,
        query: str,
        k: int = 10,
        filter: Any = None,
        *,
        full_vector: np.ndarray | None = None,
        rerank_k: int | None = None,
        fusion: Fusion | None = None,
    ) -> list[Hit]:
        """Dense and lexical search fused: see :meth:`hybrid_search_batch`."""
        full = None if full_vector is None else np.asarray(full_vector)[None, ...]
        return self.hybrid_search_batch(
            np.asarray(vector)[None, ...] if np.ndim(vector) == 1 else vector, [query], k,
            filter, full_vectors=full, rerank_k=rerank_k, fusion=fusion,
        )[0]

    def hybrid_search_batch(
        self,
        vectors: np.ndarray,
        queries: Sequence[str],
        k: int = 10,
        filter: Any = None,
        *,
        full_vectors: np.ndarray | None = None,
        rerank_k: int | None = None,
        fusion: Fusion | None = None,
    ) -> list[list[Hit]]:
        """Hybrid search as a funnel: ``rerank_k`` candidates from the index vectors and
        ``rerank_k`` from BM25, rescored with the full vectors when given, then fused.

        A query with no searchable term after analysis is answered by its dense side alone
        (logged at INFO). Each hit's score is its fused score.
        """
        return self._run_hybrid(
            self._prepare_hybrid(vectors, queries, k, filter, full_vectors, rerank_k, fusion)
        )

    def _prepare_hybrid(
        self,
        vectors: Any,
        queries: Sequence[str],
        k: int,
        filter: Any,
        full_vectors: Any | None,
        rerank_k: int | None,
        fusion: Fusion | None,
    ) -> HybridQuery:
        terms = self._query_terms(queries, "hybrid")
        k = self._check_k(k)
        n_cand = max(k, self._check_k(rerank_k if rerank_k is not None else 100, "rerank_k"))
        dense = self._prepare_search(vectors, n_cand, filter, full_vectors, n_cand)
        if len(terms) != len(dense.vectors):
            raise ValueError(f"{len(dense.vectors)} query vectors for {len(terms)} query texts")
        for q, t in zip(queries, terms, strict=True):
            if not t:
                logger.info("query %r has no searchable term: answered by dense search only", q)
        return HybridQuery(dense, terms, k, fusion if fusion is not None else Fusion())

    def _run_hybrid(self, query: HybridQuery) -> list[list[Hit]]:
        return self._hybrid_search(query)

    def _lexical_candidates(
        self, terms: list[list[str]], k: int, conditions: Any
    ) -> list[list[Hit]]:
        """``_lexical_search`` for the queries that have terms; ``[]`` for the others."""
        asked = [i for i, t in enumerate(terms) if t]
        out: list[list[Hit]] = [[] for _ in terms]
        if asked:
            for i, hits in zip(asked, self._lexical_search([terms[i] for i in asked], k,
                                                           conditions), strict=True):
                out[i] = hits
        return out

    def _hybrid_search(self, query: HybridQuery) -> list[list[Hit]]:
        """The generic funnel on the store's hooks; stores with a native fused query override
        it. Candidates from the lexical side are rescored with full vectors too, so every
        candidate has its exact dense score when the collection keeps full vectors."""
        d = query.dense
        dense = self._search(d.vectors, d.k, d.conditions)
        lexical = self._lexical_candidates(query.terms, d.k, d.conditions)
        if d.full is not None:
            unions = [
                list({h.id: h for h in (*lex, *den)}.values())
                for den, lex in zip(dense, lexical, strict=True)
            ]
            wanted = list(dict.fromkeys(h.id for hits in unions for h in hits))
            full = self._fetch_full(wanted) if wanted else None
            row = {doc_id: i for i, doc_id in enumerate(wanted)}
            dense = [
                rescore(hits, full[[row[h.id] for h in hits]], fq, len(hits))
                if hits and full is not None else []
                for hits, fq in zip(unions, d.full, strict=True)
            ]
        return [
            query.fusion.fuse(den, lex, query.k)
            for den, lex in zip(dense, lexical, strict=True)
        ]

    async def alexical_search(self, query: str, k: int = 10, filter: Any = None) -> list[Hit]:
        """Async :meth:`lexical_search` (a worker thread)."""
        terms, k, conditions = self._prepare_lexical([query], k, filter)
        return (await asyncio.to_thread(self._lexical_search, terms, k, conditions))[0]

    async def ahybrid_search(
        self,
        vector: np.ndarray,
        query: str,
        k: int = 10,
        filter: Any = None,
        *,
        full_vector: np.ndarray | None = None,
        rerank_k: int | None = None,
        fusion: Fusion | None = None,
    ) -> list[Hit]:
        """Async :meth:`hybrid_search` (a worker thread unless the backend has ``_ahybrid``)."""
        full = None if full_vector is None else np.asarray(full_vector)[None, ...]
        prepared = self._prepare_hybrid(
            np.asarray(vector)[None, ...] if np.ndim(vector) == 1 else vector, [query], k,
            filter, full, rerank_k, fusion,
        )
        return (await self._ahybrid(prepared))[0]

    async def _ahybrid(self, query: HybridQuery) -> list[list[Hit]]:
        return await asyncio.to_thread(self._run_hybrid, query)

    # ------------------------------------------------------------------ async
    async def aupsert(
        self,
        documents: Sequence[Document],
        vectors: np.ndarray,
        full_vectors: np.ndarray | None = None,
    ) -> None:
        """Async :meth:`upsert`: the backend's async client where it has one (``_aupsert``),
        else a worker thread. Validated like :meth:`upsert`, before anything is written."""
        batch = self._prepare_upsert(documents, vectors, full_vectors)
        if batch is None:
            return
        if batch.terms is not None:  # the lexical write is the store's sync one
            await asyncio.to_thread(self._write, batch)
        else:
            await self._aupsert(batch)

    async def _aupsert(self, batch: UpsertBatch) -> None:
        """Backend hook for async upsert of a validated batch; default: a worker thread."""
        await asyncio.to_thread(self._upsert, batch.documents, batch.vectors, batch.full)

    async def asearch(
        self,
        vector: np.ndarray,
        k: int = 10,
        filter: Any = None,
        *,
        full_vector: np.ndarray | None = None,
        rerank_k: int | None = None,
    ) -> list[Hit]:
        """Async :meth:`search`: the backend's async client where it has one (``_asearch``),
        else a worker thread."""
        full = None if full_vector is None else np.asarray(full_vector)[None, ...]
        query = self._prepare_search(
            np.asarray(vector)[None, ...] if np.ndim(vector) == 1 else vector,
            k, filter, full, rerank_k,
        )
        return (await self._asearch(query))[0]

    async def _asearch(self, query: SearchQuery) -> list[list[Hit]]:
        """Backend hook for async search of a validated query; default: a worker thread."""
        return await asyncio.to_thread(self._run_search, query)

    # ------------------------------------------------------------------ backend hooks
    @abstractmethod
    def _open(self, collection: str, stamp: Stamp, recreate: bool) -> None: ...

    @abstractmethod
    def _upsert(
        self, documents: list[Document], vectors: np.ndarray, full_vectors: np.ndarray | None
    ) -> None: ...

    @abstractmethod
    def _search(
        self, vectors: np.ndarray, k: int, conditions: list[Condition] | Any
    ) -> list[list[Hit]]: ...

    @abstractmethod
    def _fetch_full(self, ids: list[str]) -> np.ndarray: ...

    @abstractmethod
    def _get(self, ids: list[str]) -> list[Document]: ...

    @abstractmethod
    def _delete(self, ids: list[str]) -> None: ...

    @abstractmethod
    def _count(self) -> int: ...

    @abstractmethod
    def _drop(self) -> None: ...

    def _export(
        self, batch_size: int
    ) -> Iterator[tuple[list[Document], np.ndarray, np.ndarray | None]]:
        """Yield ``(documents, index vectors, full vectors or None)`` batches covering every
        stored document once."""
        raise NotImplementedError(f"{type(self).__name__} cannot export its points yet")

    def _stored_stamp(self, collection: str) -> Stamp | None:
        """The stored stamp of ``collection``, ``None`` when it does not exist."""
        raise NotImplementedError(f"{type(self).__name__} cannot read stamps without open()")
    def _upsert_lexical(
        self,
        documents: list[Document],
        vectors: np.ndarray,
        full_vectors: np.ndarray | None,
        terms: list[dict[str, int]],
    ) -> None:
        """Write documents, vectors and their term counts (``terms[i]`` for ``documents[i]``)
        in one write, as atomic as ``_upsert``. Stores with ``supports_lexical`` implement it."""
        raise NotImplementedError(f"{type(self).__name__} keeps no lexical index")

    def _lexical_search(
        self, terms: list[list[str]], k: int, conditions: list[Condition] | Any
    ) -> list[list[Hit]]:
        """Top ``k`` by exact BM25 over the live documents, for each query's distinct terms
        (never empty); ties broken by id. Stores with ``supports_lexical`` implement it."""
        raise NotImplementedError(f"{type(self).__name__} keeps no lexical index")

    def _search_two_stage(
        self,
        vectors: np.ndarray,
        full_vectors: np.ndarray,
        k: int,
        rerank_k: int,
        conditions: list[Condition] | Any,
    ) -> list[list[Hit]]:
        """Generic two-stage search: candidates on index vectors, rescored with full vectors."""
        candidates = self._search(vectors, rerank_k, conditions)
        wanted = list(dict.fromkeys(h.id for hits in candidates for h in hits))
        if not wanted:
            return [[] for _ in candidates]
        full = self._fetch_full(wanted)
        row = {doc_id: i for i, doc_id in enumerate(wanted)}
        return [
            rescore(hits, full[[row[h.id] for h in hits]], fq, k)
            for hits, fq in zip(candidates, full_vectors, strict=True)
        ]

    def __repr__(self) -> str:
        where = f"collection={self._collection!r}" if self._collection else "not open"
        return f"{type(self).__name__}({where})"
