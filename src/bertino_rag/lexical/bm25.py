"""The BM25 formula (Lucene variant) and the stamp's record of a lexical index."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from .analyzer import Analyzer

__all__ = ["BM25", "lexical_spec", "parse_lexical_spec", "query_terms"]


@dataclass(frozen=True)
class BM25:
    """The BM25 formula (Lucene variant) on corpus statistics the store keeps up to date."""

    k1: float = 1.5
    b: float = 0.75

    def __post_init__(self) -> None:
        if not (self.k1 >= 0 and 0 <= self.b <= 1):
            raise ValueError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={self.k1}, b={self.b}")

    @property
    def spec(self) -> str:
        return f"bm25-lucene/k1={self.k1:g}/b={self.b:g}"

    @staticmethod
    def idf(df: np.ndarray | float, n_docs: int) -> Any:
        """``log(1 + (N - df + 0.5) / (df + 0.5))``, as bm25s (Lucene) and Qdrant compute it."""
        return np.log1p((n_docs - np.asarray(df, dtype=np.float64) + 0.5)
                        / (np.asarray(df, dtype=np.float64) + 0.5))

    def tf_part(self, tf: np.ndarray, doc_len: np.ndarray, avg_len: float) -> np.ndarray:
        """The saturated term frequency, ``tf / (tf + k1 (1 - b + b dl / avgdl))``."""
        avg = avg_len if avg_len > 0 else 1.0
        return tf / (tf + self.k1 * (1.0 - self.b + self.b * doc_len / avg))


def lexical_spec(analyzer: Analyzer, bm25: BM25) -> str:
    """What the stamp records for a lexical index: the analyzer and the BM25 parameters."""
    return f"{analyzer.spec};{bm25.spec}"


@lru_cache(maxsize=64)
def parse_lexical_spec(spec: str) -> tuple[Analyzer, BM25]:
    """The analyzer and BM25 parameters a stamp's ``lexical`` field names (parsed once per
    spec: an analyzer loads its stopwords and stemmer when built)."""
    try:
        analyzer_spec, bm25_spec = spec.split(";")
        name, k1, b = bm25_spec.split("/")
        if name != "bm25-lucene":
            raise ValueError(name)
        bm25 = BM25(k1=float(k1.removeprefix("k1=")), b=float(b.removeprefix("b=")))
    except ValueError as err:
        raise ValueError(
            f"lexical index {spec!r} is not one this version of bertino-rag knows; "
            "re-index the collection with recreate=True"
        ) from err
    return Analyzer.from_spec(analyzer_spec), bm25


def query_terms(analyzer: Analyzer, queries: Sequence[str]) -> list[list[str]]:
    """The distinct terms of each query, in first-seen order."""
    return [list(dict.fromkeys(analyzer.terms(q))) for q in queries]
