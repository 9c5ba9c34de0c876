"""LangChain integration: embeddings, a retriever and a vector store built on bertino-rag.

Needs the ``langchain`` extra (``langchain-core`` only): ``pip install 'bertino-rag[langchain]'``.

- :class:`BertinoEmbeddings`: the core :class:`~bertino_rag.encoder.Encoder` as LangChain
  ``Embeddings``, with Matryoshka truncation (``dim=``, renormalized).
- :class:`BertinoRetriever`: a LangChain ``BaseRetriever`` over a
  :class:`~bertino_rag.retriever.Retriever` (also from ``Retriever.as_langchain()``); works in
  LCEL chains, sync and async.
- :class:`BertinoVectorStore`: a LangChain ``VectorStore`` over any bertino-rag store and any
  LangChain ``Embeddings``, with two-stage Matryoshka search; it supports ids, ``delete``,
  ``get_by_ids``, MMR and LangChain's ``index()`` API (record manager, incremental cleanup).

Example:
    >>> from bertino_rag import Retriever  # doctest: +SKIP
    >>> r = Retriever(dim=128)  # doctest: +SKIP
    >>> r.index(["Leonardo da Vinci dipinse la Gioconda."])  # doctest: +SKIP
    >>> chain = r.as_langchain(k=3) | (lambda docs: docs[0].page_content)  # doctest: +SKIP
"""

from __future__ import annotations

from .._deps import require

require("langchain_core", "langchain")

import asyncio  # noqa: E402
import os  # noqa: E402
import threading  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable, Iterable, Sequence  # noqa: E402
from typing import Any, Literal  # noqa: E402

import numpy as np  # noqa: E402
from langchain_core.callbacks import (  # noqa: E402
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import Embeddings  # noqa: E402
from langchain_core.retrievers import BaseRetriever  # noqa: E402
from langchain_core.vectorstores import VectorStore  # noqa: E402
from langchain_core.vectorstores.utils import maximal_marginal_relevance  # noqa: E402
from pydantic import ConfigDict, Field  # noqa: E402

from ..adapters import VectorStore as CoreStore  # noqa: E402
from ..adapters import make_store  # noqa: E402
from ..encoder import Encoder, matryoshka_slice  # noqa: E402
from ..fusion import Fusion  # noqa: E402
from ..lexical import BM25, Analyzer, lexical_spec  # noqa: E402
from ..pipeline import distinct_documents  # noqa: E402
from ..retriever import Retriever  # noqa: E402
from ..types import Hit, Stamp  # noqa: E402

__all__ = ["BertinoEmbeddings", "BertinoRetriever", "BertinoVectorStore"]


class BertinoEmbeddings(Embeddings):
    """LangChain ``Embeddings`` from the bertino-rag :class:`~bertino_rag.encoder.Encoder`.

    Vectors are L2-normalized; with ``dim`` they are the first ``dim`` Matryoshka components,
    renormalized. Queries use the model's ``query`` prompt when it defines one.

    Args:
        model: hub id or local path (default ``$BERTINO_RAG_MODEL`` or
            ``nickprock/multi-sentence-BERTino``); ignored when ``encoder`` is given.
        encoder: an existing :class:`Encoder` to share (no second copy of the model).
        dim: output dimension (default: the encoder's ``dim``).
        device: ``"cpu"``, ``"cuda"``...; only used when loading ``model``.
        batch_size: texts per forward pass; only used when loading ``model``.
        backend: ``"torch"``, ``"onnx"`` or ``"openvino"``; only used when loading ``model``.

    Raises:
        ValueError: if both ``model`` and ``encoder`` are given, or ``dim`` is out of range.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        encoder: Encoder | None = None,
        dim: int | None = None,
        device: str | None = None,
        batch_size: int = 32,
        backend: str = "torch",
    ) -> None:
        if encoder is not None and model is not None:
            raise ValueError("pass either encoder= or model=, not both")
        self.encoder = encoder or Encoder(
            model, device=device, batch_size=batch_size, backend=backend
        )
        self.dim = self.encoder.dim if dim is None else self.encoder.check_dim(dim)

    @property
    def model_name(self) -> str:
        """The model's hub id or path."""
        return self.encoder.name

    @property
    def model_id(self) -> str:
        """The model id collections are stamped with."""
        return self.encoder.model_id

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents (non-empty strings)."""
        texts = list(texts)
        if not texts:
            return []
        return self.encoder.encode(texts, kind="document", dim=self.dim).index.tolist()

    def embed_query(self, text: str) -> list[float]:
        """Embed one query."""
        return self.encoder.encode_query(text, dim=self.dim).index[0].tolist()

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Async :meth:`embed_documents`; the model runs in a worker thread."""
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        """Async :meth:`embed_query`; the model runs in a worker thread."""
        return await asyncio.to_thread(self.embed_query, text)

    def __repr__(self) -> str:
        return f"BertinoEmbeddings(model={self.model_name!r}, dim={self.dim})"


_SEARCH_KEYS = ("k", "filter", "rerank", "rerank_k", "mode", "group_by", "expand")


class BertinoRetriever(BaseRetriever):
    """LangChain retriever over a bertino-rag :class:`~bertino_rag.retriever.Retriever`.

    Each returned ``Document`` has ``id`` set and carries the id and the cosine score in its
    metadata (under ``id_key`` and ``score_key``; a stored field of the same name is shadowed
    in the returned copy only). ``k``, ``filter``, ``rerank`` and ``rerank_k`` can also be
    passed per call: ``retriever.invoke(question, k=3)``.

    Attributes:
        retriever: the bertino-rag retriever searched.
        k: number of documents returned.
        filter: metadata filter, e.g. ``{"title": "Amazzonia"}``.
        rerank: rescore with full vectors (``None``: the retriever's setting).
        rerank_k: candidates rescored (``None``: the retriever's setting).
        group_by: ``"document"``: one ``Document`` per indexed document (its best chunk, with
            the ids of its matching chunks under ``"chunk_ids"`` in the metadata).
        expand: neighbouring chunks joined to each chunk on each side (see
            :meth:`Retriever.search`).
        id_key: metadata key of the document id.
        score_key: metadata key of the score.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    retriever: Retriever
    k: int = Field(default=4, gt=0)
    filter: Any = None
    rerank: bool | None = None
    rerank_k: int | None = Field(default=None, gt=0)
    #: ``"dense"``, ``"lexical"`` or ``"hybrid"`` (``None``: hybrid on a hybrid collection)
    mode: str | None = None
    group_by: Literal["document"] | None = None
    expand: int = Field(default=0, ge=0)
    id_key: str = "id"
    score_key: str = "score"

    def _search_args(self, kwargs: dict[str, Any]) -> dict[str, Any]:
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
                          **({"chunk_ids": [c.id for c in h.chunks]} if h.chunks else {})},
            )
            for h in hits
        ]

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        a = self._search_args(kwargs)
        hits = self.retriever.search(
            query, a["k"], a["filter"], rerank=a["rerank"], rerank_k=a["rerank_k"],
            mode=a["mode"], group_by=a["group_by"], expand=a["expand"],
        )
        return self._to_documents(hits)

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        a = self._search_args(kwargs)
        hits = await self.retriever.asearch(
            query, a["k"], a["filter"], rerank=a["rerank"], rerank_k=a["rerank_k"],
            mode=a["mode"], group_by=a["group_by"], expand=a["expand"],
        )
        return self._to_documents(hits)


def _model_id_of(embedding: Embeddings) -> str:
    if isinstance(embedding, BertinoEmbeddings):
        return embedding.model_id
    for attr in ("model", "model_name", "model_id"):
        value = getattr(embedding, attr, None)
        if isinstance(value, str) and value.strip():
            return value
    return type(embedding).__name__


def _as_matrix(vectors: Any, what: str) -> np.ndarray:
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise ValueError(f"{what}: expected a list of equal-length vectors, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    return arr


class BertinoVectorStore(VectorStore):
    """LangChain ``VectorStore`` over any bertino-rag store, with two-stage Matryoshka search.

    Vectors come from ``embedding``: with :class:`BertinoEmbeddings` one forward pass gives
    the full and the truncated vector; with any other ``Embeddings`` the full vector is
    normalized and its first ``dim`` components (renormalized) are searched. When the
    collection keeps full vectors (``rerank``), the best ``rerank_k`` candidates are rescored
    with them. The collection is stamped with the embeddings' model id and dims, so vectors of
    another model are never mixed in. It is opened on first use (one probe embedding when
    nothing else tells the dimension).

    Scores are cosine similarities; relevance scores (``similarity_score_threshold``) are the
    same, clipped to ``[0, 1]``. Documents added without ids get random UUIDs, as in
    LangChain's own stores.

    Args:
        embedding: any LangChain ``Embeddings``.
        store: a bertino-rag store or spec (``"memory"``, ``"memory:DIR"``, ``"qdrant:URL"``,
            ``"milvus:FILE.db"``...); default: in-memory numpy store. One store object per
            collection.
        collection: collection name.
        dim: searched dimension (default: ``embedding.dim`` for :class:`BertinoEmbeddings`,
            else the full dimension).
        rerank: keep full vectors and rescore with them (default: when ``dim`` is smaller
            than the full dimension).
        rerank_k: candidates rescored.
        recreate: drop the collection first if it exists.
        model_id: the model id to stamp (default: the embeddings' ``model``/``model_name``,
            else its class name).
        hybrid: keep the lexical (BM25) index beside the vectors; searches then default to
            ``mode="hybrid"`` (``mode="dense"`` or ``"lexical"`` per call).
        fusion: hybrid fusion (see :class:`~bertino_rag.fusion.Fusion`).
    """

    def __init__(
        self,
        embedding: Embeddings,
        store: CoreStore | str | None = None,
        *,
        collection: str = "langchain",
        dim: int | None = None,
        rerank: bool | None = None,
        rerank_k: int = 100,
        recreate: bool = False,
        model_id: str | None = None,
        hybrid: bool = False,
        fusion: Fusion | str | os.PathLike[str] | None = None,
    ) -> None:
        if not isinstance(embedding, Embeddings):
            raise TypeError(f"embedding must be a LangChain Embeddings, got {type(embedding)}")
        if isinstance(rerank_k, bool) or not isinstance(rerank_k, int) or rerank_k <= 0:
            raise ValueError(f"rerank_k must be a positive int, got {rerank_k!r}")
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0):
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        self._embedding = embedding
        self.store = make_store(store)
        self.collection = collection
        self.rerank_k = rerank_k
        self.model_id = model_id or _model_id_of(embedding)
        self._dim = dim
        self._rerank = rerank
        self._hybrid = bool(hybrid)
        self.fusion = Fusion.coerce(fusion)
        self._recreate = recreate
        self._stamp: Stamp | None = None
        self._lock = threading.Lock()
        if isinstance(embedding, BertinoEmbeddings):
            if dim is None:
                self._dim = embedding.dim
            self._ensure_open(embedding.encoder.full_dim)

    @classmethod
    def from_retriever(cls, retriever: Retriever, **kwargs: Any) -> BertinoVectorStore:
        """A vector store on a :class:`Retriever`'s collection (same model, dims and store)."""
        return cls(
            BertinoEmbeddings(encoder=retriever.encoder, dim=retriever.dim),
            retriever.store,
            collection=retriever.collection,
            dim=retriever.dim,
            rerank=retriever.rerank,
            rerank_k=kwargs.pop("rerank_k", retriever.rerank_k),
            hybrid=kwargs.pop("hybrid", retriever.hybrid),
            fusion=kwargs.pop("fusion", retriever.fusion),
            **kwargs,
        )

    @property
    def embeddings(self) -> Embeddings:
        return self._embedding

    # ------------------------------------------------------------------ collection
    def _ensure_open(self, full_dim: int | None = None) -> Stamp:
        """Open (or create) the collection once the full dimension is known."""
        with self._lock:
            if self._stamp is not None:
                return self._stamp
            if full_dim is None:  # nothing embedded yet: one probe tells the dimension
                full_dim = len(self._embedding.embed_query("dimensione"))
            index_dim = self._dim or full_dim
            if index_dim > full_dim:
                raise ValueError(
                    f"dim={index_dim} is larger than the embeddings' dimension ({full_dim})"
                )
            rerank = self._rerank if self._rerank is not None else index_dim < full_dim
            stamp = Stamp(model=self.model_id, full_dim=full_dim, index_dim=index_dim,
                          normalized=True, full_vectors=bool(rerank),
                          lexical=lexical_spec(Analyzer(), BM25()) if self._hybrid else None)
            self.store.ensure_open(self.collection, stamp, recreate=self._recreate)
            self._recreate = False
            self._stamp = stamp
            return stamp

    # ------------------------------------------------------------------ embedding
    def _split(self, full: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        stamp = self._ensure_open(full.shape[1])
        if full.shape[1] != stamp.full_dim:
            raise ValueError(
                f"the embeddings returned {full.shape[1]}-d vectors, but collection "
                f"{self.collection!r} holds {stamp.full_dim}-d vectors"
            )
        return matryoshka_slice(full, stamp.index_dim), matryoshka_slice(full, full.shape[1])

    def _embed(self, texts: list[str], kind: str) -> tuple[np.ndarray, np.ndarray]:
        """(index, full) normalized vectors of ``texts``."""
        emb = self._embedding
        if isinstance(emb, BertinoEmbeddings):
            stamp = self._ensure_open(emb.encoder.full_dim)
            out = emb.encoder.encode(texts, kind=kind, dim=stamp.index_dim,  # type: ignore[arg-type]
                                     show_progress_bar=False, warn_truncation=kind == "document")
            return out.index, out.full
        if kind == "query":
            raw = [emb.embed_query(texts[0])]
        else:
            raw = emb.embed_documents(texts)
        full = _as_matrix(raw, f"{kind} embeddings")
        if full.shape[0] != len(texts):
            raise ValueError(
                f"the embeddings returned {full.shape[0]} vectors for {len(texts)} texts"
            )
        return self._split(full)

    async def _aembed(self, texts: list[str], kind: str) -> tuple[np.ndarray, np.ndarray]:
        emb = self._embedding
        if isinstance(emb, BertinoEmbeddings) or self._stamp is None:
            return await asyncio.to_thread(self._embed, texts, kind)
        if kind == "query":
            raw = [await emb.aembed_query(texts[0])]
        else:
            raw = await emb.aembed_documents(texts)
        return self._split(_as_matrix(raw, f"{kind} embeddings"))

    # ------------------------------------------------------------------ writes
    def _prepare(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None,
        ids: Sequence[str | None] | None,
        kwargs: dict[str, Any],
    ) -> tuple[list[Any], list[str], int]:
        batch_size = kwargs.pop("batch_size", None) or 512
        if kwargs:
            raise TypeError(f"add_texts got unknown arguments {sorted(kwargs)}")
        texts = list(texts)
        if metadatas is not None and len(metadatas) != len(texts):
            raise ValueError(f"got {len(metadatas)} metadatas for {len(texts)} texts")
        if ids is not None and len(ids) != len(texts):
            raise ValueError(f"got {len(ids)} ids for {len(texts)} texts")
        given = [i if i is not None and i != "" else str(uuid.uuid4())
                 for i in (ids or [None] * len(texts))]
        # Retriever.index's rule: an exact repeat is written once, one id for two different
        # documents (7 and "7" are one id) is refused naming both positions
        docs, _ = distinct_documents(
            [{"text": t, "id": i, "metadata": (metadatas[n] if metadatas else None)}
             for n, (t, i) in enumerate(zip(texts, given, strict=True))],
            lambda batch, at: self.store.check_documents(batch, offset=at),
        )
        return docs, [str(i) for i in given], int(batch_size)

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Embed and upsert texts; an existing id is replaced. Returns the ids in input order.

        Raises:
            ValueError: an invalid text, metadata or id count, or one id (``7`` and ``"7"``
                are one id) for two different texts, naming both positions; nothing of the
                call is written. An exact repeat is written once.
        """
        docs, ids_, step = self._prepare(texts, metadatas, ids, kwargs)
        for start in range(0, len(docs), step):
            chunk = docs[start : start + step]
            index, full = self._embed([d.text for d in chunk], "document")
            self.store.upsert(chunk, index, full if self._stamp.full_vectors else None)  # type: ignore[union-attr]
        return ids_

    async def aadd_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Async :meth:`add_texts`, through the store's async path."""
        docs, ids_, step = self._prepare(texts, metadatas, ids, kwargs)
        for start in range(0, len(docs), step):
            chunk = docs[start : start + step]
            index, full = await self._aembed([d.text for d in chunk], "document")
            await self.store.aupsert(chunk, index, full if self._stamp.full_vectors else None)  # type: ignore[union-attr]
        return ids_

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        """Delete documents by id (unknown ids are ignored); ``ids=None`` deletes them all."""
        if kwargs:
            raise TypeError(f"delete got unknown arguments {sorted(kwargs)}")
        self._ensure_open()
        if ids is None:  # empty the collection, keeping it open for a Retriever sharing it
            with self._lock:
                self.store.clear()
            return True
        if isinstance(ids, str):
            ids = [ids]
        self.store.delete([str(i) for i in ids])
        return True

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """Stored documents by id; unknown ids are skipped."""
        self._ensure_open()
        return [Document(id=d.id, page_content=d.text, metadata=d.metadata)
                for d in self.store.get([str(i) for i in ids])]

    # ------------------------------------------------------------------ search
    def _search_args(self, kwargs: dict[str, Any]) -> tuple[Any, int, str]:
        filter_ = kwargs.pop("filter", None)
        rerank_k = kwargs.pop("rerank_k", None) or self.rerank_k
        mode = kwargs.pop("mode", None)
        if kwargs:
            raise TypeError(
                f"unknown search arguments {sorted(kwargs)}; allowed: filter, rerank_k, mode"
            )
        if mode is None:
            mode = "hybrid" if self._hybrid else "dense"
        if mode not in ("dense", "lexical", "hybrid"):
            raise ValueError(
                f"unknown search mode {mode!r}; choose one of ['dense', 'lexical', 'hybrid']")
        if mode != "dense":
            self._ensure_open()
            self.store.require_lexical(mode)
        return filter_, rerank_k, mode

    def _text_search_args(self, kwargs: dict[str, Any]) -> tuple[Any, Any, str, str | None]:
        """``_search_args`` plus ``group_by``, which only the dense mode groups here."""
        group_by = kwargs.pop("group_by", None)
        filter_, rerank_k, mode = self._search_args(kwargs)
        if group_by is not None and mode in ("lexical", "hybrid"):
            raise ValueError(f"group_by={group_by!r} works with mode='dense' in "
                             "BertinoVectorStore; use Retriever.as_langchain() to group "
                             "lexical or hybrid results")
        return filter_, rerank_k, mode, group_by

    @staticmethod
    def _dense_only(mode: str) -> None:
        if mode != "dense":
            raise ValueError(
                f"mode={mode!r} needs the query text: use similarity_search, not a search by "
                "vector")

    def _two_stage(self) -> bool:
        stamp = self._stamp
        return stamp is not None and stamp.full_vectors and stamp.index_dim < stamp.full_dim

    def _search(self, index: np.ndarray, full: np.ndarray | None, k: int,
                filter_: Any, rerank_k: int, group_by: str | None = None) -> list[Hit]:
        if full is not None and self._two_stage():
            return self.store.search(index, k, filter_, full_vector=full, rerank_k=rerank_k,
                                     group_by=group_by)
        return self.store.search(index, k, filter_, group_by=group_by)

    @staticmethod
    def _with_scores(hits: list[Hit]) -> list[tuple[Document, float]]:
        return [(Document(id=h.id, page_content=h.text, metadata=(
                    {**h.metadata, "chunk_ids": [c.id for c in h.chunks]} if h.chunks
                    else h.metadata)), h.score)
                for h in hits]

    def _query_vectors(self, embedding: Sequence[float]) -> tuple[np.ndarray, np.ndarray | None]:
        vec = _as_matrix([list(embedding)], "query vector")
        stamp = self._ensure_open(vec.shape[1])
        if vec.shape[1] == stamp.full_dim:
            index, full = self._split(vec)
            return index[0], full[0]
        if vec.shape[1] == stamp.index_dim:
            return matryoshka_slice(vec, stamp.index_dim)[0], None
        raise ValueError(
            f"query vector has {vec.shape[1]} dims; collection {self.collection!r} takes "
            f"{stamp.full_dim} (full) or {stamp.index_dim} (truncated)"
        )

    def similarity_search_with_score(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """The ``k`` best documents with their scores (cosine; BM25 with ``mode="lexical"``;
        fused with ``mode="hybrid"``). Takes ``filter``, ``rerank_k``, ``mode`` and
        ``group_by="document"`` (dense mode: one result per document whose chunks were added)."""
        filter_, rerank_k, mode, group_by = self._text_search_args(kwargs)
        if mode == "lexical":
            return self._with_scores(self.store.lexical_search(query, k, filter_))
        index, full = self._embed([query], "query")
        if mode == "hybrid":
            return self._with_scores(self.store.hybrid_search(
                index[0], query, k, filter_, full_vector=full[0] if self._two_stage() else None,
                rerank_k=rerank_k, fusion=self.fusion))
        return self._with_scores(self._search(index[0], full[0], k, filter_, rerank_k,
                                              group_by))

    async def asimilarity_search_with_score(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Async :meth:`similarity_search_with_score`, through the store's async path."""
        filter_, rerank_k, mode, group_by = self._text_search_args(kwargs)
        if mode == "lexical":
            return self._with_scores(await self.store.alexical_search(query, k, filter_))
        index, full = await self._aembed([query], "query")
        if mode == "hybrid":
            return self._with_scores(await self.store.ahybrid_search(
                index[0], query, k, filter_, full_vector=full[0] if self._two_stage() else None,
                rerank_k=rerank_k, fusion=self.fusion))
        if self._two_stage():
            hits = await self.store.asearch(index[0], k, filter_, full_vector=full[0],
                                            rerank_k=rerank_k, group_by=group_by)
        else:
            hits = await self.store.asearch(index[0], k, filter_, group_by=group_by)
        return self._with_scores(hits)

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        """The ``k`` best documents. Takes ``filter``, ``rerank_k``."""
        return [doc for doc, _ in self.similarity_search_with_score(query, k, **kwargs)]

    async def asimilarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        """Async :meth:`similarity_search`."""
        return [doc for doc, _ in await self.asimilarity_search_with_score(query, k, **kwargs)]

    def similarity_search_by_vector(
        self, embedding: list[float], k: int = 4, **kwargs: Any
    ) -> list[Document]:
        """Search with a query vector, full-dimensional (two-stage) or truncated."""
        group_by = kwargs.pop("group_by", None)
        filter_, rerank_k, mode = self._search_args({"mode": "dense", **kwargs})
        self._dense_only(mode)
        index, full = self._query_vectors(embedding)
        return [doc for doc, _ in self._with_scores(
            self._search(index, full, k, filter_, rerank_k, group_by))]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        return lambda score: min(1.0, max(0.0, score))

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        **kwargs: Any,
    ) -> list[Document]:
        """Maximal marginal relevance among the ``fetch_k`` best candidates.

        Diversity is measured on the full vectors (stored ones, or the candidates re-embedded
        when the collection keeps none).
        """
        filter_, rerank_k, mode = self._search_args({"mode": "dense", **kwargs})
        self._dense_only(mode)
        index, full = self._query_vectors(embedding)
        hits = self._search(index, full, max(k, fetch_k), filter_, rerank_k)
        if not hits:
            return []
        stamp = self._ensure_open()
        if stamp.full_vectors and full is not None:
            vectors = self.store.fetch_full([h.id for h in hits])
            query = full
        elif full is not None:
            vectors = self._embed([h.text for h in hits], "document")[1]
            query = full
        else:  # a truncated query vector: compare truncated vectors
            vectors = self._embed([h.text for h in hits], "document")[0]
            query = index
        chosen = maximal_marginal_relevance(
            np.asarray(query, dtype=np.float32), list(vectors), lambda_mult=lambda_mult, k=k
        )
        return [Document(id=hits[i].id, page_content=hits[i].text, metadata=hits[i].metadata)
                for i in chosen]

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        **kwargs: Any,
    ) -> list[Document]:
        """Maximal marginal relevance search for a text query (see the ``_by_vector`` form)."""
        _, full = self._embed([query], "query")
        return self.max_marginal_relevance_search_by_vector(
            full[0].tolist(), k, fetch_k, lambda_mult, **kwargs
        )

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> BertinoVectorStore:
        """Build a store (``kwargs`` go to the constructor) and add ``texts`` to it."""
        batch_size = kwargs.pop("batch_size", None)
        store = cls(embedding, **kwargs)
        store.add_texts(texts, metadatas, ids=ids, batch_size=batch_size)
        return store

    def __repr__(self) -> str:
        return (f"BertinoVectorStore(model={self.model_id!r}, collection={self.collection!r}, "
                f"stamp={self._stamp}, store={self.store!r})")
