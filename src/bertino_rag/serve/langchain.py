"""A LangChain retriever that searches a ``bertino-rag serve`` service.

Needs ``langchain-core`` and ``httpx`` only: the application process loads no model and no
torch. Its documents look like those of
:class:`~bertino_rag.integrations.langchain.BertinoRetriever` (id set, id and cosine score in
the metadata), so the two are interchangeable in a chain.

Example:
    >>> from bertino_rag.serve.langchain import BertinoServiceRetriever  # doctest: +SKIP
    >>> retriever = BertinoServiceRetriever(url="http://127.0.0.1:8000", k=4)  # doctest: +SKIP
    >>> retriever.invoke("Chi ha dipinto la Gioconda?")  # doctest: +SKIP
"""

from __future__ import annotations

from .._deps import require

require("langchain_core", "langchain")

import asyncio  # noqa: E402
from typing import Any  # noqa: E402

from langchain_core.callbacks import (  # noqa: E402
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document  # noqa: E402
from langchain_core.retrievers import BaseRetriever  # noqa: E402
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr  # noqa: E402

from ..types import Hit  # noqa: E402
from .client import DEFAULT_URL, AsyncBertinoClient, BertinoClient  # noqa: E402

__all__ = ["BertinoServiceRetriever"]

_SEARCH_KEYS = ("k", "filter", "rerank", "rerank_k", "mode", "group_by")


class BertinoServiceRetriever(BaseRetriever):
    """LangChain ``BaseRetriever`` over the HTTP service; sync (``invoke``, ``batch``) and
    async (``ainvoke``, ``abatch``). Search options can be set per call:
    ``retriever.invoke(question, k=3, filter={"fonte": "arte"})``.

    Attributes:
        url: the service's base URL.
        api_key: the service's key (default ``$BERTINO_RAG_API_KEY``).
        k: number of documents returned.
        filter: metadata filter.
        rerank: rescore with full vectors (``None``: the service's setting).
        rerank_k: candidates rescored (``None``: the service's setting).
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

    def _args(self, kwargs: dict[str, Any]) -> dict[str, Any]:
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
