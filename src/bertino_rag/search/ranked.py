"""One query's candidates as the funnel passes them between stages, and the one result order.

A store's primitive searches (k-nearest, BM25) answer with a :class:`Ranked` per query: ids
and scores, best first, and optionally the store's own row handles (``rows``: how it finds a
candidate again without a lookup by id, valid while its snapshot is open) and the documents it
read with them (``documents``: a store whose search returns payloads for free).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..types import Document

__all__ = ["Fetched", "Ranked", "ranked", "ranked_arrays", "ranking_key"]


def ranking_key(score: float, doc_id: str) -> tuple[float, str]:
    """Sort key of a result: higher score first, ties broken by id.

    Every store, every stage and the exact evaluation order results with it, so the same
    vectors give the same ranking everywhere.
    """
    return (-float(score), doc_id)


@dataclass(frozen=True)
class Ranked:
    """One query's candidates, best first (by score, ties by id).

    Attributes:
        ids: document (or chunk) ids.
        scores: their scores, float64.
        rows: the store's own handles of the candidates (int64, aligned with ``ids``), passed
            back to its reads while the same snapshot is open; ``None`` when it has none.
        documents: the candidates' stored documents, when the store read them anyway.
    """

    ids: list[str]
    scores: np.ndarray
    rows: np.ndarray | None = None
    documents: list[Document] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def top(self, k: int) -> Ranked:
        """The first ``k`` candidates."""
        if len(self.ids) <= k:
            return self
        return Ranked(self.ids[:k], self.scores[:k],
                      None if self.rows is None else self.rows[:k],
                      None if self.documents is None else self.documents[:k])

    def keep(self, mask: Sequence[bool] | np.ndarray) -> Ranked:
        """The candidates where ``mask`` holds, in order."""
        sel = np.flatnonzero(np.asarray(mask, dtype=bool))
        if len(sel) == len(self.ids):
            return self
        docs = self.documents
        return Ranked([self.ids[i] for i in sel], self.scores[sel],
                      None if self.rows is None else self.rows[sel],
                      None if docs is None else [docs[i] for i in sel])

    @staticmethod
    def empty() -> Ranked:
        return Ranked([], np.zeros(0))


@dataclass(frozen=True)
class Fetched:
    """What a store read by id (``StoreProtocol._fetch``), aligned with the ids asked.

    Attributes:
        found: whether each id is stored (an id deleted meanwhile is ``False``, not an error).
        documents: the documents (``None`` where not found), when asked for.
        full: the full vectors, float32, one row per id (zeros where not found), when asked
            for.
    """

    found: np.ndarray
    documents: list[Document | None] | None = None
    full: np.ndarray | None = None


def ranked(ids: Sequence[str], scores: Sequence[float] | np.ndarray, *,
           rows: Sequence[int] | np.ndarray | None = None,
           documents: Sequence[Document] | None = None, k: int | None = None) -> Ranked:
    """A :class:`Ranked` of candidates given in any order: sorted by :func:`ranking_key`,
    then cut to ``k``."""
    values = [float(v) for v in scores]
    n = len(values)
    # an engine answers best first: keep that order unless it breaks the rule (a score out
    # of order, or a tie not ordered by id), which a sort then restores
    if all(values[i] > values[i + 1] or (values[i] == values[i + 1] and ids[i] <= ids[i + 1])
           for i in range(n - 1)):
        order: Any = range(n if k is None else min(k, n))
        if len(order) == n:
            return Ranked(list(ids), np.asarray(values, dtype=np.float64),
                          None if rows is None else np.asarray(rows, dtype=np.int64),
                          None if documents is None else list(documents))
    else:
        order = sorted(range(n), key=lambda i: (-values[i], ids[i]))[:k]
    return Ranked(
        [ids[i] for i in order], np.asarray([values[i] for i in order], dtype=np.float64),
        None if rows is None else np.asarray(rows, dtype=np.int64)[list(order)],
        None if documents is None else [documents[i] for i in order],
    )


def ranked_arrays(ids: np.ndarray, scores: np.ndarray, rows: np.ndarray | None = None,
                  k: int | None = None) -> Ranked:
    """:func:`ranked` for numpy arrays (``ids`` an object array): sorted in numpy, by id only
    where scores tie."""
    values = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-values, kind="stable")
    ordered = values[order]
    if len(ordered) > 1 and bool((ordered[1:] == ordered[:-1]).any()):
        order = np.asarray(sorted(range(len(ids)), key=lambda i: (-values[i], ids[i])),
                           dtype=np.int64)
    if k is not None:
        order = order[:k]
    return Ranked(ids[order].tolist(), values[order],
                  None if rows is None else np.asarray(rows, dtype=np.int64)[order])
