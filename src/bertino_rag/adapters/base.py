"""The store contract every backend implements, with validation and two-stage search shared.

A store holds one open collection at a time. :meth:`VectorStore.open` creates it, or opens it
and checks its :class:`~bertino_rag.types.Stamp` (model, dims, layout): vectors of another model
or dimension are never mixed into it. The public methods validate their input and then call the
backend's underscore methods, so every backend gets the same errors for the same mistakes.

Backends implement: ``_open``, ``_upsert``, ``_search``, ``_fetch_full``, ``_get``,
``_delete``, ``_count``, ``_drop``, ``_export`` (read every stored point back with its
vectors) and, when they can do better than the generic "search, fetch full vectors, rescore"
path, ``_search_two_stage``. A store with an index to build after bulk writes overrides
``build_index``.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..types import Document, Hit, Stamp
from .filters import Condition, parse_filter

__all__ = ["ExportBatch", "SearchQuery", "StoreError", "VectorStore", "rescore"]


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


class StoreError(RuntimeError):
    """A store operation failed (unreachable server, failed write, closed store)."""


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
    order = sorted(range(len(candidates)), key=lambda i: (-float(scores[i]), ids[i]))[:k]
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
        stamp = self.stamp
        n = len(documents)
        if n == 0:
            return
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
        self._upsert(list(documents), vec, full)

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

    # ------------------------------------------------------------------ async
    async def aupsert(
        self,
        documents: Sequence[Document],
        vectors: np.ndarray,
        full_vectors: np.ndarray | None = None,
    ) -> None:
        """Async :meth:`upsert`; runs in a worker thread unless the backend has an async client."""
        await asyncio.to_thread(self.upsert, documents, vectors, full_vectors)

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
