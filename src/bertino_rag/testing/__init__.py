"""Testing helpers for stores: the conformance suite every store passes, importable by a
store that lives outside this repository (needs pytest)."""

from __future__ import annotations

from .conformance import (
    SCORE_TOL,
    StoreConformance,
    bm25_reference,
    exact_topk,
    random_corpus,
    same_ranking,
)

__all__ = ["SCORE_TOL", "StoreConformance", "bm25_reference", "exact_topk", "random_corpus",
           "same_ranking"]
