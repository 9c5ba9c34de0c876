"""LangChain over a ``bertino-rag serve`` service: a retriever, a vector store, embeddings.

Needs ``langchain-core`` and ``httpx`` only: the application process loads no model and no
torch, and reads, writes and embeds through the service's client.

- :class:`BertinoServiceRetriever`: a ``BaseRetriever``; its documents look like those of
  :class:`~bertino_rag.integrations.langchain.BertinoRetriever` (id set, id and cosine score
  in the metadata), so the two are interchangeable in a chain.
- :class:`BertinoServiceVectorStore`: a ``VectorStore`` over the served collection: add
  (the service embeds, chunks and writes idempotently), delete, get by id, search.
- :class:`BertinoServiceEmbeddings`: ``Embeddings`` from the served model
  (``/v1/embeddings``), with Matryoshka truncation (``dim``).

Example:
    >>> from bertino_rag.serve.langchain import BertinoServiceRetriever  # doctest: +SKIP
    >>> retriever = BertinoServiceRetriever(url="http://127.0.0.1:8000", k=4)  # doctest: +SKIP
    >>> retriever.invoke("Chi ha dipinto la Gioconda?")  # doctest: +SKIP
"""

from __future__ import annotations

from .._deps import require

require("langchain_core", "langchain")

import asyncio  # noqa: E402
from collections.abc import Callable, Iterable, Sequence  # noqa: E402
from typing import Any  # noqa: E402

from langchain_core.callbacks import (  # noqa: E402
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import Embeddings  # noqa: E402
from langchain_core.retrievers import BaseRetriever  # noqa: E402
from langchain_core.vectorstores import VectorStore  # noqa: E402
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr, model_validator  # noqa: E402

from ..types import Hit  # noqa: E402
from ..validation import (  # noqa: E402
    positive_int,
    rename_fields,
    renamed_options,
)
from .client import DEFAULT_URL, AsyncBertinoClient, BertinoClient  # noqa: E402

__all__ = ["BertinoServiceEmbeddings", "BertinoServiceRetriever", "BertinoServiceVectorStore"]

_SEARCH_KEYS = ("k", "filter", "rescore", "rescore_k", "mode", "group_by")


class BertinoServiceRetriever(BaseRetriever):
    """LangChain ``BaseRetriever`` over the HTTP service; sync (``invoke``, ``batch``) and
    async (``ainvoke``, ``abatch``). Search options can be set per call:
    ``retriever.invoke(question, k=3, filter={"fonte": "arte"})``.

    Attributes:
        url: the service's base URL.
        api_key: the service's key (default ``$BERTINO_RAG_API_KEY``).
        k: number of documents returned.
        filter: metadata filter.
        rescore: rescore with full vectors (``None``: the service's setting).
        rescore_k: candidates rescored (``None``: the service's setting).
        rerank, rerank_k: deprecated names of ``rescore`` and ``rescore_k``.
        mode: search mode, where the service's retriever has modes.
        group_by: grouping of hits, where the service's retriever can group.
        timeout: seconds per request.
        id_key: metadata key of the document id.
        score_key: metadata key of the score.
    """

    model_config = ConfigDict(extra="forbid")

    url: str = DEFAULT_URL
    api_key: SecretStr | None = None
    k: int = Field(default=4, gt=0)
    filter: dict[str, Any] | None = None
    rescore: bool | None = None
    rescore_k: int | None = Field(default=None, gt=0)
    rerank: bool | None = None
    rerank_k: int | None = Field(default=None, gt=0)
    mode: str | None = None
    group_by: str | None = None
    timeout: float = 30.0
    id_key: str = "id"
    score_key: str = "score"

    _client: BertinoClient | None = PrivateAttr(default=None)
    _aclient: AsyncBertinoClient | None = PrivateAttr(default=None)
    _aloop: Any = PrivateAttr(default=None)

    def _key(self) -> str | None:
        return None if self.api_key is None else self.api_key.get_secret_value()

    @model_validator(mode="after")
    def _renamed(self) -> BertinoServiceRetriever:
        rename_fields(self)
        return self

    def _args(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs = renamed_options(kwargs)
        unknown = set(kwargs) - set(_SEARCH_KEYS)
        if unknown:
            raise TypeError(
                f"BertinoServiceRetriever got unknown search arguments {sorted(unknown)}; "
                f"allowed: {list(_SEARCH_KEYS)}"
            )
        return {key: kwargs.get(key, getattr(self, key)) for key in _SEARCH_KEYS}

    def _to_documents(self, hits: list[Hit]) -> list[Document]:
        return [
            Document(id=h.id, page_content=h.text,
                     metadata={**h.metadata, self.id_key: h.id, self.score_key: h.score})
            for h in hits
        ]

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        if self._client is None:
            self._client = BertinoClient(self.url, api_key=self._key(), timeout=self.timeout)
        a = self._args(kwargs)
        return self._to_documents(self._client.search(query, a.pop("k"), a.pop("filter"), **a))

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        # httpx binds an async connection pool to the event loop that opened it: one client
        # per loop
        loop = asyncio.get_running_loop()
        if self._aclient is None or self._aloop is not loop:
            self._aclient = AsyncBertinoClient(self.url, api_key=self._key(),
                                               timeout=self.timeout)
            self._aloop = loop
        a = self._args(kwargs)
        hits = await self._aclient.search(query, a.pop("k"), a.pop("filter"), **a)
        return self._to_documents(hits)


class _Clients:
    """A sync client, and one async client per event loop (httpx binds an async connection
    pool to the loop that opened it)."""

    def __init__(self, url: str, api_key: str | None, timeout: float) -> None:
        self.url, self.api_key, self.timeout = url, api_key, timeout
        self._sync: BertinoClient | None = None
        self._async: AsyncBertinoClient | None = None
        self._loop: Any = None

    @property
    def sync(self) -> BertinoClient:
        if self._sync is None:
            self._sync = BertinoClient(self.url, api_key=self.api_key, timeout=self.timeout)
        return self._sync

    @property
    def aio(self) -> AsyncBertinoClient:
        loop = asyncio.get_running_loop()
        if self._async is None or self._loop is not loop:
            self._async = AsyncBertinoClient(self.url, api_key=self.api_key,
                                             timeout=self.timeout)
            self._loop = loop
        return self._async


class BertinoServiceEmbeddings(Embeddings):
    """LangChain ``Embeddings`` computed by the service's model (``POST /v1/embeddings``).

    Args:
        url: the service's base URL.
        api_key: the service's key (default ``$BERTINO_RAG_API_KEY``).
        dim: Matryoshka truncation, renormalized: one of the dims the model was trained for
            (default: the full vector).
        batch_size: texts per request (at most the service's ``--max-documents``).
        timeout: seconds per request.

    Queries are embedded with ``input_type="query"`` (the model's query prompt, where it has
    one), documents with ``"document"``.
    """

    def __init__(self, url: str = DEFAULT_URL, *, api_key: str | None = None,
                 dim: int | None = None, batch_size: int = 256, timeout: float = 60.0) -> None:
        batch_size = positive_int(batch_size, "batch_size")
        self.url = url
        self.dim = dim
        self.batch_size = batch_size
        self._clients = _Clients(url, api_key, timeout)

    def _batches(self, texts: list[str]) -> Iterable[list[str]]:
        for start in range(0, len(texts), self.batch_size):
            yield texts[start:start + self.batch_size]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        out: list[list[float]] = []
        for batch in self._batches(list(texts)):
            out += self._clients.sync.embed(batch, dimensions=self.dim, input_type="document")
        return out

    def embed_query(self, text: str) -> list[float]:
        return self._clients.sync.embed([text], dimensions=self.dim, input_type="query")[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        out: list[list[float]] = []
        for batch in self._batches(list(texts)):
            out += await self._clients.aio.embed(batch, dimensions=self.dim,
                                                 input_type="document")
        return out

    async def aembed_query(self, text: str) -> list[float]:
        return (await self._clients.aio.embed([text], dimensions=self.dim,
                                              input_type="query"))[0]

    def __repr__(self) -> str:
        return f"BertinoServiceEmbeddings({self.url!r}, dim={self.dim})"


def _stored(hit: Hit) -> Document:
    metadata = {**hit.metadata, "chunk_ids": [c.id for c in hit.chunks]} if hit.chunks \
        else hit.metadata
    return Document(id=hit.id, page_content=hit.text, metadata=metadata)


class BertinoServiceVectorStore(VectorStore):
    """LangChain ``VectorStore`` over the collection a ``bertino-rag serve`` service serves.

    A translation of LangChain's calls onto the service's client: the service embeds, chunks
    long texts and writes (a text already stored unchanged is not written again; without an
    id, a text's id is a hash of it, so adding it twice stores it once), deletes a document
    with its chunks, reads by id and searches (two-stage, hybrid, grouping: the collection's
    settings). Scores are the service's (cosine for dense search); relevance scores are the
    same, clipped to ``[0, 1]``.

    Args:
        url: the service's base URL.
        api_key: the service's key (default ``$BERTINO_RAG_API_KEY``).
        timeout: seconds per request.
        batch_size: documents per write request (at most the service's ``--max-documents``).
    """

    def __init__(self, url: str = DEFAULT_URL, *, api_key: str | None = None,
                 timeout: float = 60.0, batch_size: int = 256) -> None:
        batch_size = positive_int(batch_size, "batch_size")
        self.url = url
        self.batch_size = batch_size
        self._api_key = api_key
        self._timeout = timeout
        self._clients = _Clients(url, api_key, timeout)

    @property
    def embeddings(self) -> Embeddings:
        """The service's own embeddings (the vectors this store searches)."""
        return BertinoServiceEmbeddings(self.url, api_key=self._api_key, timeout=self._timeout)

    # ------------------------------------------------------------------ writes
    def _documents(self, texts: Iterable[str], metadatas: list[dict] | None,
                   ids: Sequence[str | None] | None, kwargs: dict[str, Any]) -> list[dict]:
        if kwargs:
            raise TypeError(f"add_texts got unknown arguments {sorted(kwargs)}")
        texts = list(texts)
        if metadatas is not None and len(metadatas) != len(texts):
            raise ValueError(f"got {len(metadatas)} metadatas for {len(texts)} texts")
        if ids is not None and len(ids) != len(texts):
            raise ValueError(f"got {len(ids)} ids for {len(texts)} texts")
        docs = []
        for n, text in enumerate(texts):
            doc: dict[str, Any] = {"text": text, "metadata": metadatas[n] if metadatas else {}}
            if ids is not None and ids[n]:
                doc["id"] = str(ids[n])
            docs.append(doc)
        return docs

    def _batches(self, docs: list[dict]) -> Iterable[list[dict]]:
        for start in range(0, len(docs), self.batch_size):
            yield docs[start:start + self.batch_size]

    def add_texts(self, texts: Iterable[str], metadatas: list[dict] | None = None, *,
                  ids: list[str] | None = None, **kwargs: Any) -> list[str]:
        """Index texts through the service; returns their ids in input order.

        Raises:
            ServiceError: the service refused them (an invalid text or metadata, named by
                position; nothing of that request is written).
        """
        out: list[str] = []
        for batch in self._batches(self._documents(texts, metadatas, ids, kwargs)):
            out += self._clients.sync.index(batch)["ids"]
        return out

    async def aadd_texts(self, texts: Iterable[str], metadatas: list[dict] | None = None, *,
                         ids: list[str] | None = None, **kwargs: Any) -> list[str]:
        out: list[str] = []
        for batch in self._batches(self._documents(texts, metadatas, ids, kwargs)):
            out += (await self._clients.aio.index(batch))["ids"]
        return out

    @staticmethod
    def _ids_to_delete(ids: list[str] | None, kwargs: dict[str, Any]) -> list[str]:
        if kwargs:
            raise TypeError(f"delete got unknown arguments {sorted(kwargs)}")
        if ids is None:
            raise ValueError("delete needs the ids to delete: a service-backed store does not "
                             "delete a whole collection")
        return [ids] if isinstance(ids, str) else [str(i) for i in ids]

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        """Delete documents by id, with all their chunks (unknown ids are ignored)."""
        self._clients.sync.delete(self._ids_to_delete(ids, kwargs))
        return True

    async def adelete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        await self._clients.aio.delete(self._ids_to_delete(ids, kwargs))
        return True

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """Stored documents by id; unknown ids are skipped."""
        return [_stored(h) for h in self._clients.sync.get(list(ids))]

    async def aget_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        return [_stored(h) for h in await self._clients.aio.get(list(ids))]

    # ------------------------------------------------------------------ search
    @staticmethod
    def _search_args(kwargs: dict[str, Any]) -> dict[str, Any]:
        allowed = {"filter", "mode", "group_by"}
        unknown = set(kwargs) - allowed
        if unknown:
            raise TypeError(f"unknown search arguments {sorted(unknown)}; allowed: "
                            f"{', '.join(sorted(allowed))}")
        return kwargs

    def similarity_search_with_score(self, query: str, k: int = 4,
                                     **kwargs: Any) -> list[tuple[Document, float]]:
        """The ``k`` best documents with their scores. Takes ``filter``, ``mode`` and
        ``group_by="document"``."""
        hits = self._clients.sync.search(query, k, **self._search_args(kwargs))
        return [(_stored(h), h.score) for h in hits]

    async def asimilarity_search_with_score(self, query: str, k: int = 4,
                                            **kwargs: Any) -> list[tuple[Document, float]]:
        hits = await self._clients.aio.search(query, k, **self._search_args(kwargs))
        return [(_stored(h), h.score) for h in hits]

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        return [d for d, _ in self.similarity_search_with_score(query, k, **kwargs)]

    async def asimilarity_search(self, query: str, k: int = 4,
                                 **kwargs: Any) -> list[Document]:
        return [d for d, _ in await self.asimilarity_search_with_score(query, k, **kwargs)]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        return lambda score: min(1.0, max(0.0, score))

    @classmethod
    def from_texts(cls, texts: list[str], embedding: Embeddings | None = None,
                   metadatas: list[dict] | None = None, *, ids: list[str] | None = None,
                   **kwargs: Any) -> BertinoServiceVectorStore:
        """A store on the service at ``url=`` (``kwargs`` go to the constructor) with
        ``texts`` added. The service embeds them with its own model: ``embedding`` must be
        ``None`` or this service's :class:`BertinoServiceEmbeddings`."""
        if embedding is not None and not isinstance(embedding, BertinoServiceEmbeddings):
            raise ValueError(
                f"the service embeds with its own model; pass embedding=None (not a "
                f"{type(embedding).__name__})"
            )
        store = cls(**kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store

    def __repr__(self) -> str:
        return f"BertinoServiceVectorStore({self.url!r})"
