"""MilvusStore itself: the store protocol on a ``pymilvus.MilvusClient`` (Milvus Lite or a
server); the package docstring describes the collection and what is measured."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from ..._deps import require
from ...errors import StoreConnectionError, StoreError
from ...search.ranked import Fetched
from ...types import Document, Stamp
from ...validation import StoreLimits, positive_int
from ..base import VectorStore
from ..locations import safe_location
from ..protocol import Capabilities, ExportBatch, WriteBatch
from ..retry import Retry
from . import lite
from .catalogue import build_params, check_index, index_chain, quiet_pymilvus, warn_fallback
from .filters import compile_filter, filter_kwargs, ids_filter
from .schema import (
    COMPLETE,
    GROUP_FIELD,
    ID_MAX_BYTES,
    INTENT_KEY,
    REPLACING,
    TEXT_MAX_BYTES,
    decode_full,
    entities,
    index_params,
    read_stamp,
    schema,
    stamp_properties,
)
from .search import _Search

__all__ = ["MilvusStore"]

logger = logging.getLogger(__name__)

_LOOKUP_CHUNK = 1_000  # ids per get/delete expression


def _is_transient(err: BaseException) -> bool:
    """Milvus errors worth retrying: unavailable, rate limited, or marked retriable."""
    if getattr(err, "is_input_error", False):
        return False
    if type(err).__name__ == "MilvusUnavailableException" or getattr(err, "retriable", False):
        return True
    return getattr(err, "code", None) == 8  # ErrorCode.RATE_LIMIT


class MilvusStore(_Search, VectorStore):
    """Milvus Lite (embedded, a ``.db`` path) or a Milvus server.

    The constructor only validates its arguments; the store connects on first need
    (:meth:`open`, :meth:`collections`, :meth:`stored_stamp`, :attr:`server_version`), where
    an unreachable server or a ``.db`` file held by another process raises
    :class:`~bertino_rag.errors.StoreConnectionError`.

    Args:
        uri: a ``.db`` file for Milvus Lite, or ``http(s)://host:19530`` for a server.
        token: server token (``user:password`` or an API key); default ``$MILVUS_TOKEN``.
            Never logged.
        client: an existing ``pymilvus.MilvusClient`` to use instead of ``uri`` (not closed
            by :meth:`close`).
        index: ``AUTOINDEX``, ``HNSW``, ``HNSW_SQ``, ``IVF_FLAT``, ``IVF_SQ8``, ``FLAT`` (and
            the server-only ``DISKANN``, ``IVF_PQ``, ``SCANN``, ``HNSW_PQ``...). An index the
            engine cannot build falls back to the nearest one it can, with one
            :class:`~bertino_rag.errors.IndexFallbackWarning`.
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
        self._pymilvus = require("pymilvus", "milvus")
        self.index, self.metric = check_index(index, metric)
        self.ef, self.nprobe = positive_int(ef, "ef"), positive_int(nprobe, "nprobe")
        self.ef_construction = positive_int(ef_construction, "ef_construction")
        self.nlist = positive_int(nlist, "nlist")
        self.batch_size = positive_int(batch_size, "batch_size")
        self.index_params = dict(index_params or {})
        self.timeout = timeout
        self.max_retries = max(0, int(max_retries))
        self._token = token if token is not None else os.environ.get("MILVUS_TOKEN", "")
        self._owns_client = client is None
        if client is None:
            self.uri = str(uri)
            lite.check_uri(self.uri)
            self.where = safe_location(self.uri)
            try:
                password = urlsplit(self.uri).password
            except ValueError:
                password = None
            secrets: tuple[str, ...] = tuple(x for x in (self._token, password) if x)
            if lite.is_local(self.uri):
                require("milvus_lite", "milvus")
                os.makedirs(os.path.dirname(os.path.abspath(self.uri)), exist_ok=True)
        else:
            self.uri = ""
            self.where = "the given MilvusClient"
            secrets = (self._token,) if self._token else ()
        #: the one retry policy of every client call
        self._retry = Retry("Milvus", self.where, _is_transient, self.max_retries,
                            engine_errors=(self._pymilvus.MilvusException,), secrets=secrets)
        # connected on first need (_ensure_connected): the constructor only validates
        self._client: Any = client
        self._server_version: str | None = None
        self._connecting = threading.Lock()
        self._templates: bool | None = None
        # per open collection
        self._index_type = ""
        self._metric = "IP"
        self._full_dtype: Any = None
        #: whether the open collection has the ``document`` field (native grouped search)
        self._grouped = False
        self._warned: set[str] = set()

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(lexical=True, atomic_replace=True, grouping=self._grouped,
                            intent=True)

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
            try:
                if self._client is None:
                    kwargs = lite.client_kwargs(self.uri, self._token, self.timeout)
                    self._client = self._retry.call(
                        lambda: self._pymilvus.MilvusClient(**kwargs), "connect")
                    if lite.is_local(self.uri):
                        lite.acquire(self.uri)
                if self._server_version is None:
                    self._server_version = str(self._retry.call(
                        self._client.get_server_version, "get_server_version"))
            except StoreConnectionError:
                if self._owns_client:
                    self._disconnect()
                raise
            except Exception as err:
                if self._owns_client:
                    self._disconnect()
                cause = err.__cause__ if isinstance(err, StoreError) and err.__cause__ else err
                raise StoreConnectionError(
                    "Milvus", self.where, lite.in_use_hint(self.uri, self._retry.clean(cause))
                ) from None
            return self._client

    def _disconnect(self) -> None:
        """Close the client this store created (and free the Milvus Lite file)."""
        client, self._client = self._client, None
        self._server_version = None
        if client is not None:
            client.close()
            if lite.is_local(self.uri):
                lite.release(self.uri)  # the .db file is free for other processes

    def _templating(self) -> bool:
        """Whether the engine reads ``filter_params`` (Milvus >= 2.5; Milvus Lite 3.2 does not)."""
        if self._templates is None:
            if self.is_lite:
                self._templates = False
            else:
                try:
                    with quiet_pymilvus():
                        self._retry.call(lambda: self.client.query(
                            self._name, filter="id == {p}", filter_params={"p": ""},
                            output_fields=["id"], limit=1), "filter templating probe")
                    self._templates = True
                except StoreConnectionError:
                    raise
                except StoreError:
                    self._templates = False
        return self._templates

    @property
    def full_vector_dtype(self) -> str:
        """float16 on a server (float32 where the open collection fell back to it); Milvus Lite
        holds the same (float16-rounded) values in float32."""
        if self._full_dtype is not None:
            return ("float16" if self._full_dtype == self._pymilvus.DataType.FLOAT16_VECTOR
                    else "float32")
        return "float32" if self.is_lite else "float16"

    # ------------------------------------------------------------------ lifecycle
    def _collections(self) -> list[str]:
        names = self._retry.call(self.client.list_collections, "list_collections")
        for name in names:
            if name.endswith(COMPLETE):  # a swap that a crash interrupted
                self._finish_swap(name.removesuffix(COMPLETE))
        return sorted({n.removesuffix(COMPLETE) for n in names if not n.endswith(REPLACING)})

    def _has(self, collection: str) -> bool:
        return bool(self._retry.call(lambda: self.client.has_collection(collection),
                                     "has_collection"))

    def _describe(self, collection: str) -> dict[str, Any]:
        return dict(self._retry.call(lambda: self.client.describe_collection(collection),
                                     "describe_collection"))

    def _drop_collection(self, collection: str) -> None:
        self._retry.call(lambda: self.client.drop_collection(collection), "drop_collection")

    def _open(self, collection: str, stamp: Stamp, recreate: bool) -> None:
        self._ensure_connected()
        if not collection.endswith(REPLACING):
            self._finish_swap(collection)
        exists = self._has(collection)
        if exists and not recreate:
            desc = self._describe(collection)
            stamp.check(read_stamp(desc, collection, self.where), collection)
            fields = {f["name"]: f for f in desc.get("fields", [])}
            full_dtype = fields["full_vector"]["type"] if "full_vector" in fields else None
            grouped = GROUP_FIELD in fields
            described = self._vector_index(collection)
            index_type = str(described.get("index_type") or "FLAT").upper()
            metric = str(described.get("metric_type")
                         or ("IP" if stamp.normalized else "COSINE")).upper()
        else:
            if exists:
                self._drop_collection(collection)
            index_type, full_dtype = self._create(collection, stamp)
            metric = self.metric or ("IP" if stamp.normalized else "COSINE")
            grouped = True
        self._retry.call(lambda: self.client.load_collection(collection), "load_collection")
        self._index_type, self._full_dtype, self._metric = index_type, full_dtype, metric
        self._grouped = grouped

    def _stored_stamp(self, collection: str) -> Stamp | None:
        if not self._has(collection):
            return None
        return read_stamp(self._describe(collection), collection, self.where)

    def _vector_index(self, collection: str) -> dict[str, Any]:
        """The description of the index on the searched vectors (empty when there is none)."""
        try:
            return dict(self._retry.call(
                lambda: self.client.describe_index(collection, "vector"), "describe_index")
                or {})
        except StoreConnectionError:
            raise
        except StoreError:
            return {}

    def _create(self, collection: str, stamp: Stamp) -> tuple[str, Any]:
        """Create ``collection`` with the requested index, or the nearest the engine builds;
        full vectors as FLOAT16_VECTOR where the engine has it. Returns the index type and the
        full vectors' field type."""
        dt, lite_engine = self._pymilvus.DataType, self.is_lite
        metric = self.metric or ("IP" if stamp.normalized else "COSINE")
        full_types = [None]
        if stamp.full_vectors:
            full_types = [dt.FLOAT_VECTOR] if lite_engine else [dt.FLOAT16_VECTOR,
                                                                  dt.FLOAT_VECTOR]
        chain = index_chain(self.index, stamp.index_dim, lite_engine)
        last: BaseException | None = None
        for full_dtype in full_types:
            for index in chain:
                params = {**build_params(index, stamp.index_dim, self.ef_construction,
                                         self.nlist), **self.index_params}
                request = {
                    "schema": schema(self.client, self._pymilvus, stamp, full_dtype),
                    "index_params": index_params(self.client, stamp, index, metric, params,
                                                 lite_engine),
                    "consistency_level": "Strong", **stamp_properties(stamp)}
                try:
                    with quiet_pymilvus():
                        self._retry.call(partial(self.client.create_collection, collection,
                                                 **request), "create_collection")
                except StoreConnectionError:
                    raise
                except StoreError as err:  # the engine cannot build this one: the next
                    last = err.__cause__ or err
                    if self._has(collection):
                        self._drop_collection(collection)
                    continue
                warn_fallback(self.where, self.index, index,
                              "not supported by this engine" if last is None
                              else self._retry.clean(last), self._warned)
                return index, full_dtype
        raise StoreError(
            f"Milvus at {self.where} could not create collection {collection!r} with any of "
            f"the indexes {chain}: {self._retry.clean(last) if last else 'no index available'}"
        )

    @property
    def _name(self) -> str:
        """The Milvus collection that calls go to: the replacement while one is built."""
        return self.collection + REPLACING if self._replacing else self.collection

    def _open_replacement(self, collection: str, stamp: Stamp) -> None:
        """Build into ``<collection>__bertino_replacing``; :meth:`_publish` swaps it in. A swap
        that a crash interrupted is finished first: a complete replacement is never dropped."""
        self._ensure_connected()
        self._finish_swap(collection)
        self._open(collection + REPLACING, stamp, True)

    def _publish(self) -> None:
        """Mark the replacement complete by renaming it to ``<collection>__bertino_complete``
        (one rename: a crash before it leaves the old collection, and an incomplete
        replacement that is dropped), then :meth:`_finish_swap`. Milvus has no atomic swap of
        names: between dropping the old collection and the last rename, milliseconds, the
        collection does not exist, and a crash there leaves the complete replacement, which
        the next open or listing of the collections swaps in."""
        collection, temp = self.collection, self.collection + REPLACING
        self._retry.call(lambda: self.client.flush(temp), "flush")
        self._retry.call(lambda: self.client.rename_collection(temp, collection + COMPLETE),
                         "rename_collection")
        self._replacing = False  # complete: a failure from here on must not discard it
        self._finish_swap(collection)
        self._retry.call(lambda: self.client.load_collection(collection), "load_collection")

    def _finish_swap(self, collection: str) -> None:
        """Swap a complete replacement of ``collection`` in, if there is one: drop the old
        collection, rename the replacement to its name."""
        complete = collection + COMPLETE
        if not self._has(complete):
            return
        if self._has(collection):
            self._drop_collection(collection)
        self._retry.call(lambda: self.client.rename_collection(complete, collection),
                         "rename_collection")

    def _discard_replacement(self) -> None:
        if self._client is not None:
            self._drop_collection(self.collection + REPLACING)

    def close(self) -> None:
        """Close the client (when this store created it); :meth:`open` connects again. An
        unpublished replacement is dropped."""
        super().close()
        if self._owns_client:
            self._disconnect()

    def _drop(self) -> None:
        self._drop_collection(self._name)

    # ------------------------------------------------------------------ filters and checks
    def _native_filter(self, filter: Any) -> Any:
        raise TypeError(
            "MilvusStore takes filters as a dict ({'field': value}, $in, ranges); Milvus "
            f"expression strings ({type(filter).__name__}) are refused because a value pasted "
            "into one can change what it matches"
        )

    def check_documents(
        self, documents: Any, *, offset: int = 0, text_limit: bool = True,
        describe: Any = None,
    ) -> None:
        """The protocol's rules, and a ``doc_id`` metadata value within the id limit (it is
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

    # ------------------------------------------------------------------ writes
    def _write(self, batch: WriteBatch) -> None:
        """Upserts of ``batch_size`` entities; a failed one raises StoreWriteError naming its
        ids and the later ones (the earlier requests are stored). A hybrid collection's
        entities carry their terms: Milvus derives the sparse BM25 vector in the same write."""
        docs = batch.documents
        rows = entities(docs, batch.vectors, batch.full, batch.terms,
                        float16=self._full_dtype == self._pymilvus.DataType.FLOAT16_VECTOR,
                        grouped=self._grouped)
        for start in range(0, len(rows), self.batch_size):
            self._retry.write(partial(self.client.upsert, self._name,
                                      rows[start : start + self.batch_size]),
                              [d.id for d in docs[start:]],
                              f"upsert (after the first {start} documents, which are stored)"
                              if start else "upsert")

    def _delete(self, ids: list[str]) -> None:
        templating, lite_engine = self._templating(), self.is_lite
        for start in range(0, len(ids), _LOOKUP_CHUNK):
            chunk = list(dict.fromkeys(ids[start : start + _LOOKUP_CHUNK]))
            self._retry.call(partial(self.client.delete, self._name,
                                     **ids_filter(chunk, templating, lite_engine)), "delete")

    # the intent record of chunked edits (stores/intent.py): a collection property beside the
    # stamp's, altered (one call) or dropped
    def _read_intent(self) -> dict[str, Any] | None:
        found = (self._describe(self._name).get("properties") or {}).get(INTENT_KEY)
        return None if not found else dict(json.loads(found))

    def _write_intent(self, record: dict[str, Any] | None) -> None:
        if record is None:
            self._retry.call(partial(self.client.drop_collection_properties, self._name,
                                     property_keys=[INTENT_KEY]), "drop_collection_properties")
        else:
            self._retry.call(partial(self.client.alter_collection_properties, self._name,
                                     properties={INTENT_KEY: json.dumps(record)}),
                             "alter_collection_properties")

    def flush(self) -> None:
        """Seal written data into segments (Milvus builds their indexes then)."""
        self._retry.call(lambda: self.client.flush(self._name), "flush")

    # ------------------------------------------------------------------ reads
    def _fetch(self, ids: list[str], rows: np.ndarray | None = None, *,
               documents: bool = False, full: bool = False) -> Fetched:
        """Documents and/or full vectors by id, in queries of ``_LOOKUP_CHUNK`` ids, each
        chunk's rows decoded into the result before the next is read."""
        at: dict[str, Any] = {}  # id -> its position in ids (a list for a repeated id)
        for j, doc_id in enumerate(ids):
            seen = at.setdefault(doc_id, j)
            if seen != j:
                at[doc_id] = [*(seen if isinstance(seen, list) else [seen]), j]
        fields = ["id", *(["text", "metadata"] if documents else []),
                  *(["full_vector"] if full else [])]
        found = np.zeros(len(ids), dtype=bool)
        docs: list[Document | None] | None = [None] * len(ids) if documents else None
        vectors = np.zeros((len(ids), self.stamp.full_dim), dtype=np.float32) if full else None
        templating, lite_engine = self._templating(), self.is_lite
        distinct = list(at)
        for start in range(0, len(distinct), _LOOKUP_CHUNK):
            # float vectors come back as one numpy array, not a Python float per value
            chosen = ids_filter(distinct[start : start + _LOOKUP_CHUNK], templating, lite_engine)
            got = self._retry.call(partial(self.client.query, self._name, output_fields=fields,
                                           strict_float32=full, **chosen), "query")
            for row in got:
                where = at.get(row["id"])
                if where is None:
                    continue
                found[where] = True
                if docs is not None:
                    doc = Document(text=row["text"], id=row["id"],
                                   metadata=row["metadata"] or {})
                    for j in where if isinstance(where, list) else (where,):
                        docs[j] = doc
                if vectors is not None:
                    vectors[where] = decode_full(row["full_vector"])
        return Fetched(found, docs, vectors)

    def _query_pages(self, fields: list[str], batch_size: int,
                     expr: dict[str, Any]) -> Iterator[list[dict[str, Any]]]:
        """Every entity matching ``expr``, a page at a time."""
        it = self._retry.call(lambda: self.client.query_iterator(
            self._name, batch_size=batch_size, output_fields=fields, **expr), "query_iterator")
        try:
            while True:
                rows = self._retry.call(it.next, "query_iterator.next")
                if not rows:
                    return
                yield rows
        finally:
            it.close()

    def _ids_where(self, conditions: Any) -> list[str]:
        compiled = compile_filter(conditions)
        if compiled is None:
            return []
        expr = filter_kwargs(compiled, self._templating())
        return [row["id"] for rows in self._query_pages(["id"], 1000, expr) for row in rows]

    def _count(self) -> int:
        rows = self._retry.call(lambda: self.client.query(
            self._name, filter="", output_fields=["count(*)"]), "count")
        return int(rows[0]["count(*)"])

    def _scan(self, batch_size: int) -> Iterator[ExportBatch]:
        full = self.stamp.full_vectors
        fields = ["id", "vector", "text", "metadata", *(["full_vector"] if full else [])]
        for rows in self._query_pages(fields, batch_size, {"filter": ""}):
            yield ExportBatch(
                [Document(text=r["text"], id=r["id"], metadata=r["metadata"] or {})
                 for r in rows],
                np.asarray([r["vector"] for r in rows], dtype=np.float32),
                np.stack([decode_full(r["full_vector"]) for r in rows]) if full else None)

    def __repr__(self) -> str:
        where = f"collection={self._collection!r}" if self._collection else "not open"
        return f"MilvusStore({self.where}, index={self.index}, {where})"
