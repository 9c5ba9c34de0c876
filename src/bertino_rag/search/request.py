"""A search request, validated once before anything is encoded or read.

:class:`SearchRequest` holds what every stage of the funnel reads (mode, ``k``, the parsed
filter, two-stage or not, candidates per side, fusion, grouping, expansion); :class:`Queries`
the query vectors and analyzed terms it runs on. The retriever, the stores' public search
methods, the service and the LangChain classes all build their requests here, so a mistake
gets the same error everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..errors import RerankerError
from ..rerank import Reranker
from ..validation import non_negative_int, positive_int, reranker_weight
from .fusion import Fusion
from .rerank import DEFAULT_RERANK_TOP

__all__ = ["DEFAULT_RESCORE_K", "GROUP_BY", "MODES", "Queries", "SearchRequest"]

#: search modes: the Matryoshka funnel, BM25, or both fused
MODES = ("dense", "lexical", "hybrid")
#: what ``group_by`` takes (``None``: every chunk is a hit)
GROUP_BY = (None, "document")
#: candidates rescored (and taken on each side of a hybrid search) by default
DEFAULT_RESCORE_K = 100


@dataclass(frozen=True)
class SearchRequest:
    """A validated search (build it with :meth:`build`).

    Attributes:
        mode: ``"dense"``, ``"lexical"`` or ``"hybrid"``.
        k: hits per query (documents, with ``group_by``).
        conditions: the parsed filter (a store's native filter object passes through).
        two_stage: whether full vectors rescore the candidates of the index vectors.
        rescore_k: candidates rescored, and taken on each side in hybrid mode (at least ``k``).
        fusion: how hybrid mode fuses its two sides.
        group_by: ``"document"``: one hit per document.
        group_size: chunks attached to each document hit.
        expand: neighbouring chunks joined to each hit on each side.
        reranker: the cross-encoder that orders the best ``rerank_top`` chunks (``None``:
            none); set with :meth:`reranking`.
        rerank_top: candidates (chunks) per query the reranker reads (at least ``k``).
    """

    mode: str
    k: int
    conditions: Any
    two_stage: bool
    rescore_k: int
    fusion: Fusion
    group_by: str | None = None
    group_size: int = 3
    expand: int = 0
    reranker: Reranker | None = None
    rerank_top: int = DEFAULT_RERANK_TOP

    @classmethod
    def build(
        cls,
        *,
        mode: str,
        k: Any,
        conditions: Any,
        two_stage: bool,
        rescore_k: Any = None,
        fusion: Fusion | None = None,
        group_by: Any = None,
        group_size: Any = 3,
        expand: Any = 0,
        rescore_k_name: str = "rescore_k",
    ) -> SearchRequest:
        """Check every argument, naming the first bad one and what it takes.

        Raises:
            ValueError: an unknown mode or ``group_by``, or a count that is not a positive
                int (``expand``: a non-negative int).
        """
        if mode not in MODES:
            raise ValueError(f"unknown search mode {mode!r}; choose one of {list(MODES)}")
        k = positive_int(k, "k")
        if group_by not in GROUP_BY:
            raise ValueError(f"group_by must be None or 'document', got {group_by!r}")
        group_size = positive_int(group_size, "group_size")
        expand = non_negative_int(expand, "expand")
        n = positive_int(DEFAULT_RESCORE_K if rescore_k is None else rescore_k, rescore_k_name)
        return cls(mode, k, conditions, bool(two_stage), max(k, n),
                   fusion if fusion is not None else Fusion(), group_by, group_size, expand)

    def reranking(self, reranker: Any, rerank_top: Any = None) -> SearchRequest:
        """The same request with ``reranker`` ordering the best ``rerank_top`` candidates
        (default :data:`~.rerank.DEFAULT_RERANK_TOP`, at least ``k``); ``None``: no reranker.

        Raises:
            RerankerError: ``reranker`` is not a :class:`~bertino_rag.rerank.Reranker` (turn a
                model name or object into one with :func:`~bertino_rag.rerank.as_reranker`).
            ValueError: ``rerank_top`` not a positive int, below ``k``, or given without a
                reranker; the reranker's ``weight`` outside (0, 1].
        """
        if reranker is None:
            if rerank_top is not None:
                raise ValueError("rerank_top is the number of candidates a reranker reads: "
                                 "pass a reranker with it")
            return replace(self, reranker=None)
        if not isinstance(reranker, Reranker):
            raise RerankerError(f"reranker must have score_pairs(queries, texts), got a "
                                f"{type(reranker).__name__}; pass it through "
                                "bertino_rag.rerank.as_reranker")
        reranker_weight(getattr(reranker, "weight", 1.0))
        top = positive_int(DEFAULT_RERANK_TOP if rerank_top is None else rerank_top,
                           "rerank_top")
        if rerank_top is None:
            top = max(top, self.k)
        elif top < self.k:
            raise ValueError(f"rerank_top={top} is below k={self.k}: the reranker orders the "
                             "best rerank_top candidates and k of them are returned; raise "
                             "rerank_top or lower k")
        return replace(self, reranker=reranker, rerank_top=top)

    def widened(self, keep: int) -> SearchRequest:
        """The same request asking for ``keep`` candidates (grouping searches wider)."""
        return replace(self, rescore_k=max(self.rescore_k, keep))


@dataclass(frozen=True)
class Queries:
    """What a batch of queries searches with, row i for query i.

    Attributes:
        index: ``(m, index_dim)`` query vectors of the first stage (dense and hybrid modes).
        full: ``(m, full_dim)`` full query vectors (two-stage search).
        terms: each query's distinct analyzed terms (lexical and hybrid modes; an empty list:
            nothing searchable, answered by the dense side alone in hybrid mode).
        texts: the query texts (what a reranker reads).
    """

    index: np.ndarray | None = None
    full: np.ndarray | None = None
    terms: list[list[str]] | None = None
    texts: list[str] | None = None

    def __len__(self) -> int:
        if self.index is not None:
            return len(self.index)
        if self.terms is not None:
            return len(self.terms)
        return len(self.texts or ())

    def take(self, rows: slice | list[int]) -> Queries:
        """The queries at ``rows``."""
        def pick(a: Any) -> Any:
            if a is None:
                return None
            if isinstance(rows, slice):
                return a[rows]
            return a[rows] if isinstance(a, np.ndarray) else [a[i] for i in rows]

        return Queries(pick(self.index), pick(self.full), pick(self.terms), pick(self.texts))
