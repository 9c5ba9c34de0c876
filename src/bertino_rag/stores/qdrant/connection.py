"""QdrantStore's connection and collections: the client of its location (built on first need),
the one retry policy its calls go through, and the lifecycle of a stamped collection (create,
open and check the stamp, replace, drop), with the stamp in the collection metadata or, where
the client or server has none, in a companion collection. A mixin of
:class:`~.client.QdrantStore`.

Replacing a collection (``--recreate``, ``open_replacement`` + ``publish``): Qdrant has no
rename, so the replacement is built as a collection of its own, ``<name>__bertino_r<hex>``,
and ``<name>`` becomes an *alias* of it, the way Qdrant documents a switch of collections
(server and local mode apply one ``update_collection_aliases`` request at once). ``publish``
first marks the replacement complete with the alias ``<name>__bertino_complete``, then (only
the first time, while ``<name>`` is still a plain collection: an alias cannot take the name of
a collection) drops the plain collection, then in one request deletes the mark and points
``<name>`` at the replacement, then drops the collection that ``<name>`` pointed at before. A
process killed after the mark loses nothing: the next open, ``open_replacement``, listing or
stamp read finishes the swap, and a collection that an alias points at is never dropped as an
abandoned replacement. Users see ``<name>`` only.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse
from urllib3.exceptions import LocationParseError  # installed with qdrant-client
from urllib3.util import parse_url

from ...errors import StoreError
from ...types import Stamp
from ..locations import safe_location
from .common import FULL, LEXICAL, PointStore
from .local import FOLDERS, bump

__all__ = ["GROUP_KEY", "LAYOUT_VERSION", "QdrantConnection", "check_url", "is_transient"]

logger = logging.getLogger("bertino_rag.stores.qdrant")
T = TypeVar("T")

#: payload key of the document a point belongs to (the group key of grouped search)
GROUP_KEY = "document"
#: layout version of new collections: 2, every point carries ``GROUP_KEY``
LAYOUT_VERSION = 2
META_KEY = "bertino_rag"
STAMP_SUFFIX = "__bertino_stamp"
#: the alias that marks a replacement complete (the swap finishes it)
COMPLETE = "__bertino_complete"
#: the collections that replacements are built in, ``<name>__bertino_r<hex>``
REPLACEMENT = re.compile(r"^(?P<name>.+)__bertino_r[0-9a-f]{12}$")


def is_transient(err: BaseException) -> bool:
    """Timeouts, connection errors, 429 and 5xx: worth retrying."""
    if isinstance(err, UnexpectedResponse):
        return err.status_code is not None and (
            err.status_code in (408, 429) or err.status_code >= 500
        )
    if isinstance(err, (ResponseHandlingException, TimeoutError, ConnectionError)):
        return True
    code = getattr(err, "code", None)  # grpc.RpcError
    if callable(code):
        try:
            name = getattr(code(), "name", "")
        except Exception:  # noqa: BLE001 - a foreign error object
            return False
        return name in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED")
    return False


def check_url(url: str) -> None:
    """Refuse, in the constructor, a server URL that qdrant-client would refuse when the
    client is built at first use. Same parse as qdrant-client's (urllib3's ``parse_url``,
    ``localhost:port`` read as a host), but the message never shows credentials."""
    try:
        parsed = parse_url(f"//{url}" if url.startswith("localhost") else url)
    except LocationParseError:
        raise ValueError(
            f"QdrantStore: url {safe_location(url)!r} has an invalid host or port; "
            "e.g. url='http://localhost:6333'"
        ) from None
    if parsed.scheme not in (None, "http", "https"):
        raise ValueError(
            f"QdrantStore: url {safe_location(url)!r} must be http:// or https:// "
            "(e.g. url='http://localhost:6333')"
        )


def _response(err: BaseException) -> UnexpectedResponse | None:
    """The server's answer behind an error (the retry policy wraps it in a StoreError)."""
    for e in (err, err.__cause__):
        if isinstance(e, UnexpectedResponse):
            return e
    return None


class QdrantConnection(PointStore):
    """The client and the collections of a :class:`~.client.QdrantStore`."""

    url: str | None
    path: str | None
    local: bool
    quantization: str | None
    index_fields: dict[str, str]
    hnsw_config: models.HnswConfigDiff | None
    _client: QdrantClient | None
    _lock: threading.RLock
    _connecting: threading.Lock
    _server_options: dict[str, Any]
    _metadata_supported: bool
    #: layout version of the open collection (see the module doc of ``client``)
    _version: int
    #: the collection a replacement is built in (``open_replacement``), until it is published
    _replacement: str | None

    # ------------------------------------------------------------------ the client
    @property
    def client(self) -> QdrantClient:
        """The underlying ``QdrantClient``, built on first use; with ``path=``, the folder's
        client exists while a collection is open (local mode locks the folder)."""
        if self._client is None:
            if self.path is not None:
                raise StoreError("QdrantStore: no collection is open; call open() first")
            self._ensure_client()
        assert self._client is not None
        return self._client

    def _ensure_client(self) -> bool:
        """Build the client of this store's location when there is none (at first use, and
        again after :meth:`close`): the one place a QdrantStore connects. Returns whether it
        acquired a local-mode folder, which the caller releases (:meth:`_release`) unless it
        keeps a collection open."""
        with self._connecting:
            if self._client is not None:
                return False
            if self.path is not None:
                self._client, self._lock = FOLDERS.acquire(
                    self.path,
                    lambda p: QdrantClient(path=p, force_disable_check_same_thread=True))
                return True
            if self.url is not None:
                # qdrant-client asks a server for its version here (a compatibility check)
                self._client = QdrantClient(**self._server_options)
            else:
                self._client = QdrantClient(":memory:")
            return False

    def _release(self) -> None:
        if self.path is not None and self._client is not None:
            FOLDERS.release(self.path)
            self._client = None
            self._lock = threading.RLock()

    def _call(self, fn: Callable[[], T], what: str) -> T:
        """A client call through the store's retry policy, under the local-mode lock."""
        def locked() -> T:
            with self._lock:
                return fn()

        return self.retry.call(locked, what)

    @property
    def where(self) -> str:
        """Where the store is, for messages: URL without credentials, folder, or memory."""
        return self.url or self.path or (":memory:" if self.local else "the given client")

    @property
    def location(self) -> str:
        return f"Qdrant at {self.where}"

    @property
    def full_vector_dtype(self) -> str:
        """float16 on a server; local mode holds the same (float16-rounded) values in float32."""
        return "float32" if self.local else "float16"

    def close(self) -> None:
        """Release the folder (``path=``) or the server connections; in-memory data stays. An
        unpublished replacement is dropped first."""
        self._end_replacement()
        if self.path is not None:
            self._release()
        elif self.url is not None and self._client is not None:
            self._client.close()
            self._client = None  # open() reconnects
        super().close()

    # ------------------------------------------------------------------ collections
    def _collections(self) -> list[str]:
        if self._client is None and self.path is not None and not Path(self.path).exists():
            return []  # nothing to list, and no folder is created for it
        acquired = self._ensure_client()
        try:
            aliases = self._aliases()
            for alias in [a for a in aliases if a.endswith(COMPLETE)]:
                self._finish_swap(alias.removesuffix(COMPLETE))  # a swap a kill interrupted
            names, aliases = self._physical(), self._aliases()
        finally:
            if acquired:
                self._release()
        return [n for n in names if not n.endswith(STAMP_SUFFIX) and not REPLACEMENT.match(n)] \
            + [a for a in aliases if not a.endswith(COMPLETE)]

    def _physical(self) -> list[str]:
        """The names of the collections themselves (not of aliases)."""
        return [c.name for c in self._call(self.client.get_collections, "list").collections]

    def _aliases(self) -> dict[str, str]:
        """Every alias and the collection it points at."""
        answer = self._call(self.client.get_aliases, "list aliases")
        return {a.alias_name: a.collection_name for a in answer.aliases}

    def _switch_aliases(self, delete: list[str], create: dict[str, str]) -> None:
        """Delete the aliases ``delete`` and create ``create`` (alias -> collection) in one
        request, which Qdrant applies at once."""
        ops: list[Any] = [models.DeleteAliasOperation(delete_alias=models.DeleteAlias(
            alias_name=a)) for a in delete]
        ops += [models.CreateAliasOperation(create_alias=models.CreateAlias(
            collection_name=c, alias_name=a)) for a, c in create.items()]
        self._call(functools.partial(self.client.update_collection_aliases,
                                     change_aliases_operations=ops), "switch aliases")

    @property
    def _name(self) -> str:
        """The collection (or alias) that calls go to: the replacement while one is built."""
        return self._replacement if self._replacing and self._replacement else self.collection

    def _finish_swap(self, collection: str) -> None:
        """Swap a complete replacement of ``collection`` in, if one is marked: drop a plain
        collection of that name, point the alias at the replacement, drop what it pointed at."""
        aliases = self._aliases()
        target = aliases.get(collection + COMPLETE)
        if target is None:
            return
        if collection in self._physical():
            self._drop_physical(collection)
        old = aliases.get(collection)
        self._switch_aliases([collection + COMPLETE] + ([collection] if old else []),
                             {collection: target})
        bump(self.client, collection)
        if old is not None and old != target:
            self._drop_physical(old)

    def _open_replacement(self, collection: str, stamp: Stamp) -> None:
        """Build into a new ``<collection>__bertino_r<hex>``; :meth:`_publish` swaps it in. A
        swap that a kill interrupted is finished first, and abandoned replacements (those no
        alias points at) are dropped."""
        acquired = self._ensure_client()
        try:
            self._finish_swap(collection)
            kept = set(self._aliases().values())
            for name in self._physical():
                found = REPLACEMENT.match(name)
                if found and found["name"] == collection and name not in kept:
                    self._drop_physical(name)
            self._replacement = f"{collection}__bertino_r{uuid.uuid4().hex[:12]}"
            self._open_collection(self._replacement, stamp, True)
        except BaseException:
            self._replacement = None
            if acquired:
                self._release()
            raise

    def _publish(self) -> None:
        """Mark the replacement complete (the alias ``<collection>__bertino_complete``), then
        :meth:`_finish_swap`."""
        collection, target = self.collection, self._replacement
        assert target is not None
        self._switch_aliases([], {collection + COMPLETE: target})
        self._replacing = False  # complete: a failure from here on must not discard it
        self._replacement = None
        self._finish_swap(collection)

    def _discard_replacement(self) -> None:
        name, self._replacement = self._replacement, None
        if name is not None and self._client is not None:
            self._drop_physical(name)

    def _open(self, collection: str, stamp: Stamp, recreate: bool) -> None:
        acquired = self._ensure_client()
        try:
            self._finish_swap(collection)
            self._open_collection(collection, stamp, recreate)
        except BaseException:
            if acquired:
                self._release()
            raise

    def _open_collection(self, collection: str, stamp: Stamp, recreate: bool) -> None:
        exists = self._exists(collection)
        if exists and recreate:
            self._delete_collection(collection)
            exists = False
        if not exists:
            try:
                self._create(collection, stamp)
            except StoreError as err:
                answer = _response(err)
                if answer is None or answer.status_code != 409:  # 409: created meanwhile
                    raise
            except ValueError as err:  # local mode: "already exists"
                if "already exists" not in str(err):
                    raise
                exists = True
        self._avgdl = None
        if exists:
            meta = self._read_meta(collection)
            found = None if meta is None else Stamp.from_dict(meta["stamp"])
            if meta is None or found is None:
                raise StoreError(
                    f"Qdrant collection {collection!r} exists but has no bertino-rag stamp (it "
                    "was not created by bertino-rag): use another collection name, or "
                    "recreate=True to drop it"
                )
            stamp.check(found, collection)
            self._version = int(meta.get("version", 1))
            self._avgdl = None if meta.get("avgdl") is None else float(meta["avgdl"])
        self._ensure_payload_indexes(collection)

    def _exists(self, collection: str) -> bool:
        """Whether ``collection`` is a collection or an alias."""
        return collection in self._physical() or collection in self._aliases()

    def _resolve(self, collection: str) -> str:
        """The collection that ``collection`` names (itself, or what the alias points at)."""
        return self._aliases().get(collection, collection)

    def _vectors_config(self, stamp: Stamp, full_dtype: Any) -> dict[str, models.VectorParams]:
        quant: Any = None
        if self.quantization == "int8":
            quant = models.ScalarQuantization(scalar=models.ScalarQuantizationConfig(
                type=models.ScalarType.INT8, quantile=0.99, always_ram=True))
        elif self.quantization == "binary":
            quant = models.BinaryQuantization(
                binary=models.BinaryQuantizationConfig(always_ram=True))
        config = {
            f"dim{stamp.index_dim}": models.VectorParams(
                # quantized: the codes stay in RAM, the originals (read only to rescore) on disk
                size=stamp.index_dim, distance=models.Distance.COSINE, on_disk=quant is not None,
                hnsw_config=self.hnsw_config, quantization_config=quant,
            )
        }
        if stamp.full_vectors:
            config[FULL] = models.VectorParams(
                size=stamp.full_dim, distance=models.Distance.COSINE, on_disk=True,
                hnsw_config=models.HnswConfigDiff(m=0), datatype=full_dtype,
            )
        return config

    def _create(self, collection: str, stamp: Stamp) -> None:
        meta = {META_KEY: {"stamp": stamp.to_dict(), "index_vector": f"dim{stamp.index_dim}",
                           "full_vector": FULL if stamp.full_vectors else None,
                           "version": LAYOUT_VERSION}}
        self._version = LAYOUT_VERSION
        kwargs: dict[str, Any] = {"on_disk_payload": True}
        if stamp.lexical is not None:
            meta[META_KEY]["lexical_vector"] = LEXICAL
            kwargs["sparse_vectors_config"] = {
                LEXICAL: models.SparseVectorParams(modifier=models.Modifier.IDF)}
        if self._metadata_supported:
            kwargs["metadata"] = meta

        def create(full_dtype: Any) -> None:
            self._call(functools.partial(
                self.client.create_collection, collection,
                vectors_config=self._vectors_config(stamp, full_dtype), **kwargs),
                "create collection")

        try:
            create(models.Datatype.FLOAT16)
        except StoreError as err:
            answer = _response(err)
            text = b"" if answer is None else (answer.content or b"")
            if answer is None or answer.status_code not in (400, 422) or \
                    b"datatype" not in text.lower():
                raise
            warnings.warn("this Qdrant server has no float16 vectors; full vectors are stored "
                          "as float32", UserWarning, stacklevel=5)
            create(None)
        if self._metadata_supported:
            info = self._call(functools.partial(self.client.get_collection, collection), "open")
            if (getattr(info.config, "metadata", None) or {}).get(META_KEY) is None:
                self._metadata_supported = False  # a server before 1.16 drops it
        if not self._metadata_supported:
            self._write_stamp_fallback(collection, meta)

    def _write_stamp_fallback(self, collection: str, meta: dict[str, Any]) -> None:
        side = collection + STAMP_SUFFIX
        client = self.client

        def write() -> None:
            if client.collection_exists(side):
                client.delete_collection(side)
            client.create_collection(
                side, vectors_config=models.VectorParams(size=1, distance=models.Distance.DOT))
            client.upsert(side, [models.PointStruct(id=0, vector=[1.0], payload=meta)],
                          wait=True)

        self._call(write, "write stamp")

    def _read_meta(self, collection: str) -> dict[str, Any] | None:
        """The bertino-rag entry of the collection metadata (or of the companion collection)."""
        collection = self._resolve(collection)
        info = self._call(functools.partial(self.client.get_collection, collection), "open")
        meta = (getattr(info.config, "metadata", None) or {}).get(META_KEY)
        if meta is None:
            side = collection + STAMP_SUFFIX
            if not self._exists(side):
                return None
            points = self._call(functools.partial(self.client.retrieve, side, [0]), "open")
            meta = (points[0].payload or {}).get(META_KEY) if points else None
            self._metadata_supported = False
        return dict(meta) if meta is not None else None

    def _stored_avgdl(self) -> float | None:
        meta = self._read_meta(self._name)
        return None if meta is None or meta.get("avgdl") is None else float(meta["avgdl"])

    def _keep_avgdl(self, avgdl: float) -> None:
        self._update_meta("avgdl", avgdl)

    def _update_meta(self, key: str, value: Any) -> None:
        """Set one entry of the bertino-rag metadata beside the stamp (``None`` removes it),
        in one call: the collection's metadata, or the companion's one point."""
        entry = {**(self._read_meta(self._name) or {}), key: value}
        if value is None:
            del entry[key]
        physical = self._resolve(self._name)
        if self._metadata_supported:
            self._call(functools.partial(self.client.update_collection, physical,
                                         metadata={META_KEY: entry}), "update metadata")
        elif self._exists(physical + STAMP_SUFFIX):
            self._call(functools.partial(
                self.client.upsert, physical + STAMP_SUFFIX,
                [models.PointStruct(id=0, vector=[1.0], payload={META_KEY: entry})], wait=True),
                "update metadata")
        else:
            self._write_stamp_fallback(physical, {META_KEY: entry})

    # the intent record of chunked edits (stores/intent.py) is an entry of that metadata
    def _read_intent(self) -> dict[str, Any] | None:
        found = (self._read_meta(self._name) or {}).get("intent")
        return None if found is None else dict(found)

    def _write_intent(self, record: dict[str, Any] | None) -> None:
        self._update_meta("intent", record)

    def _ensure_payload_indexes(self, collection: str) -> None:
        if not self.index_fields:
            return
        if self.local:
            logger.info("QdrantStore: local mode has no payload indexes; index_fields %s "
                        "are used on a server only", sorted(self.index_fields))
            return
        for field, schema in self.index_fields.items():
            self._call(functools.partial(
                self.client.create_payload_index, collection, f"metadata.{field}",
                field_schema=models.PayloadSchemaType(schema), wait=True), "payload index")

    def _stored_stamp(self, collection: str) -> Stamp | None:
        acquired = self._ensure_client()
        try:
            self._finish_swap(collection)
            if not self._exists(collection):
                return None
            meta = self._read_meta(collection)
            if meta is None:
                raise StoreError(f"Qdrant collection {collection!r} exists but has no "
                                 "bertino-rag stamp (it was not created by bertino-rag)")
            return Stamp.from_dict(meta["stamp"])
        finally:
            if acquired:
                self._release()

    def _delete_collection(self, collection: str) -> None:
        """Drop ``collection``: the alias first (the name goes at once), then what it names."""
        bump(self.client, collection)
        target = self._aliases().get(collection)
        if target is not None:
            self._switch_aliases([collection], {})
            bump(self.client, target)
        self._drop_physical(target or collection)

    def _drop_physical(self, collection: str) -> None:
        """Drop a collection itself and its companion stamp collection, where they exist."""
        names = self._physical()
        for name in (collection, collection + STAMP_SUFFIX):
            if name in names:
                self._call(functools.partial(self.client.delete_collection, name), "drop")

    def _drop(self) -> None:
        self._delete_collection(self._name)
