"""Milvus store: embedded Milvus Lite (a ``.db`` path) or a Milvus server, on the store contract.

Schema of a collection (one entity per document):

- ``id``: VARCHAR primary key, the document id (at most 512 UTF-8 bytes);
- ``vector``: FLOAT_VECTOR of ``index_dim``, the searched (truncated) vectors, with the chosen
  index and metric IP (COSINE when the stamp says vectors are not normalized);
- ``full_vector`` (only with ``stamp.full_vectors``): the full vectors, FLOAT16_VECTOR where the
  engine has it, else FLOAT_VECTOR holding float16-rounded values (Milvus Lite 3.2 has no
  float16 vectors). Rescoring therefore uses float16 full vectors everywhere, as MemoryStore
  does. Servers index it with FLAT (needed to load); Milvus Lite needs no index on it;
- ``text``: VARCHAR (at most 65,535 UTF-8 bytes; longer texts are rejected before writing:
  split them, the encoder would embed only their beginning anyway);
- ``metadata``: JSON, returned as stored;
- ``filter_keys``: JSON, a typed copy of the scalar metadata that filters read
  (see :mod:`~bertino_rag.adapters.milvus_filters`);
- ``id_hex``: VARCHAR, the hex of the id, for id lookups on engines without filter templating;
- ``lexical_text`` and ``lexical`` (only for a hybrid collection, ``Stamp.lexical`` set): the
  document's terms from the library's analyzer, each written as
  :func:`~bertino_rag.lexical.term_token` (a word Milvus's ``standard`` tokenizer keeps whole),
  and the SPARSE_FLOAT_VECTOR Milvus's BM25 function derives from them, indexed
  ``SPARSE_INVERTED_INDEX`` with metric ``BM25`` and the stamp's ``k1`` and ``b``;
- ``document``: VARCHAR, the document an entity belongs to (its chunk's ``doc_id`` metadata,
  else its own id): the ``group_by_field`` of ``search(..., group_by="document")``. Collections
  created before it have no such field and are grouped by the store contract's generic path.

Lexical search is Milvus's own BM25 on the library's terms: Milvus keeps the statistics (live
``N``, average length, document frequencies) and scores with Lucene's formula, so scores are
exact, as MemoryStore's (divided by ``k1 + 1``, the constant MemoryStore's and bm25s's Lucene
variant leave out). Measured on Milvus Lite 3.2: the BM25 function, the sparse index and
``hybrid_search`` work; a ``whitespace`` tokenizer does not exist there (hence the tokens).
Hybrid search runs both sides and fuses them with the library's
:class:`~bertino_rag.fusion.Fusion`: Milvus's rankers (RRF, weighted arctan-normalized scores)
return only fused scores, and the funnel rescores the lexical candidates with full vectors.

The :class:`~bertino_rag.types.Stamp` lives in the collection's properties (and description)
and is checked on open. Values from users never enter an expression: filters and id lookups use
filter templating, or closed-alphabet literals on Milvus Lite, which has no templating.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
import re
import threading
import warnings
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from .._deps import require
from ..errors import IndexFallbackWarning
from ..indexing.documents import document_of
from ..lexical import term_token
from ..types import Document, Hit, Stamp
from .base import (
    SearchQuery,
    StoreConnectionError,
    StoreError,
    StoreLimits,
    StoreWriteError,
    UpsertBatch,
    VectorStore,
    check_found,
    id_ranks,
    lexical_config,
    ranking_key,
    redact,
    rescore_rows,
    retry,
    safe_location,
)
from ..search.filters import Condition, Node, matches
from .milvus_filters import FILTER_FIELD, MilvusFilter, compile_filter, filter_keys, render_inline

__all__ = ["IndexFallbackWarning", "MilvusStore"]

logger = logging.getLogger(__name__)

STAMP_KEY = "bertino.stamp"
LEXICAL = "lexical"
#: the scalar field of the document an entity belongs to (the group key of grouped search)
GROUP_FIELD = "document"
LEXICAL_TEXT = "lexical_text"
ID_MAX_BYTES = 512
TEXT_MAX_BYTES = 65_535
MAX_LIMIT = 16_384  # Milvus returns at most this many hits per query
_LOOKUP_CHUNK = 1_000  # ids per get/delete expression
_RESPONSE_BUDGET = 32 << 20  # bytes of hits per search call (gRPC messages are capped)
_DESCRIPTION = "bertino-rag collection; stamp: "
#: gRPC keepalive for Milvus Lite. pymilvus pings every 10 s, even with no call in flight;
#: Milvus Lite's gRPC server keeps grpc-core's defaults (a ping at most every 5 minutes while no
#: data flows, none without a call), so it answers such pings with GOAWAY "too_many_pings".
#: The engine runs in this process: a dead connection is not something to detect.
LITE_KEEPALIVE = {"grpc.keepalive_time_ms": 300_000, "grpc.keepalive_permit_without_calls": 0}

#: index types a request may name, and where each falls back to when the engine cannot build it
FALLBACKS: dict[str, tuple[str, ...]] = {
    "AUTOINDEX": ("HNSW", "FLAT"),
    "HNSW": ("FLAT",),
    "HNSW_SQ": ("HNSW", "FLAT"),
    "HNSW_PQ": ("HNSW_SQ", "HNSW", "FLAT"),
    "HNSW_PRQ": ("HNSW_SQ", "HNSW", "FLAT"),
    "DISKANN": ("HNSW", "FLAT"),
    "IVF_FLAT": ("FLAT",),
    "IVF_SQ8": ("IVF_FLAT", "FLAT"),
    "IVF_PQ": ("IVF_SQ8", "IVF_FLAT", "FLAT"),
    "IVF_RABITQ": ("IVF_SQ8", "IVF_FLAT", "FLAT"),
    "SCANN": ("IVF_SQ8", "IVF_FLAT", "FLAT"),
    "FLAT": ("BRUTE_FORCE",),
}
_LITE_FALLBACK = {"HNSW", "HNSW_SQ", "IVF_FLAT", "IVF_SQ8", "FLAT", "BRUTE_FORCE", "AUTOINDEX"}


_SERVER_SCHEMES = ("http", "https", "tcp", "grpc", "unix")
#: suffix of the collection a replacement is built in (``open_replacement``)
_REPLACING = "__bertino_replacing"
# Milvus Lite serves a .db file from one in-process server, which holds the file's lock until
# it stops; pymilvus' close() leaves it running. Stores count their users per file and stop
# the server with the last one, so that another process can open the file.
_LITE_USERS: dict[str, int] = {}
_LITE_LOCK = threading.Lock()


def _lite_acquire(uri: str) -> None:
    with _LITE_LOCK:
        path = os.path.abspath(uri)
        _LITE_USERS[path] = _LITE_USERS.get(path, 0) + 1


def _lite_release(uri: str) -> None:
    path = os.path.abspath(uri)
    with _LITE_LOCK:
        left = _LITE_USERS.get(path, 0) - 1
        if left > 0:
            _LITE_USERS[path] = left
            return
        _LITE_USERS.pop(path, None)
    try:
        from milvus_lite.server_manager import server_manager_instance
    except ImportError:  # an older Milvus Lite: the lock goes with the process
        return
    server_manager_instance.release_server(uri)


def _is_local(uri: str) -> bool:
    return uri.endswith(".db") and not re.match(r"^[a-z]+://", uri)


def check_uri(uri: str) -> None:
    """Refuse a URI that is neither a Milvus Lite ``.db`` file nor a server URL."""
    if _is_local(uri):
        return
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if scheme not in _SERVER_SCHEMES:
        raise ValueError(
            f"Milvus location {safe_location(uri)!r} is neither a Milvus Lite file (a path "
            "ending in .db, e.g. milvus:./index.db) nor a server URL (http://host:19530)"
        )


def _is_transient(err: BaseException) -> bool:
    """Milvus errors worth retrying: unavailable, rate limited, or marked retriable."""
    if getattr(err, "is_input_error", False):
        return False
    if type(err).__name__ == "MilvusUnavailableException" or getattr(err, "retriable", False):
        return True
    return getattr(err, "code", None) == 8  # ErrorCode.RATE_LIMIT


def _index_params(index: str, dim: int, ef_construction: int, nlist: int) -> dict[str, Any]:
    if index.startswith("HNSW"):
        params: dict[str, Any] = {"M": 16, "efConstruction": ef_construction}
        if index == "HNSW_SQ":
            params["sq_type"] = "SQ8"
        if index in ("HNSW_PQ", "HNSW_PRQ"):
            params.update(m=max(1, dim // 4), nbits=8)
        return params
    if index.startswith("IVF") or index == "SCANN":
        params = {"nlist": nlist}
        if index == "IVF_PQ":
            params.update(m=max(1, dim // 4), nbits=8)
        if index == "SCANN":
            params["with_raw_data"] = True
        return params
    return {}


@contextmanager
def _quiet_pymilvus() -> Iterator[None]:
    """Mute pymilvus' error log for a call whose failure is expected and handled."""
    log = logging.getLogger("pymilvus")
    previous = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(previous)


def _decode_full(value: Any) -> np.ndarray:
    if isinstance(value, (bytes, bytearray)):
        return np.frombuffer(value, dtype=np.float16).astype(np.float32)
    if isinstance(value, list) and value and isinstance(value[0], (bytes, bytearray)):
        return np.frombuffer(value[0], dtype=np.float16).astype(np.float32)
    return np.asarray(value, dtype=np.float32)


def _candidate_ids(results: Any) -> list[str]:
    """The distinct ids among search results, in first-seen order."""
    return list(dict.fromkeys(h["id"] for result in results for h in result))


def _rescored(
    results: Any, found: dict[str, int], full: np.ndarray, full_queries: np.ndarray, k: int
) -> list[list[tuple[str, float]]]:
    """Candidates of search results rescored with their full vectors (rows ``found``)."""
    names = [""] * len(full)
    for doc_id, row in found.items():
        names[row] = doc_id
    width = max((len(r) for r in results), default=0)
    candidates = np.full((len(results), width), -1, dtype=np.int64)
    first = np.zeros((len(results), width))
    for qi, result in enumerate(results):
        # a candidate deleted between the two calls has no full vector: it drops out
        got = [(found[h["id"]], float(h["distance"])) for h in result if h["id"] in found]
        if got:
            candidates[qi, : len(got)], first[qi, : len(got)] = zip(*got, strict=True)
    top, scores = rescore_rows(candidates, full, full_queries, k, id_ranks(names),
                               first_scores=first)
    return [[(names[r], sc) for r, sc in zip(rs, ss, strict=True) if r >= 0]
            for rs, ss in zip(top.tolist(), scores.tolist(), strict=True)]


def _lexical_texts(documents: list[Document], terms: list[dict[str, int]]) -> list[str]:
    """Each document's terms as the words Milvus's BM25 function counts; refused before any
    write when a document has more terms than the field holds."""
    texts = []
    for d, counts in zip(documents, terms, strict=True):
        text = " ".join(term_token(t) for t, c in counts.items() for _ in range(c))
        if len(text) > TEXT_MAX_BYTES:
            raise ValueError(
                f"document {d.id!r} has {sum(counts.values())} terms, more than a Milvus "
                f"lexical field holds ({(TEXT_MAX_BYTES + 1) // 10}); split it into chunks "
                "(Retriever chunks long documents by default)"
            )
        texts.append(text)
    return texts


def _texts(
    results: list[list[tuple[str, float]]], found: dict[str, dict[str, Any]]
) -> list[list[Hit]]:
    """Hits from (id, score) pairs and the rows holding their text and metadata."""
    seen: set[str] = set()
    out = []
    for pairs in results:
        hits = []
        for doc_id, score in pairs:
            if doc_id not in found:  # deleted since the candidates were taken
                continue
            metadata = found[doc_id].get("metadata") or {}
            # each hit owns its metadata, as the hits of a plain search do
            hits.append(Hit(id=doc_id, text=found[doc_id]["text"], score=score,
                            metadata=copy.deepcopy(metadata) if doc_id in seen else metadata))
            seen.add(doc_id)
        out.append(hits)
    return out


class MilvusStore(VectorStore):
    """Milvus Lite (embedded, a ``.db`` path) or a Milvus server.

    The constructor only validates its arguments; the store connects on first need
    (:meth:`open`, :meth:`collections`, :meth:`stored_stamp`, :attr:`server_version`), where
    an unreachable server or a ``.db`` file held by another process raises
    :class:`~bertino_rag.adapters.StoreConnectionError`.

    Args:
        uri: a ``.db`` file for Milvus Lite, or ``http(s)://host:19530`` for a server.
        token: server token (``user:password`` or an API key); default ``$MILVUS_TOKEN``.
            Never logged.
        client: an existing ``pymilvus.MilvusClient`` to use instead of ``uri`` (not closed
            by :meth:`close`).
        index: ``AUTOINDEX``, ``HNSW``, ``HNSW_SQ``, ``IVF_FLAT``, ``IVF_SQ8``, ``FLAT`` (and
            the server-only ``DISKANN``, ``IVF_PQ``, ``SCANN``, ``HNSW_PQ``...). An index the
            engine cannot build falls back to the nearest one it can, with one
            :class:`IndexFallbackWarning`.
        index_params: build parameters merged over the defaults (HNSW: ``M=16``,
            ``efConstruction``; IVF: ``nlist``).
        ef: HNSW search breadth (raised to the number of hits asked for when lower).
        nprobe: IVF cells searched.
        ef_construction: HNSW build breadth. nlist: IVF cells (Milvus Lite clamps it to the
            rows of a small segment, so small collections work).
        metric: ``IP`` or ``COSINE``; default IP for normalized vectors, else COSINE.
        batch_size: entities per upsert request.
        timeout: seconds per request (``None``: pymilvus' default).
        max_retries: retries of a request after a transient error (unavailable, rate limit).

    Example:
        >>> store = MilvusStore(uri="./bertino.db")  # doctest: +SKIP
        >>> store = MilvusStore(uri="http://localhost:19530", index="HNSW")  # doctest: +SKIP
    """

    kind = "milvus"
    supports_atomic_replace = True
    supports_lexical = True
    limits = StoreLimits(max_id_bytes=ID_MAX_BYTES, max_text_bytes=TEXT_MAX_BYTES)

    def __init__(
        self,
        uri: str = "./bertino_milvus.db",
        *,
        token: str | None = None,
        client: Any = None,
        index: str = "AUTOINDEX",
        index_params: dict[str, Any] | None = None,
        ef: int = 128,
        nprobe: int = 32,
        ef_construction: int = 200,
        nlist: int = 128,
        metric: str | None = None,
        batch_size: int = 512,
        timeout: float | None = None,
        max_retries: int = 2,
    ) -> None:
        super().__init__()
        pymilvus = require("pymilvus", "milvus")
        self._DataType = pymilvus.DataType
        self._MilvusException = pymilvus.MilvusException
        index = str(index).upper()
        if index.startswith("BIN_"):
            raise ValueError(f"index {index!r} is for binary vectors; these vectors are float")
        if index not in FALLBACKS:
            raise ValueError(f"unknown index {index!r}; use one of {sorted(FALLBACKS)}")
        if metric is not None and metric.upper() not in ("IP", "COSINE"):
            raise ValueError(f"metric must be 'IP' or 'COSINE', got {metric!r}")
        for name, value in (("ef", ef), ("nprobe", nprobe), ("batch_size", batch_size),
                            ("ef_construction", ef_construction), ("nlist", nlist)):
            self._check_k(value, name)
        self.index = index
        self.index_params = dict(index_params or {})
        self.ef, self.nprobe = ef, nprobe
        self.ef_construction, self.nlist = ef_construction, nlist
        self.metric = None if metric is None else metric.upper()
        self.batch_size = batch_size
        self.timeout = timeout
        self.max_retries = max(0, int(max_retries))
        self._token = token if token is not None else os.environ.get("MILVUS_TOKEN", "")
        self._owns_client = client is None
        if client is None:
            self.uri = str(uri)
            check_uri(self.uri)
            self.where = safe_location(self.uri)
            try:
                password = urlsplit(self.uri).password
            except ValueError:
                password = None
            self._secrets = tuple(x for x in (self._token, password) if x)
            if _is_local(self.uri):
                require("milvus_lite", "milvus")
                folder = os.path.dirname(os.path.abspath(self.uri))
                os.makedirs(folder, exist_ok=True)
        else:
            self.uri = ""
            self.where = "the given MilvusClient"
            self._secrets = (self._token,) if self._token else ()
        # connected on first need (_ensure_connected): the constructor only validates
        self._client: Any = client
        self._server_version: str | None = None
        self._connecting = threading.Lock()
        self._templating: bool | None = None
        self._async: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
        # per open collection
        self._index_type = ""
        self._metric = "IP"
        self._full_dtype: Any = None
        #: whether the open collection has the ``document`` field (native grouped search)
        self._grouped = False
        self._warned: set[str] = set()

    # ------------------------------------------------------------------ connection
    @property
    def location(self) -> str:
        return f"Milvus at {self.where}"

    @property
    def client(self) -> Any:
        """The ``pymilvus.MilvusClient``, connected on first use.

        Raises:
            StoreConnectionError: the server or the Milvus Lite file cannot be reached.
        """
        return self._ensure_connected()

    @property
    def server_version(self) -> str:
        """The engine's version (``milvus_lite...`` for Milvus Lite); connects on first use."""
        self._ensure_connected()
        assert self._server_version is not None
        return self._server_version

    @property
    def is_lite(self) -> bool:
        """Whether the engine is Milvus Lite (a local file, or one served over the network)."""
        return self.server_version.startswith("milvus_lite")

    def _ensure_connected(self) -> Any:
        """Connect (once, and again after :meth:`close`) and read the server version: the one
        place a MilvusStore connects. A given ``client=`` is used as it is."""
        if self._client is not None and self._server_version is not None:
            return self._client
        with self._connecting:
            if self._client is None:
                self._client = self._connect(require("pymilvus", "milvus"))
            if self._server_version is None:
                try:
                    self._server_version = str(self._client.get_server_version())
                except Exception as err:
                    if self._owns_client:
                        self._disconnect()
                    raise StoreConnectionError("Milvus", self.where, self._clean(err)) from None
            return self._client

    def _disconnect(self) -> None:
        """Close the client this store created (and free the Milvus Lite file)."""
        client, self._client = self._client, None
        if client is not None:
            client.close()
            if _is_local(self.uri):
                _lite_release(self.uri)  # the .db file is free for other processes

    @property
    def full_vector_dtype(self) -> str:
        """float16 on a server (float32 where the open collection fell back to it); Milvus Lite
        holds the same (float16-rounded) values in float32."""
        if self._full_dtype is not None:
            return "float16" if self._full_dtype == self._DataType.FLOAT16_VECTOR else "float32"
        return "float32" if self.is_lite else "float16"

    def collections(self) -> list[str]:
        return sorted(n for n in self._call("list_collections", self.client.list_collections)
                      if not n.endswith(_REPLACING))

    def _clean(self, err: BaseException) -> str:
        return redact(str(err), *self._secrets)

    def _client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``MilvusClient`` and ``AsyncMilvusClient`` for ``self.uri``."""
        kwargs: dict[str, Any] = {"uri": self.uri}
        if _is_local(self.uri):
            kwargs["grpc_options"] = dict(LITE_KEEPALIVE)
        elif self._token:
            kwargs["token"] = self._token
        return kwargs

    def _connect(self, pymilvus: Any) -> Any:
        kwargs = self._client_kwargs()
        if self.timeout is not None:
            kwargs["timeout"] = self.timeout
        try:
            client = pymilvus.MilvusClient(**kwargs)
        except Exception as err:
            reason = self._clean(err)
            if _is_local(self.uri) and ("open local milvus failed" in reason.lower()
                                        or "lock" in reason.lower()):
                reason += (" (the file is probably in use by another process: Milvus Lite "
                           "opens a .db file in one process at a time)")
            raise StoreConnectionError("Milvus", self.where, reason) from None
        if _is_local(self.uri):
            _lite_acquire(self.uri)
        return client

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a client call, retrying transient errors; engine errors become StoreError
        naming the URI and collection."""
        try:
            return retry(lambda: fn(*args, **kwargs), transient=_is_transient,
                         attempts=self.max_retries, what=f"milvus {what}")
        except self._MilvusException as err:
            raise StoreError(
                f"Milvus at {self.where}, collection {self._collection!r}: {what} failed: "
                f"{self._clean(err)}"
            ) from err

    def _supports_templating(self) -> bool:
        """Whether the engine reads ``filter_params`` (Milvus >= 2.5; Milvus Lite 3.2 does not)."""
        if self._templating is None:
            if self.is_lite:
                self._templating = False
            else:
                try:
                    with _quiet_pymilvus():
                        self.client.query(self._name, filter="id == {p}",
                                          filter_params={"p": ""}, output_fields=["id"], limit=1)
                    self._templating = True
                except self._MilvusException:
                    self._templating = False
        return self._templating

    # ------------------------------------------------------------------ index choice
    def _engine_builds(self, index: str, dim: int) -> bool | None:
        """Whether the engine builds ``index``; ``None`` when only trying can tell (servers)."""
        if not self.is_lite:
            return None
        try:
            from milvus_lite.index.factory import build_index_from_spec
            from milvus_lite.index.spec import IndexSpec
        except ImportError:  # a Milvus Lite server reached over the network
            return index in _LITE_FALLBACK
        try:
            rows = np.random.default_rng(0).normal(size=(2, dim)).astype(np.float32)
            build_index_from_spec(IndexSpec("vector", index, "IP", {}), rows)
        except (ValueError, NotImplementedError, RuntimeError):
            return False
        return True

    def _candidates(self, dim: int) -> list[str]:
        chain = [self.index, *FALLBACKS[self.index]]
        if self.is_lite:
            chain = [c for c in chain if self._engine_builds(c, dim)]
        return chain

    def _warn_fallback(self, chosen: str, why: str) -> None:
        if chosen != self.index and chosen not in self._warned:
            self._warned.add(chosen)
            warnings.warn(
                f"{self.where} cannot build index {self.index!r} ({why}); "
                f"using {chosen!r} instead",
                IndexFallbackWarning,
                stacklevel=4,
            )

    # ------------------------------------------------------------------ lifecycle
    def _open(self, collection: str, stamp: Stamp, recreate: bool) -> None:
        self._ensure_connected()
        exists = self._call("has_collection", self.client.has_collection, collection)
        if exists and not recreate:
            desc = self._call("describe_collection", self.client.describe_collection, collection)
            found = self._read_stamp(desc, collection)
            stamp.check(found, collection)
            fields = {f["name"]: f for f in desc.get("fields", [])}
            full_dtype = fields["full_vector"]["type"] if "full_vector" in fields else None
            grouped = GROUP_FIELD in fields
            index_type = self._index_type_of(collection)
            metric = self._metric_of(collection, stamp)
        else:
            if exists:
                self._call("drop_collection", self.client.drop_collection, collection)
            index_type, full_dtype = self._create(collection, stamp)
            metric = self.metric or ("IP" if stamp.normalized else "COSINE")
            grouped = True
        self._call("load_collection", self.client.load_collection, collection)
        self._index_type, self._full_dtype, self._metric = index_type, full_dtype, metric
        self._grouped = grouped

    def _stored_stamp(self, collection: str) -> Stamp | None:
        if not self._call("has_collection", self.client.has_collection, collection):
            return None
        desc = self._call("describe_collection", self.client.describe_collection, collection)
        return self._read_stamp(desc, collection)

    def _read_stamp(self, desc: dict[str, Any], collection: str) -> Stamp:
        raw = (desc.get("properties") or {}).get(STAMP_KEY)
        description = str(desc.get("description") or "")
        if raw is None and description.startswith(_DESCRIPTION):
            raw = description[len(_DESCRIPTION):]
        if raw is None:
            raise StoreError(
                f"collection {collection!r} in {self.where} was not created by bertino-rag "
                "(it has no model stamp); use another collection name, or recreate=True to "
                "drop it"
            )
        return Stamp.from_dict(json.loads(raw))

    def _index_type_of(self, collection: str) -> str:
        try:
            info = self.client.describe_index(collection, "vector")
        except self._MilvusException:
            return "FLAT"
        return str((info or {}).get("index_type") or "FLAT").upper()

    def _metric_of(self, collection: str, stamp: Stamp) -> str:
        try:
            info = self.client.describe_index(collection, "vector") or {}
        except self._MilvusException:
            info = {}
        return str(info.get("metric_type") or ("IP" if stamp.normalized else "COSINE")).upper()

    def _schema(self, stamp: Stamp, full_dtype: Any) -> Any:
        dt = self._DataType
        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", dt.VARCHAR, is_primary=True, max_length=ID_MAX_BYTES)
        schema.add_field("vector", dt.FLOAT_VECTOR, dim=stamp.index_dim)
        if stamp.full_vectors:
            schema.add_field("full_vector", full_dtype, dim=stamp.full_dim)
        schema.add_field("text", dt.VARCHAR, max_length=TEXT_MAX_BYTES)
        schema.add_field("metadata", dt.JSON)
        schema.add_field(FILTER_FIELD, dt.JSON)
        schema.add_field("id_hex", dt.VARCHAR, max_length=2 * ID_MAX_BYTES)
        schema.add_field(GROUP_FIELD, dt.VARCHAR, max_length=ID_MAX_BYTES)
        if stamp.lexical is not None:
            pymilvus = require("pymilvus", "milvus")
            schema.add_field(LEXICAL_TEXT, dt.VARCHAR, max_length=TEXT_MAX_BYTES,
                             enable_analyzer=True, analyzer_params={"tokenizer": "standard"})
            schema.add_field(LEXICAL, dt.SPARSE_FLOAT_VECTOR)
            schema.add_function(pymilvus.Function(
                name="bertino_bm25", function_type=pymilvus.FunctionType.BM25,
                input_field_names=[LEXICAL_TEXT], output_field_names=[LEXICAL]))
        return schema

    def _create(self, collection: str, stamp: Stamp) -> tuple[str, Any]:
        dt = self._DataType
        metric = self.metric or ("IP" if stamp.normalized else "COSINE")
        stamp_json = json.dumps(stamp.to_dict(), sort_keys=True)
        full_types = [None]
        if stamp.full_vectors:
            full_types = [dt.FLOAT_VECTOR] if self.is_lite else [dt.FLOAT16_VECTOR, dt.FLOAT_VECTOR]
        candidates = self._candidates(stamp.index_dim)
        last: BaseException | None = None
        for full_dtype in full_types:
            for index in candidates:
                params = {**_index_params(index, stamp.index_dim, self.ef_construction,
                                          self.nlist), **self.index_params}
                index_params = self.client.prepare_index_params()
                # Milvus Lite reads build parameters from one JSON "params" entry only;
                # pymilvus 3 sends them flat, which servers read.
                index_params.add_index("vector", index_type=index, metric_type=metric,
                                       params={"params": params} if self.is_lite else params)
                if stamp.full_vectors and not self.is_lite:
                    index_params.add_index("full_vector", index_type="FLAT", metric_type="IP")
                if stamp.lexical is not None:
                    bm25 = lexical_config(stamp.lexical)[1]
                    index_params.add_index(LEXICAL, index_type="SPARSE_INVERTED_INDEX",
                                           metric_type="BM25",
                                           params={"bm25_k1": bm25.k1, "bm25_b": bm25.b})
                try:
                    with _quiet_pymilvus():
                        self.client.create_collection(
                            collection,
                            schema=self._schema(stamp, full_dtype),
                            index_params=index_params,
                            consistency_level="Strong",
                            properties={STAMP_KEY: stamp_json},
                            description=_DESCRIPTION + stamp_json,
                        )
                except self._MilvusException as err:
                    last = err
                    if self.client.has_collection(collection):
                        self.client.drop_collection(collection)
                    continue
                self._warn_fallback(index, "not supported by this engine" if last is None
                                    else self._clean(last))
                return index, full_dtype
        raise StoreError(
            f"Milvus at {self.where} could not create collection {collection!r} with any of "
            f"the indexes {candidates}: {self._clean(last) if last else 'no index available'}"
        )

    @property
    def _name(self) -> str:
        """The Milvus collection that calls go to: the replacement while one is built."""
        return self.collection + _REPLACING if self._replacing else self.collection

    def _open_replacement(self, collection: str, stamp: Stamp) -> None:
        """Build into ``<collection>__bertino_replacing``; :meth:`_publish` drops the old
        collection and renames the replacement (Milvus has no atomic swap of names: between
        the two calls, milliseconds, the collection does not exist; a crash there leaves the
        complete replacement under its own name)."""
        self._open(collection + _REPLACING, stamp, True)

    def _publish(self) -> None:
        collection, temp = self.collection, self.collection + _REPLACING
        self._call("flush", self.client.flush, temp)
        if self._call("has_collection", self.client.has_collection, collection):
            self._call("drop_collection", self.client.drop_collection, collection)
        self._call("rename_collection", self.client.rename_collection, temp, collection)
        self._call("load_collection", self.client.load_collection, collection)

    def _discard_replacement(self) -> None:
        if self._client is not None:
            self._call("drop_collection", self.client.drop_collection,
                       self.collection + _REPLACING)

    def close(self) -> None:
        """Close the client (when this store created it); :meth:`open` connects again. An
        unpublished replacement is dropped."""
        if self._replacing:
            self._replacing = False
            self._discard_replacement()
        if self._owns_client:
            self._disconnect()
        self._async = weakref.WeakKeyDictionary()
        super().close()

    def _drop(self) -> None:
        self._call("drop_collection", self.client.drop_collection, self._name)

    # ------------------------------------------------------------------ filters and ids
    def _native_filter(self, filter: Any) -> Any:
        raise TypeError(
            "MilvusStore takes filters as a dict ({'field': value}, $in, ranges); Milvus "
            f"expression strings ({type(filter).__name__}) are refused because a value pasted "
            "into one can change what it matches"
        )

    def _expr(self, compiled: MilvusFilter) -> dict[str, Any]:
        """Search/query keyword arguments for a compiled filter."""
        if not compiled.expr:
            return {}
        if self._supports_templating():
            return {"filter": compiled.expr, "filter_params": compiled.params}
        return {"filter": render_inline(compiled)}

    def _ids_filter(self, ids: list[str]) -> dict[str, Any]:
        if self._supports_templating():
            return {"filter": "id in {ids}", "filter_params": {"ids": ids}}
        return {"filter": "id_hex in " + render_inline(
            MilvusFilter("[" + ", ".join(f"{{p{i}}}" for i in range(len(ids))) + "]",
                         {f"p{i}": i_.encode("utf-8").hex() for i, i_ in enumerate(ids)}))}

    def _lookup(self, ids: list[str], fields: list[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), _LOOKUP_CHUNK):
            chunk = list(dict.fromkeys(ids[start : start + _LOOKUP_CHUNK]))
            rows = self._call("query", self.client.query, self._name,
                              output_fields=["id", *fields], **self._ids_filter(chunk))
            found.update({row["id"]: row for row in rows})
        return found

    # ------------------------------------------------------------------ writes
    def _rows(
        self, documents: list[Document], vectors: np.ndarray, full_vectors: np.ndarray | None,
        terms: list[dict[str, int]] | None = None,
    ) -> list[dict[str, Any]]:
        """The entities of validated documents (see :meth:`check_documents`)."""
        full = None
        if full_vectors is not None:
            half = np.asarray(full_vectors, dtype=np.float16)
            full = half if self._full_dtype == self._DataType.FLOAT16_VECTOR else (
                half.astype(np.float32))
        lexical_texts = [] if terms is None else _lexical_texts(documents, terms)
        rows = []
        for i, d in enumerate(documents):
            row = {"id": d.id, "vector": vectors[i], "text": d.text, "metadata": d.metadata,
                   FILTER_FIELD: filter_keys(d.metadata),
                   "id_hex": d.id.encode("utf-8").hex()}
            if full is not None:
                row["full_vector"] = full[i]
            if self._grouped:
                row[GROUP_FIELD] = document_of(d.id, d.metadata)
            if terms is not None:
                row[LEXICAL_TEXT] = lexical_texts[i]
            rows.append(row)
        return rows

    def _upsert(
        self, documents: list[Document], vectors: np.ndarray, full_vectors: np.ndarray | None,
        terms: list[dict[str, int]] | None = None,
    ) -> None:
        rows = self._rows(documents, vectors, full_vectors, terms)
        for start in range(0, len(rows), self.batch_size):
            try:
                self._call(
                    f"upsert (entities {start}..{min(len(rows), start + self.batch_size)} of "
                    f"{len(rows)}; earlier batches are stored)",
                    self.client.upsert, self._name, rows[start : start + self.batch_size])
            except StoreError as err:
                raise StoreWriteError(str(err), [d.id for d in documents[start:]]) from err

    def _upsert_lexical(
        self, documents: list[Document], vectors: np.ndarray, full_vectors: np.ndarray | None,
        terms: list[dict[str, int]],
    ) -> None:
        """Entities with their terms: Milvus derives the sparse BM25 vector in the same write."""
        self._upsert(documents, vectors, full_vectors, terms)

    def _delete(self, ids: list[str]) -> None:
        for start in range(0, len(ids), _LOOKUP_CHUNK):
            chunk = list(dict.fromkeys(ids[start : start + _LOOKUP_CHUNK]))
            self._call("delete", self.client.delete, self._name, **self._ids_filter(chunk))

    def flush(self) -> None:
        """Seal written data into segments (Milvus builds their indexes then)."""
        self._call("flush", self.client.flush, self._name)

    # ------------------------------------------------------------------ reads
    def _ids_where(self, conditions: list[Node]) -> list[str]:
        compiled = compile_filter(conditions)
        if compiled is None:
            return []
        iterator = self._call("query", self.client.query_iterator, self._name,
                              batch_size=1000, output_fields=["id"], **self._expr(compiled))
        ids: list[str] = []
        try:
            while True:
                rows = self._call("query", iterator.next)
                if not rows:
                    return ids
                ids.extend(row["id"] for row in rows)
        finally:
            iterator.close()

    def _count(self) -> int:
        rows = self._call("count", self.client.query, self._name, filter="",
                          output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def _get(self, ids: list[str]) -> list[Document]:
        found = self._lookup(ids, ["text", "metadata"])
        return [Document(text=found[i]["text"], id=i, metadata=found[i]["metadata"] or {})
                for i in ids if i in found]

    def _fetch_full(self, ids: list[str]) -> np.ndarray:
        found, full = self._full_rows(self._queried(self._full_chunks(ids)))
        check_found(ids, found, self.collection)
        return full[[found[i] for i in ids]]

    def _full_chunks(self, ids: list[str]) -> list[dict[str, Any]]:
        """Query keyword arguments reading the full vectors of ``ids``, in bounded chunks."""
        distinct = list(dict.fromkeys(ids))
        return [
            {"collection_name": self._name, "output_fields": ["id", "full_vector"],
             # float vectors come back as one numpy array, not a Python float per value
             "strict_float32": True, **self._ids_filter(distinct[start : start + _LOOKUP_CHUNK])}
            for start in range(0, len(distinct), _LOOKUP_CHUNK)
        ]

    def _queried(self, requests: list[dict[str, Any]]) -> Iterator[Any]:
        for request in requests:
            yield self._call("query", self.client.query, **request)

    def _full_rows(self, chunks: Iterable[Any]) -> tuple[dict[str, int], np.ndarray]:
        """Query results holding full vectors, chunk by chunk, as ``{id: row}`` and one
        float32 array (each chunk's Python rows are released before the next is read)."""
        parts: list[np.ndarray] = []
        found: dict[str, int] = {}
        offset = 0
        for rows in chunks:
            block = np.empty((len(rows), self.stamp.full_dim), dtype=np.float32)
            for j, row in enumerate(rows):
                block[j] = _decode_full(row["full_vector"])
                found[row["id"]] = offset + j
            parts.append(block)
            offset += len(rows)
        full = np.concatenate(parts) if parts else np.zeros((0, self.stamp.full_dim), np.float32)
        return found, full

    def _export(
        self, batch_size: int
    ) -> Iterator[tuple[list[Document], np.ndarray, np.ndarray | None]]:
        full = self.stamp.full_vectors
        fields = ["id", "vector", "text", "metadata", *(["full_vector"] if full else [])]
        it = self._call("query_iterator", self.client.query_iterator, self.collection,
                        batch_size=batch_size, filter="", output_fields=fields)
        try:
            while True:
                rows = self._call("query_iterator.next", it.next)
                if not rows:
                    return
                docs = [Document(text=r["text"], id=r["id"], metadata=r["metadata"] or {})
                        for r in rows]
                index = np.asarray([r["vector"] for r in rows], dtype=np.float32)
                fulls = (np.stack([_decode_full(r["full_vector"]) for r in rows])
                         if full else None)
                yield docs, index, fulls
        finally:
            it.close()

    def _search_params(self, limit: int) -> dict[str, Any]:
        index = self._index_type
        if index.startswith("HNSW") or (index == "AUTOINDEX" and self.is_lite):
            params: dict[str, Any] = {"ef": max(self.ef, limit)}
        elif index.startswith("IVF") or index == "SCANN":
            params = {"nprobe": self.nprobe}
        elif index == "DISKANN":
            params = {"search_list": max(self.ef, limit)}
        else:
            params = {}
        return {"metric_type": self._metric, "params": params}

    def _request(
        self, vectors: np.ndarray, limit: int, conditions: Any, fields: list[str]
    ) -> dict[str, Any] | None:
        """The keyword arguments of one search call; ``None`` when the filter matches nothing."""
        if limit > MAX_LIMIT:
            raise ValueError(f"Milvus returns at most {MAX_LIMIT} hits per query, asked {limit}")
        compiled = compile_filter(conditions)
        if compiled is None:
            return None
        return {
            "collection_name": self._name,
            "data": [np.ascontiguousarray(v, dtype=np.float32) for v in vectors],
            "anns_field": "vector",
            "limit": limit,
            "output_fields": fields,
            "search_params": self._search_params(limit),
            **self._expr(compiled),
        }

    @staticmethod
    def _hits(result: Any) -> list[Hit]:
        hits = [
            Hit(id=h["id"], text=h["entity"]["text"], score=float(h["distance"]),
                metadata=h["entity"].get("metadata") or {})
            for h in result
        ]
        hits.sort(key=lambda h: ranking_key(h.score, h.id))
        return hits

    def _query_chunks(self, n: int, limit: int, fields: list[str]) -> Iterator[slice]:
        """Query slices whose hits fit in one response (Milvus caps gRPC messages)."""
        per_hit = 2048 if "text" in fields else 640
        step = max(1, _RESPONSE_BUDGET // (limit * per_hit))
        for start in range(0, n, step):
            yield slice(start, start + step)

    def _run(
        self, vectors: np.ndarray, limit: int, conditions: Any, fields: list[str]
    ) -> list[Any] | None:
        results: list[Any] = []
        for part in self._query_chunks(len(vectors), limit, fields):
            request = self._request(vectors[part], limit, conditions, fields)
            if request is None:
                return None
            results.extend(self._call("search", self.client.search, **request))
        return results

    def check_documents(
        self, documents: Any, *, offset: int = 0, text_limit: bool = True,
        describe: Any = None,
    ) -> None:
        """The contract's rules, and a ``doc_id`` metadata value within the id limit (it is
        the ``document`` field's value)."""
        super().check_documents(documents, offset=offset, text_limit=text_limit,
                                describe=describe)
        for i, d in enumerate(documents):
            owner = d.metadata.get("doc_id")
            if owner is not None and len(str(owner).encode("utf-8")) > ID_MAX_BYTES:
                where = (describe(i) if describe is not None
                         else f"document at position {offset + i}")
                raise ValueError(f"{where} has a doc_id metadata of more than {ID_MAX_BYTES} "
                                 "UTF-8 bytes; Milvus keeps document ids of at most "
                                 f"{ID_MAX_BYTES} bytes")

    def _search_grouped(self, query: SearchQuery) -> list[list[Hit]]:
        """One hit per document with Milvus's grouping search (``group_by_field`` on the
        ``document`` field): ``k`` groups, each its best entity's hit with the ``group_size``
        best entities of the document attached.

        The generic path of the store contract serves collections without the field and
        two-stage search: a grouping search ranks on one vector field, and rescoring its groups
        with full vectors would not give the funnel's results (Milvus's multi-vector
        ``hybrid_search`` fuses the scores of separate searches; it does not rescore one
        search's candidates), so the funnel's own candidates are grouped instead.
        """
        limit = query.k * query.group_size
        if not self._grouped or query.full is not None or limit > MAX_LIMIT:
            return super()._search_grouped(query)
        fields = ["text", "metadata", GROUP_FIELD]
        out: list[list[Hit]] = []
        for part in self._query_chunks(len(query.vectors), limit, fields):
            request = self._request(query.vectors[part], query.k, query.conditions, fields)
            if request is None:
                return [[] for _ in query.vectors]
            results = self._call("search", self.client.search, **request,
                                 group_by_field=GROUP_FIELD, group_size=query.group_size)
            for result in results:
                groups: dict[str, list[Hit]] = {}
                for h in result:
                    groups.setdefault(str(h["entity"][GROUP_FIELD]), []).extend(self._hits([h]))
                hits = []
                for doc, chunks in groups.items():
                    chunks.sort(key=lambda c: ranking_key(c.score, c.id))
                    best = chunks[0]
                    hits.append(Hit(id=doc, text=best.text, score=best.score,
                                    metadata=best.metadata,
                                    chunks=tuple(chunks[: query.group_size])))
                hits.sort(key=lambda h: ranking_key(h.score, h.id))
                out.append(hits[: query.k])
        return out

    def _search(self, vectors: np.ndarray, k: int, conditions: Any) -> list[list[Hit]]:
        results = self._run(vectors, k, conditions, ["text", "metadata"])
        if results is None:
            return [[] for _ in vectors]
        return [self._hits(r)[:k] for r in results]

    def _search_two_stage(
        self,
        vectors: np.ndarray,
        full_vectors: np.ndarray,
        k: int,
        rerank_k: int,
        conditions: list[Condition] | Any,
    ) -> list[list[Hit]]:
        """Two-stage search in bounded blocks of queries, each with flat memory: the candidates'
        ids and scores from one batched search (no vectors or texts in the results), the
        distinct candidates' full vectors read once per block into numpy, one vectorized
        rescoring; then texts and metadata of the final hits only."""
        out: list[list[tuple[str, float]]] = []
        step = self._queries_per_block(rerank_k)
        for start in range(0, len(vectors), step):
            part = slice(start, start + step)
            results = self._run(vectors[part], rerank_k, conditions, ["id"])
            if results is None:
                return [[] for _ in vectors]
            ids = _candidate_ids(results)
            found, full = self._full_rows(self._queried(self._full_chunks(ids)))
            out.extend(_rescored(results, found, full, full_vectors[part], k))
        return self._with_texts(out, self._lookup)

    def _lexical_search(
        self, terms: list[list[str]], k: int, conditions: Any
    ) -> list[list[Hit]]:
        """BM25 by Milvus on the library's terms, with the collection's statistics.

        Milvus computes BM25 statistics over the documents a filter lets through, where the
        contract (and MemoryStore, Qdrant) scores with the whole collection's. A filtered query
        therefore searches unfiltered and keeps the matching hits (:func:`filters.matches`,
        the reference semantics Milvus's filters follow), widening the search 4x until ``k``
        match or every document with a query term was seen; past Milvus's cap of
        ``MAX_LIMIT`` hits, the rest is searched with Milvus's filter and its statistics.
        """
        if k > MAX_LIMIT:
            raise ValueError(f"Milvus returns at most {MAX_LIMIT} hits per query, asked {k}")
        compiled = compile_filter(conditions)
        if compiled is None:
            return [[] for _ in terms]
        if not compiled.expr:
            return self._bm25(terms, k, {})
        out: list[list[Hit]] = [[] for _ in terms]
        todo, limit = list(range(len(terms))), min(MAX_LIMIT, max(4 * k, 100))
        while todo:
            results = self._bm25([terms[i] for i in todo], limit, {})
            again = []
            for i, hits in zip(todo, results, strict=True):
                out[i] = [h for h in hits if matches(h.metadata, conditions)][:k]
                if len(out[i]) < k and len(hits) >= limit:
                    again.append(i)
            if again and limit >= MAX_LIMIT:
                logger.info("%d filtered lexical queries match fewer than %d of Milvus's first "
                            "%d hits: searched with the filter's statistics", len(again), k,
                            MAX_LIMIT)
                for i, hits in zip(again, self._bm25([terms[i] for i in again], k,
                                                     self._expr(compiled)), strict=True):
                    out[i] = hits
                again = []
            todo, limit = again, min(MAX_LIMIT, 4 * limit)
        return out

    def _bm25(self, terms: list[list[str]], limit: int, expr: dict[str, Any]
              ) -> list[list[Hit]]:
        """One BM25 search per query (chunked), best first, scores as MemoryStore's."""
        scale = 1.0 + lexical_config(self.stamp.lexical or "")[1].k1
        fields = ["text", "metadata"]
        out: list[list[Hit]] = []
        for part in self._query_chunks(len(terms), limit, fields):
            texts = [" ".join(term_token(t) for t in q) for q in terms[part]]
            results = self._call(
                "lexical search", self.client.search, self._name, data=texts,
                anns_field=LEXICAL, limit=limit, output_fields=fields,
                search_params={"metric_type": "BM25"}, **expr)
            for result in results:
                # Lucene's BM25 over k1 + 1, as MemoryStore; Milvus Lite answers it negated
                hits = [Hit(id=h["id"], text=h["entity"]["text"],
                            score=abs(float(h["distance"])) / scale,
                            metadata=h["entity"].get("metadata") or {}) for h in result]
                hits.sort(key=lambda h: ranking_key(h.score, h.id))
                out.append([h for h in hits if h.score > 0])
        return out

    def _with_texts(self, results: list[list[tuple[str, float]]], lookup: Any) -> list[list[Hit]]:
        found = lookup(list(dict.fromkeys(i for pairs in results for i, _ in pairs)),
                       ["text", "metadata"])
        return _texts(results, found)

    # ------------------------------------------------------------------ async
    def _aclient(self) -> Any:
        """An ``AsyncMilvusClient`` bound to the running event loop."""
        loop = asyncio.get_running_loop()
        client = self._async.get(loop)
        if client is None:
            pymilvus = require("pymilvus", "milvus")
            client = pymilvus.AsyncMilvusClient(**self._client_kwargs())
            self._async[loop] = client
        return client

    async def _acall(self, what: str, coro: Any) -> Any:
        try:
            return await coro
        except self._MilvusException as err:
            raise StoreError(
                f"Milvus at {self.where}, collection {self._collection!r}: {what} failed: "
                f"{self._clean(err)}"
            ) from err

    async def _asearch(self, query: SearchQuery) -> list[list[Hit]]:
        """Async search through ``AsyncMilvusClient`` (the thread default with ``client=``,
        whose connection settings are not known)."""
        if not self._owns_client:
            return await super()._asearch(query)
        client = self._aclient()
        if query.full is None:
            request = self._request(query.vectors, query.k, query.conditions,
                                    ["text", "metadata"])
            if request is None:
                return [[] for _ in query.vectors]
            results = await self._acall("search", client.search(**request))
            return [self._hits(r)[: query.k] for r in results]
        assert query.rerank_k is not None
        request = self._request(query.vectors, query.rerank_k, query.conditions, ["id"])
        if request is None:
            return [[] for _ in query.vectors]
        results = await self._acall("search", client.search(**request))
        chunks = [await self._acall("query", client.query(**kw))
                  for kw in self._full_chunks(_candidate_ids(results))]
        found, full = self._full_rows(chunks)
        pairs = _rescored(results, found, full, query.full, query.k)
        wanted = list(dict.fromkeys(i for row in pairs for i, _ in row))
        rows: dict[str, dict[str, Any]] = {}
        for start in range(0, len(wanted), _LOOKUP_CHUNK):
            got = await self._acall("query", client.query(
                self._name, output_fields=["id", "text", "metadata"],
                **self._ids_filter(wanted[start : start + _LOOKUP_CHUNK])))
            rows.update({row["id"]: row for row in got})
        return _texts(pairs, rows)

    async def _aupsert(self, batch: UpsertBatch) -> None:
        """Async upsert through ``AsyncMilvusClient`` (the thread default with ``client=``,
        whose connection settings are not known)."""
        if not self._owns_client:
            return await super()._aupsert(batch)
        rows = self._rows(batch.documents, batch.vectors, batch.full)
        client = self._aclient()
        for start in range(0, len(rows), self.batch_size):
            await self._acall("upsert", client.upsert(self._name,
                                                      rows[start : start + self.batch_size]))
        return None

    def __repr__(self) -> str:
        where = f"collection={self._collection!r}" if self._collection else "not open"
        return f"MilvusStore({self.where}, index={self.index}, {where})"
