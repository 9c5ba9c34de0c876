"""The store protocol: the dozen primitives a store implements, and nothing else.

A store keeps one open collection of documents with their Matryoshka vectors (the truncated
*index* vector that is searched, and optionally the *full* vector that rescores) and, for a
hybrid collection, their analyzed terms. It answers primitive queries; everything a search
does with their answers (two-stage rescoring, the hybrid union and fusion, grouping by
document, expansion with neighbouring chunks, reading the final hits) is the funnel's
(:mod:`bertino_rag.search`), written once for every store, and everything a caller may get
wrong is checked once above the store (:class:`~bertino_rag.stores.base.VectorStore`, which
every store subclasses, and :mod:`bertino_rag.validation`).

What a store implements (its arguments are already validated):

=====================  ======================================================================
lifecycle              ``_open(collection, stamp, recreate)``: create, or open and check the
                       stored stamp (``Stamp.check``); ``_stored_stamp(collection)``;
                       ``_collections()``; ``_drop()``
writes                 ``_write(batch)``: a :class:`WriteBatch`, as one atomic write, raising
                       :class:`~bertino_rag.errors.StoreWriteError` with the ids not stored;
                       ``_delete(ids)``
reads                  ``_fetch(ids, rows, documents=, full=)``: documents and full vectors by
                       id (a :class:`~bertino_rag.search.ranked.Fetched`, ids no longer stored
                       marked missing, never raised); ``_ids_where(conditions)``;
                       ``_scan(batch_size)``: every point with its vectors, for export;
                       ``_count()``
search                 ``_knn(vectors, k, conditions)``: the best ``k`` by dot product on the
                       index vectors, per query a :class:`~bertino_rag.search.ranked.Ranked`;
                       ``_bm25(terms, k, conditions)``: exact BM25 (Lucene,
                       :class:`~bertino_rag.lexical.BM25`) over the live documents, for
                       stores that keep a lexical index
=====================  ======================================================================

``conditions`` is a parsed filter (:func:`bertino_rag.search.filters.parse_filter`: a list of
conditions, empty for none) or a store's native filter object (``_native_filter``). Results
are ordered by :func:`~bertino_rag.search.ranked.ranking_key` (score, then id).

What a store may add, declared in :attr:`StoreProtocol.capabilities` so that the funnel uses it
where it is faster and the generic stage otherwise:

- ``atomic_replace``: ``_open_replacement``, ``_publish``, ``_discard_replacement`` build a
  replacement beside the live collection and swap it in at once;
- ``rescore``: ``_knn_rescored(vectors, full, k, n, conditions)``, both stages at once
  (Qdrant's prefetch query; MemoryStore's rescoring on its segment rows);
- ``score``: ``_score(candidates, full_queries)``, the engine scores given candidates on
  their full vectors (the hybrid funnel's rescoring without reading the vectors);
- ``grouping``: ``_knn_grouped(vectors, k, group_size, conditions)``, one hit per document in
  single-stage search (Qdrant's group API, Milvus's grouping search);
- ``joint_candidates``: ``_candidates(vectors, terms, n, conditions)``, both sides of a hybrid
  search in one call;
- ``intent``: ``_read_intent()`` and ``_write_intent(record)`` keep one small JSON-able record
  with the collection (``None`` clears it), read back after a reopen: the edits in flight
  that :meth:`VectorStore.open` repairs after a kill (:mod:`bertino_rag.stores.intent`).

And, without a flag: ``_snapshot()`` (a context in which row handles stay valid and reads
see one state; MemoryStore holds its lock), ``_clear`` (empty in place), ``build_index``
(an index to build after bulk writes), ``_native_filter``, ``lexical_avgdl``.

``bertino_rag.testing`` is the conformance suite a store passes; ``stores/reference.py`` is
the smallest store that passes it.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..search.ranked import Fetched, Ranked
from ..types import Document, Hit, Stamp
from ..validation import StoreLimits

__all__ = ["Capabilities", "ExportBatch", "Fetched", "Ranked", "StoreProtocol", "WriteBatch"]


@dataclass(frozen=True)
class Capabilities:
    """What a store does natively (see the module docstring for the methods each implies)."""

    #: keeps a BM25 index beside the vectors (``_bm25``; ``Stamp.lexical``)
    lexical: bool = False
    #: builds a replacement beside the live collection, swapped in at ``publish``
    atomic_replace: bool = False
    #: both stages of a two-stage search in one call (``_knn_rescored``)
    rescore: bool = False
    #: scores given candidates on their full vectors itself (``_score``)
    score: bool = False
    #: one hit per document natively in single-stage search (``_knn_grouped``)
    grouping: bool = False
    #: dense and lexical candidates in one call (``_candidates``)
    joint_candidates: bool = False
    #: keeps an intent record with the collection (``_read_intent``, ``_write_intent``)
    intent: bool = False


@dataclass(frozen=True)
class WriteBatch:
    """A validated write: unique-id documents with their index (and full) vectors, and their
    analyzed term counts when the collection keeps a lexical index (``terms[i]`` for
    ``documents[i]``)."""

    documents: list[Document]
    vectors: np.ndarray
    full: np.ndarray | None
    terms: list[dict[str, int]] | None = None


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


class StoreProtocol(ABC):
    """The primitives of a store (see the module docstring); subclass
    :class:`~bertino_rag.stores.base.VectorStore`, which adds the checked public methods."""

    #: the kind of store ("memory", "qdrant", "milvus"...), in messages and reports
    kind: ClassVar[str] = "abstract"
    #: this store's limits on ids and texts (checked with every other document rule)
    limits: StoreLimits = StoreLimits()

    @property
    def capabilities(self) -> Capabilities:
        """What this store does natively; the funnel's generic stages do the rest."""
        return Capabilities()

    # ------------------------------------------------------------------ lifecycle
    @abstractmethod
    def _open(self, collection: str, stamp: Stamp, recreate: bool) -> None:
        """Create ``collection`` (dropping it first with ``recreate``), or open it and check
        its stored stamp against ``stamp`` (``stamp.check(found, collection)``)."""

    @abstractmethod
    def _stored_stamp(self, collection: str) -> Stamp | None:
        """The stamp ``collection`` was created with; ``None`` when it does not exist."""

    @abstractmethod
    def _collections(self) -> list[str]:
        """The names of the bertino-rag collections here."""

    @abstractmethod
    def _drop(self) -> None:
        """Delete the open collection and everything in it."""

    # ------------------------------------------------------------------ writes
    @abstractmethod
    def _write(self, batch: WriteBatch) -> None:
        """Insert or replace the batch's documents with their vectors (and term counts), as one
        write: on failure raise :class:`~bertino_rag.errors.StoreWriteError` naming the ids
        that are not stored."""

    @abstractmethod
    def _delete(self, ids: list[str]) -> None:
        """Delete documents by id; unknown ids are ignored."""

    # ------------------------------------------------------------------ reads
    @abstractmethod
    def _fetch(self, ids: list[str], rows: np.ndarray | None = None, *,
               documents: bool = False, full: bool = False) -> Fetched:
        """The stored documents and/or full vectors of ``ids`` (``rows``: the store's own
        handles of them, from a search in the same snapshot, when it has any). Ids no longer
        stored are marked missing in :attr:`Fetched.found`: a concurrent delete is never an
        error here."""

    @abstractmethod
    def _knn(self, vectors: np.ndarray, k: int, conditions: Any, *,
             documents: bool = False) -> list[Ranked]:
        """Per query vector, the best ``k`` documents by dot product with their index vectors
        (among those matching ``conditions``), best first.

        ``documents``: these candidates become hits as they are (single-stage search), so a
        store that can read their documents in the same call returns them in
        :attr:`Ranked.documents`; one that cannot ignores it (the funnel reads them)."""

    def _bm25(self, terms: list[list[str]], k: int, conditions: Any, *,
              documents: bool = False) -> list[Ranked]:
        """Per query (its distinct analyzed terms, never empty), the best ``k`` documents by
        exact BM25 over the live documents, best first, scores above 0 only (``documents``:
        as for :meth:`_knn`). Stores with ``capabilities.lexical`` implement it."""
        raise NotImplementedError(f"{type(self).__name__} keeps no lexical index")

    @abstractmethod
    def _ids_where(self, conditions: Any) -> list[str]:
        """Ids of the documents matching parsed ``conditions`` (non-empty), in any order."""

    @abstractmethod
    def _scan(self, batch_size: int) -> Iterator[ExportBatch]:
        """Every stored document once, with its vectors, in batches of up to
        ``batch_size``."""

    @abstractmethod
    def _count(self) -> int:
        """Number of documents in the open collection."""

    # ------------------------------------------------------------------ optional
    def _snapshot(self) -> contextlib.AbstractContextManager[Any]:
        """A context in which the funnel's reads see one state of the collection and row
        handles from ``_knn``/``_bm25`` stay valid. Default: nothing to hold."""
        return contextlib.nullcontext()

    def _native_filter(self, filter: Any) -> Any:
        """A filter object of the store's own client, passed through (e.g. a Qdrant
        ``models.Filter``); stores that take none refuse it."""
        raise TypeError(
            f"{type(self).__name__} takes filters as a dict, got {type(filter).__name__}"
        )

    def _open_replacement(self, collection: str, stamp: Stamp) -> None:
        """Open an empty replacement of ``collection`` (``atomic_replace``); default: drop the
        old collection now."""
        self._open(collection, stamp, True)

    def _publish(self) -> None:
        """Swap the replacement in (``atomic_replace``)."""
        return None

    def _discard_replacement(self) -> None:
        """Delete an unpublished replacement (``atomic_replace``)."""
        return None

    def _read_intent(self) -> dict[str, Any] | None:
        """The intent record kept with the open collection, ``None`` when there is none
        (``capabilities.intent``)."""
        raise NotImplementedError

    def _write_intent(self, record: dict[str, Any] | None) -> None:
        """Replace the open collection's intent record at once (a reader sees the old record
        or the new one, also after a kill); ``None`` clears it (``capabilities.intent``)."""
        raise NotImplementedError

    def _clear(self, collection: str, stamp: Stamp) -> None:
        """Empty the open collection; default: drop it and create it again."""
        self._drop()
        self._open(collection, stamp, True)

    def _knn_rescored(self, vectors: np.ndarray, full: np.ndarray, k: int, n: int,
                      conditions: Any, *, documents: bool = False) -> list[Ranked]:
        """Both stages at once (``capabilities.rescore``): ``n`` candidates on the index
        vectors, the best ``k`` of them by their full vectors (with their documents, as
        ``_knn``'s, when ``documents`` asks and the engine reads them in the same call)."""
        raise NotImplementedError

    def _score(self, candidates: Sequence[Ranked], full_queries: np.ndarray) -> list[Ranked]:
        """Each query's candidates scored on their full vectors by the engine, best first
        (``capabilities.score``); candidates no longer stored drop out."""
        raise NotImplementedError

    def _knn_grouped(self, vectors: np.ndarray, k: int, group_size: int,
                     conditions: Any) -> list[list[Hit]] | None:
        """One hit per document, single-stage (``capabilities.grouping``): ``k`` documents,
        each its best chunk's hit with up to ``group_size`` chunks in ``Hit.chunks``; ``None``
        declines a search the engine cannot do natively (the funnel groups it generically)."""
        raise NotImplementedError

    def _candidates(self, vectors: np.ndarray, terms: list[list[str]], n: int,
                    conditions: Any) -> tuple[list[Ranked], list[Ranked]]:
        """Both sides of a hybrid search at once (``capabilities.joint_candidates``): ``n``
        dense candidates per query vector and ``n`` lexical ones per query with terms (an
        empty :class:`Ranked` for a query without)."""
        raise NotImplementedError
