"""The store contract every backend implements, with validation and two-stage search shared.

A store holds one open collection at a time. :meth:`VectorStore.open` creates it, or opens it
and checks its :class:`~bertino_rag.types.Stamp` (model, dims, layout): vectors of another model
or dimension are never mixed into it.

One rule for connecting: a store's constructor validates its arguments (and fails fast on bad
ones) but connects to nothing, opens no file and takes no lock; :meth:`VectorStore.open`, and
the calls that need the store before a collection is open (:meth:`VectorStore.collections`,
:meth:`VectorStore.stored_stamp`), connect on first need. An unreachable server therefore
raises :class:`StoreConnectionError` there, never from the constructor.

The public methods validate their input and then call the backend's underscore methods, so
every backend gets the same errors for the same mistakes.

Backends implement: ``_open``, ``_upsert``, ``_search``, ``_fetch_full``, ``_get``,
``_delete``, ``_count``, ``_drop``, ``_ids_where``, ``_export`` (read every stored point back
with its vectors) and, when they can do better than the generic "search, fetch full vectors,
rescore" path, ``_search_two_stage``. A store with an index to build after bulk writes
overrides ``build_index``. Backends with a native
async client also override ``_aupsert`` and ``_asearch``, which receive input already
validated by :meth:`VectorStore._prepare_upsert` / :meth:`VectorStore._prepare_search`.

Two rules every backend shares live here once: the order of results
(:func:`ranking_key`: higher score first, ties by id) and the error for ids that are not
stored (:func:`check_found`).
Each store says what it is and what it stores: :attr:`VectorStore.kind` (``"memory"``,
``"qdrant"``...) and :attr:`VectorStore.full_vector_dtype` (what a full vector costs per
dimension), so that code above the stores (reports, the service) never tests for a store type.
:meth:`VectorStore.clear` empties the open collection and keeps it open (``_clear``: drop and
create again by default, in place where a store can).
Documents cut into chunks carry their document's id in the ``doc_id`` metadata field
(:mod:`bertino_rag.documents`): :meth:`VectorStore.delete_documents` removes a document with
all its chunks, on every store, through ``_ids_where``.

Lexical (BM25) search beside the vectors: a collection whose stamp has ``lexical`` set keeps a
lexical index of every document, written by the same ``upsert`` (same ids, same write) and
removed by the same ``delete``. The analysis happens here, once, with the analyzer the stamp
names, so every store indexes and queries the same terms. Stores that can hold it set
``supports_lexical = True`` and implement ``_upsert_lexical`` (the write, vectors and term
counts together, as atomic as ``_upsert``) and ``_lexical_search`` (exact BM25 on the live
documents, :class:`~bertino_rag.lexical.BM25`). Hybrid search is a funnel that works on those
hooks (``_hybrid_search``): a store that can fetch both sides' candidates in one call overrides
``_hybrid_candidates``, and the rescoring and the fusion (:class:`~bertino_rag.fusion.Fusion`)
stay the same on every store. A store whose sparse values fix BM25's length normalization at
write time (Qdrant) says so in :attr:`VectorStore.lexical_avgdl`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import re
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Container, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, ClassVar, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np

from ..errors import (
    CollectionNotFoundError,
    StoreConnectionError,
    StoreCorruptionError,
    StoreError,
    StoreWriteError,
)
from ..indexing.documents import DOC_ID, group_hits
from ..lexical import BM25, Analyzer, EmptyQueryError, LexicalUnavailableError, parse_lexical_spec
from ..search.fusion import Fusion
from ..types import Document, Hit, Stamp
from .filters import MAX_IN_VALUES, Condition, Node, parse_filter

__all__ = [
    "COLLECTION_NAME",
    "CollectionNotFoundError",
    "HybridQuery",
    "SearchQuery",
    "StoreConnectionError",
    "StoreCorruptionError",
    "StoreError",
    "StoreLimits",
    "StoreWriteError",
    "VectorStore",
    "check_collection_name",
    "check_documents",
    "redact",
    "rescore",
    "retry",
    "safe_location",
    "ExportBatch",
    "HybridQuery",
    "SearchQuery",
    "StoreError",
    "UpsertBatch",
    "VectorStore",
    "check_found",
    "id_ranks",
    "ranking_key",
    "rescore",
    "rescore_hits",
    "rescore_rows",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")


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
    #: ``"document"``: one hit per document, with up to ``group_size`` chunks attached
    group_by: str | None = None
    group_size: int = 3


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


# ---------------------------------------------------------------------- locations and secrets
def safe_location(uri: str) -> str:
    """``uri`` without user info and without secret-looking query parameters.

    ``http://admin:SECRET@host:6333/?api_key=K`` -> ``http://host:6333/``. Used in every repr
    and error message of a store, so that credentials never reach a log.
    """
    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri
    if not parts.scheme or not parts.netloc:
        return uri
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    if port:
        host += f":{port}"
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                       if not _SECRET_PARAM.search(k)])
    return urlunsplit((parts.scheme, host, parts.path, query, parts.fragment))


_SECRET_PARAM = re.compile(r"key|token|pass|secret|auth|cred", re.IGNORECASE)


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with every given secret (and the user info of any URL in it) replaced."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return re.sub(r"(?<=://)[^/\s@]+@", "***@", text)


# ---------------------------------------------------------------------- retries
def retry(
    fn: Callable[[], T],
    *,
    transient: Callable[[BaseException], bool],
    attempts: int,
    what: str,
    base_delay: float = 0.5,
    max_delay: float = 30.0,
) -> T:
    """Call ``fn``, retrying up to ``attempts`` more times while ``transient(error)`` holds.

    Delays double from ``base_delay`` (with 25% jitter) up to ``max_delay``. Each store passes
    its own ``transient`` test (timeouts, 5xx, 429, "unavailable"); any other error, or the
    last transient one, is raised as is.
    """
    delay = base_delay
    for attempt in range(attempts + 1):
        try:
            return fn()
        except Exception as err:
            if attempt == attempts or not transient(err):
                raise
            logger.warning("%s failed (%s); retry %d/%d in %.1fs", what, type(err).__name__,
                           attempt + 1, attempts, delay)
            time.sleep(delay * (1 + 0.25 * random.random()))
            delay = min(delay * 2, max_delay)
    raise AssertionError("unreachable")


async def aretry(
    fn: Callable[[], Awaitable[T]],
    *,
    transient: Callable[[BaseException], bool],
    attempts: int,
    what: str,
    base_delay: float = 0.5,
    max_delay: float = 30.0,
) -> T:
    """Async :func:`retry`."""
    delay = base_delay
    for attempt in range(attempts + 1):
        try:
            return await fn()
        except Exception as err:
            if attempt == attempts or not transient(err):
                raise
            logger.warning("%s failed (%s); retry %d/%d in %.1fs", what, type(err).__name__,
                           attempt + 1, attempts, delay)
            await asyncio.sleep(delay * (1 + 0.25 * random.random()))
            delay = min(delay * 2, max_delay)
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------- validation rules
#: Collection names every store accepts: Milvus' rule (letters, digits, ``_``; not starting with
#: a digit), the strictest of the three; at most 200 characters, leaving room for Qdrant's
#: ``__bertino_stamp`` companion within its 255. No ``/``, ``.`` or ``..``: a name never
#: leaves its store's folder.
COLLECTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,199}$")
_INT64 = (-(2**63), 2**63 - 1)
_MAX_DEPTH = 32


def check_collection_name(name: Any) -> str:
    """Return ``name`` if every store accepts it as a collection name, else raise ValueError."""
    if not isinstance(name, str) or not COLLECTION_NAME.match(name):
        raise ValueError(
            f"invalid collection name {name!r}: use 1-200 letters, digits and '_', not starting "
            "with a digit (e.g. 'bertino' or 'wiki_2024'); the same rule holds on every store"
        )
    return name


@dataclass(frozen=True)
class StoreLimits:
    """Per-store limits checked by :func:`check_documents` (``None``: no limit)."""

    max_id_bytes: int | None = None
    max_text_bytes: int | None = None


def _utf8(value: str, what: str) -> int:
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError as err:
        raise ValueError(
            f"{what} is not valid Unicode (a lone surrogate {value[err.start]!r} at character "
            f"{err.start}); decode the source with errors='replace' or fix its encoding"
        ) from None


def _check_json(value: Any, where: str, what: str, depth: int, seen: set[int]) -> None:
    """Metadata values that mean the same on every store: JSON, finite numbers, str keys."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        _utf8(value, f"{where}: {what}")
        return
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise ValueError(f"{where}: {what} = {value} does not fit in 64 bits "
                             "(stores keep integers as int64); store it as a string")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: {what} is {value!r}; only finite numbers are "
                             "stored (JSON has no NaN or infinity): use null or drop the field")
        return
    if depth > _MAX_DEPTH or id(value) in seen:
        raise ValueError(f"{where}: {what} is nested too deep or refers to itself")
    if isinstance(value, Mapping):
        seen.add(id(value))
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(
                    f"{where}: {what} has a key of type {type(key).__name__} "
                    f"({key!r}); keys must be strings (stores would turn {key!r} into "
                    f"{str(key)!r} or 'null')"
                )
            _utf8(key, f"{where}: a key of {what}")
            _check_json(item, where, f"{what}[{key!r}]", depth + 1, seen)
        seen.discard(id(value))
        return
    if isinstance(value, (list, tuple)):
        seen.add(id(value))
        for i, item in enumerate(value):
            _check_json(item, where, f"{what}[{i}]", depth + 1, seen)
        seen.discard(id(value))
        return
    hint = {
        "set": "a list", "frozenset": "a list", "datetime": "value.isoformat()",
        "date": "value.isoformat()", "bytes": "a str (e.g. base64)", "Decimal": "a float or str",
    }.get(type(value).__name__, "value.item()" if isinstance(value, np.generic) else
          "a str, number, bool, None, list or dict")
    raise ValueError(
        f"{where}: {what} is a {type(value).__name__}, which is not JSON; store "
        f"{hint} instead"
    )


def check_documents(
    documents: Sequence[Document], limits: StoreLimits | None = None, *, offset: int = 0,
    describe: Callable[[int], str] | None = None,
) -> None:
    """Validate documents against the rules of every store (and ``limits``) before any write.

    One place for the rules: ids and texts are valid Unicode and within the store's byte
    limits; metadata is a dict with string keys whose values are JSON (str, finite numbers
    within int64, bool, None, lists and dicts of those). Ids must be unique within the call.

    Args:
        describe: how a message names ``documents[i]`` (default: ``"document at position
            {offset + i}"``); the chunks of a document are named after it.

    Raises:
        ValueError: naming the position (``offset`` + index) of the first bad document.
    """
    limits = limits or StoreLimits()
    first: dict[str, int] = {}
    for i, d in enumerate(documents):
        where = describe(i) if describe is not None else f"document at position {offset + i}"
        if not isinstance(d.id, str):
            raise ValueError(f"{where} has an id of type {type(d.id).__name__}; expected str")
        n_id = _utf8(d.id, f"{where}: the id")
        if limits.max_id_bytes is not None and n_id > limits.max_id_bytes:
            raise ValueError(f"{where} has an id of {n_id} UTF-8 bytes ({d.id[:40]!r}...); this "
                             f"store keeps ids of at most {limits.max_id_bytes} bytes")
        if d.id in first:
            raise ValueError(
                f"documents at positions {offset + first[d.id]} and {offset + i} have the same "
                f"id {d.id!r}: ids must be unique within a call (ids are strings: 7 and '7' are "
                "one id); give each document its own id, or leave ids out to derive them"
            )
        first[d.id] = i
        n_text = _utf8(d.text, f"{where} (id {d.id!r}): the text")
        if limits.max_text_bytes is not None and n_text > limits.max_text_bytes:
            raise ValueError(
                f"{where} (id {d.id!r}) has {n_text} bytes of text; this store keeps at most "
                f"{limits.max_text_bytes}: split it into chunks"
            )
        if not isinstance(d.metadata, Mapping):
            raise ValueError(f"{where} has metadata of type {type(d.metadata).__name__}; "
                             "expected a dict")
        _check_json(d.metadata, f"{where} (id {d.id!r})", "metadata", 0, set())


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
#: floats of full vectors gathered per rescoring block (64 MiB): bounds the memory of a batch
_RESCORE_BLOCK = 1 << 24


def id_ranks(ids: Sequence[str]) -> np.ndarray:
    """Position of each id in ascending id order: the tie-break of rescoring as an int key."""
    order = sorted(range(len(ids)), key=ids.__getitem__)
    ranks = np.empty(len(ids), dtype=np.int64)
    ranks[order] = np.arange(len(ids), dtype=np.int64)
    return ranks


def rescore_rows(
    candidates: np.ndarray, full: np.ndarray, full_queries: np.ndarray, k: int,
    ranks: np.ndarray, first_scores: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Rescore the candidates of many queries with full vectors, vectorized in bounded blocks.

    Args:
        candidates: ``(m, c)`` rows of ``full`` per query, in first-stage order (best first);
            ``-1`` marks no candidate (a query with fewer than ``c``).
        full: ``(u, d)`` full vectors of the distinct candidates (float16 or float32).
        full_queries: ``(m, d)`` full query vectors.
        k: results kept per query.
        ranks: ``(u,)`` tie-break key of each row of ``full`` (:func:`id_ranks` of their ids).
        first_scores: ``(m, c)`` first-stage scores, when ``candidates`` are not yet in
            first-stage order (by score, ties by id); they are sorted so first.

    Returns:
        ``(rows, scores)``, each ``(m, min(k, c))``, best first: by score, ties by id. Past a
        query's candidates, rows are ``-1`` and scores ``-inf``.

    Scores are float32 ``full[rows] @ query`` products computed exactly as rescoring one
    query at a time does (BLAS matrix-vector products of each query's candidates, in
    first-stage order): queries are grouped by their number of candidates and stacked, so
    the vectorized scores are bit for bit the per-query ones.
    """
    m, c = candidates.shape
    keep = min(k, c)
    rows = np.full((m, keep), -1, dtype=np.int64)
    scores = np.full((m, keep), -np.inf, dtype=np.float32)
    if m == 0 or keep == 0 or len(full) == 0:
        return rows, scores
    valid = candidates >= 0
    last = np.iinfo(np.int64).max
    if first_scores is not None:
        keys = np.where(valid, ranks[np.where(valid, candidates, 0)], last)
        first = np.where(valid, -np.asarray(first_scores, dtype=np.float64), np.inf)
        order = np.lexsort((keys, first), axis=-1)
    else:  # keep the given order, the missing candidates last
        order = np.argsort(~valid, axis=-1, kind="stable")
    candidates = np.take_along_axis(candidates, order, axis=1)
    counts = valid.sum(axis=1)
    full32 = full.astype(np.float32, copy=False)
    queries32 = np.ascontiguousarray(full_queries, dtype=np.float32)
    for n in np.unique(counts).tolist():
        if n == 0:
            continue
        group = np.flatnonzero(counts == n)
        step = max(1, _RESCORE_BLOCK // (n * full32.shape[1]))
        for start in range(0, len(group), step):
            sel = group[start : start + step]
            block = candidates[sel, :n]
            got = np.matmul(full32[block], queries32[sel, :, None])[..., 0]
            best = np.lexsort((ranks[block], -got), axis=-1)[:, :keep]
            rows[sel, : best.shape[1]] = np.take_along_axis(block, best, axis=1)
            scores[sel, : best.shape[1]] = np.take_along_axis(got, best, axis=1)
    return rows, scores


def rescore_hits(
    candidates: Sequence[Sequence[Hit]], ids: Sequence[str], full: np.ndarray,
    full_queries: np.ndarray, k: int,
) -> list[list[Hit]]:
    """Rescore each query's candidate hits with full vectors; the top ``k`` hits per query.

    ``full`` row i is the full vector of ``ids[i]``; every candidate's id is among ``ids``
    (the distinct candidates of the batch, each fetched once).
    """
    width = max((len(hits) for hits in candidates), default=0)
    if width == 0:
        return [[] for _ in candidates]
    row = {doc_id: i for i, doc_id in enumerate(ids)}
    matrix = np.full((len(candidates), width), -1, dtype=np.int64)
    for qi, hits in enumerate(candidates):
        matrix[qi, : len(hits)] = [row[h.id] for h in hits]
    top, scores = rescore_rows(matrix, full, full_queries, k, id_ranks(ids))
    out = []
    for hits, picked, got in zip(candidates, top.tolist(), scores.tolist(), strict=True):
        by_row = {row[h.id]: h for h in hits}
        out.append([
            Hit(id=by_row[r].id, text=by_row[r].text, score=s, metadata=by_row[r].metadata)
            for r, s in zip(picked, got, strict=True) if r >= 0
        ])
    return out


def rescore(
    candidates: Sequence[Hit], full: np.ndarray, full_query: np.ndarray, k: int
) -> list[Hit]:
    """Rescore one query's candidates with full-dim vectors; return the top ``k``.

    ``full`` holds the candidates' full vectors, row i for ``candidates[i]``. Ties are broken
    by id so that every store returns the same order for the same vectors.
    """
    if not candidates:
        return []
    ids = [h.id for h in candidates]
    top, scores = rescore_rows(np.arange(len(ids), dtype=np.int64)[None, :], full,
                               np.asarray(full_query)[None, :], k, id_ranks(ids))
    return [
        Hit(id=candidates[i].id, text=candidates[i].text, score=s,
            metadata=candidates[i].metadata)
        for i, s in zip(top[0].tolist(), scores[0].tolist(), strict=True) if i >= 0
    ]


class _DeprecatedBackend:
    """``VectorStore.backend``: the old name of :attr:`VectorStore.kind`, with a warning."""

    def __get__(self, obj: object, owner: type) -> str:
        warnings.warn("VectorStore.backend is deprecated; use VectorStore.kind (the kind of "
                      "store: 'backend' also names the encoder runtime)", DeprecationWarning,
                      stacklevel=2)
        return str(owner.kind)  # type: ignore[attr-defined]


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

    #: the kind of store ("memory", "qdrant", "milvus"), in messages and reports
    kind: ClassVar[str] = "abstract"
    #: deprecated alias of :attr:`kind` ("backend" also names the encoder runtime)
    backend: ClassVar[str] = _DeprecatedBackend()  # type: ignore[assignment]
    #: candidates a two-stage batch holds at once (queries x rerank_k): bounds its memory, so
    #: that a batch of any number of queries runs in flat memory
    candidate_block: int = 1 << 16
    #: this store's limits on ids and texts, checked with the rules of :func:`check_documents`
    limits: StoreLimits = StoreLimits()
    #: whether the store can keep a lexical index beside the vectors (``Stamp.lexical``)
    supports_lexical: ClassVar[bool] = False
    #: whether :meth:`open_replacement` builds beside the old collection, which stays whole
    #: until :meth:`publish` swaps them; otherwise it drops the old collection at once
    supports_atomic_replace: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        legacy = cls.__dict__.get("backend")
        if isinstance(legacy, str):  # a store written against the old name keeps working
            warnings.warn(f"{cls.__name__}: the class attribute 'backend' is deprecated; "
                          f"write kind = {legacy!r}", DeprecationWarning, stacklevel=2)
            cls.kind = legacy
            del cls.backend

    def __init__(self) -> None:
        self._stamp: Stamp | None = None
        self._collection: str | None = None
        self._replacing = False

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
            StoreConnectionError: the store cannot be reached (stores connect here, on first
                need, not in their constructor).
        """
        self._check_open_args(collection, stamp, create)
        if self._replacing:
            self._discard_replacement()
            self._replacing = False
        self._open(collection, stamp, recreate)
        self._collection = collection
        self._stamp = stamp

    def _check_open_args(self, collection: str, stamp: Stamp, create: bool) -> None:
        """What :meth:`open` and :meth:`open_replacement` refuse before touching anything."""
        check_collection_name(collection)
        if not create:
            existing = self.collections()
            if collection not in existing:
                raise CollectionNotFoundError(collection, self.location, existing)
        if stamp.index_dim <= 0 or stamp.index_dim > stamp.full_dim:
            raise ValueError(
                f"index_dim must be in 1..{stamp.full_dim}, got {stamp.index_dim}"
            )
        if stamp.lexical is not None:
            lexical_config(stamp.lexical)  # an unknown analyzer fails before anything opens
            if not self.supports_lexical:
                raise ValueError(
                    f"{type(self).__name__} cannot keep a lexical index: build the collection "
                    "with hybrid=False, or use a store that has one (memory, qdrant, qdrant-edge, "
                    "milvus)"
                )

    def open_replacement(self, collection: str, stamp: Stamp) -> None:
        """Open a new, empty collection that replaces ``collection`` at :meth:`publish`.

        Writes and searches through this store object go to the replacement. Where the store
        supports it (:attr:`supports_atomic_replace`), the old collection stays whole, and is
        what every other reader sees, until :meth:`publish` swaps the two at once; closing
        without publishing (or a crash) discards the replacement and leaves the old collection
        as it was. Other stores drop the old collection here (``open(recreate=True)``).

        Raises:
            ValueError: a collection name or stamp that :meth:`open` refuses.
        """
        self._check_open_args(collection, stamp, True)
        if self._replacing:
            self._discard_replacement()
            self._replacing = False
        self._open_replacement(collection, stamp)
        self._collection = collection
        self._stamp = stamp
        self._replacing = True

    @property
    def replacing(self) -> bool:
        """Whether the open collection is a replacement that :meth:`publish` has not swapped
        in yet."""
        return self._replacing

    def publish(self) -> None:
        """Make the replacement opened by :meth:`open_replacement` the collection, and delete
        the old one; the store stays open on it. Nothing happens when nothing is replacing."""
        if not self._replacing:
            return
        self._publish()
        self._replacing = False

    def _open_replacement(self, collection: str, stamp: Stamp) -> None:
        """Default for stores without a swap: the old collection is dropped now."""
        self._open(collection, stamp, True)

    def _publish(self) -> None:
        """Swap the replacement in (stores with :attr:`supports_atomic_replace`)."""
        return None

    def _discard_replacement(self) -> None:
        """Delete an unpublished replacement (stores with :attr:`supports_atomic_replace`)."""
        return None

    def collections(self) -> list[str]:
        """Names of the bertino-rag collections in this store, sorted."""
        raise NotImplementedError(f"{type(self).__name__} cannot list its collections")

    @property
    def location(self) -> str:
        """Where the store is, for messages (never with credentials)."""
        return type(self).__name__

    @property
    def full_vector_dtype(self) -> str:
        """The numpy dtype name of the full vectors as this store holds them (``"float16"``
        or ``"float32"``): what a full vector costs per dimension, for reports. Every store
        rescores with float16-rounded values; a store that says nothing is counted float32."""
        return "float32"

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

    def ensure_open(self, collection: str, stamp: Stamp, *, recreate: bool = False,
                    create: bool = True) -> None:
        """Make ``collection`` the open one, built with ``stamp``.

        When it is already open here (a store shared by several retrievers), only its stamp
        is checked; otherwise (or with ``recreate``) this is :meth:`open`.

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
        """Remove every document from the open collection, which stays open with its stamp
        (a store object shared by several retrievers keeps working).

        Raises:
            StoreError: a replacement is being built (:meth:`open_replacement`): publish or
                close it first.
        """
        stamp, collection = self.stamp, self._collection
        assert collection is not None
        if self._replacing:
            raise StoreError(f"{self.location}: clear() while a replacement of {collection!r} "
                             "is being built; publish() or close() it first")
        self._clear(collection, stamp)
        self._collection, self._stamp = collection, stamp

    def _clear(self, collection: str, stamp: Stamp) -> None:
        """Empty the open collection. The default drops it and creates it again with the same
        stamp; a store that can empty a collection in place overrides this."""
        self._drop()
        self._open(collection, stamp, True)

    def drop(self) -> None:
        """Delete the open collection and everything in it (an unpublished replacement: the
        replacement, and the collection it was to replace)."""
        self.stamp  # noqa: B018
        if self._replacing:
            self.publish()
        self._drop()
        self._stamp = None
        self._collection = None

    def close(self) -> None:
        """Release connections, files and locks. The data stays; an unpublished replacement
        (:meth:`open_replacement`) is discarded."""
        if self._replacing:
            self._replacing = False
            self._discard_replacement()
        self._stamp = None
        self._collection = None

    def __enter__(self) -> VectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ validation
    def check_documents(
        self, documents: Sequence[Document], *, offset: int = 0, text_limit: bool = True,
        describe: Callable[[int], str] | None = None,
    ) -> None:
        """Raise ValueError, naming the position, for a document this store would not keep
        exactly (see :func:`check_documents`); nothing is written.

        ``text_limit=False`` leaves the store's text size limit out: for documents that are
        cut into chunks before they are written, whose chunks are checked against it.
        """
        limits = self.limits if text_limit else replace(self.limits, max_text_bytes=None)
        check_documents(documents, limits, offset=offset, describe=describe)

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
        self.check_documents(documents)
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

    def delete_documents(self, doc_ids: Sequence[str]) -> None:
        """Delete documents by id together with every chunk of them (the stored documents
        whose ``doc_id`` metadata is one of ``doc_ids``); unknown ids are ignored."""
        self.stamp  # noqa: B018
        doc_ids = list(dict.fromkeys(str(i) for i in doc_ids))
        if not doc_ids:
            return
        chunks = self.ids_of_documents(doc_ids)
        self.delete(list(dict.fromkeys([*doc_ids, *chunks])))

    def ids_of_documents(self, doc_ids: Sequence[str]) -> list[str]:
        """Ids of the stored chunks of ``doc_ids`` (the items whose ``doc_id`` metadata is one
        of them), sorted. Any number of documents: the filter's ``$in`` bound
        (:data:`~bertino_rag.adapters.filters.MAX_IN_VALUES`) is met by asking in blocks."""
        self.stamp  # noqa: B018
        doc_ids = list(dict.fromkeys(str(i) for i in doc_ids))
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
                "iterate the collection with the backend's own client"
            )
        return sorted(self._ids_where(parse_filter(filter)))

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
        group_by: str | None = None,
        group_size: int = 3,
    ) -> list[Hit]:
        """Top ``k`` documents for one query vector, best first.

        With ``full_vector`` (and a collection that keeps full vectors), the search is
        two-stage: ``rerank_k`` candidates on the index vectors, rescored with full vectors.
        With ``group_by="document"``, chunks of one document count once: ``k`` documents,
        each the hit of its best chunk with up to ``group_size`` matching chunks in
        :attr:`Hit.chunks` (see :func:`bertino_rag.documents.group_hits`).
        """
        full = None if full_vector is None else np.asarray(full_vector)[None, ...]
        return self.search_batch(
            np.asarray(vector)[None, ...] if np.ndim(vector) == 1 else vector,
            k, filter, full_vectors=full, rerank_k=rerank_k, group_by=group_by,
            group_size=group_size,
        )[0]

    def search_batch(
        self,
        vectors: np.ndarray,
        k: int = 10,
        filter: Any = None,
        *,
        full_vectors: np.ndarray | None = None,
        rerank_k: int | None = None,
        group_by: str | None = None,
        group_size: int = 3,
    ) -> list[list[Hit]]:
        """:meth:`search` for many query vectors at once."""
        query = self._prepare_search(vectors, k, filter, full_vectors, rerank_k,
                                     group_by, group_size)
        return self._run_search(query)

    def _prepare_search(
        self,
        vectors: Any,
        k: int,
        filter: Any,
        full_vectors: Any | None,
        rerank_k: int | None,
        group_by: str | None = None,
        group_size: int = 3,
    ) -> SearchQuery:
        """Validate a search once, for the sync and async paths alike."""
        stamp = self.stamp
        k = self._check_k(k)
        if group_by not in (None, "document"):
            raise ValueError(f"group_by must be None or 'document', got {group_by!r}")
        group_size = self._check_k(group_size, "group_size")
        vec = self._check_matrix(vectors, stamp.index_dim, "query vectors")
        conditions = self._parse_filter(filter)
        if full_vectors is None:
            return SearchQuery(vec, k, conditions, group_by=group_by, group_size=group_size)
        if not stamp.full_vectors:
            raise StoreError(
                f"collection {self.collection!r} stores no full vectors (built with rerank off); "
                "search without full_vector, or re-index with rerank on"
            )
        full = self._check_matrix(full_vectors, stamp.full_dim, "full query vectors", len(vec))
        rerank_k = max(k, self._check_k(rerank_k if rerank_k is not None else 100, "rerank_k"))
        return SearchQuery(vec, k, conditions, full, rerank_k, group_by, group_size)

    #: most chunks a grouped search reads per query before it stops looking for more documents
    max_group_candidates: int = 10_000

    def _run_search(self, query: SearchQuery) -> list[list[Hit]]:
        if query.group_by is not None:
            return self._search_grouped(query)
        return self._run_ungrouped(query)

    def _search_grouped(self, query: SearchQuery) -> list[list[Hit]]:
        """One hit per document: search ``k * group_size`` chunks, group them, and search
        wider (4x each time) for the queries that found fewer than ``k`` documents while more
        chunks were left. Backends with native grouping override this."""
        total = self._count()
        fetch = min(max(query.k * query.group_size, 4 * query.k), total,
                    self.max_group_candidates)
        rows = list(range(len(query.vectors)))
        out: list[list[Hit]] = [[] for _ in rows]
        while rows and fetch > 0:
            sub = replace(
                query, vectors=query.vectors[rows], group_by=None, k=fetch,
                full=None if query.full is None else query.full[rows],
                rerank_k=None if query.rerank_k is None else max(query.rerank_k, fetch),
            )
            again = []
            for row, hits in zip(rows, self._run_ungrouped(sub), strict=True):
                out[row] = group_hits(hits, query.k, query.group_size)
                if len(out[row]) < query.k and len(hits) >= fetch:
                    again.append(row)
            limit = min(total, self.max_group_candidates)
            if fetch >= limit:
                break
            rows, fetch = again, min(4 * fetch, limit)
        return out

    def _run_ungrouped(self, query: SearchQuery) -> list[list[Hit]]:
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

    @property
    def lexical_avgdl(self) -> float | None:
        """The mean document length BM25 normalizes by, when the store fixes it at write time
        (sparse vectors written once: Qdrant); ``None`` where it is the live collection's
        mean, and BM25 is exact (MemoryStore, Milvus)."""
        return None

    def _hybrid_candidates(self, query: HybridQuery) -> tuple[list[list[Hit]], list[list[Hit]]]:
        """Dense candidates on the index vectors and lexical candidates, ``dense.k`` each."""
        d = query.dense
        return (self._search(d.vectors, d.k, d.conditions),
                self._lexical_candidates(query.terms, d.k, d.conditions))

    def _hybrid_search(self, query: HybridQuery) -> list[list[Hit]]:
        """The funnel on the store's hooks. Candidates from the lexical side are rescored with
        full vectors too, so every candidate has its exact dense score when the collection
        keeps full vectors."""
        d = query.dense
        dense, lexical = self._hybrid_candidates(query)
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
        group_by: str | None = None,
        group_size: int = 3,
    ) -> list[Hit]:
        """Async :meth:`search`: the backend's async client where it has one (``_asearch``),
        else a worker thread."""
        full = None if full_vector is None else np.asarray(full_vector)[None, ...]
        query = self._prepare_search(
            np.asarray(vector)[None, ...] if np.ndim(vector) == 1 else vector,
            k, filter, full, rerank_k, group_by, group_size,
        )
        if query.group_by is not None:
            return (await asyncio.to_thread(self._search_grouped, query))[0]
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

    def _queries_per_block(self, rerank_k: int) -> int:
        """Queries of a two-stage batch searched and rescored together."""
        return max(1, self.candidate_block // rerank_k)
    def _ids_where(self, conditions: list[Node]) -> list[str]:
        """Ids of the documents matching parsed ``conditions`` (non-empty), in any order."""
        raise NotImplementedError(
            f"{type(self).__name__} cannot list documents by metadata (needed to delete a "
            "document's chunks); implement _ids_where"
        )

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
        """Generic two-stage search: candidates on index vectors, rescored with full vectors.

        Queries go in blocks of at most ``candidate_block`` candidates: per block, one batched
        search, one fetch of the distinct candidates' full vectors, one vectorized rescoring.
        """
        out: list[list[Hit]] = []
        step = self._queries_per_block(rerank_k)
        for start in range(0, len(vectors), step):
            part = slice(start, start + step)
            candidates = self._search(vectors[part], rerank_k, conditions)
            wanted = list(dict.fromkeys(h.id for hits in candidates for h in hits))
            if not wanted:
                out.extend([] for _ in candidates)
                continue
            out.extend(rescore_hits(candidates, wanted, self._fetch_full(wanted),
                                    full_vectors[part], k))
        return out

    def __repr__(self) -> str:
        where = f"collection={self._collection!r}" if self._collection else "not open"
        return f"{type(self).__name__}({where})"
