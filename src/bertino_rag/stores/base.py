"""The base every store subclasses: checked public methods over the protocol's primitives.

A store implements the primitives of :mod:`bertino_rag.stores.protocol` (about a dozen
methods). This class adds what callers use, each checking its input once before a primitive
runs, so every store gives the same error for the same mistake: the lifecycle of a stamped
collection (open, replace and publish, clear, drop), writes (``upsert``, ``delete``,
``delete_documents``), reads (``get``, ``fetch_full``, ``ids_where``, ``export``) and searches
(``search``/``search_batch`` on vectors, ``lexical_search``, ``hybrid_search``), all run by the
one funnel (:mod:`bertino_rag.search.funnel`).

One rule for connecting: a store's constructor validates its arguments (and fails fast on bad
ones) but connects to nothing, opens no file and takes no lock; :meth:`VectorStore.open`, and
the calls that need the store before a collection is open (:meth:`VectorStore.collections`,
:meth:`VectorStore.stored_stamp`), connect on first need. An unreachable server therefore
raises :class:`~bertino_rag.errors.StoreConnectionError` there, never from the constructor.

Async methods (``asearch``, ``aupsert``...) run the same code in a worker thread: one
implementation, so the two cannot drift.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np

from ..errors import (
    CollectionNotFoundError,
    StoreConnectionError,
    StoreCorruptionError,
    StoreError,
    StoreWriteError,
)
from ..indexing.documents import DOC_ID
from ..search.filters import MAX_IN_VALUES, parse_filter
from ..search.ranked import ranking_key
from ..search.rescore import id_ranks, rescore, rescore_hits, rescore_rows
from ..types import Document, Stamp
from ..validation import (
    COLLECTION_NAME,
    StoreLimits,
    check_collection_name,
    check_documents,
    check_no_nul,
    check_vectors,
    positive_int,
)
from . import intent
from .locations import redact, safe_location
from .protocol import Capabilities, ExportBatch, StoreProtocol, WriteBatch
from .retry import Retry
from .searching import Searching, lexical_config

__all__ = [
    "COLLECTION_NAME",
    "Capabilities",
    "CollectionNotFoundError",
    "ExportBatch",
    "StoreConnectionError",
    "StoreCorruptionError",
    "StoreError",
    "StoreLimits",
    "StoreWriteError",
    "VectorStore",
    "WriteBatch",
    "check_collection_name",
    "check_documents",
    "id_ranks",
    "lexical_config",
    "ranking_key",
    "redact",
    "rescore",
    "rescore_hits",
    "rescore_rows",
    "Retry",
    "safe_location",
]

logger = logging.getLogger(__name__)


class _DeprecatedBackend:
    """``VectorStore.backend``: the old name of :attr:`VectorStore.kind`, with a warning."""

    def __get__(self, obj: object, owner: type) -> str:
        warnings.warn("VectorStore.backend is deprecated; use VectorStore.kind (the kind of "
                      "store: 'backend' also names the encoder runtime)", DeprecationWarning,
                      stacklevel=2)
        return str(owner.kind)  # type: ignore[attr-defined]


class VectorStore(Searching, StoreProtocol):
    """A store holding one open collection of Matryoshka vectors (see the module docstring).

    Setup:
        ``store.open("docs", Stamp(model=..., full_dim=768, index_dim=128))``
    Index:
        ``store.upsert(documents, index_vectors, full_vectors)``
    Search:
        ``store.search(query_vector, k=10, filter={"lang": "it"})``, or two-stage with
        ``full_vector=`` and ``rescore_k=``.
    """

    #: deprecated alias of :attr:`kind` ("backend" also names the encoder runtime)
    backend: ClassVar[str] = _DeprecatedBackend()  # type: ignore[assignment]
    #: candidates a batch search holds at once (queries x candidates per query): bounds its
    #: memory, so that a batch of any number of queries runs in flat memory
    candidate_block: int = 1 << 16
    #: most chunks a grouped search reads per query before it stops looking for more documents
    max_group_candidates: int = 10_000

    def __init__(self) -> None:
        self._stamp: Stamp | None = None
        self._collection: str | None = None
        self._replacing = False

    @property
    def supports_lexical(self) -> bool:
        """Whether the store can keep a lexical index beside the vectors."""
        return self.capabilities.lexical

    @property
    def supports_atomic_replace(self) -> bool:
        """Whether :meth:`open_replacement` builds beside the old collection, which stays whole
        until :meth:`publish` swaps them; otherwise it drops the old collection at once."""
        return self.capabilities.atomic_replace

    # ------------------------------------------------------------------ lifecycle
    def open(
        self, collection: str, stamp: Stamp, *, recreate: bool = False, create: bool = True
    ) -> None:
        """Create the collection, or open it and check that its stamp equals ``stamp``.

        Args:
            create: ``False`` opens an existing collection only (for searching): nothing is
                created, and a missing one raises :class:`CollectionNotFoundError`.

        Raises:
            ValueError: a collection name that not every store accepts (see
                :data:`COLLECTION_NAME`).
            StampMismatchError: the collection exists with another model, dim or layout
                (and ``recreate`` is False). Nothing is changed in that case.
            CollectionNotFoundError: ``create=False`` and the collection does not exist.
            StoreConnectionError: the store cannot be reached.
        """
        self._check_open_args(collection, stamp, create)
        self._end_replacement()
        self._open(collection, stamp, recreate)
        self._collection, self._stamp = collection, stamp
        if not recreate:
            self.repair_intent()  # before any read or write: what a killed edit left

    def repair_intent(self) -> list[str]:
        """Give every chunked document that an interrupted indexing call left with old and
        new chunks one whole version, from the collection's intent record
        (:mod:`bertino_rag.stores.intent`); the documents repaired. :meth:`open` runs it."""
        if not self.capabilities.intent or self._replacing:
            return []
        return intent.repair(self)

    def editing(self) -> contextlib.AbstractContextManager[None]:
        """Hold while an indexing call edits the open collection: no repair of this process
        (another store object opening it, another call) touches the call's record."""
        return intent.editing(self)

    def record_intent(self, edits: Mapping[str, tuple[list[str], list[str]]] | None) -> None:
        """Record the chunked edits in flight, ``doc_id -> (new ids, stale ids)``, with the
        collection (:func:`bertino_rag.stores.intent.record`), replacing the last record;
        ``None`` clears it. Nothing where the store keeps none, or while a replacement is
        built (it edits nothing)."""
        if self.capabilities.intent and not self._replacing:
            self._write_intent(None if edits is None else intent.record(edits))

    def _check_open_args(self, collection: str, stamp: Stamp, create: bool) -> None:
        """What :meth:`open` and :meth:`open_replacement` refuse before touching anything."""
        check_collection_name(collection)
        if not create:
            existing = self.collections()
            if collection not in existing:
                raise CollectionNotFoundError(collection, self.location, existing)
        if stamp.index_dim <= 0 or stamp.index_dim > stamp.full_dim:
            raise ValueError(f"index_dim must be in 1..{stamp.full_dim}, got {stamp.index_dim}")
        if stamp.lexical is not None:
            lexical_config(stamp.lexical)  # an unknown analyzer fails before anything opens
            if not self.capabilities.lexical:
                raise ValueError(
                    f"{type(self).__name__} cannot keep a lexical index: build the collection "
                    "with hybrid=False, or use a store that has one (memory, qdrant, qdrant-edge, "
                    "milvus)"
                )

    def _end_replacement(self) -> None:
        if self._replacing:
            self._replacing = False
            self._discard_replacement()

    def open_replacement(self, collection: str, stamp: Stamp) -> None:
        """Open a new, empty collection that replaces ``collection`` at :meth:`publish`.

        Writes and searches through this store object go to the replacement. Where the store
        supports it (:attr:`supports_atomic_replace`), the old collection stays whole, and is
        what every other reader sees, until :meth:`publish` swaps the two at once; closing
        without publishing (or a crash) discards the replacement and leaves the old collection
        as it was. Other stores drop the old collection here.
        """
        self._check_open_args(collection, stamp, True)
        self._end_replacement()
        self._open_replacement(collection, stamp)
        self._collection, self._stamp = collection, stamp
        self._replacing = True

    @property
    def replacing(self) -> bool:
        """Whether the open collection is a replacement not yet swapped in."""
        return self._replacing

    def publish(self) -> None:
        """Make the replacement the collection and delete the old one; the store stays open
        on it. Nothing happens when nothing is replacing."""
        if self._replacing:
            self._publish()
            self._replacing = False

    def collections(self) -> list[str]:
        """Names of the bertino-rag collections in this store, sorted."""
        return sorted(self._collections())

    @property
    def location(self) -> str:
        """Where the store is, for messages (never with credentials)."""
        return type(self).__name__

    @property
    def full_vector_dtype(self) -> str:
        """The numpy dtype name of the full vectors as this store holds them (``"float16"``
        or ``"float32"``): what a full vector costs per dimension, for reports."""
        return "float32"

    def stored_stamp(self, collection: str) -> Stamp | None:
        """The stamp of an existing ``collection``; ``None`` when there is no such collection.
        Opens nothing.

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

    def ensure_open(self, collection: str, stamp: Stamp, *, recreate: bool = False,
                    create: bool = True) -> None:
        """Make ``collection`` the open one, built with ``stamp``: when it is already open here
        (a store shared by several retrievers) only its stamp is checked; otherwise (or with
        ``recreate``) this is :meth:`open`.

        Raises:
            StampMismatchError: the collection was built with another model, dim or layout.
        """
        if not recreate and self.is_open and self._collection == collection:
            stamp.check(self.stamp, collection)
        else:
            self.open(collection, stamp, recreate=recreate, create=create)

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

    def clear(self) -> None:
        """Remove every document; the collection stays open with its stamp (a store object
        shared by several retrievers keeps working).

        Raises:
            StoreError: a replacement is being built: publish or close it first.
        """
        stamp, collection = self.stamp, self.collection
        if self._replacing:
            raise StoreError(f"{self.location}: clear() while a replacement of {collection!r} "
                             "is being built; publish() or close() it first")
        self._clear(collection, stamp)
        self._collection, self._stamp = collection, stamp

    def drop(self) -> None:
        """Delete the open collection and everything in it (an unpublished replacement: the
        replacement, and the collection it was to replace)."""
        self.stamp  # noqa: B018
        self.publish()
        self._drop()
        self._stamp = self._collection = None

    def close(self) -> None:
        """Release connections, files and locks. The data stays; an unpublished replacement
        is discarded."""
        self._end_replacement()
        self._stamp = self._collection = None

    def __enter__(self) -> VectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def build_index(self) -> bool:
        """Build the store's search index after bulk writes, where it has one to build (called
        by ``Retriever.index``). Returns True when anything was built; searches are correct
        before and after."""
        self.stamp  # noqa: B018
        return False

    # ------------------------------------------------------------------ checks
    def check_documents(
        self, documents: Sequence[Document], *, offset: int = 0, text_limit: bool = True,
        describe: Callable[[int], str] | None = None,
    ) -> None:
        """Raise ValueError, naming the position, for a document this store would not keep
        exactly (:func:`~bertino_rag.validation.check_documents`); nothing is written.

        ``text_limit=False`` leaves the store's text size limit out: for documents that are
        cut into chunks before they are written, whose chunks are checked against it.
        """
        limits = self.limits if text_limit else replace(self.limits, max_text_bytes=None)
        check_documents(documents, limits, offset=offset, describe=describe)

    def _parse_filter(self, filter: Any) -> Any:
        """Dicts are parsed into conditions; a store's native filter object passes through."""
        if filter is None or isinstance(filter, Mapping):
            return parse_filter(filter)
        return self._native_filter(filter)

    # ------------------------------------------------------------------ writes
    def upsert(self, documents: Sequence[Document], vectors: np.ndarray,
               full_vectors: np.ndarray | None = None) -> None:
        """Insert or replace documents with their index (and full) vectors. The whole call is
        validated before anything is written."""
        self.check_documents(documents)
        self.write_checked(documents, vectors, full_vectors)

    def write_checked(self, documents: Sequence[Document], vectors: Any,
                      full_vectors: Any | None) -> None:
        """:meth:`upsert` of documents already checked with :meth:`check_documents` (the
        indexing pipeline checks each document once, as it reads it): the vectors are
        checked, the term counts computed, and the batch written."""
        stamp = self.stamp
        n = len(documents)
        if n == 0:
            return
        vec = check_vectors(vectors, stamp.index_dim, "index vectors", n=n,
                            collection=self._collection)
        full: np.ndarray | None = None
        if stamp.full_vectors:
            if full_vectors is None:
                raise ValueError(f"collection {self.collection!r} stores full vectors for "
                                 "rescoring: pass full_vectors")
            full = check_vectors(full_vectors, stamp.full_dim, "full vectors", n=n,
                                 collection=self._collection)
        terms = None
        if stamp.lexical is not None:
            terms = lexical_config(stamp.lexical)[0].counts_batch(d.text for d in documents)
        self._write(WriteBatch(list(documents), vec, full, terms))

    async def aupsert(self, documents: Sequence[Document], vectors: np.ndarray,
                      full_vectors: np.ndarray | None = None) -> None:
        """Async :meth:`upsert` (a worker thread)."""
        await asyncio.to_thread(self.upsert, documents, vectors, full_vectors)

    def delete(self, ids: Sequence[str]) -> None:
        """Delete documents by id; unknown ids are ignored."""
        self.stamp  # noqa: B018
        ids = _id_strings(ids)
        if ids:
            self._delete(ids)

    def delete_documents(self, doc_ids: Sequence[str]) -> None:
        """Delete documents by id together with every chunk of them (the stored documents
        whose ``doc_id`` metadata is one of ``doc_ids``); unknown ids are ignored."""
        self.stamp  # noqa: B018
        doc_ids = list(dict.fromkeys(_id_strings(doc_ids)))
        if doc_ids:
            self.delete(list(dict.fromkeys([*doc_ids, *self.ids_of_documents(doc_ids)])))

    def ids_of_documents(self, doc_ids: Sequence[str]) -> list[str]:
        """Ids of the stored chunks of ``doc_ids`` (the items whose ``doc_id`` metadata is one
        of them), sorted; any number of documents (asked in blocks within the filter's
        ``$in`` bound)."""
        self.stamp  # noqa: B018
        doc_ids = list(dict.fromkeys(_id_strings(doc_ids)))
        found: set[str] = set()
        for start in range(0, len(doc_ids), MAX_IN_VALUES):
            block = doc_ids[start : start + MAX_IN_VALUES]
            found.update(self._ids_where(parse_filter({DOC_ID: {"$in": block}})))
        return sorted(found)

    # ------------------------------------------------------------------ reads
    def ids_where(self, filter: Mapping[str, Any]) -> list[str]:
        """Ids of every stored document whose metadata matches ``filter`` (a dict, as in
        :meth:`search`), sorted."""
        self.stamp  # noqa: B018
        if not isinstance(filter, Mapping) or not filter:
            raise ValueError(
                f"ids_where takes a non-empty filter dict, got {filter!r}; to list every id, "
                "use export()"
            )
        return sorted(self._ids_where(parse_filter(filter)))

    def count(self) -> int:
        """Number of documents in the collection."""
        self.stamp  # noqa: B018
        return int(self._count())

    def get(self, ids: Sequence[str]) -> list[Document]:
        """The stored documents for ``ids`` (in that order); unknown ids are skipped."""
        self.stamp  # noqa: B018
        if not ids:
            return []
        fetched = self._fetch(_id_strings(ids), documents=True)
        return [d for d in fetched.documents or () if d is not None]

    def fetch_full(self, ids: Sequence[str]) -> np.ndarray:
        """Full vectors of ``ids``, row i for ``ids[i]``.

        Raises:
            KeyError: naming ids that are not stored.
            StoreError: when the collection keeps no full vectors.
        """
        stamp = self.stamp
        if not stamp.full_vectors:
            raise StoreError(
                f"collection {self.collection!r} stores no full vectors (built with rescore off)"
            )
        ids = _id_strings(ids)
        if not ids:
            return np.zeros((0, stamp.full_dim), dtype=np.float32)
        fetched = self._fetch(ids, full=True)
        missing = [i for i, ok in zip(ids, fetched.found, strict=True) if not ok]
        if missing:
            raise KeyError(f"ids not in collection {self.collection!r}: {missing[:10]}")
        assert fetched.full is not None
        return fetched.full

    def export(self, batch_size: int = 512) -> Iterator[ExportBatch]:
        """Every stored document with its vectors, in batches of up to ``batch_size``.

        Each document comes exactly once, in a store-defined order. Writes made while the
        export runs may or may not be seen.
        """
        stamp = self.stamp
        batch_size = positive_int(batch_size, "batch_size")
        for batch in self._scan(batch_size):
            if not batch.documents:
                continue
            n = len(batch.documents)
            vectors = np.asarray(batch.vectors, dtype=np.float32).reshape(n, stamp.index_dim)
            full = batch.full_vectors
            if full is not None and stamp.full_vectors:
                full = np.asarray(full, dtype=np.float32).reshape(n, stamp.full_dim)
            yield ExportBatch(list(batch.documents), vectors,
                              full if stamp.full_vectors else None)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        legacy = cls.__dict__.get("backend")
        if isinstance(legacy, str):  # a store written against the old name keeps working
            warnings.warn(f"{cls.__name__}: the class attribute 'backend' is deprecated; "
                          f"write kind = {legacy!r}", DeprecationWarning, stacklevel=2)
            cls.kind = legacy
            delattr(cls, "backend")

    def __repr__(self) -> str:
        where = f"collection={self._collection!r}" if self._collection else "not open"
        return f"{type(self).__name__}({where})"


def _id_strings(ids: Sequence[Any]) -> list[str]:
    """``ids`` as strings; an id with a NUL is refused as at writing (no stored id has one)."""
    return [check_no_nul(str(i), f"the id at position {n}") for n, i in enumerate(ids)]
