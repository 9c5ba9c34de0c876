"""ASGI middleware of the service: API key, request size, request metrics; and the access
log's redaction of query strings.

Plain ASGI (not Starlette's ``BaseHTTPMiddleware``) so that a rejected request is answered
before its body is read, and the body bound also holds for chunked uploads without a
``Content-Length``.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["OPENAI_PREFIX", "ApiKeyMiddleware", "BodyLimitMiddleware", "MetricsMiddleware",
           "RedactQueryFilter", "error_body", "redact_access_log", "validation_detail"]

#: paths of the OpenAI-compatible API: their errors also carry OpenAI's ``error`` object
OPENAI_PREFIX = "/v1/"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def error_body(path: str, status: int, detail: str, *, param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """The JSON of an error answer: ``{"detail": ...}``, the service's own shape; on the
    OpenAI-compatible paths also OpenAI's ``{"error": {"message", "type", "param", "code"}}``,
    which OpenAI clients read their exception's message from."""
    body: dict[str, Any] = {"detail": detail}
    if path.startswith(OPENAI_PREFIX):
        kind = "invalid_request_error" if status < 500 else "server_error"
        if status == 401:
            kind = "authentication_error"
        body["error"] = {"message": detail, "type": kind, "param": param, "code": code}
    return body


def validation_detail(errors: Any) -> list[dict[str, Any]]:
    """Request validation errors as the service answers them: each error's ``type``, ``loc``
    and ``msg``, without FastAPI's echo of the ``input`` (a bad query of megabytes was sent
    back whole, and an input with a lone surrogate could not be encoded as JSON at all)."""
    return [{key: e[key] for key in ("type", "loc", "msg") if key in e} for e in errors]


async def _json_error(
    send: Send, scope: Scope, status: int, detail: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = json.dumps(error_body(scope.get("path", ""), status, detail)).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()), *(headers or [])],
    })
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


class ApiKeyMiddleware:
    """Every request but ``open_paths`` must carry the key, as ``Authorization: Bearer KEY``
    or ``X-API-Key: KEY``. Compared with :func:`hmac.compare_digest` (constant time); the key
    is never logged and never accepted in the URL (URLs end up in access logs)."""

    def __init__(self, app: ASGIApp, api_key: str, open_paths: frozenset[str]) -> None:
        self.app = app
        self._key = api_key.encode()
        self.open_paths = open_paths

    def _authorized(self, scope: Scope) -> bool:
        given = _header(scope, b"x-api-key")
        if given is None:
            auth = _header(scope, b"authorization") or b""
            scheme, _, token = auth.partition(b" ")
            given = token.strip() if scheme.lower() == b"bearer" else b""
        return hmac.compare_digest(given, self._key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        if not self._authorized(scope):
            await _json_error(
                send, scope, 401,
                "missing or wrong API key: send it as 'Authorization: Bearer <key>' or "
                "'X-API-Key: <key>'",
                [(b"www-authenticate", b"Bearer")],
            )
            return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """Answer 413 to a request body over ``max_bytes``: at once when ``Content-Length`` says
    so, otherwise as soon as the bytes read exceed it (the body is buffered, bounded, and
    replayed to the app)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> str:
        return (
            f"request body larger than this server's limit of {self.max_bytes} bytes "
            "(--max-request-mb): send fewer documents or queries per request"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _header(scope, b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await _json_error(send, scope, 400, "invalid Content-Length header")
                return
            if declared > self.max_bytes:
                await _json_error(send, scope, 413, self._too_large())
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _json_error(send, scope, 413, self._too_large())
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class MetricsMiddleware:
    """Count requests and time them, per known route path (others count as ``other``, so a
    scan of random URLs cannot blow up the number of series)."""

    def __init__(
        self, app: ASGIApp, paths: frozenset[str], observe: Callable[[str, str, int, float], None]
    ) -> None:
        self.app = app
        self.paths = paths
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            path = scope["path"] if scope["path"] in self.paths else "other"
            self.observe(scope["method"], path, status, time.perf_counter() - started)


#: the logger uvicorn writes its access log to
ACCESS_LOGGER = "uvicorn.access"


class RedactQueryFilter(logging.Filter):
    """Drop the query string from the URL of uvicorn's access log lines.

    The key is never accepted in the URL, but a client may still send one there
    (``?api_key=KEY``), and uvicorn logs the whole URL: its line becomes
    ``"POST /search?<redacted> HTTP/1.1"``. uvicorn passes the URL as the third argument of
    its record (``client, method, path, http version, status``).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            path, sep, _ = args[2].partition("?")
            if sep:
                record.args = (*args[:2], f"{path}?<redacted>", *args[3:])
        return True


def redact_access_log() -> None:
    """Install :class:`RedactQueryFilter` on uvicorn's access logger (once)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, RedactQueryFilter) for f in logger.filters):
        logger.addFilter(RedactQueryFilter())
