"""How the service shares one encoder between searches and indexing.

- :class:`SearchBatcher` collects the queries of concurrent ``/search`` requests for a short
  window (``wait_s``, bounded by ``max_batch`` queries) and runs them as one
  ``Retriever.search_batch`` call per distinct set of search parameters (k, filter, rerank,
  mode...), in a worker thread: concurrent queries with the same parameters cost one encoder
  forward pass, and the event loop never waits on the encoder or the store. While one batch
  runs, the next one fills up, so batches grow with the load without a longer window.
- :class:`EncoderGate` gives searches priority over indexing at batch granularity: before
  each batch of documents is encoded, indexing waits until no search batch is waiting, or
  until one search batch has been served since it started waiting. A search therefore waits
  for at most the one document batch being encoded (the service indexes in small batches for
  that reason), and indexing still advances one batch per search batch under full load.

Everything here goes through the public :class:`~bertino_rag.retriever.Retriever` methods, so
every search option the retriever has is served with the same meaning.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EncoderGate", "SearchBatcher", "ServiceBusy", "gate_encoder"]


class ServiceBusy(RuntimeError):
    """More queries are waiting than the service accepts (``max_pending``)."""


class EncoderGate:
    """Searches first, indexing between search batches (see the module docstring)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._searching = 0
        self._served = 0
        self._holder = threading.local()

    @contextlib.contextmanager
    def searching(self) -> Iterator[None]:
        """Hold while a search (or embedding) batch uses the encoder."""
        with self._cond:
            self._searching += 1
        self._holder.held = True
        try:
            yield
        finally:
            self._holder.held = False
            with self._cond:
                self._searching -= 1
                self._served += 1
                self._cond.notify_all()

    def before_index_batch(self) -> None:
        """Block until indexing may encode its next batch (at once in a thread that holds the
        gate: a batch that encodes documents would otherwise wait for itself)."""
        if getattr(self._holder, "held", False):
            return
        with self._cond:
            start = self._served
            self._cond.wait_for(lambda: self._searching == 0 or self._served != start)


def gate_encoder(encoder: Any, gate: EncoderGate) -> Callable[[], None]:
    """Make ``encoder.encode`` wait on ``gate`` before each batch of documents.

    The retriever indexes through ``encoder.encode(kind="document")``, one write batch per
    call; wrapping that method (on this instance only) is the one point where indexing can
    yield to searches between batches without changing the retriever. Returns a function that
    restores the original method.
    """
    original = encoder.encode

    def encode(texts: Any, *args: Any, kind: str = "document", **kwargs: Any) -> Any:
        if kind == "document":
            gate.before_index_batch()
        return original(texts, *args, kind=kind, **kwargs)

    encode.__doc__ = original.__doc__
    setattr(encoder, "encode", encode)  # noqa: B010 - an instance attribute, on purpose

    def restore() -> None:
        if encoder.__dict__.get("encode") is encode:
            del encoder.__dict__["encode"]

    return restore


@dataclass
class _Request:
    queries: list[str]
    options: dict[str, Any]
    future: asyncio.Future[list[Any]]
    key: str = field(init=False)

    def __post_init__(self) -> None:
        self.key = json.dumps(self.options, sort_keys=True, default=repr)


_STOP = object()


class SearchBatcher:
    """Micro-batches concurrent searches into ``search_batch`` calls (or any call that takes a
    list of texts and returns one result per text: ``/v1/embeddings`` batches its inputs here).

    Args:
        search_batch: ``(queries, **options) -> list[result]``, one result per query, run in
            ``executor``.
        gate: held around each call, so that indexing yields to it.
        executor: the worker threads that run the calls.
        max_batch: most queries in one call.
        wait_s: how long the first request of a batch waits for others (0: only those
            already queued).
        max_pending: most queries queued; beyond it :meth:`submit` raises
            :class:`ServiceBusy`.
        on_batch: called with the number of queries of each call (metrics).
    """

    def __init__(
        self,
        search_batch: Callable[..., list[Any]],
        gate: EncoderGate,
        executor: Executor,
        *,
        max_batch: int = 64,
        wait_s: float = 0.002,
        max_pending: int = 1024,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        if max_batch <= 0:
            raise ValueError(f"max_batch must be positive, got {max_batch}")
        if wait_s < 0:
            raise ValueError(f"wait_s must be >= 0, got {wait_s}")
        self._search_batch = search_batch
        self._gate = gate
        self._executor = executor
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.max_pending = max_pending
        self._on_batch = on_batch
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._pending = 0
        self._carry: _Request | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="search-batcher")

    async def close(self) -> None:
        """Serve what is queued, then stop."""
        if self._task is None:
            return
        self._queue.put_nowait(_STOP)
        await self._task
        self._task = None

    async def submit(self, queries: list[str], options: dict[str, Any]) -> list[Any]:
        """Search ``queries`` with ``options``; results in input order."""
        if self._task is None or self._task.done():
            raise ServiceBusy("the search service is not running")
        if self._pending + len(queries) > self.max_pending:
            raise ServiceBusy(
                f"{self._pending} queries are already waiting (limit {self.max_pending}); "
                "retry shortly"
            )
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._pending += len(queries)
        self._queue.put_nowait(_Request(list(queries), dict(options), future))
        try:
            return await future
        finally:
            self._pending -= len(queries)

    async def _next(self, timeout: float | None) -> Any:
        if self._carry is not None:
            item, self._carry = self._carry, None
            return item
        if timeout is None:
            return await self._queue.get()
        if timeout <= 0:
            return self._queue.get_nowait()
        return await asyncio.wait_for(self._queue.get(), timeout)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            first = await self._next(None)
            if first is _STOP:
                return
            batch = [first]
            n = len(first.queries)
            deadline = loop.time() + self.wait_s
            while n < self.max_batch:
                try:
                    item = await self._next(deadline - loop.time())
                except (asyncio.QueueEmpty, asyncio.TimeoutError):
                    break
                if item is _STOP:
                    stopping = True
                    break
                if n + len(item.queries) > self.max_batch:
                    self._carry = item
                    break
                batch.append(item)
                n += len(item.queries)
            await self._run(batch)
        # stopping: serve what is still queued
        while self._carry is not None or not self._queue.empty():
            item = await self._next(0)
            if item is not _STOP:
                await self._run([item])

    async def _run(self, batch: list[_Request]) -> None:
        groups: dict[str, list[_Request]] = {}
        for req in batch:
            if not req.future.done():  # a client that went away is not searched for
                groups.setdefault(req.key, []).append(req)
        loop = asyncio.get_running_loop()
        for reqs in groups.values():
            try:
                results = await loop.run_in_executor(self._executor, self._call, reqs)
            except BaseException as err:  # noqa: BLE001 - handed to each waiting request
                if len(reqs) > 1 and isinstance(err, (ValueError, TypeError)):
                    # one request's bad input must not fail the others: retry them one by one
                    for req in reqs:
                        await self._run_one(req)
                    continue
                for req in reqs:
                    if not req.future.done():
                        req.future.set_exception(err)
                if not isinstance(err, Exception):
                    raise
                continue
            for req, res in zip(reqs, results, strict=True):
                if not req.future.done():
                    req.future.set_result(res)

    async def _run_one(self, req: _Request) -> None:
        loop = asyncio.get_running_loop()
        try:
            (res,) = await loop.run_in_executor(self._executor, self._call, [req])
        except Exception as err:  # noqa: BLE001 - handed to the request
            if not req.future.done():
                req.future.set_exception(err)
        else:
            if not req.future.done():
                req.future.set_result(res)

    def _call(self, reqs: list[_Request]) -> list[list[Any]]:
        """One ``search_batch`` for the queries of requests with the same options."""
        queries = [q for r in reqs for q in r.queries]
        if self._on_batch is not None:
            self._on_batch(len(queries))
        with self._gate.searching():
            hits = self._search_batch(queries, **reqs[0].options)
        out, start = [], 0
        for r in reqs:
            out.append(hits[start : start + len(r.queries)])
            start += len(r.queries)
        return out
