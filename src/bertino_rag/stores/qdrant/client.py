"""Qdrant store: Matryoshka two-stage search on named vectors, in memory, on disk or on a server.

Collection layout (one point per document, id ``uuid5(doc_id)``):

- vector ``dim<D>`` (e.g. ``dim128``): the truncated vector, cosine, HNSW-indexed, in RAM;
  optionally scalar-int8 or binary quantized, and then the codes stay in RAM and the float32
  originals go to disk (read only to rescore the oversampled candidates);
- vector ``full`` (only when the stamp keeps full vectors): the full vector, cosine, on disk,
  ``float16``, with no HNSW graph (``m=0``): it is only read to rescore candidates;
- payload ``{"doc_id": original id, "text": ..., "metadata": {...}, "document": ...}``;
  filters apply to ``metadata.<field>``; ``document`` is the document a point belongs to (its
  chunk's ``doc_id`` metadata, else its own id), the key of Qdrant's group API for
  ``search(..., group_by="document")``. Collections created before it (layout version 1) may
  hold points without it: they are grouped by the funnel's generic stage;
- sparse vector ``lexical`` (only for a hybrid collection, ``Stamp.lexical`` set): the
  document's terms from the library's analyzer as :func:`~bertino_rag.lexical.document_vector`
  (the BM25 term-frequency part per :func:`~bertino_rag.lexical.term_index`), with
  ``modifier=IDF``: Qdrant weighs each query term by ``log(1 + (N - df + 0.5) / (df + 0.5))``
  over the points that have the vector, the IDF of :class:`~bertino_rag.lexical.BM25`. A query
  is its distinct terms with weight 1, so the score is the document's BM25 score with the
  ``avgdl`` fixed by the first write (:meth:`~.common.PointStore._fix_avgdl`). Written by the
  same upsert as the dense vectors, removed with them by delete;
- the :class:`~bertino_rag.types.Stamp` in the collection ``metadata`` under ``bertino_rag``
  (where the client or server has none, before 1.16, in a companion collection
  ``<name>__bertino_stamp``), with the ``avgdl`` of a hybrid collection.

Full vectors are rounded to float16 before upload on every location: the server stores them as
``FLOAT16``, local mode holds the same values in float32, so rescored scores are the same
everywhere and match :class:`~bertino_rag.stores.MemoryStore` (which stores float16 too).

The funnel (:mod:`bertino_rag.search`) runs every search; what the engine does faster is
declared as capabilities. Searches ask for the ``doc_id`` payload only, and the funnel reads
the documents of the final hits once (the prefetch query, whose results are the final hits,
reads them in the same call).

- **server** (``url=``): two-stage search is one Query API call per batch (``prefetch`` on
  ``dim<D>`` with ``limit=rescore_k`` and the filter, then ``query`` on ``full``:
  ``rescore``); hybrid search takes both sides' candidates in one ``query_batch_points`` call
  (``joint_candidates``); ``group_by="document"`` in single-stage search is the group API
  (``grouping``). ANN (HNSW), quantization and payload indexes are used.
- **local mode** (``QdrantStore()`` or ``path=``): qdrant-client's pure-Python engine
  (:mod:`.local`). It computes a ``prefetch`` query in Python at full dimension, about 1 s per
  query at 100k points against about 0.13 s for a plain 128-d query, so two-stage search is a
  truncated query and the funnel's numpy rescoring of the candidates' full vectors (same
  results); unfiltered lexical queries are scored in numpy (:class:`.local.LocalLexical`).
  Local mode suits tests, demos and up to ~20k points; beyond that, or for concurrent writers,
  HNSW, quantization or sub-10 ms latency, run a Qdrant server (``docker run -p 6333:6333
  qdrant/qdrant``) and pass ``url=``.

.. warning::
   qdrant-client's local mode stores points with Python's ``pickle``: opening a local-mode
   folder runs any code planted in it (see :mod:`.local`). Open only folders you trust.
"""

from __future__ import annotations

import functools
import os
import threading
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import numpy as np

from ..._deps import require
from ...indexing.documents import document_of
from ...lexical import query_vector
from ...search.ranked import Ranked, ranking_key
from ...types import Document, Hit
from ...validation import positive_int
from ..locations import safe_location
from ..protocol import Capabilities, WriteBatch
from ..retry import Retry
from .common import (
    DOCUMENT_KEYS,
    FULL,
    LEXICAL,
    FilterVocabulary,
    doc_ids_of,
    parse_index_fields,
    point_id,
    ranked_bare,
    ranked_points,
)

require("qdrant_client", "qdrant")

from qdrant_client import QdrantClient, models  # noqa: E402
from qdrant_client.http.exceptions import UnexpectedResponse  # noqa: E402
from qdrant_client.local.qdrant_local import QdrantLocal  # noqa: E402

from .connection import (  # noqa: E402
    GROUP_KEY,
    LAYOUT_VERSION,
    QdrantConnection,
    check_url,
    is_transient,
)
from .local import LocalLexical, bump, generation  # noqa: E402

__all__ = ["QdrantStore", "point_id"]

_OVERSAMPLING = {"int8": 2.0, "binary": 3.0}

Quantization = Literal["int8", "binary"] | None
TwoStage = Literal["auto", "prefetch", "rescore"]

_VOCABULARY = FilterVocabulary(
    filter=models.Filter,
    field=lambda key, **kw: models.FieldCondition(key=key, **kw),
    match=lambda value: models.MatchValue(value=value),
    match_any=lambda values: models.MatchAny(any=values),
    range=models.Range,
    is_empty=lambda key: models.IsEmptyCondition(is_empty=models.PayloadField(key=key)),
)


class QdrantStore(QdrantConnection):
    """Qdrant behind the store protocol: in memory, in a folder, or on a server.

    The constructor only validates its arguments; the client is built on first need
    (:meth:`open`, :meth:`collections`, :meth:`stored_stamp`, :attr:`client`), where an
    unreachable server raises :class:`~bertino_rag.errors.StoreConnectionError`.

    Args:
        path: folder for embedded local mode (persisted).
        url: server or cluster URL, e.g. ``http://localhost:6333``.
        api_key: server API key; default ``$QDRANT_API_KEY``. Never logged or shown.
        client: an existing ``QdrantClient`` (server or local) to use instead.
        quantization: ``"int8"`` (scalar) or ``"binary"`` quantization of the truncated
            vector, searched with oversampling and rescoring; ``None`` for none. Server only.
        index_fields: metadata fields to build payload indexes on (server only): a mapping
            field -> type (``keyword``, ``integer``, ``float``, ``bool``, ``datetime``,
            ``text``, ``uuid``), or a list of keyword fields.
        two_stage: ``"prefetch"`` (one Query API call), ``"rescore"`` (search, fetch full
            vectors, rescore in numpy) or ``"auto"``: prefetch on a server, rescore in local
            mode, where it is several times faster.
        batch_size: points per write (and read) request.
        parallel: concurrent write requests to a server.
        max_retries: retries of a write or read after a transient error (timeout, 5xx, 429).
        hnsw_config: HNSW parameters of the truncated vector (server).
        hnsw_ef: HNSW search beam (server); ``None`` for the collection default.
        oversampling: candidates oversampling with quantization (default 2 for int8, 3 for
            binary).
        timeout: request timeout in seconds (server).
        prefer_grpc: talk gRPC to the server.

    Raises:
        ValueError: when more than one of ``path``, ``url`` and ``client`` is given, or
            ``url`` is not an http(s) URL.

    .. warning::
       With ``path=``, qdrant-client's local mode unpickles the folder's points: opening a
       folder from elsewhere runs any code planted in it. Open only folders you trust.

    Example:
        >>> store = QdrantStore(url="http://localhost:6333", quantization="int8")  # doctest: +SKIP
        >>> Retriever(dim=128, store=store)  # doctest: +SKIP
    """

    kind = "qdrant"
    vocabulary = _VOCABULARY
    filter_type = models.Filter
    filter_name = "qdrant_client.models.Filter"
    #: first retry delay in seconds (doubles per retry)
    _retry_base: float = 0.5

    def __init__(
        self,
        *,
        path: str | os.PathLike[str] | None = None,
        url: str | None = None,
        api_key: str | None = None,
        client: QdrantClient | None = None,
        quantization: Quantization = None,
        index_fields: Mapping[str, str] | Sequence[str] | None = None,
        two_stage: TwoStage = "auto",
        batch_size: int = 256,
        parallel: int = 4,
        max_retries: int = 4,
        hnsw_config: models.HnswConfigDiff | None = None,
        hnsw_ef: int | None = None,
        oversampling: float | None = None,
        timeout: int | None = None,
        prefer_grpc: bool = False,
    ) -> None:
        super().__init__()
        given = [n for n, v in (("path", path), ("url", url), ("client", client)) if v is not None]
        if len(given) > 1:
            raise ValueError(
                f"QdrantStore: give one location, got {' and '.join(given)}: path= (local "
                "folder), url= (server), client= (an existing QdrantClient), or none (in memory)"
            )
        if api_key is not None and url is None:
            raise ValueError("QdrantStore: api_key goes with url= (a server)")
        if quantization not in (None, "int8", "binary"):
            raise ValueError(f"quantization must be 'int8', 'binary' or None, got {quantization!r}")
        if two_stage not in ("auto", "prefetch", "rescore"):
            raise ValueError(
                f"two_stage must be 'auto', 'prefetch' or 'rescore', got {two_stage!r}"
            )
        self.batch_size = positive_int(batch_size, "batch_size")
        self.parallel = positive_int(parallel, "parallel")
        self.quantization = quantization
        self.index_fields = parse_index_fields(index_fields)
        self.max_retries = max(0, int(max_retries))
        self.hnsw_config = hnsw_config
        self.hnsw_ef = hnsw_ef
        self.oversampling = oversampling or (_OVERSAMPLING[quantization] if quantization else None)
        self.url = None if url is None else safe_location(url)  # shown: never credentials
        self.path = None if path is None else str(Path(path).resolve())
        secrets: tuple[str, ...] = ()
        self._client = None
        self._lock = threading.RLock()
        self._connecting = threading.Lock()
        self._metadata_supported = True
        self._avgdl = None
        #: the numpy lexical index of local mode, by (collection, its write generation)
        self._local_lexical: tuple[tuple[str, int], LocalLexical] | None = None
        self._version = LAYOUT_VERSION
        self._replacement: str | None = None  # the collection a replacement is built in
        self._server_options = {}
        # the client is built on first need (_ensure_client): the constructor only validates
        if client is not None:
            if not isinstance(client, QdrantClient):
                raise TypeError(f"client must be a QdrantClient, got {type(client).__name__}")
            self._client = client
            self.local = isinstance(getattr(client, "_client", None), QdrantLocal)
        elif url is not None:
            check_url(url)
            key = api_key if api_key is not None else os.environ.get("QDRANT_API_KEY") or None
            try:
                password = urlsplit(url).password
            except ValueError:
                password = None
            secrets = tuple(x for x in (key, password) if x)
            self._server_options = {"url": url, "api_key": key, "timeout": timeout,
                                    "prefer_grpc": prefer_grpc}
            self.local = False
        else:
            self.local = True  # in memory, or a local-mode folder
        #: the one retry policy of every client call
        self.retry = Retry("Qdrant", self.where, is_transient, self.max_retries,
                           self._retry_base, engine_errors=(UnexpectedResponse,),
                           secrets=secrets)
        self.two_stage = ("rescore" if self.local else "prefetch") if two_stage == "auto" \
            else two_stage
        if self.local and quantization is not None:
            warnings.warn(
                f"QdrantStore: local mode ignores quantization={quantization!r} (it searches "
                "exact float32 vectors); quantization applies on a Qdrant server",
                UserWarning, stacklevel=2,
            )

    @property
    def capabilities(self) -> Capabilities:
        """Prefetch two-stage search where it is the faster one (a server), the group API on
        collections whose points carry the group key, both hybrid sides in one call, and
        a replacement built beside the collection and swapped in through an alias."""
        return Capabilities(lexical=True, atomic_replace=True,
                            rescore=self.two_stage == "prefetch",
                            grouping=self._version >= 2, joint_candidates=True, intent=True)

    # ------------------------------------------------------------------ writes
    def _points(self, documents: Sequence[Document], vectors: np.ndarray,
                full: np.ndarray | None,
                sparse: Sequence[tuple[list[int], list[float]]] | None) -> models.Batch:
        named: dict[str, Any] = {self.index_vector: vectors.tolist()}
        if full is not None:
            named[FULL] = full.astype(np.float16).astype(np.float32).tolist()
        if sparse is not None:
            named[LEXICAL] = [models.SparseVector(indices=i, values=v) for i, v in sparse]
        return models.Batch(
            ids=[point_id(d.id) for d in documents],
            vectors=named,
            payloads=[{"doc_id": d.id, "text": d.text, "metadata": d.metadata,
                       GROUP_KEY: document_of(d.id, d.metadata)} for d in documents],
        )

    def _write(self, batch: WriteBatch) -> None:
        """Points with their dense (and sparse) vectors, ``batch_size`` a request: in parallel
        on a server, the last request after the others and waited for."""
        documents, name = batch.documents, self._name
        ids = [d.id for d in documents]
        sparse = None
        if batch.terms is not None:
            bump(self.client, name)  # before: a failed write may still be partly applied
            try:
                sparse = self._document_vectors(batch.terms)
            except Exception as err:
                raise self.retry.failed_write(err, ids, "upsert") from err
        parts = [slice(i, min(len(ids), i + self.batch_size))
                 for i in range(0, len(ids), self.batch_size)]

        def write(part: slice, wait: bool) -> BaseException | None:
            points = self._points(documents[part], batch.vectors[part],
                                  None if batch.full is None else batch.full[part],
                                  None if sparse is None else sparse[part])
            try:
                self._call(functools.partial(self.client.upsert, name, points=points,
                                             wait=wait), "upsert")
            except Exception as err:  # noqa: BLE001 - reported with the ids below
                return err
            return None

        try:
            head, last = parts[:-1], parts[-1]
            if self.local or self.parallel == 1:
                errors = [write(p, True) for p in head]
            else:
                with ThreadPoolExecutor(self.parallel) as pool:
                    errors = list(pool.map(lambda p: write(p, False), head))
            errors.append(write(last, True))  # after the others: their writes are applied too
        finally:  # and after: a search between the two may have read the old points
            if sparse is not None:
                bump(self.client, name)
        failed = [i for p, e in zip(parts, errors, strict=True) if e is not None
                  for i in ids[p]]
        if failed:
            failed = self._not_stored(documents, failed)
        if failed:
            first = next(e for e in errors if e is not None)
            raise self.retry.failed_write(first, failed, "upsert") from first

    def _not_stored(self, documents: list[Document], failed: list[str]) -> list[str]:
        """The ids among ``failed`` whose document is not stored as given: a request that
        timed out may have been applied. Unchecked (all of ``failed``) when reading fails."""
        wanted = {d.id: d for d in documents if d.id in set(failed)}
        ids = list(wanted)
        try:
            stored = self._fetch(ids, documents=True).documents
        except Exception:  # noqa: BLE001 - the store is unreachable: nothing is confirmed
            return failed
        assert stored is not None
        ok = {i for i, d in zip(ids, stored, strict=True) if d is not None
              and (d.text, d.metadata) == (wanted[i].text, wanted[i].metadata)}
        return [i for i in failed if i not in ok]

    def _delete(self, ids: list[str]) -> None:
        selector = models.PointIdsList(points=[point_id(i) for i in ids])
        try:
            self._call(functools.partial(self.client.delete, self._name,
                                         points_selector=selector, wait=True), "delete")
        finally:
            if self.stamp.lexical is not None:
                bump(self.client, self._name)

    # ------------------------------------------------------------------ reads
    def _count(self) -> int:
        return self._call(functools.partial(self.client.count, self._name, exact=True),
                          "count").count

    def _retrieve(self, pids: list[str], documents: bool, full: bool) -> list[Any]:
        return self._call(functools.partial(
            self.client.retrieve, self._name, pids,
            with_payload=DOCUMENT_KEYS if documents else False,
            with_vectors=[FULL] if full else False), "retrieve")

    def _scroll(self, offset: Any, limit: int, flt: Any, payload: list[str] | bool,
                vectors: list[str] | bool) -> tuple[list[Any], Any]:
        return self._call(functools.partial(
            self.client.scroll, self._name, scroll_filter=flt, limit=limit,
            offset=offset, with_payload=payload, with_vectors=vectors), "scroll")

    # ------------------------------------------------------------------ search
    def _params(self) -> models.SearchParams | None:
        if self.local or (self.quantization is None and self.hnsw_ef is None):
            return None
        quant = None
        if self.quantization is not None:
            quant = models.QuantizationSearchParams(rescore=True, oversampling=self.oversampling)
        return models.SearchParams(hnsw_ef=self.hnsw_ef, quantization=quant)

    def _query(self, requests: list[models.QueryRequest]) -> list[list[Any]]:
        """The scored points of each request, in one ``query_batch_points`` call."""
        if not requests:
            return []
        responses = self._call(functools.partial(
            self.client.query_batch_points, self._name, requests), "query")
        return [r.points for r in responses]

    @property
    def _payload(self) -> list[str] | bool:
        """What candidates are asked with: their ``doc_id`` on a server; nothing in local mode,
        whose engine builds and deep-copies a payload per returned point (measured: a quarter
        of a two-stage batch's time), the document ids of new point ids being read once per
        batch instead (:meth:`_ranked`)."""
        return False if self.local else ["doc_id"]

    def _ranked(self, answers: list[list[Any]], documents: bool = False) -> list[Ranked]:
        """The engine's answers to :meth:`_nearest` and :meth:`_sparse` requests as
        :class:`Ranked` lists of document ids (with their documents when asked with them)."""
        if documents or not self.local:
            return [ranked_points(p, documents=documents) for p in answers]
        doc_ids_of(answers, lambda pids: self._call(functools.partial(
            self.client.retrieve, self._name, pids, with_payload=["doc_id"],
            with_vectors=False), "retrieve"))
        return [ranked_bare(p) for p in answers]

    def _nearest(self, vectors: np.ndarray, k: int, flt: Any, documents: bool = False
                 ) -> list[models.QueryRequest]:
        params = self._params()
        payload = DOCUMENT_KEYS if documents else self._payload
        return [models.QueryRequest(query=v.tolist(), using=self.index_vector, limit=k,
                                    filter=flt, params=params, with_payload=payload)
                for v in vectors]

    def _sparse(self, terms: list[list[str]], k: int, flt: Any, documents: bool = False
                ) -> list[models.QueryRequest]:
        payload = DOCUMENT_KEYS if documents else self._payload
        return [models.QueryRequest(query=models.SparseVector(indices=i, values=v),
                                    using=LEXICAL, limit=k, filter=flt, with_payload=payload)
                for i, v in (query_vector(t) for t in terms)]

    def _knn(self, vectors: np.ndarray, k: int, conditions: Any, *,
             documents: bool = False) -> list[Ranked]:
        flt = self._compile(conditions)
        if flt is False:
            return [Ranked.empty() for _ in vectors]
        return self._ranked(self._query(self._nearest(vectors, k, flt, documents)), documents)

    def _knn_rescored(self, vectors: np.ndarray, full: np.ndarray, k: int, n: int,
                      conditions: Any, *, documents: bool = False) -> list[Ranked]:
        """Both stages in one Query API call per batch: prefetch ``n`` on the truncated
        vector, the best ``k`` of them on ``full``, with their documents when ``documents``
        asks (they are the final hits: reading them in the same call saves a second one)."""
        flt = self._compile(conditions)
        if flt is False:
            return [Ranked.empty() for _ in vectors]
        params = self._params()
        requests = [
            models.QueryRequest(
                prefetch=models.Prefetch(query=v.tolist(), using=self.index_vector, limit=n,
                                         filter=flt, params=params),
                query=f.tolist(), using=FULL, limit=k,
                with_payload=DOCUMENT_KEYS if documents else self._payload)
            for v, f in zip(vectors, full, strict=True)
        ]
        return self._ranked(self._query(requests), documents)

    def _bm25(self, terms: list[list[str]], k: int, conditions: Any, *,
              documents: bool = False) -> list[Ranked]:
        flt = self._compile(conditions)
        if flt is False:
            return [Ranked.empty() for _ in terms]
        if self.local and flt is None:  # the engine's sparse search is a Python loop
            index = self._local_index()
            return [index.search(t, k) for t in terms]
        return [_positive(r) for r in self._ranked(
            self._query(self._sparse(terms, k, flt, documents)), documents)]

    def _candidates(self, vectors: np.ndarray, terms: list[list[str]], n: int,
                    conditions: Any) -> tuple[list[Ranked], list[Ranked]]:
        """Both sides' candidates in one ``query_batch_points`` call: the dense requests, then
        the sparse ones (queries with no term ask nothing); in local mode without a filter
        the lexical side comes from the numpy index instead."""
        flt = self._compile(conditions)
        if flt is False:
            return [Ranked.empty() for _ in vectors], [Ranked.empty() for _ in terms]
        asked = [i for i, t in enumerate(terms) if t]
        in_numpy = self.local and flt is None
        requests = self._nearest(vectors, n, flt)
        if not in_numpy:
            requests += self._sparse([terms[i] for i in asked], n, flt)
        answers = self._ranked(self._query(requests))
        dense = answers[: len(vectors)]
        lexical = [Ranked.empty() for _ in terms]
        if in_numpy and asked:
            index = self._local_index()
            for i in asked:
                lexical[i] = index.search(terms[i], n)
        elif asked:
            for i, r in zip(asked, answers[len(vectors):], strict=True):
                lexical[i] = _positive(r)
        return dense, lexical

    def _local_index(self) -> LocalLexical:
        """This local-mode collection's sparse vectors by term, read again after a write."""
        key = (self._name, generation(self.client, self._name))
        if self._local_lexical is None or self._local_lexical[0] != key:
            self._local_lexical = (key, LocalLexical.read(
                lambda offset: self._scroll(offset, 4096, None, ["doc_id"], [LEXICAL])))
        return self._local_lexical[1]

    def _knn_grouped(self, vectors: np.ndarray, k: int, group_size: int,
                     conditions: Any) -> list[list[Hit]]:
        """One hit per document with Qdrant's group API on the ``document`` payload key:
        ``k`` groups, each its best point's hit with the ``group_size`` best points of the
        document attached (one ``query_points_groups`` call per query).

        Single-stage only (the funnel groups two-stage results itself): in two-stage search
        the group API widens its prefetch to fill the groups (measured in local mode:
        documents with no point among the ``rescore_k`` first-stage candidates come back), so
        its results would not be the funnel's that every other store returns.
        """
        flt = self._compile(conditions)
        if flt is False:
            return [[] for _ in vectors]
        out = []
        for v in vectors:
            result = self._call(functools.partial(
                self.client.query_points_groups, self._name, GROUP_KEY, query=v.tolist(),
                using=self.index_vector, query_filter=flt, search_params=self._params(),
                limit=k, group_size=group_size, with_payload=DOCUMENT_KEYS), "query groups")
            hits = []
            for group in result.groups:
                chunks = sorted((_hit(p) for p in group.hits),
                                key=lambda h: ranking_key(h.score, h.id))
                if chunks:
                    best = chunks[0]
                    hits.append(Hit(id=str(group.id), text=best.text, score=best.score,
                                    metadata=best.metadata, chunks=tuple(chunks)))
            out.append(sorted(hits, key=lambda h: ranking_key(h.score, h.id)))
        return out

    def close(self) -> None:
        self._local_lexical = None
        super().close()

    def __repr__(self) -> str:
        return f"QdrantStore({self.where}, collection={self._collection!r})"


def _positive(found: Ranked) -> Ranked:
    """A sparse query's candidates with a score above 0 (the engine returns the others too)."""
    return found.keep(found.scores > 0)


def _hit(point: Any) -> Hit:
    payload = point.payload or {}
    return Hit(id=str(payload.get("doc_id", point.id)), text=payload.get("text", ""),
               score=float(point.score), metadata=payload.get("metadata") or {})

