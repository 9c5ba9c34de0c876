"""Analyzed texts as sparse vectors, for stores without a vocabulary table (Qdrant, Qdrant
Edge, Milvus)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from .bm25 import BM25

__all__ = ["document_vector", "mean_length", "query_vector", "term_index", "term_token"]

@lru_cache(maxsize=1 << 18)
def term_index(term: str) -> int:
    """The sparse-vector dimension of a term: the first 4 bytes of its BLAKE2b digest, an
    unsigned 32-bit int (the index type of Qdrant's and Milvus's sparse vectors).

    A hash needs no vocabulary shared between processes. Two terms collide with probability
    2**-32 per pair: about one pair in a vocabulary of 90,000 terms, where they count as one
    term (their document frequencies add up).
    """
    return int.from_bytes(hashlib.blake2b(term.encode("utf-8"), digest_size=4).digest(), "little")


def term_token(term: str) -> str:
    """:func:`term_index` as a word (``t`` and 8 hex digits) that any word tokenizer keeps
    whole: how a pre-analyzed text reaches an engine that tokenizes it again (Milvus BM25)."""
    return f"t{term_index(term):08x}"


def mean_length(counts: Sequence[dict[str, int]]) -> float:
    """The mean length in terms of analyzed documents (the ``avgdl`` a sparse store fixes)."""
    if not counts:
        return 0.0
    return float(sum(sum(c.values()) for c in counts)) / len(counts)


def _by_index(counts: dict[str, int]) -> dict[int, int]:
    out: dict[int, int] = {}
    for term, c in counts.items():
        i = term_index(term)
        out[i] = out.get(i, 0) + c
    return out


def document_vector(counts: dict[str, int], bm25: BM25, avgdl: float
                    ) -> tuple[list[int], list[float]]:
    """A document as a sparse vector ``(indices, values)``: per term, the BM25 term-frequency
    part :meth:`BM25.tf_part` with the length normalization of ``avgdl``, fixed when written.

    The dot product with :func:`query_vector`, with each dimension weighted by
    :meth:`BM25.idf` (Qdrant's ``Modifier.IDF``, live document frequencies), is the document's
    BM25 score; it equals the exact score when ``avgdl`` is the collection's mean length.
    """
    tf = _by_index(counts)
    if not tf:
        return [], []
    indices = sorted(tf)
    length = float(sum(counts.values()))
    values = bm25.tf_part(np.asarray([tf[i] for i in indices], dtype=np.float64),
                          np.float64(length), avgdl)
    return indices, [float(v) for v in values]


def query_vector(terms: Sequence[str]) -> tuple[list[int], list[float]]:
    """A query's distinct terms as a sparse vector: weight 1 per term (a repeated term counts
    once, as in :func:`query_terms`)."""
    indices = sorted({term_index(t) for t in terms})
    return indices, [1.0] * len(indices)
