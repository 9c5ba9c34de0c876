"""Qdrant Edge store: the Qdrant engine itself, in this process, on a local folder.

``qdrant-edge-py`` (package ``qdrant_edge``) runs Qdrant's storage and search engine as a
library: HNSW, quantization, payload indexes, float16 vectors, the Query API with prefetch,
a write-ahead log. Unlike qdrant-client's local mode (a pure-Python re-implementation with
exact search only) it searches 100k points in milliseconds.

Layout of ``QdrantEdgeStore(path=DIR)``, one folder per collection (``DIR/<collection>/``):

- ``shard/``: the Edge shard, with the same point layout as :class:`~.client.QdrantStore` on
  a server: vector ``dim<D>`` (the truncated vector, cosine, HNSW graph, in RAM; optionally
  quantized), vector ``full`` (only when the stamp keeps full vectors: cosine, ``float16``,
  on disk, no graph), payload ``{"doc_id", "text", "metadata"}``, point id ``uuid5(doc_id)``;
- sparse vector ``lexical`` (only for a hybrid collection, ``Stamp.lexical`` set): the
  library's sparse encoding of the analyzer's terms (:func:`~bertino_rag.lexical.document_vector`,
  BM25's term-frequency part with the ``avgdl`` fixed by the first write, as in
  :class:`~.client.QdrantStore`), written by the same upsert as the dense vectors, and the
  document's term indices in the payload field ``lexical_terms`` (integer index). The query
  weighs each term by :meth:`~bertino_rag.lexical.BM25.idf` of its live document frequency,
  counted on that index: Edge's own ``Modifier.Idf`` counts deleted and replaced points until
  their segment is vacuumed, which would make scores drift from MemoryStore's after every
  delete or update. The counts are cached per open shard until the next write (only one
  process may open it: :class:`~.edge_shard.Shard`);
- ``stamp.json``: the :class:`~bertino_rag.types.Stamp` (an Edge shard has no collection
  metadata), written atomically before the shard is created, and, for a hybrid collection, the
  ``avgdl`` of its sparse values.

What the engine does for the funnel (:mod:`bertino_rag.search`), declared as capabilities
unless ``two_stage="rescore"`` asks for numpy's scores: two-stage search is one Query API call
(``prefetch`` on ``dim<D>`` with ``rescore_k`` and the filter, then ``query`` on ``full``:
``rescore``), and the hybrid union of each query is scored on the full vectors by the engine (a
``Nearest`` query on ``full`` restricted to the union's point ids: ``score``). Reading every
candidate's payload and full vector into Python instead made this the most of a hybrid query's
time (profiled at 20k points). Both sides' candidates come in one batch query
(``joint_candidates``). Searches read the ``doc_id`` payload only, and the funnel reads the
documents of the final hits once (the prefetch query, whose results are the final hits, reads
them in the same call).

HNSW: Edge has no background optimizer; :meth:`QdrantEdgeStore.build_index` (called by
``Retriever.index`` after a bulk write) builds the graph of every segment above
``index_threshold`` points. Smaller segments, and points written since the last build, are
searched exactly (brute force), so results are always complete. A build holds the GIL and
blocks the process for its duration (it grows with the number of points), which is why it is
not run in a background thread. A build that is killed leaves the previous segments in place:
the store opens and searches as before.

One process at a time: a second process opening the same collection gets a
:class:`~bertino_rag.errors.StoreError` at once (Edge locks the shard's WAL). Stores of one
process on the same folder share one shard.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np

from ..._deps import require
from ...errors import StoreError
from ...lexical import BM25, query_vector
from ...search.ranked import Ranked, ranked
from ...types import Stamp
from ...validation import positive_int
from ..protocol import Capabilities, WriteBatch
from ..retry import Retry
from .common import (
    DOCUMENT_KEYS,
    FULL,
    LEXICAL,
    FilterVocabulary,
    PointStore,
    doc_id_of,
    parse_index_fields,
    payload_document,
    point_id,
    ranked_points,
    remember,
)

require("qdrant_edge", "edge")

import qdrant_edge as qe  # noqa: E402

from .edge_replace import _EdgeReplacement  # noqa: E402
from .edge_shard import (  # noqa: E402
    QUANTIZATIONS,
    REGISTRY,
    SHARD_DIR,
    STAMP_FILE,
    EdgeIntent,
    Quantization,
    Shard,
    as_damage,
    edge_config,
    has_foreign_shard,
    open_shard,
    read_sidecar,
    read_stamp,
    write_stamp,
)

__all__ = ["QdrantEdgeStore"]

T = TypeVar("T")
#: payload field with a hybrid document's term indices (the document frequencies are counted on it)
TERMS = "lexical_terms"
#: searched exactly below this many points per segment; HNSW above
DEFAULT_INDEX_THRESHOLD = 20_000

TwoStage = Literal["prefetch", "rescore"]
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
_DOC_ID = qe.PayloadSelector.Include(["doc_id"])
_DOCUMENTS = qe.PayloadSelector.Include(DOCUMENT_KEYS)


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


class QdrantEdgeStore(_EdgeReplacement, EdgeIntent, PointStore):
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
        two_stage: ``"prefetch"`` (the engine scores candidates on ``full``: one Query API
            call; scores equal numpy's up to float rounding) or ``"rescore"`` (the funnel
            reads the candidates' full vectors and rescores them in numpy: the scores of
            :class:`~bertino_rag.stores.MemoryStore` bit for bit).
        batch_size: points per write (and read) operation.

    Example:
        >>> store = QdrantEdgeStore("./edge_index", quantization="int8")  # doctest: +SKIP
        >>> Retriever(dim=128, store=store)  # doctest: +SKIP
    """

    kind = "qdrant-edge"
    vocabulary = _VOCABULARY
    filter_type = qe.Filter
    filter_name = "qdrant_edge.Filter"
    #: queries per engine call in a batch search: requests (vectors as Python lists) and the
    #: engine's answers exist for one block at a time, so memory is flat in the batch size
    query_block: int = 256

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
        if quantization not in (None, *QUANTIZATIONS):
            raise ValueError(
                f"quantization must be one of {QUANTIZATIONS} or None, got {quantization!r}"
            )
        self.index_threshold = positive_int(index_threshold, "index_threshold")
        self.hnsw_m = positive_int(hnsw_m, "hnsw_m")
        self.hnsw_ef_construct = positive_int(hnsw_ef_construct, "hnsw_ef_construct")
        self.batch_size = positive_int(batch_size, "batch_size")
        self.hnsw_ef = None if hnsw_ef is None else positive_int(hnsw_ef, "hnsw_ef")
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
        self.exact = bool(exact)
        self.oversampling = oversampling or (
            _OVERSAMPLING[quantization] if quantization else None
        )
        self.two_stage = two_stage
        self._handle: Shard | None = None
        self._avgdl = None
        #: the one policy of every engine call: nothing is transient in process, and the
        #: engine raises plain Exceptions, which become StoreError (a failed write:
        #: StoreWriteError with the ids not written)
        self.retry = Retry("Qdrant Edge", str(self.root), engine_errors=(Exception,))

    @property
    def capabilities(self) -> Capabilities:
        engine = self.two_stage == "prefetch"
        return Capabilities(lexical=True, rescore=engine, score=engine, joint_candidates=True,
                            atomic_replace=True, intent=True)

    # ------------------------------------------------------------------ plumbing
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

    def _call(self, what: str, method: Callable[..., T], *args: Any) -> T:
        """``method(*args)`` of the open shard through the store's retry policy."""
        try:
            return self.retry.call(functools.partial(method, *args), what)
        except StoreError as err:
            raise as_damage(err, self._handle) or err from err.__cause__

    @property
    def location(self) -> str:
        return f"Qdrant Edge at {self.root}"

    @property
    def full_vector_dtype(self) -> str:
        return "float16"

    # ------------------------------------------------------------------ lifecycle
    def _open(self, collection: str, stamp: Stamp, recreate: bool) -> None:
        folder = self._folder(collection)
        self._release()
        handle = REGISTRY.acquire(folder)
        try:
            with handle.lock:
                self._open_folder(handle, collection, stamp, recreate)
        except BaseException:
            REGISTRY.release(handle)
            raise
        self._handle = handle

    def _open_folder(self, handle: Shard, collection: str, stamp: Stamp,
                     recreate: bool) -> None:
        folder = handle.folder
        if recreate:
            handle.close(seal=False)  # and forgets its cached frequencies
            shutil.rmtree(folder, ignore_errors=True)
        found = read_stamp(folder)
        self._avgdl = read_sidecar(folder).get("avgdl") if found is not None else None
        shard_dir = folder / SHARD_DIR
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
            write_stamp(folder, stamp)
        if handle.shard is None:
            handle.shard = open_shard(handle, edge_config(
                stamp, self.quantization, self.index_threshold, self.hnsw_m,
                self.hnsw_ef_construct))
        fields = {f"metadata.{field}": _PAYLOAD_TYPES[kind]
                  for field, kind in self.index_fields.items()}
        if stamp.lexical is not None:
            fields[TERMS] = qe.PayloadSchemaType.Integer
        for key, schema in fields.items():
            self._call("payload index", handle.shard.update,
                       qe.UpdateOperation.create_field_index(key, schema))

    def _collections(self) -> list[str]:
        if not self.root.is_dir():
            return []
        # a folder with a stamp or a shard is listed, even when it is damaged
        return [f.name for f in self._collection_folders()
                if (f / STAMP_FILE).is_file() or (f / SHARD_DIR).is_dir()]

    def _stored_stamp(self, collection: str) -> Stamp | None:
        folder = self._folder(collection)
        if has_foreign_shard(folder):
            raise StoreError(f"{folder} holds a Qdrant Edge shard without a bertino-rag stamp "
                             "(it was not created by bertino-rag)")
        return read_stamp(folder)

    def _release(self) -> None:
        if self._handle is not None:
            REGISTRY.release(self._handle)
            self._handle = None

    def _drop(self) -> None:
        handle = self._handle
        assert handle is not None
        with handle.lock:
            handle.close(seal=False)
            shutil.rmtree(handle.folder, ignore_errors=True)
            if self._replacing:  # and the collection it was to replace
                shutil.rmtree(self._folder(self.collection), ignore_errors=True)
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
        assert self._handle is not None
        with self._handle.lock:
            return bool(self._call("build index", shard.optimize))

    def indexed_fraction(self) -> float:
        """Share of the truncated vectors that are in an HNSW graph (1.0 when all are)."""
        info = self._call("info", self.shard.info)
        vectors = info.points_count * (2 if self.stamp.full_vectors else 1)
        return 1.0 if vectors == 0 else min(1.0, info.indexed_vectors_count / vectors)

    # ------------------------------------------------------------------ writes
    def _write(self, batch: WriteBatch) -> None:
        """Points with their dense (and sparse) vectors, ``batch_size`` an operation; a failed
        operation names its documents and the later ones as not stored."""
        documents, name = batch.documents, self.index_vector
        ids = [d.id for d in documents]
        sparse = None
        if batch.terms is not None:
            try:
                sparse = self._document_vectors(batch.terms)
            except Exception as err:
                raise self.retry.failed_write(err, ids, "upsert") from err
        shard = self.shard
        for start in range(0, len(documents), self.batch_size):
            points = []
            for i in range(start, min(len(documents), start + self.batch_size)):
                named: dict[str, Any] = {name: batch.vectors[i]}
                if batch.full is not None:
                    named[FULL] = batch.full[i]
                d = documents[i]
                payload: dict[str, Any] = {"doc_id": d.id, "text": d.text,
                                           "metadata": d.metadata}
                if sparse is not None:
                    indices, values = sparse[i]
                    named[LEXICAL] = qe.SparseVector(indices, values)
                    payload[TERMS] = indices
                points.append(qe.Point(point_id(d.id), named, payload))
            try:
                self.retry.write(functools.partial(
                    shard.update, qe.UpdateOperation.upsert_points(points)), ids[start:],
                    "upsert")
            finally:
                self._written()  # a part of the batch may be written

    def _written(self) -> None:
        if self._handle is not None:
            self._handle.written()

    def _stored_avgdl(self) -> float | None:
        assert self._handle is not None  # the open collection's folder, or its replacement's
        avgdl = read_sidecar(self._handle.folder).get("avgdl")
        return None if avgdl is None else float(avgdl)

    def _keep_avgdl(self, avgdl: float) -> None:
        assert self._handle is not None
        write_stamp(self._handle.folder, self.stamp, avgdl=avgdl)

    def _delete(self, ids: list[str]) -> None:
        try:
            self._call("delete", self.shard.update,
                       qe.UpdateOperation.delete_points([point_id(i) for i in ids]))
        finally:
            self._written()

    # ------------------------------------------------------------------ reads
    def _count(self) -> int:
        return int(self._call("count", self.shard.count, qe.CountRequest(exact=True)))

    def _retrieve(self, pids: list[str], documents: bool, full: bool) -> list[Any]:
        return self._call("retrieve", self.shard.retrieve, list(pids),
                          qe.PayloadSelector.Include(DOCUMENT_KEYS) if documents else False,
                          [FULL] if full else False)

    def _scroll(self, offset: Any, limit: int, flt: Any, payload: list[str] | bool,
                vectors: list[str] | bool) -> tuple[list[Any], Any]:
        selector = qe.PayloadSelector.Include(payload) if isinstance(payload, list) else payload
        return self._call("scroll", self.shard.scroll, qe.ScrollRequest(
            offset=offset, limit=limit, filter=flt, with_payload=selector, with_vector=vectors))

    # ------------------------------------------------------------------ search
    def _params(self) -> qe.SearchParams | None:
        if self.exact:
            return qe.SearchParams(exact=True)
        quant = None
        if self.quantization is not None:
            quant = qe.QuantizationSearchParams(rescore=True, oversampling=self.oversampling)
        if quant is None and self.hnsw_ef is None:
            return None
        return qe.SearchParams(hnsw_ef=self.hnsw_ef, quantization=quant)

    def _run(self, count: int, request: Callable[[int], qe.QueryRequest],
             read: Callable[[int, list[Any]], T]) -> list[T]:
        """``read(i, points)`` of the answer to each of ``count`` requests, built and run
        ``query_block`` at a time."""
        out: list[T] = []
        shard = self.shard
        for start in range(0, count, self.query_block):
            block = [request(i) for i in range(start, min(count, start + self.query_block))]
            if len(block) == 1:
                answers = [self._call("query", shard.query, block[0])]
            else:
                answers = self._call("query", shard.query_batch, qe.QueryBatchRequest(block))
            out.extend(read(start + j, points) for j, points in enumerate(answers))
        return out

    def _nearest(self, vector: np.ndarray, k: int, flt: Any,
                 documents: bool = False) -> qe.QueryRequest:
        return qe.QueryRequest(limit=k, query=qe.Query.Nearest(vector.tolist(),
                                                               using=self.index_vector),
                               filter=flt, params=self._params(),
                               with_payload=_DOCUMENTS if documents else _DOC_ID)

    def _knn(self, vectors: np.ndarray, k: int, conditions: Any, *,
             documents: bool = False) -> list[Ranked]:
        flt = self._compile(conditions)
        if flt is False:
            return [Ranked.empty() for _ in vectors]
        return self._run(len(vectors), lambda i: self._nearest(vectors[i], k, flt, documents),
                         lambda _, points: ranked_points(points, documents=documents))

    def _knn_rescored(self, vectors: np.ndarray, full: np.ndarray, k: int, n: int,
                      conditions: Any, *, documents: bool = False) -> list[Ranked]:
        """One Query API call per query: prefetch ``n`` on the truncated vector, the best
        ``k`` of them on ``full``, with their documents when ``documents`` asks (they are the
        final hits: reading them in the same call saves a second one)."""
        flt = self._compile(conditions)
        if flt is False:
            return [Ranked.empty() for _ in vectors]
        name, params = self.index_vector, self._params()
        return self._run(len(vectors), lambda i: qe.QueryRequest(
            limit=k,
            prefetches=[qe.Prefetch(limit=n, query=qe.Query.Nearest(vectors[i].tolist(),
                                                                    using=name),
                                    filter=flt, params=params)],
            query=qe.Query.Nearest(full[i].tolist(), using=FULL),
            with_payload=_DOCUMENTS if documents else _DOC_ID),
            lambda _, points: ranked_points(points, documents=documents))

    def _score(self, candidates: Sequence[Ranked], full_queries: np.ndarray) -> list[Ranked]:
        """Each query's candidates scored on ``full`` by the engine: a ``Nearest`` query on
        ``full`` restricted to their point ids, as the two-stage prefetch scores them; a
        candidate deleted meanwhile is not found."""
        asked = [i for i, c in enumerate(candidates) if len(c)]
        # point ids as the engine takes them (its set is of int | UUID | str)
        unions: list[set[Any]] = [{point_id(x) for x in candidates[i].ids} for i in asked]
        out = [Ranked.empty() for _ in candidates]
        for i, got in zip(asked, self._run(len(asked), lambda j: qe.QueryRequest(
                limit=len(unions[j]), query=qe.Query.Nearest(
                    full_queries[asked[j]].tolist(), using=FULL),
                filter=qe.Filter(must=[qe.HasIdCondition(unions[j])]), with_payload=_DOC_ID),
                lambda _, points: ranked_points(points)), strict=True):
            out[i] = got
        return out

    def _sparse(self, terms: list[list[str]], k: int, flt: Any, documents: bool = False
                ) -> tuple[Callable[[int], qe.QueryRequest], list[dict[int, float]]]:
        """One sparse query per query (by position): its distinct term indices weighted by
        their BM25 IDF over the live documents (see the module docstring), and those weights.

        Each asks for more than ``k`` points, with their sparse vectors, for
        :func:`_lexical_ranked` to cut at ``k`` by the one ranking rule.
        """
        vectors = [query_vector(t)[0] for t in terms]
        wanted = sorted({i for v in vectors for i in v})
        shard, handle = self.shard, self._handle
        assert handle is not None
        counts, n = ([], 0) if not wanted else handle.frequencies(
            wanted,
            lambda i: int(self._call("count", shard.count, qe.CountRequest(
                exact=True, filter=qe.Filter(
                    must=[qe.FieldCondition(TERMS, match=qe.MatchValue(i))])))),
            self._count)
        df = np.asarray(counts, dtype=np.float64)
        idf = dict(zip(wanted, np.asarray(BM25.idf(df, n), dtype=np.float64).tolist(),
                       strict=True))
        weights = [{i: idf[i] for i in v} for v in vectors]
        limit = k + max(k, 10)
        return (lambda j: qe.QueryRequest(
            limit=limit, query=qe.Query.Nearest(qe.SparseVector(
                sorted(weights[j]), [weights[j][i] for i in sorted(weights[j])]), using=LEXICAL),
            filter=flt, with_payload=_DOCUMENTS if documents else _DOC_ID,
            with_vector=[LEXICAL])), weights

    def _bm25(self, terms: list[list[str]], k: int, conditions: Any, *,
              documents: bool = False) -> list[Ranked]:
        flt = self._compile(conditions)
        if flt is False:
            return [Ranked.empty() for _ in terms]
        request, weights = self._sparse(terms, k, flt, documents)
        return self._run(len(terms), request,
                         lambda j, points: _lexical_ranked(points, weights[j], k, documents))

    def _candidates(self, vectors: np.ndarray, terms: list[list[str]], n: int,
                    conditions: Any) -> tuple[list[Ranked], list[Ranked]]:
        """Both sides' candidates in one batch query: the dense requests on the truncated
        vector, then the sparse ones (queries with no term ask nothing)."""
        flt = self._compile(conditions)
        if flt is False:
            return [Ranked.empty() for _ in vectors], [Ranked.empty() for _ in terms]
        m = len(vectors)
        asked = [i for i, t in enumerate(terms) if t]
        sparse, weights = self._sparse([terms[i] for i in asked], n, flt)
        found = self._run(
            m + len(asked),
            lambda i: self._nearest(vectors[i], n, flt) if i < m else sparse(i - m),
            lambda i, points: ranked_points(points) if i < m
            else _lexical_ranked(points, weights[i - m], n))
        lexical = [Ranked.empty() for _ in terms]
        for i, got in zip(asked, found[m:], strict=True):
            lexical[i] = got
        return found[:m], lexical

    def __repr__(self) -> str:
        return f"QdrantEdgeStore({self.root}, collection={self._collection!r})"


def _lexical_ranked(points: list[Any], weights: dict[int, float], k: int,
                    documents: bool = False) -> Ranked:
    """The top ``k`` of a sparse query's points, scored again in float64 from their stored
    values: the engine sums in float32, so documents with the same terms and length (the same
    stored values) could come back in any order; summed here they tie exactly, and ties go by
    id as on every store."""
    kept, scores = [], []
    for p in points:
        vec = (p.vector or {}).get(LEXICAL)
        if vec is None:
            continue
        score = math.fsum([weights[i] * float(x)
                           for i, x in zip(vec.indices, vec.values, strict=True)
                           if i in weights])
        if score > 0:
            kept.append(p)
            scores.append(score)
    ids = [doc_id_of(p) for p in kept]
    if documents:
        return ranked(ids, scores, k=k, documents=[
            payload_document(i, p.payload) for i, p in zip(ids, kept, strict=True)])
    remember(ids, kept)
    return ranked(ids, scores, k=k)
