"""The retrieval service (``bertino-rag serve``) and its clients.

- :func:`create_app` / :class:`ServeSettings` (``bertino_rag.serve.app``): the FastAPI app
  over a loaded :class:`~bertino_rag.Retriever`; needs the ``serve`` extra.
- :class:`BertinoClient` / :class:`AsyncBertinoClient` (``bertino_rag.serve.client``): HTTP
  clients that need only ``httpx``: importing them loads no model, torch or web server.
- :class:`BertinoServiceRetriever`, :class:`BertinoServiceVectorStore`,
  :class:`BertinoServiceEmbeddings` (``bertino_rag.serve.langchain``): LangChain's
  ``BaseRetriever``, ``VectorStore`` and ``Embeddings`` over the service (``langchain-core``
  and ``httpx``).
- ``POST /v1/embeddings`` (``bertino_rag.serve.openai``): the OpenAI-compatible embeddings
  API of the app.

Names are imported on first use, so ``import bertino_rag.serve.client`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import ServeSettings, create_app
    from .client import AsyncBertinoClient, BertinoClient, ServiceError
    from .langchain import (
        BertinoServiceEmbeddings,
        BertinoServiceRetriever,
        BertinoServiceVectorStore,
    )

__all__ = [
    "AsyncBertinoClient",
    "BertinoClient",
    "BertinoServiceEmbeddings",
    "BertinoServiceRetriever",
    "BertinoServiceVectorStore",
    "ServeSettings",
    "ServiceError",
    "create_app",
]

_WHERE = {
    "ServeSettings": "app",
    "create_app": "app",
    "AsyncBertinoClient": "client",
    "BertinoClient": "client",
    "ServiceError": "client",
    "BertinoServiceEmbeddings": "langchain",
    "BertinoServiceRetriever": "langchain",
    "BertinoServiceVectorStore": "langchain",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
