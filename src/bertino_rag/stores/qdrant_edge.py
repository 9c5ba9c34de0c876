"""Qdrant Edge store: the Qdrant engine itself, in this process, on a local folder.

``qdrant-edge-py`` (package ``qdrant_edge``) runs Qdrant's storage and search engine as a
library: HNSW, quantization, payload indexes, float16 vectors, the Query API with prefetch,
a write-ahead log. Unlike qdrant-client's local mode (a pure-Python re-implementation with
exact search only) it searches 100k points in milliseconds.

Layout of ``QdrantEdgeStore(path=DIR)``, one folder per collection (``DIR/<collection>/``):

- ``shard/``: the Edge shard, with the same point layout as :class:`QdrantStore` on a
  server: vector ``dim<D>`` (the truncated vector, cosine, HNSW graph, in RAM; optionally
  quantized), vector ``full`` (only when the stamp keeps full vectors: cosine, ``float16``,
  on disk, no graph), payload ``{"doc_id", "text", "metadata"}``, point id
  ``uuid5(doc_id)``;
- sparse vector ``lexical`` (only for a hybrid collection, ``Stamp.lexical`` set): the
  library's sparse encoding of the analyzer's terms (:func:`~bertino_rag.lexical.document_vector`,
  BM25's term-frequency part with the ``avgdl`` fixed by the first write, as in
  :class:`QdrantStore`), written by the same upsert as the dense vectors, and the document's
  term indices in the payload field ``lexical_terms`` (integer index). The query weighs each
  term by :meth:`~bertino_rag.lexical.BM25.idf` of its live document frequency, counted on
  that index: Edge's own ``Modifier.Idf`` counts deleted and replaced points until their segment
  is vacuumed, which would make scores drift from MemoryStore's after every delete or update.
  The counts are cached per open shard until the next write (only one process may open it);
- ``stamp.json``: the :class:`~bertino_rag.types.Stamp` (an Edge shard has no collection
  metadata), written atomically before the shard is created, and, for a hybrid collection, the
  ``avgdl`` of its sparse values.

Two-stage search is one Query API call: ``prefetch`` on ``dim<D>`` with ``rerank_k`` and the
filter, then ``query`` on ``full``.

HNSW: Edge has no background optimizer; :meth:`QdrantEdgeStore.build_index` (called by
``Retriever.index`` after a bulk write) builds the graph of every segment above
``index_threshold`` points. Smaller segments, and points written since the last build, are
searched exactly (brute force), so results are always complete. A build holds the GIL and
blocks the process for its duration (it grows with the number of points), which is why it is
not run in a background thread. A build that is
killed leaves the previous segments in place: the store opens and searches as before.

One process at a time: a second process opening the same collection gets a
:class:`~bertino_rag.adapters.StoreError` at once (Edge locks the shard's WAL). Stores of one
process on the same folder share one shard.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .._deps import require
from ..lexical import BM25, document_vector, mean_length, query_vector
from ..types import Document, Hit, Stamp
from .base import (
    HybridQuery,
    StoreError,
    lexical_config,
    ranking_key,
)
from ..search.filters import Node
from .qdrant_common import (
    FULL,
    FilterVocabulary,
    PointRecordReads,
    compile_conditions,
    hits_from_points,
    parse_index_fields,
    point_id,
)

require("qdrant_edge", "edge")

import qdrant_edge as qe  # noqa: E402

__all__ = ["QdrantEdgeStore"]

LEXICAL = "lexical"
#: payload field with a hybrid document's term indices (the document frequencies are counted on it)
TERMS = "lexical_terms"
STAMP_FILE = "stamp.json"
SHARD_DIR = "shard"
#: searched exactly below this many points per segment; HNSW above
DEFAULT_INDEX_THRESHOLD = 20_000

# binary quantization is not offered: its recall at 128 dims has not been measured here yet
Quantization = Literal["int8", "turbo8", "turbo4", "turbo2"] | None
TwoStage = Literal["prefetch", "rescore"]
_QUANTIZATIONS = ("int8", "turbo8", "turbo4", "turbo2")
_OVERSAMPLING = {"int8": 2.0, "turbo8": 2.0, "turbo4": 3.0, "turbo2": 4.0}
_PAYLOAD_TYPES = {
    "keyword": qe.PayloadSchemaType.Keyword,
    "integer": qe.PayloadSchemaType.Integer,
    "float": qe.PayloadSchemaType.Float,
    "bool": qe.PayloadSchemaType.Bool,
    "datetime": qe.PayloadSchemaType.Datetime,
    "text": qe.PayloadSchemaType.Text,
    "uuid": qe.PayloadSchemaType.Uuid,
}


def _match(value: Any) -> Any:
    # qdrant-edge-py 0.9 reads a Python bool as an int (MatchValue(True) matches 1, not
    # True); a numpy bool reaches it as a bool.
    wrapped: Any = np.bool_(value) if isinstance(value, bool) else value
    return qe.MatchValue(wrapped)


_VOCABULARY = FilterVocabulary(
    filter=qe.Filter,
    field=qe.FieldCondition,
    match=_match,
    match_any=qe.MatchAny,
    range=qe.RangeFloat,
    is_empty=qe.IsEmptyCondition,
)


#: document frequencies kept per open shard before the cache starts again (about 8 MB)
DF_CACHE_TERMS = 100_000


class _Shard:
    """One collection folder's open shard, shared by the stores of this process on it.

    It also caches the live document frequency of the lexical terms that queries asked for
    (each is an exact count on the ``lexical_terms`` index). Every write of this process goes
    through :meth:`written`, which forgets them, and no other process can write: the folder
    is open in one process at a time.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.lock = threading.RLock()
        self.shard: qe.EdgeShard | None = None
        self.refs = 0
        self._df: dict[int, int] = {}
        self._n: int | None = None
        self._writes = 0
        self._df_lock = threading.Lock()

    def close(self) -> None:
        if self.shard is not None:
            self.shard.close()
            self.shard = None
        self.written()

    def written(self) -> None:
        """Forget the cached frequencies: the shard was (or may have been) written."""
        with self._df_lock:
            self._writes += 1
            self._df.clear()
            self._n = None

    def frequencies(self, terms: list[int], count: Callable[[int], int],
                    total: Callable[[], int]) -> tuple[list[int], int]:
        """The live document frequency of each of ``terms`` and the number of points, from
        the cache or counted (``count(term)``, ``total()``) and then cached."""
        with self._df_lock:
            seen = self._writes
            have = {t: self._df[t] for t in terms if t in self._df}
            n = self._n
        counted = {t: count(t) for t in terms if t not in have}
        if n is None:
            n = total()
        with self._df_lock:
            if self._writes == seen:  # no write meanwhile: the counts are current
                if len(self._df) + len(counted) > DF_CACHE_TERMS:
                    self._df.clear()
                self._df.update(counted)
                self._n = n
        have.update(counted)
        return [have[t] for t in terms], n


class _Registry:
    """Per-process registry of open collection folders (Edge allows one open shard each)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[Path, _Shard] = {}

    def acquire(self, folder: Path) -> _Shard:
        with self._lock:
            handle = self._open.get(folder)
            if handle is None:
                handle = self._open[folder] = _Shard(folder)
            handle.refs += 1
            return handle

    def release(self, handle: _Shard) -> None:
        with self._lock:
            handle.refs -= 1
            if handle.refs > 0:
                return
            self._open.pop(handle.folder, None)
        with handle.lock:
            handle.close()


_REGISTRY = _Registry()


def _locked_error(folder: Path, err: Exception) -> StoreError:
    return StoreError(
        f"Qdrant Edge collection {folder} is open in another process (one process at a time "
        f"may open it): close it there, or serve it from a Qdrant server ({err})"
    )


class QdrantEdgeStore(PointRecordReads):
    """The Qdrant engine in-process (Qdrant Edge), persisted to a folder.

    Args:
        path: folder holding the collections (one subfolder each).
        quantization: quantization of the truncated vector, searched with oversampling and
            rescored with the originals: ``"int8"`` (scalar, 4x smaller), ``"turbo8"``,
            ``"turbo4"``, ``"turbo2"`` (TurboQuant at 8, 4 and 2 bits); ``None`` for none.
        index_fields: metadata fields to build payload indexes on: a mapping field -> type
            (``keyword``, ``integer``, ``float``, ``bool``, ``datetime``, ``text``, ``uuid``),
            or a list of keyword fields. An index answers filters of its own type only: index
            a numeric field as ``integer`` or ``float``.
        index_threshold: segments with at least this many points get an HNSW graph at
            :meth:`build_index`; smaller ones are searched exactly.
        hnsw_m: HNSW edges per node.
        hnsw_ef_construct: HNSW build beam.
        hnsw_ef: HNSW search beam; ``None`` for the engine default.
        exact: search every point exactly (brute force), ignoring HNSW and quantization.
        oversampling: candidates oversampling with quantization (default by kind).
        two_stage: ``"prefetch"`` (one Query API call: the engine rescores the candidates on
            ``full``; scores equal numpy's up to float rounding) or ``"rescore"`` (search,
            fetch the candidates' full vectors, rescore in numpy: the scores of
            :class:`~bertino_rag.adapters.MemoryStore` bit for bit).
        batch_size: points per write operation.

    Example:
        >>> store = QdrantEdgeStore("./edge_index", quantization="int8")  # doctest: +SKIP
        >>> Retriever(dim=128, store=store)  # doctest: +SKIP
    """

    kind = "qdrant-edge"
    supports_lexical = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        quantization: Quantization = None,
        index_fields: Mapping[str, str] | Sequence[str] | None = None,
        index_threshold: int = DEFAULT_INDEX_THRESHOLD,
        hnsw_m: int = 16,
        hnsw_ef_construct: int = 100,
        hnsw_ef: int | None = None,
        exact: bool = False,
        oversampling: float | None = None,
        two_stage: TwoStage = "prefetch",
        batch_size: int = 1024,
    ) -> None:
        super().__init__()
        if path is None or not str(path).strip():
            raise ValueError("QdrantEdgeStore: path must be a folder, e.g. './edge_index'")
        if quantization not in (None, *_QUANTIZATIONS):
            raise ValueError(
                f"quantization must be one of {_QUANTIZATIONS} or None, got {quantization!r}"
            )
        for name, value in (("index_threshold", index_threshold), ("hnsw_m", hnsw_m),
                            ("hnsw_ef_construct", hnsw_ef_construct),
                            ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if hnsw_ef is not None and (isinstance(hnsw_ef, bool) or not isinstance(hnsw_ef, int)
                                    or hnsw_ef <= 0):
            raise ValueError(f"hnsw_ef must be a positive int or None, got {hnsw_ef!r}")
        if two_stage not in ("prefetch", "rescore"):
            raise ValueError(
                f"two_stage must be 'prefetch' or 'rescore', got {two_stage!r}"
            )
        if oversampling is not None and not oversampling >= 1:
            raise ValueError(f"oversampling must be >= 1, got {oversampling!r}")
        self.root = Path(path).resolve()
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"QdrantEdgeStore: {self.root} exists and is not a folder")
        self.quantization = quantization
        self.index_fields = parse_index_fields(index_fields)
        self.index_threshold = index_threshold
        self.hnsw_m = hnsw_m
        self.hnsw_ef_construct = hnsw_ef_construct
        self.hnsw_ef = hnsw_ef
        self.exact = bool(exact)
        self.oversampling = oversampling or (
            _OVERSAMPLING[quantization] if quantization else None
        )
        self.two_stage = two_stage
        self.batch_size = batch_size
        self._handle: _Shard | None = None
        #: the mean document length the sparse values are normalized by (hybrid collections)
        self._avgdl: float | None = None

    # ------------------------------------------------------------------ plumbing
    @property
    def index_vector(self) -> str:
        """Name of the truncated vector, e.g. ``dim128``."""
        return f"dim{self.stamp.index_dim}"

    @property
    def shard(self) -> qe.EdgeShard:
        """The open ``qdrant_edge.EdgeShard``."""
        self.stamp  # noqa: B018 - raises when not open
        handle = self._handle
        if handle is None or handle.shard is None:
            raise StoreError(
                f"QdrantEdgeStore: collection {self._collection!r} was dropped or closed; "
                "open() it again"
            )
        return handle.shard

    def _folder(self, collection: str) -> Path:
        if collection in (".", "..") or "/" in collection or "\\" in collection:
            raise ValueError(
                f"QdrantEdgeStore: collection name {collection!r} must not contain path "
                "separators"
            )
        return self.root / collection

    def _config(self, stamp: Stamp) -> qe.EdgeConfig:
        hnsw = qe.HnswIndexConfig(m=self.hnsw_m, ef_construct=self.hnsw_ef_construct,
                                  full_scan_threshold=_kb(self.index_threshold,
                                                          stamp.index_dim))
        vectors = {
            f"dim{stamp.index_dim}": qe.EdgeVectorParams(
                size=stamp.index_dim, distance=qe.Distance.Cosine, hnsw_config=hnsw,
                quantization_config=_quantization(self.quantization),
                memory=qe.Memory.Cached,
            )
        }
        if stamp.full_vectors:
            vectors[FULL] = qe.EdgeVectorParams(
                size=stamp.full_dim, distance=qe.Distance.Cosine,
                datatype=qe.VectorStorageDatatype.Float16, memory=qe.Memory.Cold,
                # m=0: no graph; the full vector is only read to rescore candidates
                hnsw_config=qe.HnswIndexConfig(m=0, ef_construct=self.hnsw_ef_construct,
                                               full_scan_threshold=_kb(self.index_threshold,
                                                                       stamp.index_dim)),
            )
        sparse = None
        if stamp.lexical is not None:
            sparse = {LEXICAL: qe.EdgeSparseVectorParams()}
        return qe.EdgeConfig(
            vectors=vectors,
            sparse_vectors=sparse,
            optimizers=qe.EdgeOptimizersConfig(
                indexing_threshold=_kb(self.index_threshold, stamp.index_dim)),
        )

    # ------------------------------------------------------------------ lifecycle
    def _open(self, collection: str, stamp: Stamp, recreate: bool) -> None:
        folder = self._folder(collection)
        if self._handle is not None:
            self._release()
        handle = _REGISTRY.acquire(folder)
        try:
            with handle.lock:
                self._open_folder(handle, collection, stamp, recreate)
        except BaseException:
            _REGISTRY.release(handle)
            raise
        self._handle = handle

    def _open_folder(self, handle: _Shard, collection: str, stamp: Stamp,
                     recreate: bool) -> None:
        folder = handle.folder
        shard_dir = folder / SHARD_DIR
        if recreate:
            handle.close()  # and forgets its cached frequencies
            shutil.rmtree(folder, ignore_errors=True)
        found = _read_stamp(folder)
        self._avgdl = _read_sidecar(folder).get("avgdl") if found is not None else None
        if found is None and shard_dir.exists() and any(shard_dir.iterdir()):
            raise StoreError(
                f"{folder} holds a Qdrant Edge shard without a bertino-rag stamp (it was not "
                "created by bertino-rag): use another collection name, or recreate=True to "
                "drop it"
            )
        if found is not None:
            stamp.check(found, collection)
        else:
            folder.mkdir(parents=True, exist_ok=True)
            _write_stamp(folder, stamp)
        config = self._config(stamp)
        if handle.shard is None:
            try:
                if (shard_dir / "edge_config.json").exists():
                    handle.shard = qe.EdgeShard.load(str(shard_dir), config)
                else:
                    handle.shard = qe.EdgeShard.create(str(shard_dir), config)
            except Exception as err:
                if "WouldBlock" in str(err) or "lock" in str(err).lower():
                    raise _locked_error(folder, err) from err
                raise StoreError(f"cannot open Qdrant Edge shard {shard_dir}: {err}") from err
        fields = {f"metadata.{field}": _PAYLOAD_TYPES[kind]
                  for field, kind in self.index_fields.items()}
        if stamp.lexical is not None:
            fields[TERMS] = qe.PayloadSchemaType.Integer
        for key, schema in fields.items():
            handle.shard.update(qe.UpdateOperation.create_field_index(key, schema))

    def collections(self) -> list[str]:
        if not self.root.is_dir():
            return []
        # a folder with a stamp or a shard is listed, even when it is damaged
        return sorted(f.name for f in self.root.iterdir()
                      if (f / STAMP_FILE).is_file() or (f / SHARD_DIR).is_dir())

    @property
    def location(self) -> str:
        return f"Qdrant Edge at {self.root}"

    @property
    def full_vector_dtype(self) -> str:
        return "float16"

    def _stored_stamp(self, collection: str) -> Stamp | None:
        folder = self._folder(collection)
        found = _read_stamp(folder)
        if found is None and (folder / SHARD_DIR / "edge_config.json").exists():
            raise StoreError(f"{folder} holds a Qdrant Edge shard without a bertino-rag stamp "
                             "(it was not created by bertino-rag)")
        return found

    def _release(self) -> None:
        if self._handle is not None:
            _REGISTRY.release(self._handle)
            self._handle = None

    def _drop(self) -> None:
        handle = self._handle
        assert handle is not None
        with handle.lock:
            handle.close()
            shutil.rmtree(handle.folder, ignore_errors=True)
        self._release()

    def close(self) -> None:
        """Flush and release the shard (when no other store of this process uses it)."""
        self._release()
        super().close()

    def build_index(self) -> bool:
        """Build HNSW graphs (and quantized codes) of the segments above ``index_threshold``
        points, merge small segments and vacuum deleted points; block until done.

        Returns True when anything was rebuilt. Searches stay exact and complete for points
        not yet in a graph.
        """
        shard = self.shard
        handle = self._handle
        assert handle is not None
        with handle.lock:
            return bool(shard.optimize())

    def indexed_fraction(self) -> float:
        """Share of the truncated vectors that are in an HNSW graph (1.0 when all are)."""
        info = self.shard.info()
        vectors = info.points_count * (2 if self.stamp.full_vectors else 1)
        return 1.0 if vectors == 0 else min(1.0, info.indexed_vectors_count / vectors)

    # ------------------------------------------------------------------ filters
    def _native_filter(self, filter: Any) -> Any:
        if isinstance(filter, qe.Filter):
            return filter
        raise TypeError(
            "QdrantEdgeStore takes filters as a dict or a qdrant_edge.Filter, "
            f"got {type(filter).__name__}"
        )

    def _compile(self, conditions: list[Node] | qe.Filter) -> Any:
        if isinstance(conditions, qe.Filter):
            return conditions
        return compile_conditions(conditions, _VOCABULARY)

    # ------------------------------------------------------------------ writes
    def _upsert(self, documents: list[Document], vectors: np.ndarray,
                full_vectors: np.ndarray | None,
                terms: list[dict[str, int]] | None = None) -> None:
        shard, name = self.shard, self.index_vector
        bm25 = lexical_config(self.stamp.lexical)[1] if terms is not None and \
            self.stamp.lexical else None
        done = 0
        for start in range(0, len(documents), self.batch_size):
            stop = min(len(documents), start + self.batch_size)
            points = []
            for i in range(start, stop):
                named: dict[str, Any] = {name: vectors[i]}
                if full_vectors is not None:
                    named[FULL] = full_vectors[i]
                d = documents[i]
                payload: dict[str, Any] = {"doc_id": d.id, "text": d.text,
                                           "metadata": d.metadata}
                if terms is not None and bm25 is not None:
                    indices, values = document_vector(terms[i], bm25, self._avgdl or 1.0)
                    named[LEXICAL] = qe.SparseVector(indices, values)
                    payload[TERMS] = indices
                points.append(qe.Point(point_id(d.id), named, payload))
            try:
                shard.update(qe.UpdateOperation.upsert_points(points))
            except Exception as err:
                self._written()  # a part of the batch may be written
                failed = [d.id for d in documents[start:]]
                raise StoreError(
                    f"Qdrant Edge upsert into {self.collection!r} failed after {done} of "
                    f"{len(documents)} documents ({err}); not written: {failed[:20]}"
                    f"{' ...' if len(failed) > 20 else ''}. Writes are idempotent: run the "
                    "same call again to complete it"
                ) from err
            done = stop
            self._written()

    def _written(self) -> None:
        if self._handle is not None:
            self._handle.written()

    def _upsert_lexical(self, documents: list[Document], vectors: np.ndarray,
                        full_vectors: np.ndarray | None, terms: list[dict[str, int]]) -> None:
        """Points with their dense and sparse vectors together, one write per batch."""
        self._fix_avgdl(terms)
        self._upsert(documents, vectors, full_vectors, terms)

    def _fix_avgdl(self, terms: list[dict[str, int]]) -> float:
        """The ``avgdl`` of the sparse values: the one kept in ``stamp.json``, or, on the first
        write with any term, this batch's mean length, written to ``stamp.json`` first."""
        if self._avgdl is not None:
            return self._avgdl
        avgdl = mean_length(terms)
        if avgdl <= 0:  # only empty documents so far: their vectors are empty either way
            return 1.0
        _write_stamp(self._folder(self.collection), self.stamp, avgdl=avgdl)
        self._avgdl = avgdl
        return avgdl

    @property
    def lexical_avgdl(self) -> float | None:
        self.stamp  # noqa: B018 - raises when not open
        return self._avgdl

    def _delete(self, ids: list[str]) -> None:
        try:
            self.shard.update(qe.UpdateOperation.delete_points([point_id(i) for i in ids]))
        finally:
            self._written()

    def _ids_where(self, conditions: list[Node]) -> list[str]:
        flt = self._compile(conditions)
        if flt is False:
            return []
        ids: list[str] = []
        offset: Any = None
        selector = qe.PayloadSelector.Include(["doc_id"])
        while True:
            page, offset = self.shard.scroll(qe.ScrollRequest(
                offset=offset, limit=self.batch_size, filter=flt, with_payload=selector,
                with_vector=False))
            ids.extend((r.payload or {})["doc_id"] for r in page)
            if offset is None:
                return ids

    # ------------------------------------------------------------------ reads
    def _count(self) -> int:
        return int(self.shard.count(qe.CountRequest(exact=True)))

    def _records(self, ids: list[str], with_full: bool) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for start in range(0, len(ids), self.batch_size):
            part: list[Any] = [point_id(i) for i in ids[start:start + self.batch_size]]
            for r in self.shard.retrieve(part, with_payload=True,
                                         with_vector=[FULL] if with_full else False):
                found[(r.payload or {}).get("doc_id", str(r.id))] = r
        return found

    def _params(self) -> qe.SearchParams | None:
        if self.exact:
            return qe.SearchParams(exact=True)
        quant = None
        if self.quantization is not None:
            quant = qe.QuantizationSearchParams(rescore=True, oversampling=self.oversampling)
        if quant is None and self.hnsw_ef is None:
            return None
        return qe.SearchParams(hnsw_ef=self.hnsw_ef, quantization=quant)

    def _points(self, requests: list[qe.QueryRequest]) -> list[list[Any]]:
        if len(requests) == 1:
            return [self.shard.query(requests[0])]
        return list(self.shard.query_batch(qe.QueryBatchRequest(requests)))

    def _query(self, requests: list[qe.QueryRequest]) -> list[list[Hit]]:
        return [hits_from_points(points) for points in self._points(requests)]

    #: queries per engine call in a batch search: requests (vectors as Python lists) and the
    #: engine's answers exist for one block at a time, so memory is flat in the batch size
    query_block: int = 256

    def _query_blocks(self, count: int,
                      request: Callable[[int], qe.QueryRequest]) -> list[list[Hit]]:
        out: list[list[Hit]] = []
        for start in range(0, count, self.query_block):
            stop = min(count, start + self.query_block)
            out.extend(self._query([request(i) for i in range(start, stop)]))
        return out

    def _search(self, vectors: np.ndarray, k: int, conditions: Any) -> list[list[Hit]]:
        flt = self._compile(conditions)
        if flt is False:
            return [[] for _ in vectors]
        name, params = self.index_vector, self._params()
        return self._query_blocks(len(vectors), lambda i: qe.QueryRequest(
            limit=k, query=qe.Query.Nearest(vectors[i].tolist(), using=name),
            filter=flt, params=params, with_payload=True))

    def _search_two_stage(self, vectors: np.ndarray, full_vectors: np.ndarray, k: int,
                          rerank_k: int, conditions: Any) -> list[list[Hit]]:
        """One Query API call per query: prefetch on the truncated vector, rescore on
        ``full`` (or, with ``two_stage="rescore"``, the generic search-fetch-rescore)."""
        if self.two_stage == "rescore":
            return super()._search_two_stage(vectors, full_vectors, k, rerank_k, conditions)
        flt = self._compile(conditions)
        if flt is False:
            return [[] for _ in vectors]
        name, params = self.index_vector, self._params()
        return self._query_blocks(len(vectors), lambda i: qe.QueryRequest(
            limit=k,
            prefetches=[qe.Prefetch(limit=rerank_k,
                                    query=qe.Query.Nearest(vectors[i].tolist(), using=name),
                                    filter=flt, params=params)],
            query=qe.Query.Nearest(full_vectors[i].tolist(), using=FULL),
            with_payload=True))

    def _sparse_requests(self, terms: list[list[str]], k: int, flt: Any,
                         payload: Any = True
                         ) -> tuple[list[qe.QueryRequest], list[dict[int, float]]]:
        """One sparse query per query: its distinct term indices weighted by their BM25 IDF
        over the live documents (see the module docstring), and those weights.

        Each asks for more than ``k`` points, with their sparse vectors, for
        :meth:`_lexical_hits` to cut at ``k`` by the one ranking rule.
        """
        vectors = [query_vector(t)[0] for t in terms]
        wanted = sorted({i for v in vectors for i in v})
        shard, handle = self.shard, self._handle
        assert handle is not None
        counts, n = handle.frequencies(
            wanted,
            lambda i: int(shard.count(qe.CountRequest(exact=True, filter=qe.Filter(
                must=[qe.FieldCondition(TERMS, match=qe.MatchValue(i))])))),
            self._count)
        df = np.asarray(counts, dtype=np.float64)
        idf = dict(zip(wanted, np.asarray(BM25.idf(df, n), dtype=np.float64).tolist(),
                       strict=True))
        weights = [{i: idf[i] for i in v} for v in vectors]
        limit = k + max(k, 10)
        return [qe.QueryRequest(limit=limit, query=qe.Query.Nearest(
                    qe.SparseVector(sorted(w), [w[i] for i in sorted(w)]), using=LEXICAL),
                    filter=flt, with_payload=payload, with_vector=[LEXICAL])
                for w in weights], weights

    @staticmethod
    def _lexical_hits(points: list[Any], weights: dict[int, float], k: int) -> list[Hit]:
        """The top ``k`` of a sparse query's points, scored again in float64 from their stored
        values: the engine sums in float32, so documents with the same terms and length (the
        same stored values) could come back in any order; summed here they tie exactly, and
        ties go by id as on every store."""
        hits = []
        for p in points:
            vec = (p.vector or {}).get(LEXICAL)
            if vec is None:
                continue
            score = math.fsum([weights[i] * float(x)
                               for i, x in zip(vec.indices, vec.values, strict=True)
                               if i in weights])
            if score > 0:
                payload = p.payload or {}
                hits.append(Hit(id=payload.get("doc_id", str(p.id)),
                                text=payload.get("text", ""), score=score,
                                metadata=payload.get("metadata") or {}))
        hits.sort(key=lambda h: ranking_key(h.score, h.id))
        return hits[:k]

    def _lexical_search(self, terms: list[list[str]], k: int, conditions: Any
                        ) -> list[list[Hit]]:
        flt = self._compile(conditions)
        if flt is False:
            return [[] for _ in terms]
        requests, weights = self._sparse_requests(terms, k, flt)
        return [self._lexical_hits(points, w, k)
                for points, w in zip(self._points(requests), weights, strict=True)]

    def _candidate_points(self, query: HybridQuery, flt: Any, payload: Any
                          ) -> tuple[list[list[Any]], list[list[Hit]]]:
        """Both sides' candidates in one batch query: the dense requests on the truncated
        vector (their points, with ``payload``), then the sparse ones as lexical hits
        (queries with no term ask nothing)."""
        d = query.dense
        name, params = self.index_vector, self._params()
        asked = [i for i, t in enumerate(query.terms) if t]
        sparse, weights = self._sparse_requests([query.terms[i] for i in asked], d.k, flt,
                                                payload=payload)
        results = self._points(
            [qe.QueryRequest(limit=d.k, query=qe.Query.Nearest(v.tolist(), using=name),
                             filter=flt, params=params, with_payload=payload)
             for v in d.vectors] + sparse)
        lexical: list[list[Hit]] = [[] for _ in query.terms]
        for i, points, w in zip(asked, results[len(d.vectors):], weights, strict=True):
            lexical[i] = self._lexical_hits(points, w, d.k)
        return results[: len(d.vectors)], lexical

    def _hybrid_candidates(self, query: HybridQuery) -> tuple[list[list[Hit]], list[list[Hit]]]:
        """:meth:`_candidate_points` with payloads, for the generic funnel."""
        flt = self._compile(query.dense.conditions)
        if flt is False:
            return [[] for _ in query.terms], [[] for _ in query.terms]
        points, lexical = self._candidate_points(query, flt, True)
        return [hits_from_points(p) for p in points], lexical

    def _hybrid_search(self, query: HybridQuery) -> list[list[Hit]]:
        """The funnel with the engine doing the vector work: both sides' candidates in one
        batch query that reads only their ``doc_id``, the union of each query's candidates
        scored on the full vectors by the engine (a ``Nearest`` query on ``full`` restricted
        to the union's point ids, as the two-stage prefetch scores them), the fusion, then
        the payloads of the final hits only. Reading every candidate's payload and full vector
        into Python instead made this the most of the query's time (profiled at 20k points).
        ``two_stage="rescore"`` keeps the generic funnel, rescored in numpy."""
        d = query.dense
        if d.full is None or self.two_stage == "rescore":
            return super()._hybrid_search(query)
        flt = self._compile(d.conditions)
        if flt is False:
            return [[] for _ in query.terms]
        ids_only = qe.PayloadSelector.Include(["doc_id"])
        points, lexical = self._candidate_points(query, flt, ids_only)
        unions: list[set[Any]] = [  # point ids as the engine gives them: uuid strings
            {*(str(p.id) for p in pts), *(point_id(h.id) for h in lex)}
            for pts, lex in zip(points, lexical, strict=True)]
        asked = [i for i, u in enumerate(unions) if u]
        scored = self._points([
            qe.QueryRequest(limit=len(unions[i]),
                            query=qe.Query.Nearest(d.full[i].tolist(), using=FULL),
                            filter=qe.Filter(must=[qe.HasIdCondition(unions[i])]),
                            with_payload=ids_only)
            for i in asked]) if asked else []
        dense: list[list[Hit]] = [[] for _ in query.terms]
        for i, found in zip(asked, scored, strict=True):
            dense[i] = hits_from_points(found)
        return self._with_payloads([query.fusion.fuse(den, lex, query.k)
                                    for den, lex in zip(dense, lexical, strict=True)])

    def _export(self, batch_size: int) -> Iterator[tuple[list[Document], np.ndarray,
                                                         np.ndarray | None]]:
        full = self.stamp.full_vectors
        offset: Any = None
        while True:
            page, offset = self.shard.scroll(qe.ScrollRequest(
                offset=offset, limit=batch_size, with_payload=True, with_vector=True))
            if page:
                rows = [_Record(r) for r in page]
                docs = [Document(text=r.payload["text"], id=r.payload["doc_id"],
                                 metadata=r.payload.get("metadata") or {}) for r in rows]
                index = np.asarray([r.vector[self.index_vector] for r in rows],
                                   dtype=np.float32)
                fulls = (np.asarray([r.vector[FULL] for r in rows], dtype=np.float32)
                         if full else None)
                yield docs, index, fulls
            if offset is None:
                return

    def __repr__(self) -> str:
        return f"QdrantEdgeStore({self.root}, collection={self._collection!r})"


class _Record:
    """A scrolled record with its payload and named vectors as plain dicts."""

    __slots__ = ("payload", "vector")

    def __init__(self, record: Any) -> None:
        self.payload: dict[str, Any] = record.payload or {}
        self.vector: dict[str, Any] = record.vector or {}


def _kb(points: int, dim: int) -> int:
    """Size in KB of ``points`` float32 vectors of ``dim`` (Edge thresholds are in KB)."""
    return max(1, points * dim * 4 // 1024)


def _quantization(kind: Quantization) -> Any:
    if kind is None:
        return None
    if kind == "int8":
        return qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, quantile=0.99,
                                           memory=qe.Memory.Cached)
    bits = {"turbo8": qe.TurboQuantBitSize.Bits8, "turbo4": qe.TurboQuantBitSize.Bits4,
            "turbo2": qe.TurboQuantBitSize.Bits2}[kind]
    return qe.TurboQuantQuantizationConfig(bits=bits, memory=qe.Memory.Cached)


def _read_sidecar(folder: Path) -> dict[str, Any]:
    """The content of ``stamp.json``; ``{}`` when there is none."""
    path = folder / STAMP_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        raise StoreError(f"cannot read the stamp {path}: {err}") from err
    if not isinstance(data, dict) or "stamp" not in data:
        raise StoreError(f"cannot read the stamp {path}: no 'stamp' entry")
    return data


def _read_stamp(folder: Path) -> Stamp | None:
    data = _read_sidecar(folder)
    return Stamp.from_dict(data["stamp"]) if data else None


def _write_stamp(folder: Path, stamp: Stamp, avgdl: float | None = None) -> None:
    """Write ``stamp.json`` atomically: a temporary file, fsynced, renamed."""
    path = folder / STAMP_FILE
    tmp = path.with_name(path.name + ".tmp")
    entry: dict[str, Any] = {"stamp": stamp.to_dict(), "index_vector": f"dim{stamp.index_dim}",
                             "full_vector": FULL if stamp.full_vectors else None, "version": 1}
    if stamp.lexical is not None:
        entry["lexical_vector"] = LEXICAL
    if avgdl is not None:
        entry["avgdl"] = avgdl
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(entry, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
