"""HTTP clients of ``bertino-rag serve``, sync and async, on httpx.

They need only httpx: importing this module loads no model, no torch and no web server, so an
application that searches through the service stays small and starts fast.

Example:
    >>> from bertino_rag.serve.client import BertinoClient  # doctest: +SKIP
    >>> with BertinoClient("http://127.0.0.1:8000") as client:  # doctest: +SKIP
    ...     client.index([{"text": "La pizza nasce a Napoli.", "id": "pizza"}])
    ...     hits = client.search("Dove nasce la pizza?", k=3)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .._deps import require

httpx = require("httpx", "serve")

from ..types import Hit  # noqa: E402

__all__ = ["API_KEY_ENV", "AsyncBertinoClient", "BertinoClient", "ServiceError"]

API_KEY_ENV = "BERTINO_RAG_API_KEY"
DEFAULT_URL = "http://127.0.0.1:8000"
# Idle pooled connections are dropped well before the server closes them (uvicorn: 5 s by
# default, 30 s under bertino-rag serve), so a request never goes out on a connection that the
# server is closing at that moment (an httpx.ReadError otherwise).
_LIMITS = httpx.Limits(keepalive_expiry=2.0)
_HIT_FIELDS = {f.name for f in dataclasses.fields(Hit)}


class ServiceError(RuntimeError):
    """The service answered with an error.

    Attributes:
        status_code: the HTTP status (401 key, 413 too large, 422 invalid, 503 busy/store).
        detail: the service's explanation.
        body: the whole JSON answer (for a failed write: ``failed_ids``, ``n_written``...).
    """

    def __init__(self, status_code: int, detail: str, body: Any = None) -> None:
        self.status_code = status_code
        self.detail = detail
        self.body = body
        super().__init__(f"HTTP {status_code}: {detail}")


def _detail(body: Any) -> str:
    detail = body.get("detail", body) if isinstance(body, Mapping) else body
    if isinstance(detail, list):  # request validation errors: one line each
        return "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'body'}: {e.get('msg')}"
            if isinstance(e, Mapping) else str(e)
            for e in detail
        )
    return str(detail)


def _check(response: Any) -> Any:
    try:
        body = response.json()
    except ValueError:
        body = response.text
    if response.status_code >= 400:
        raise ServiceError(response.status_code, _detail(body), body)
    return body


def _hit(data: Mapping[str, Any]) -> Hit:
    """A :class:`Hit` from its JSON; grouped hits' ``chunks`` become hits too."""
    fields = {k: v for k, v in data.items() if k in _HIT_FIELDS}
    if isinstance(fields.get("chunks"), list):
        fields["chunks"] = tuple(_hit(c) for c in fields["chunks"])
    return Hit(**fields)


def _search_body(
    queries: str | Sequence[str], k: int, filter: Any, options: Mapping[str, Any]
) -> dict[str, Any]:
    body: dict[str, Any] = {"k": k, **{n: v for n, v in options.items() if v is not None}}
    if filter is not None:
        body["filter"] = filter
    if isinstance(queries, str):
        body["query"] = queries
    else:
        body["queries"] = list(queries)
    return body


def _document(doc: Any) -> Any:
    """A document as the service takes it (str, or text/id/metadata)."""
    if isinstance(doc, str):
        return doc
    if isinstance(doc, Mapping):
        return {k: v for k, v in doc.items() if v is not None}
    if hasattr(doc, "page_content"):  # a LangChain Document
        out = {"text": doc.page_content, "metadata": dict(getattr(doc, "metadata", None) or {})}
        if getattr(doc, "id", None):
            out["id"] = doc.id
        return out
    if hasattr(doc, "text"):  # bertino_rag.Document
        return {"text": doc.text, "id": getattr(doc, "id", None),
                "metadata": dict(getattr(doc, "metadata", None) or {})}
    raise TypeError(
        f"cannot send a {type(doc).__name__} as a document: use str, a dict with 'text', or "
        "an object with 'page_content'"
    )


def _delete_body(ids: Sequence[str] | None, document_ids: Sequence[str] | None) -> dict[str, Any]:
    if isinstance(ids, str):
        ids = [ids]
    if isinstance(document_ids, str):
        document_ids = [document_ids]
    body: dict[str, Any] = {}
    if ids is not None:
        body["ids"] = list(ids)
    if document_ids is not None:
        body["document_ids"] = list(document_ids)
    if not body:
        raise ValueError("give ids or document_ids")
    return body


def _ids(ids: Sequence[str]) -> dict[str, Any]:
    if isinstance(ids, str):
        ids = [ids]
    return {"ids": [str(i) for i in ids]}


def _embed_body(texts: Sequence[str], dimensions: int | None, input_type: str | None,
                model: str | None) -> dict[str, Any]:
    if isinstance(texts, str):
        raise ValueError("embed takes a list of texts; wrap one text in a list")
    body: dict[str, Any] = {"input": list(texts), "encoding_format": "base64"}
    for name, value in (("dimensions", dimensions), ("input_type", input_type),
                        ("model", model)):
        if value is not None:
            body[name] = value
    return body


def _vectors(out: Mapping[str, Any]) -> list[list[float]]:
    """The vectors of a ``/v1/embeddings`` answer (base64 float32, as OpenAI), input order."""
    import base64

    import numpy as np

    rows = sorted(out["data"], key=lambda d: d["index"])
    return [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4").tolist() for d in rows]


def _headers(api_key: str | None) -> dict[str, str]:
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
    return {"Authorization": f"Bearer {key}"} if key else {}


class _Base:
    def __init__(self, url: str, api_key: str | None, timeout: float) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._headers = _headers(api_key)

    def __repr__(self) -> str:  # never the key
        auth = ", api_key=<set>" if self._headers else ""
        return f"{type(self).__name__}({self.url!r}{auth})"


class BertinoClient(_Base):
    """Sync client of a ``bertino-rag serve`` service.

    Args:
        url: the service's base URL.
        api_key: sent as ``Authorization: Bearer``; default ``$BERTINO_RAG_API_KEY``.
        timeout: seconds per request.
        retries: connection attempts retried (a refused or reset connection, not an answer).
    """

    def __init__(
        self, url: str = DEFAULT_URL, *, api_key: str | None = None, timeout: float = 30.0,
        retries: int = 1,
    ) -> None:
        super().__init__(url, api_key, timeout)
        self._http = httpx.Client(
            base_url=self.url, headers=self._headers, timeout=timeout,
            transport=httpx.HTTPTransport(retries=retries, limits=_LIMITS),
        )

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        return _check(self._http.request(method, path, json=body))

    def search(self, query: str, k: int = 10, filter: Any = None, **options: Any) -> list[Hit]:
        """The ``k`` best hits for ``query`` (options: ``rerank``, ``rerank_k``, ``mode``,
        ``group_by``)."""
        out = self._call("POST", "/search", _search_body(query, k, filter, options))
        return [_hit(h) for h in out["hits"]]

    def search_batch(
        self, queries: Sequence[str], k: int = 10, filter: Any = None, **options: Any
    ) -> list[list[Hit]]:
        """:meth:`search` for several queries in one request."""
        if isinstance(queries, str):
            raise ValueError("search_batch takes a list of queries; use search() for one")
        out = self._call("POST", "/search", _search_body(queries, k, filter, options))
        return [[_hit(h) for h in hits] for hits in out["results"]]

    def index(self, documents: Iterable[Any]) -> dict[str, Any]:
        """Index documents; returns ``ids`` (input order), the index report and ``count``."""
        body = {"documents": [_document(d) for d in documents]}
        return self._call("POST", "/documents", body)

    def delete(
        self, ids: Sequence[str] | None = None, *, document_ids: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """Delete by ids (or document ids); returns ``deleted`` and ``count``."""
        return self._call("DELETE", "/documents", _delete_body(ids, document_ids))

    def get(self, ids: Sequence[str]) -> list[Hit]:
        """Stored entries by id, in that order (unknown ids are left out); ``score`` is 0."""
        out = self._call("POST", "/documents/get", _ids(ids))
        return [_hit({**d, "score": 0.0}) for d in out["documents"]]

    def embed(
        self, texts: Sequence[str], *, dimensions: int | None = None,
        input_type: str | None = None, model: str | None = None,
    ) -> list[list[float]]:
        """Vectors of ``texts`` from the served model (``/v1/embeddings``): normalized, cut to
        ``dimensions`` (a Matryoshka dim of the model) when given; ``input_type`` ``"query"``
        or ``"document"`` selects the model's prompt."""
        return _vectors(self._call("POST", "/v1/embeddings",
                                   _embed_body(texts, dimensions, input_type, model)))

    def collections(self) -> list[dict[str, Any]]:
        return self._call("GET", "/collections")

    def health(self) -> dict[str, Any]:
        """``/health``; raises :class:`ServiceError` (503) when the service is not ready."""
        return self._call("GET", "/health")

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> BertinoClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncBertinoClient(_Base):
    """Async client of a ``bertino-rag serve`` service (same methods as
    :class:`BertinoClient`, awaited)."""

    def __init__(
        self, url: str = DEFAULT_URL, *, api_key: str | None = None, timeout: float = 30.0,
        retries: int = 1,
    ) -> None:
        super().__init__(url, api_key, timeout)
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=self._headers, timeout=timeout,
            transport=httpx.AsyncHTTPTransport(retries=retries, limits=_LIMITS),
        )

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        return _check(await self._http.request(method, path, json=body))

    async def search(
        self, query: str, k: int = 10, filter: Any = None, **options: Any
    ) -> list[Hit]:
        out = await self._call("POST", "/search", _search_body(query, k, filter, options))
        return [_hit(h) for h in out["hits"]]

    async def search_batch(
        self, queries: Sequence[str], k: int = 10, filter: Any = None, **options: Any
    ) -> list[list[Hit]]:
        if isinstance(queries, str):
            raise ValueError("search_batch takes a list of queries; use search() for one")
        out = await self._call("POST", "/search", _search_body(queries, k, filter, options))
        return [[_hit(h) for h in hits] for hits in out["results"]]

    async def index(self, documents: Iterable[Any]) -> dict[str, Any]:
        body = {"documents": [_document(d) for d in documents]}
        return await self._call("POST", "/documents", body)

    async def delete(
        self, ids: Sequence[str] | None = None, *, document_ids: Sequence[str] | None = None
    ) -> dict[str, Any]:
        return await self._call("DELETE", "/documents", _delete_body(ids, document_ids))

    async def get(self, ids: Sequence[str]) -> list[Hit]:
        out = await self._call("POST", "/documents/get", _ids(ids))
        return [_hit({**d, "score": 0.0}) for d in out["documents"]]

    async def embed(
        self, texts: Sequence[str], *, dimensions: int | None = None,
        input_type: str | None = None, model: str | None = None,
    ) -> list[list[float]]:
        return _vectors(await self._call("POST", "/v1/embeddings",
                                         _embed_body(texts, dimensions, input_type, model)))

    async def collections(self) -> list[dict[str, Any]]:
        return await self._call("GET", "/collections")

    async def health(self) -> dict[str, Any]:
        return await self._call("GET", "/health")

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncBertinoClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
