"""The reference store: the store protocol and nothing else, exact, in memory, in one file.

It is the example of how to write a store (CONTRIBUTING.md, "How to add a store") and the
oracle the others are compared with: exact dot products in numpy, exact BM25 (Lucene, the
formula of :class:`~bertino_rag.lexical.BM25`) over the live documents, filters evaluated by
the filter language's own reference evaluator (:func:`~bertino_rag.search.filters.matches`).
Collections live in process memory, shared by every ``ReferenceStore`` with the same
``space`` (so that opening the store again finds them), and are lost with the process. Every
search scans every document: fine for tests and a few thousand documents, not for more.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..lexical import BM25, parse_lexical_spec
from ..search.filters import matches
from ..search.ranked import Fetched, Ranked, ranked
from ..types import Document, Stamp
from .base import VectorStore
from .protocol import Capabilities, ExportBatch, WriteBatch

__all__ = ["ReferenceStore"]


@dataclass
class _Point:
    document: Document
    index: np.ndarray
    full: np.ndarray | None
    terms: dict[str, int] | None


@dataclass
class _Collection:
    stamp: Stamp
    points: dict[str, _Point] = field(default_factory=dict)
    intent: dict[str, Any] | None = None


class ReferenceStore(VectorStore):
    """The smallest complete store: exact search in process memory (see the module docstring).

    Args:
        space: the name of the in-process space that holds its collections; stores with the
            same space see the same collections.
    """

    kind = "reference"
    _SPACES: ClassVar[dict[str, dict[str, _Collection]]] = {}
    _LOCK: ClassVar[threading.RLock] = threading.RLock()

    def __init__(self, space: str = "default") -> None:
        super().__init__()
        self.space = space
        self._open_collection: _Collection | None = None

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(lexical=True, intent=True)

    @property
    def _collections_here(self) -> dict[str, _Collection]:
        return self._SPACES.setdefault(self.space, {})

    @property
    def _c(self) -> _Collection:
        assert self._open_collection is not None, "no collection is open"
        return self._open_collection

    # ------------------------------------------------------------------ lifecycle
    def _open(self, collection: str, stamp: Stamp, recreate: bool) -> None:
        with self._LOCK:
            found = self._collections_here.get(collection)
            if found is not None and not recreate:
                stamp.check(found.stamp, collection)
            else:
                found = self._collections_here[collection] = _Collection(stamp)
            self._open_collection = found

    def _stored_stamp(self, collection: str) -> Stamp | None:
        found = self._collections_here.get(collection)
        return None if found is None else found.stamp

    def _collections(self) -> list[str]:
        return list(self._collections_here)

    def _drop(self) -> None:
        with self._LOCK:
            self._collections_here.pop(self.collection, None)
            self._open_collection = None

    def _read_intent(self) -> dict[str, Any] | None:
        return copy.deepcopy(self._c.intent)

    def _write_intent(self, record: dict[str, Any] | None) -> None:
        with self._LOCK:
            self._c.intent = copy.deepcopy(record)

    # ------------------------------------------------------------------ writes
    def _write(self, batch: WriteBatch) -> None:
        # full vectors are kept as float16, as every store keeps them
        full = None if batch.full is None else batch.full.astype(np.float16)
        with self._LOCK:
            for i, doc in enumerate(batch.documents):
                self._c.points[doc.id] = _Point(
                    doc, batch.vectors[i].copy(), None if full is None else full[i],
                    None if batch.terms is None else dict(batch.terms[i]))

    def _delete(self, ids: list[str]) -> None:
        with self._LOCK:
            for i in ids:
                self._c.points.pop(i, None)

    # ------------------------------------------------------------------ reads
    def _fetch(self, ids: list[str], rows: np.ndarray | None = None, *,
               documents: bool = False, full: bool = False) -> Fetched:
        with self._LOCK:
            points = [self._c.points.get(i) for i in ids]
        out = None
        if full:
            out = np.zeros((len(ids), self.stamp.full_dim), dtype=np.float32)
            for j, p in enumerate(points):
                if p is not None and p.full is not None:
                    out[j] = p.full
        return Fetched(np.array([p is not None for p in points], dtype=bool),
                       [None if p is None else p.document for p in points] if documents
                       else None, out)

    def _matching(self, conditions: Any) -> list[_Point]:
        with self._LOCK:
            points = list(self._c.points.values())
        if not conditions:
            return points
        return [p for p in points if matches(p.document.metadata, conditions)]

    def _knn(self, vectors: np.ndarray, k: int, conditions: Any, *,
             documents: bool = False) -> list[Ranked]:
        points = self._matching(conditions)
        if not points:
            return [Ranked.empty() for _ in vectors]
        ids = [p.document.id for p in points]
        scores = np.stack([p.index for p in points]) @ vectors.T
        return [ranked(ids, scores[:, q], k=k) for q in range(len(vectors))]

    def _bm25(self, terms: list[list[str]], k: int, conditions: Any, *,
              documents: bool = False) -> list[Ranked]:
        bm25: BM25 = parse_lexical_spec(self.stamp.lexical or "")[1]
        with self._LOCK:
            live = [p for p in self._c.points.values() if p.terms is not None]
        n_docs = len(live)
        lengths = np.asarray([sum(p.terms.values()) for p in live],  # type: ignore[union-attr]
                             dtype=np.float64)
        avg = float(lengths.mean()) if n_docs else 0.0
        allowed = {id(p) for p in self._matching(conditions)}
        out = []
        for query in terms:
            scores = np.zeros(n_docs)
            for t in query:
                tf = np.asarray([p.terms.get(t, 0) for p in live],  # type: ignore[union-attr]
                                dtype=np.float64)
                df = int((tf > 0).sum())
                if df:
                    scores += bm25.idf(df, n_docs) * bm25.tf_part(tf, lengths, avg)
            keep = [j for j, p in enumerate(live) if scores[j] > 0 and id(p) in allowed]
            out.append(ranked([live[j].document.id for j in keep], scores[keep], k=k))
        return out

    def _ids_where(self, conditions: Any) -> list[str]:
        return [p.document.id for p in self._matching(conditions)]

    def _scan(self, batch_size: int) -> Iterator[ExportBatch]:
        points = self._matching(None)
        for start in range(0, len(points), batch_size):
            part = points[start : start + batch_size]
            full = (np.stack([p.full for p in part]).astype(np.float32)  # type: ignore[misc]
                    if self.stamp.full_vectors else None)
            yield ExportBatch([p.document for p in part], np.stack([p.index for p in part]),
                              full)

    def _count(self) -> int:
        with self._LOCK:
            return len(self._c.points)

    def close(self) -> None:
        super().close()
        self._open_collection = None

    def __repr__(self) -> str:
        return f"ReferenceStore(space={self.space!r}, collection={self._collection!r})"
