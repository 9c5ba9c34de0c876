"""The retrieval service: a FastAPI app over one loaded :class:`~bertino_rag.Retriever`.

Endpoints (OpenAPI schema at ``/openapi.json``, interactive docs at ``/docs``):

- ``POST /search``: ``query`` or ``queries``, ``k``, ``filter``, ``rescore``, ``rescore_k``, and
  ``mode`` / ``group_by`` where the retriever has them;
- ``POST /documents``: index documents, validated whole first, with ``index()``'s report;
- ``DELETE /documents``: by ``ids`` (or ``document_ids`` where the retriever supports it);
- ``POST /documents/get``: stored entries by id (text and metadata);
- ``GET /collections``: the served collection's name, stamp and count;
- ``GET /health``: 200 when the model is loaded and the store answers, else 503 (readiness);
- ``GET /metrics``: Prometheus exposition (requests, latency, batch sizes, documents);
- ``POST /v1/embeddings``, ``GET /v1/models``: the OpenAI-compatible embeddings API
  (:mod:`bertino_rag.serve.openai`), for any OpenAI client pointed at ``/v1``.

Concurrency is in :mod:`bertino_rag.serve.scheduler`: searches (and ``/v1/embeddings``
inputs) are micro-batched and run in a worker thread; one write (index or delete) runs at a
time, in its own thread, in small batches that yield the encoder to searches. Requests are
bounded (:class:`ServeSettings`): body size, queries and documents per request, ``k``; a bad
request is rejected before anything is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import time
import warnings
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .._deps import require

require("fastapi", "serve")
require("prometheus_client", "serve")

from fastapi import FastAPI, HTTPException, Request  # noqa: E402
from fastapi.responses import JSONResponse, Response  # noqa: E402
from prometheus_client import (  # noqa: E402
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from .. import __version__  # noqa: E402
from ..indexing.pipeline import IndexWriteError  # noqa: E402
from ..retriever import Retriever  # noqa: E402
from ..search.filters import parse_filter  # noqa: E402
from ..stores.base import StoreError  # noqa: E402
from ..types import Hit, to_documents  # noqa: E402
from ..validation import positive_int  # noqa: E402
from .limits import check_query_lengths, query_token_limit  # noqa: E402
from .middleware import (  # noqa: E402
    ApiKeyMiddleware,
    BodyLimitMiddleware,
    MetricsMiddleware,
    error_body,
    redact_access_log,
)
from .openai import add_openai_routes, embed_batch  # noqa: E402
from .scheduler import EncoderGate, SearchBatcher, ServiceBusy, gate_encoder  # noqa: E402
from .schemas import (  # noqa: E402
    CollectionInfo,
    DeleteRequest,
    DeleteResponse,
    GetRequest,
    GetResponse,
    HealthResponse,
    IndexRequest,
    IndexResponse,
    SearchRequest,
    SearchResponse,
)

__all__ = ["ServeSettings", "create_app"]

logger = logging.getLogger("bertino_rag.serve")

OPEN_PATHS = frozenset({"/health"})


@dataclass(frozen=True)
class ServeSettings:
    """Limits and batching of the service (each is also a ``bertino-rag serve`` flag).

    Attributes:
        api_key: required on every request but ``/health`` when set.
        max_k: largest ``k``.
        max_rescore_k: largest ``rescore_k``.
        max_rerank_k: deprecated name of ``max_rescore_k``.
        max_queries: queries per ``/search`` request.
        max_documents: documents per ``POST /documents``, ids per ``DELETE /documents``,
            inputs per ``POST /v1/embeddings``.
        max_request_bytes: request body size.
        max_batch: queries per encoder call (several requests' queries together).
        batch_wait_ms: how long a search waits for others to batch with.
        max_pending: queries waiting for the encoder before new searches get 503.
        index_batch: documents encoded and written per step while indexing; a search waits
            for at most one such step.
        health_timeout_s: how long ``/health`` waits for the store to answer.
        max_query_chars: characters per query.
        max_query_tokens: tokens per query, the model's query prompt included (``None``: the
            model's window, where the encoder has a tokenizer).
    """

    api_key: str | None = None
    max_k: int = 100
    max_rescore_k: int = 1000
    max_rerank_k: int | None = None
    max_queries: int = 64
    max_documents: int = 1000
    max_request_bytes: int = 16 * 1024 * 1024
    max_batch: int = 64
    batch_wait_ms: float = 2.0
    max_pending: int = 1024
    index_batch: int = 32
    health_timeout_s: float = 5.0
    max_query_chars: int = 4096
    max_query_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.max_rerank_k is not None:
            warnings.warn("ServeSettings(max_rerank_k=) is deprecated; use max_rescore_k=",
                          DeprecationWarning, stacklevel=3)
            object.__setattr__(self, "max_rescore_k", self.max_rerank_k)
            object.__setattr__(self, "max_rerank_k", None)
        if self.max_query_tokens is not None:
            positive_int(self.max_query_tokens, "max_query_tokens")
        for name in ("max_k", "max_rescore_k", "max_queries", "max_query_chars", "max_documents",
                     "max_request_bytes", "max_batch", "max_pending", "index_batch"):
            positive_int(getattr(self, name), name)
        if self.batch_wait_ms < 0:
            raise ValueError(f"batch_wait_ms must be >= 0, got {self.batch_wait_ms}")
        if self.max_queries > self.max_pending:
            raise ValueError("max_queries must not exceed max_pending")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("api_key is empty")

    def __repr__(self) -> str:  # the key never reaches a log through a repr
        shown = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if self.api_key:
            shown["api_key"] = "<set>"
        fields = ", ".join(f"{name}={value!r}" for name, value in shown.items())
        return f"ServeSettings({fields})"


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "bertino_rag_http_requests", "HTTP requests", ["method", "path", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "bertino_rag_http_request_duration_seconds", "HTTP request latency",
            ["method", "path"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.queries = Counter(
            "bertino_rag_search_queries", "queries searched", registry=self.registry
        )
        self.batch = Histogram(
            "bertino_rag_search_batch_queries", "queries per encoder call",
            registry=self.registry, buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
        )
        self.indexed = Counter(
            "bertino_rag_documents_indexed", "documents written", registry=self.registry
        )
        self.embedded = Counter(
            "bertino_rag_embedding_inputs", "texts embedded by /v1/embeddings",
            registry=self.registry,
        )
        self.deleted = Counter(
            "bertino_rag_documents_deleted", "documents deleted", registry=self.registry
        )
        self.documents = Gauge(
            "bertino_rag_documents", "documents in the served collection", registry=self.registry
        )

    def observe(self, method: str, path: str, status: int, seconds: float) -> None:
        self.requests.labels(method, path, str(status)).inc()
        self.latency.labels(method, path).observe(seconds)


def _hit_dict(hit: Any) -> dict[str, Any]:
    """A hit as JSON-ready fields, without copying them: the answer is serialized at once
    (``dataclasses.asdict`` deep-copied every hit's metadata: 7.6 against 0.3 us a hit)."""
    if isinstance(hit, Hit):
        # rerank_score: the cross-encoder's score of a reranked hit, null otherwise
        return {"id": hit.id, "text": hit.text, "score": hit.score, "metadata": hit.metadata,
                "rerank_score": hit.rerank_score, "chunks": [_hit_dict(c) for c in hit.chunks]}
    if dataclasses.is_dataclass(hit) and not isinstance(hit, type):
        return dataclasses.asdict(hit)
    return {"id": hit.id, "text": hit.text, "score": hit.score, "metadata": hit.metadata}


def _document_delete(retriever: Retriever) -> Callable[[list[str]], Any] | None:
    """Delete by document id (a document with all its chunks), where the store can."""
    if callable(getattr(retriever.store, "delete_documents", None)):
        # with chunking, Retriever.delete removes the ids given and every chunk of them
        return retriever.delete
    return None


class _Service:
    """State of one app: the retriever, the batcher, the write lock and the metrics."""

    def __init__(self, retriever: Retriever, settings: ServeSettings, close_retriever: bool):
        self.retriever = retriever
        self.settings = settings
        self.close_retriever = close_retriever
        self.metrics = _Metrics()
        self.gate = EncoderGate()
        self.search_pool = ThreadPoolExecutor(1, thread_name_prefix="bertino-search")
        self.write_pool = ThreadPoolExecutor(1, thread_name_prefix="bertino-write")
        self.search_options = set(inspect.signature(retriever.search_batch).parameters) - {
            "queries"
        }
        self.batcher: SearchBatcher | None = None
        self.embedder: SearchBatcher | None = None
        self.write_lock: asyncio.Lock | None = None
        self.ready = False
        self._restore: Callable[[], None] | None = None
        self.query_tokens = query_token_limit(retriever.encoder, settings.max_query_tokens)

    async def start(self) -> None:
        redact_access_log()  # after uvicorn configured its loggers: no key in a logged URL
        self.write_lock = asyncio.Lock()
        self._restore = gate_encoder(self.retriever.encoder, self.gate)
        self.batcher = SearchBatcher(
            self.retriever.search_batch, self.gate, self.search_pool,
            max_batch=self.settings.max_batch, wait_s=self.settings.batch_wait_ms / 1000,
            max_pending=self.settings.max_pending, on_batch=self.metrics.batch.observe,
        )
        self.batcher.start()
        # /v1/embeddings: its own queue (its options never match a search's), the same worker
        # and gate; one request's inputs are always admitted, however many the settings allow
        self.embedder = SearchBatcher(
            embed_batch(self.retriever.encoder), self.gate, self.search_pool,
            max_batch=self.settings.max_batch, wait_s=self.settings.batch_wait_ms / 1000,
            max_pending=max(self.settings.max_pending, self.settings.max_documents),
            on_batch=self.metrics.batch.observe,
        )
        self.embedder.start()
        self.metrics.documents.set(await asyncio.to_thread(self.retriever.count))
        self.ready = True
        logger.info(
            "serving collection %r of %r (model %s, %d-d, store %s); API key %s",
            self.retriever.collection, self.retriever.store, self.retriever.encoder.model_id,
            self.retriever.dim, self.retriever.store.kind,
            "required" if self.settings.api_key else "not required",
        )

    async def stop(self) -> None:
        """In-flight searches are served, the running write finishes, then the store closes."""
        self.ready = False
        if self.batcher is not None:
            await self.batcher.close()
        if self.embedder is not None:
            await self.embedder.close()
        if self.write_lock is not None:
            async with self.write_lock:  # waits for the write in progress
                pass
        # a write whose request was cancelled (graceful timeout) still runs in its thread:
        # the store closes only after it
        await asyncio.to_thread(self.write_pool.shutdown, True)
        await asyncio.to_thread(self.search_pool.shutdown, True)
        if self._restore is not None:
            self._restore()
        if self.close_retriever:
            self.retriever.close()
        logger.info("stopped; the store is closed")

    async def write(self, fn: Callable[[], Any]) -> Any:
        if not self.ready or self.write_lock is None:
            raise HTTPException(503, "the service is not ready")
        async with self.write_lock:
            return await asyncio.get_running_loop().run_in_executor(self.write_pool, fn)


def _unprocessable(detail: str) -> HTTPException:
    return HTTPException(422, detail)


def create_app(
    retriever: Retriever,
    settings: ServeSettings | None = None,
    *,
    close_retriever: bool = True,
) -> FastAPI:
    """The service's ASGI app over a loaded retriever; serve it with uvicorn.

    Args:
        retriever: the loaded retriever (its model and open collection are served).
        settings: limits, batching and the API key.
        close_retriever: close the retriever's store when the app shuts down.

    Example:
        >>> import uvicorn  # doctest: +SKIP
        >>> app = create_app(Retriever(dim=128, store="memory:./idx"))  # doctest: +SKIP
        >>> uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
    """
    settings = settings or ServeSettings()
    service = _Service(retriever, settings, close_retriever)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="bertino-rag",
        version=__version__,
        description="Retrieval over Italian text with Matryoshka embeddings: the model stays "
        "loaded, concurrent queries are batched.",
        lifespan=lifespan,
    )
    app.state.service = service

    @app.exception_handler(ServiceBusy)
    async def _busy(request: Request, err: ServiceBusy) -> JSONResponse:
        return JSONResponse(error_body(request.url.path, 503, str(err)), status_code=503,
                            headers={"Retry-After": "1"})

    @app.exception_handler(IndexWriteError)
    async def _write_failed(_: Request, err: IndexWriteError) -> JSONResponse:
        return JSONResponse(
            {"detail": str(err), "failed_ids": err.failed_ids,
             "unwritten_ids": err.unwritten_ids, "n_written": err.n_written},
            status_code=503,
        )

    @app.exception_handler(StoreError)
    async def _store_failed(request: Request, err: StoreError) -> JSONResponse:
        return JSONResponse(error_body(request.url.path, 503, f"store error: {err}"),
                            status_code=503)

    @app.exception_handler(ValueError)
    async def _bad_value(request: Request, err: ValueError) -> JSONResponse:
        # OpenAI's API answers bad input with 400, the service's own endpoints with 422
        status = 400 if request.url.path.startswith("/v1/") else 422
        return JSONResponse(error_body(request.url.path, status, str(err)), status_code=status)

    @app.post("/search", response_model=SearchResponse, response_model_exclude_none=True)
    async def search(body: SearchRequest) -> Any:
        """Search with one query (answer: `hits`) or several (answer: `results`)."""
        if not service.ready or service.batcher is None:
            raise HTTPException(503, "the service is not ready")
        queries = [body.query] if body.query is not None else list(body.queries or [])
        if len(queries) > settings.max_queries:
            raise HTTPException(
                413, f"{len(queries)} queries in one request; this server takes at most "
                f"{settings.max_queries} (--max-queries)",
            )
        if body.k > settings.max_k:
            raise _unprocessable(f"k={body.k} is above this server's limit of {settings.max_k} "
                                 "(--max-k)")
        if body.rescore_k is not None and body.rescore_k > settings.max_rescore_k:
            raise _unprocessable(f"rescore_k={body.rescore_k} is above this server's limit of "
                                 f"{settings.max_rescore_k} (--max-rescore-k)")
        options = body.options()
        unknown = sorted(set(options) - service.search_options)
        if unknown:
            raise _unprocessable(
                f"this server's retriever has no {', '.join(unknown)} option "
                f"(bertino-rag {__version__}); leave it out"
            )
        parse_filter(options["filter"])  # a bad filter is this request's 422, never a batch's
        await check_query_lengths(queries, max_chars=settings.max_query_chars,
                                  max_tokens=service.query_tokens, encoder=retriever.encoder)
        results = await service.batcher.submit(queries, options)
        service.metrics.queries.inc(len(queries))
        out = [[_hit_dict(h) for h in hits] for hits in results]
        # returned as is: the hits are built here, re-validating them would only cost time
        return JSONResponse({"hits": out[0]} if body.query is not None else {"results": out})

    @app.post("/documents", response_model=IndexResponse)
    async def index(body: IndexRequest) -> dict[str, Any]:
        """Index documents (validated whole first: a bad one means nothing is written)."""
        if len(body.documents) > settings.max_documents:
            raise HTTPException(
                413, f"{len(body.documents)} documents in one request; this server takes at "
                f"most {settings.max_documents} (--max-documents): send them in several "
                "requests",
            )
        inputs = body.as_inputs()
        to_documents(inputs)  # the same validation as index(), answered before any write

        def run() -> dict[str, Any]:
            ids = retriever.index(inputs, batch_size=settings.index_batch,
                                  show_progress_bar=False)
            report = retriever.last_index_report
            assert report is not None
            return {"ids": ids, **dataclasses.asdict(report), "count": retriever.count()}

        result = await service.write(run)
        service.metrics.indexed.inc(result["n_written"])
        service.metrics.documents.set(result["count"])
        return result

    @app.delete("/documents", response_model=DeleteResponse)
    async def delete(body: DeleteRequest) -> dict[str, Any]:
        """Delete by entry ids, or by document ids where the retriever supports them."""
        n = len(body.ids or []) + len(body.document_ids or [])
        if n > settings.max_documents:
            raise HTTPException(
                413, f"{n} ids in one request; this server takes at most "
                f"{settings.max_documents} (--max-documents)",
            )
        by_document = _document_delete(retriever) if body.document_ids is not None else None
        if body.document_ids is not None and by_document is None:
            raise _unprocessable(
                f"this server's retriever cannot delete by document id (bertino-rag "
                f"{__version__}); delete by 'ids'"
            )

        def run() -> dict[str, Any]:
            before = retriever.count()
            if body.ids:
                retriever.delete(body.ids)
            if body.document_ids and by_document is not None:
                by_document(body.document_ids)
            after = retriever.count()
            return {"deleted": before - after, "count": after}

        result = await service.write(run)
        service.metrics.deleted.inc(result["deleted"])
        service.metrics.documents.set(result["count"])
        return result

    @app.post("/documents/get", response_model=GetResponse)
    async def get(body: GetRequest) -> dict[str, Any]:
        """Stored entries by id, in the order asked (unknown ids are left out)."""
        if len(body.ids) > settings.max_documents:
            raise HTTPException(
                413, f"{len(body.ids)} ids in one request; this server takes at most "
                f"{settings.max_documents} (--max-documents)",
            )
        docs = await asyncio.to_thread(retriever.get, body.ids)
        return {"documents": [{"id": d.id, "text": d.text, "metadata": d.metadata}
                              for d in docs]}

    @app.get("/collections", response_model=list[CollectionInfo])
    async def collections() -> list[dict[str, Any]]:
        """The served collection: its name, stamp (model, dims, layout) and count."""
        store = retriever.store
        return [{
            "name": retriever.collection, "stamp": store.stamp.to_dict(),
            "count": await asyncio.to_thread(retriever.count), "store": store.kind,
        }]

    @app.get("/health", response_model=HealthResponse, response_model_exclude_none=True,
             responses={503: {"model": HealthResponse}})
    async def health() -> Any:
        """Readiness: 200 when the model is loaded and the store answers; 503 otherwise."""
        if not service.ready:
            return JSONResponse({"status": "unavailable", "detail": "starting or stopping"},
                                status_code=503)
        started = time.perf_counter()
        try:
            count = await asyncio.wait_for(asyncio.to_thread(retriever.count),
                                           settings.health_timeout_s)
        except Exception as err:  # noqa: BLE001 - reported as not ready
            return JSONResponse(
                {"status": "unavailable", "detail": f"store: {type(err).__name__}: {err}"},
                status_code=503,
            )
        service.metrics.documents.set(count)
        logger.debug("health in %.1f ms", 1000 * (time.perf_counter() - started))
        return {"status": "ready", "model": retriever.encoder.model_id,
                "collection": retriever.collection, "count": count}

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(service.metrics.registry),
                        media_type=CONTENT_TYPE_LATEST)

    add_openai_routes(app, service, settings)

    paths = frozenset({"/search", "/documents", "/documents/get", "/collections", "/health",
                       "/metrics", "/openapi.json", "/docs", "/v1/embeddings", "/v1/models"})
    # outermost first: metrics see every answer, the key is checked before a body is read
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes)
    if settings.api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=settings.api_key, open_paths=OPEN_PATHS)
    app.add_middleware(MetricsMiddleware, paths=paths, observe=service.metrics.observe)
    return app
