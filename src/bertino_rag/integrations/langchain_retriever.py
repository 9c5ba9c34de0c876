"""LangChain ``BaseRetriever`` over a bertino-rag :class:`~bertino_rag.retriever.Retriever`.

Apart from :mod:`bertino_rag.integrations.langchain` (which re-exports it) so that
``Retriever.as_langchain()`` can build one without the retriever module and this one
importing each other: the class needs only something that searches (:class:`Searcher`).
"""

from __future__ import annotations

from .._deps import require

require("langchain_core", "langchain")

from typing import Any, Literal, Protocol, runtime_checkable  # noqa: E402

from langchain_core.callbacks import (  # noqa: E402
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document  # noqa: E402
from langchain_core.retrievers import BaseRetriever  # noqa: E402
from pydantic import ConfigDict, Field, model_validator  # noqa: E402

from ..types import Hit  # noqa: E402
from ..validation import rename_fields, renamed_options  # noqa: E402

__all__ = ["BertinoRetriever", "Searcher"]


@runtime_checkable
class Searcher(Protocol):
    """What :class:`BertinoRetriever` searches: a :class:`~bertino_rag.retriever.Retriever`."""

    def search(self, *args: Any, **kwargs: Any) -> list[Hit]: ...

    async def asearch(self, *args: Any, **kwargs: Any) -> list[Hit]: ...


_SEARCH_KEYS = ("k", "filter", "rescore", "rescore_k", "mode", "group_by", "expand",
                "reranker", "rerank_top")


class BertinoRetriever(BaseRetriever):
    """LangChain retriever over a bertino-rag :class:`~bertino_rag.retriever.Retriever`.

    Each returned ``Document`` has ``id`` set and carries the id and the cosine score in its
    metadata (under ``id_key`` and ``score_key``; a stored field of the same name is shadowed
    in the returned copy only). ``k``, ``filter``, ``rescore`` and ``rescore_k`` can also be
    passed per call: ``retriever.invoke(question, k=3)``.

    Attributes:
        retriever: the bertino-rag retriever searched.
        k: number of documents returned.
        filter: metadata filter, e.g. ``{"title": "Amazzonia"}``.
        rescore: rescore with full vectors (``None``: the retriever's setting).
        rescore_k: candidates rescored (``None``: the retriever's setting).
        rerank, rerank_k: deprecated names of ``rescore`` and ``rescore_k``.
        group_by: ``"document"``: one ``Document`` per indexed document (its best chunk, with
            the ids of its matching chunks under ``"chunk_ids"`` in the metadata).
        expand: neighbouring chunks joined to each chunk on each side (see
            :meth:`Retriever.search`).
        reranker: a cross-encoder reordering the best ``rerank_top`` candidates (``None``: the
            retriever's; ``False``: none; see :meth:`Retriever.search`).
        rerank_top: candidates the reranker reads.
        id_key: metadata key of the document id.
        score_key: metadata key of the score.
        rerank_score_key: metadata key of the reranker's score (set on reranked hits only).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    retriever: Searcher
    k: int = Field(default=4, gt=0)
    filter: Any = None
    rescore: bool | None = None
    rescore_k: int | None = Field(default=None, gt=0)
    #: deprecated names of ``rescore`` and ``rescore_k``
    rerank: bool | None = None
    rerank_k: int | None = Field(default=None, gt=0)
    #: ``"dense"``, ``"lexical"`` or ``"hybrid"`` (``None``: hybrid on a hybrid collection)
    mode: str | None = None
    group_by: Literal["document"] | None = None
    expand: int = Field(default=0, ge=0)
    reranker: Any = None
    rerank_top: int | None = Field(default=None, gt=0)
    id_key: str = "id"
    score_key: str = "score"
    rerank_score_key: str = "rerank_score"

    @model_validator(mode="after")
    def _renamed(self) -> BertinoRetriever:
        rename_fields(self)
        return self

    def _search_args(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs = renamed_options(kwargs)
        unknown = set(kwargs) - set(_SEARCH_KEYS)
        if unknown:
            raise TypeError(
                f"BertinoRetriever got unknown search arguments {sorted(unknown)}; "
                f"allowed: {list(_SEARCH_KEYS)}"
            )
        args = {key: kwargs.get(key, getattr(self, key)) for key in _SEARCH_KEYS}
        return args

    def _to_documents(self, hits: list[Hit]) -> list[Document]:
        return [
            Document(
                id=h.id,
                page_content=h.text,
                metadata={**h.metadata, self.id_key: h.id, self.score_key: h.score,
                          **({self.rerank_score_key: h.rerank_score}
                             if h.rerank_score is not None else {}),
                          **({"chunk_ids": [c.id for c in h.chunks]} if h.chunks else {})},
            )
            for h in hits
        ]

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        a = self._search_args(kwargs)
        hits = self.retriever.search(
            query, a["k"], a["filter"], rescore=a["rescore"], rescore_k=a["rescore_k"],
            mode=a["mode"], group_by=a["group_by"], expand=a["expand"],
            reranker=a["reranker"], rerank_top=a["rerank_top"],
        )
        return self._to_documents(hits)

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        a = self._search_args(kwargs)
        hits = await self.retriever.asearch(
            query, a["k"], a["filter"], rescore=a["rescore"], rescore_k=a["rescore_k"],
            mode=a["mode"], group_by=a["group_by"], expand=a["expand"],
            reranker=a["reranker"], rerank_top=a["rerank_top"],
        )
        return self._to_documents(hits)
