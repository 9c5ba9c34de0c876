"""Rerankers: a model that reads a query and a passage together and scores the pair.

The funnel's last ranking stage (:mod:`bertino_rag.search.rerank`) reorders the best
``rerank_top`` hits with a :class:`Reranker`: any object with
``score_pairs(queries, texts) -> scores`` (one finite score per pair, higher is better).
:func:`as_reranker` turns what a user passes into one:

- a model name or folder (hub id, local path) or a sentence-transformers ``CrossEncoder``:
  :class:`~.cross_encoder.CrossEncoderReranker` (torch, ONNX or OpenVINO);
- an object with a ``rank(query, texts)`` method (sentence-transformers' ``CrossEncoder.rank``
  layout, a list of ``{"corpus_id", "score"}``, or one score per text): :class:`RankReranker`;
- an object that already has ``score_pairs``: used as it is.

An embedding model (a bi-encoder) is refused with :class:`~bertino_rag.errors.RerankerError`:
it has no head that scores a pair, and loading it as a cross-encoder would score with random
weights.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import RerankerError

__all__ = ["RankReranker", "Reranker", "as_reranker", "check_scores"]


@runtime_checkable
class Reranker(Protocol):
    """Scores (query, passage) pairs: ``scores[i]`` for ``(queries[i], texts[i])``, higher is
    better. The funnel calls it once per search (a batch's pairs together). An optional
    ``weight`` attribute in (0, 1] blends its scores with the retrieval scores
    (:func:`bertino_rag.search.rerank.blend`); without one its order is final."""

    def score_pairs(self, queries: Sequence[str], texts: Sequence[str]) -> Any:
        """One finite score per pair (a sequence or 1-d array of floats)."""
        ...


class RankReranker:
    """A :class:`Reranker` over an object with ``rank(query, texts)``.

    ``rank`` returns, for one query, either one score per text (in the texts' order) or a
    list of ``{"corpus_id": i, "score": s}`` (sentence-transformers' ``CrossEncoder.rank``,
    the ``rerankers`` library's layout once turned into dicts), covering every text.
    """

    def __init__(self, model: Any) -> None:
        self.model = model

    def score_pairs(self, queries: Sequence[str], texts: Sequence[str]) -> np.ndarray:
        out = np.empty(len(texts), dtype=np.float64)
        start = 0
        while start < len(queries):  # consecutive pairs of one query: one rank() call
            end = start
            while end < len(queries) and queries[end] == queries[start]:
                end += 1
            out[start:end] = self._scores(queries[start], list(texts[start:end]))
            start = end
        return out

    def _scores(self, query: str, texts: list[str]) -> np.ndarray:
        got = self.model.rank(query, texts)
        if len(got) and isinstance(got[0], dict):
            scores = np.full(len(texts), np.nan)
            for row in got:
                scores[int(row["corpus_id"])] = float(row["score"])
            return scores
        return np.asarray(got, dtype=np.float64)

    def __repr__(self) -> str:
        return f"RankReranker({self.model!r})"


def as_reranker(value: Any, **options: Any) -> Reranker:
    """A :class:`Reranker` for ``value`` (see the module docstring); ``options`` go to
    :class:`~.cross_encoder.CrossEncoderReranker` (``backend``, ``quantize``, ``batch_size``,
    ``max_length``, ``device``, ``weight``) when ``value`` names or is a cross-encoder.

    Raises:
        RerankerError: an embedding model, a folder that is not a cross-encoder, or an object
            that can score nothing.
    """
    if isinstance(value, (str, os.PathLike)):
        from .cross_encoder import CrossEncoderReranker

        return CrossEncoderReranker(value, **options)
    kind = type(value).__name__
    st = sys.modules.get("sentence_transformers")  # loaded already if value is one of its models
    if st is not None and isinstance(value, st.CrossEncoder):
        from .cross_encoder import CrossEncoderReranker

        return CrossEncoderReranker(value, **options)
    if options:
        raise ValueError(f"reranker options {sorted(options)} apply to a cross-encoder model "
                         f"name or folder, not to a {kind}")
    if isinstance(value, Reranker):
        return value
    if callable(getattr(value, "rank", None)):
        return RankReranker(value)
    if callable(getattr(value, "encode", None)) or callable(getattr(value, "embed_documents",
                                                                   None)):
        raise RerankerError(
            f"a {kind} is an embedding model (a bi-encoder), not a reranker: pass a "
            "cross-encoder (a model name or folder, or a sentence_transformers.CrossEncoder); "
            "train one on your documents with `bertino-rag train --task rerank`")
    raise RerankerError(
        f"cannot rerank with a {kind}: pass a cross-encoder model name or folder, a "
        "sentence_transformers.CrossEncoder, or an object with score_pairs(queries, texts) "
        "or rank(query, texts)")


def check_scores(scores: Any, n: int, reranker: Any) -> np.ndarray:
    """``scores`` as a float64 array of ``n`` finite values.

    Raises:
        RerankerError: not ``n`` numbers, or a NaN or infinite one.
    """
    try:
        out = np.asarray(scores, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise RerankerError(f"reranker {reranker!r} returned scores that are not numbers: "
                            f"{err}") from err
    if out.shape[0] != n:
        raise RerankerError(f"reranker {reranker!r} returned {out.shape[0]} scores for {n} "
                            "(query, passage) pairs; it must return one per pair")
    if not np.isfinite(out).all():
        raise RerankerError(f"reranker {reranker!r} returned a NaN or infinite score (or left "
                            "a passage unscored)")
    return out
