"""Fusion of a dense and a lexical ranking into one hybrid ranking.

Two methods, both with one ``weight``: the share of the lexical side (the dense side gets
``1 - weight``).

- ``"minmax"``: each side's scores are min-max normalized over its candidates, then
  combined as ``(1 - weight) * dense + weight * lexical``; a candidate missing from one side
  gets 0 there. The default, ``weight=0.8``, is measured: on squad-it-dev with the MiniLM
  stand-in it is at or above the better side at 128 and 384 dims, where RRF with equal weights
  (the default of Qdrant and Milvus) falls far below BM25 alone (``docs/benchmarks.md``,
  "Hybrid retrieval").
- ``"rrf"``: reciprocal rank fusion, ``(1 - weight) / (rrf_k + rank_dense) + weight /
  (rrf_k + rank_lexical)`` with ranks from 1; ``weight=0.5`` is the classic equal-weight RRF.

Ties are broken by id, as everywhere in the library. A :class:`Fusion` saves to and loads from
a small JSON file (what ``bertino-rag eval --tune-fusion`` writes).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..types import Hit
from .ranked import Ranked

__all__ = ["FUSION_METHODS", "Fusion"]

FUSION_METHODS = ("minmax", "rrf")


@dataclass(frozen=True)
class Fusion:
    """How hybrid search combines its dense and lexical candidates.

    Args:
        method: ``"minmax"`` (normalized score combination) or ``"rrf"``.
        weight: share of the lexical side, in [0, 1] (dense gets ``1 - weight``).
        rrf_k: the ``k`` of reciprocal rank fusion (ignored by ``"minmax"``).
    """

    method: str = "minmax"
    weight: float = 0.8
    rrf_k: int = 60

    def __post_init__(self) -> None:
        if self.method not in FUSION_METHODS:
            raise ValueError(
                f"unknown fusion method {self.method!r}; choose one of {list(FUSION_METHODS)}"
            )
        if isinstance(self.weight, bool) or not isinstance(self.weight, (int, float)) or not (
            0.0 <= float(self.weight) <= 1.0
        ):
            raise ValueError(f"fusion weight must be a number in [0, 1], got {self.weight!r}")
        if isinstance(self.rrf_k, bool) or not isinstance(self.rrf_k, int) or self.rrf_k < 0:
            raise ValueError(f"rrf_k must be a non-negative int, got {self.rrf_k!r}")

    # ------------------------------------------------------------------ (de)serialization
    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "weight": float(self.weight), "rrf_k": int(self.rrf_k)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fusion:
        unknown = set(data) - {"method", "weight", "rrf_k", "ndcg@10", "dim"}  # + measured facts
        if unknown:
            raise ValueError(f"unknown fusion settings {sorted(unknown)}")
        return cls(
            method=str(data.get("method", "minmax")),
            weight=float(data.get("weight", 0.8)),
            rrf_k=int(data.get("rrf_k", 60)),
        )

    def save(self, path: str | os.PathLike[str], **extra: Any) -> None:
        """Write the settings (and ``extra`` facts such as the measured NDCG) as JSON."""
        Path(path).write_text(json.dumps({**self.to_dict(), **extra}, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Fusion:
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError as err:
            raise FileNotFoundError(f"fusion settings file {path} not found") from err
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not a fusion settings file (invalid JSON)") from err
        if not isinstance(data, dict):
            raise ValueError(f"{path}: not a fusion settings file (expected a JSON object)")
        return cls.from_dict(data)

    @classmethod
    def coerce(cls, value: Fusion | str | os.PathLike[str] | Mapping[str, Any] | None) -> Fusion:
        """A Fusion from a Fusion, a method name, a settings file, a dict or ``None``."""
        if value is None:
            return cls()
        if isinstance(value, Fusion):
            return value
        if isinstance(value, Mapping):
            return cls.from_dict(value)
        if isinstance(value, str) and value in FUSION_METHODS:
            return cls(method=value, weight=0.8 if value == "minmax" else 0.5)
        if isinstance(value, (str, os.PathLike)):
            return cls.load(value)
        raise TypeError(f"fusion must be a Fusion, a method name or a file, got {value!r}")

    # ------------------------------------------------------------------ fusing
    def fuse_ranked(self, dense: Ranked, lexical: Ranked, k: int) -> Ranked:
        """The funnel's fusion stage: the top ``k`` of the two rankings fused, best first;
        each candidate keeps its row handle and document from whichever side had it."""
        ids, scores = self.fuse_scores(dense.ids, dense.scores.tolist(), lexical.ids,
                                       lexical.scores.tolist(), k)
        where: dict[str, tuple[Ranked, int]] = {}
        for side in (lexical, dense):
            for j, i in enumerate(side.ids):
                where[i] = (side, j)
        picks = [where[i] for i in ids]
        rows = None
        if all(side.rows is not None for side, _ in picks):
            rows = np.asarray([side.rows[j] for side, j in picks],  # type: ignore[index]
                              dtype=np.int64)
        docs = None
        if all(side.documents is not None for side, _ in picks):
            docs = [side.documents[j] for side, j in picks]  # type: ignore[index]
        return Ranked(ids, np.asarray(scores, dtype=np.float64), rows, docs)

    def fuse_scores(self, dense_ids: Sequence[str], dense_scores: Sequence[float],
                    lexical_ids: Sequence[str], lexical_scores: Sequence[float], k: int
                    ) -> tuple[list[str], list[float]]:
        """The top ``k`` ids of the two rankings fused, and their fused scores."""
        if self.method == "rrf":
            d_part = _rrf(dense_ids, dense_scores, self.rrf_k)
            l_part = _rrf(lexical_ids, lexical_scores, self.rrf_k)
        else:
            d_part = _minmax(dense_ids, dense_scores)
            l_part = _minmax(lexical_ids, lexical_scores)
        w = float(self.weight)
        fused = {i: (1.0 - w) * d_part.get(i, 0.0) + w * l_part.get(i, 0.0)
                 for i in dict.fromkeys((*dense_ids, *lexical_ids))}
        order = sorted(fused, key=lambda i: (-fused[i], i))[:k]
        return order, [fused[i] for i in order]

    def fuse(self, dense: Sequence[Hit], lexical: Sequence[Hit], k: int) -> list[Hit]:
        """The top ``k`` of two hit lists fused; each hit's score is its fused score."""
        by_id: dict[str, Hit] = {}
        for h in (*dense, *lexical):
            by_id.setdefault(h.id, h)
        ids, scores = self.fuse_scores([h.id for h in dense], [h.score for h in dense],
                                       [h.id for h in lexical], [h.score for h in lexical], k)
        return [Hit(id=i, text=by_id[i].text, score=s, metadata=by_id[i].metadata)
                for i, s in zip(ids, scores, strict=True)]


def _rrf(ids: Sequence[str], scores: Sequence[float], k: int) -> dict[str, float]:
    order = sorted(range(len(ids)), key=lambda j: (-scores[j], ids[j]))
    return {ids[j]: 1.0 / (k + rank) for rank, j in enumerate(order, 1)}


def _minmax(ids: Sequence[str], scores: Sequence[float]) -> dict[str, float]:
    if not ids:
        return {}
    finite = [s for s in scores if math.isfinite(s)]
    lo, hi = min(finite), max(finite)
    span = hi - lo
    return {i: 1.0 if span <= 0 else (s - lo) / span for i, s in zip(ids, scores, strict=True)}
