"""What qdrant-client's local mode needs around it: one client per folder, and a lexical
index in numpy.

Local mode (``QdrantStore()`` in memory, ``QdrantStore(path=DIR)`` in a folder) is
qdrant-client's pure-Python engine: exact search, no quantization, no payload indexes, and
every query a Python loop. Two of its costs are worked around here, written by hand because
neither client offers them:

- it locks its folder, so that a second ``QdrantClient(path=...)`` on it fails even in the same
  process: stores on one folder share one client (:data:`FOLDERS`), closed with the last one;
- it scores a sparse query with a Python loop over every point (0.4 s a query at 5,000
  points, measured; about 8 s at 100k): :class:`LocalLexical` holds the same sparse vectors by
  term in numpy and scores them as Qdrant does. It is read again after every write of this
  process (:func:`bump`, :func:`generation`): local mode allows one process per folder.

.. warning::
   Local mode stores points with Python's ``pickle``: opening a local-mode folder
   (``QdrantStore(path=DIR)``, ``--store qdrant:DIR``) runs any code planted in it. Open only
   folders you created or trust. :class:`~bertino_rag.stores.MemoryStore` uses no pickle
   (numpy arrays and SQLite), and a Qdrant server does not unpickle its storage either.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from ...errors import StoreError
from ...lexical import BM25, query_vector
from ...search.ranked import Ranked
from ...search.rescore import id_ranks
from .common import LEXICAL, doc_id_of

__all__ = ["FOLDERS", "LocalLexical", "bump", "generation"]


class _LocalFolders:
    """One local-mode client per folder and process, shared by the stores on that folder."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: dict[str, tuple[Any, threading.RLock, int]] = {}

    def acquire(self, path: str, build: Callable[[str], Any]) -> tuple[Any, threading.RLock]:
        """The client of ``path`` (built with ``build(path)`` by the first store) and the lock
        its calls take."""
        with self._lock:
            if path in self._clients:
                client, lock, n = self._clients[path]
                self._clients[path] = (client, lock, n + 1)
                return client, lock
            try:
                client = build(path)
            except RuntimeError as err:
                raise StoreError(
                    f"Qdrant local folder {path} is used by another process (local mode allows "
                    "one process per folder); close it there, or run a Qdrant server"
                ) from err
            lock = threading.RLock()
            self._clients[path] = (client, lock, 1)
            return client, lock

    def release(self, path: str) -> None:
        with self._lock:
            client, lock, n = self._clients[path]
            if n > 1:
                self._clients[path] = (client, lock, n - 1)
                return
            del self._clients[path]
        with lock:
            client.close()


FOLDERS = _LocalFolders()

#: per local-mode client and collection, a counter bumped by every bertino-rag write, delete
#: or drop there: the stores sharing that client know when their lexical index is stale
_WRITES: weakref.WeakKeyDictionary[Any, dict[str, int]] = weakref.WeakKeyDictionary()
_WRITES_LOCK = threading.Lock()


def bump(client: Any, collection: str) -> None:
    """Mark ``collection`` of ``client`` written (before and after a write: a search between
    the two may read the old points)."""
    with _WRITES_LOCK:
        counters = _WRITES.setdefault(client, {})
        counters[collection] = counters.get(collection, 0) + 1


def generation(client: Any, collection: str) -> int:
    """How many times ``collection`` of ``client`` was marked written."""
    with _WRITES_LOCK:
        return _WRITES.get(client, {}).get(collection, 0)


class LocalLexical:
    """The ``lexical`` sparse vectors of a local-mode collection as postings in numpy.

    Scores as Qdrant does: the stored values times ``Modifier.IDF`` over the points that have
    the vector (:meth:`BM25.idf`). Same scores as the engine, to float rounding.
    """

    def __init__(self, doc_ids: list[str], term: np.ndarray, row: np.ndarray,
                 value: np.ndarray) -> None:
        order = np.argsort(term, kind="stable")
        self.doc_ids = doc_ids
        self.rank = id_ranks(doc_ids)
        self.term, self.row, self.value = term[order], row[order], value[order]
        self.terms, self.starts = np.unique(self.term, return_index=True)
        self.ends = np.append(self.starts[1:], len(self.term))

    @classmethod
    def read(cls, scroll: Callable[[Any], tuple[list[Any], Any]]) -> LocalLexical:
        """The index of a collection read page by page with ``scroll(offset)`` (points with
        their ``doc_id`` payload and ``lexical`` vector, and the next offset)."""
        doc_ids: list[str] = []
        terms, rows, values = [], [], []
        offset: Any = None
        while True:
            points, offset = scroll(offset)
            for p in points:
                vec = (p.vector or {}).get(LEXICAL)
                if vec is None:
                    continue
                terms.append(np.asarray(vec.indices, dtype=np.int64))
                values.append(np.asarray(vec.values, dtype=np.float64))
                rows.append(np.full(len(vec.indices), len(doc_ids), dtype=np.int64))
                doc_ids.append(doc_id_of(p))
            if offset is None:
                break
        empty = np.zeros(0, dtype=np.int64)
        return cls(doc_ids, np.concatenate(terms) if terms else empty,
                   np.concatenate(rows) if rows else empty,
                   np.concatenate(values) if values else np.zeros(0))

    def search(self, terms: list[str], k: int) -> Ranked:
        """The best ``k`` documents for a query's terms, scores above 0, by the ranking rule."""
        indices, _ = query_vector(terms)
        n = len(self.doc_ids)
        acc = np.zeros(n, dtype=np.float64)
        for idx in indices:
            j = int(np.searchsorted(self.terms, idx))
            if j >= len(self.terms) or int(self.terms[j]) != idx:
                continue
            part = slice(int(self.starts[j]), int(self.ends[j]))
            acc[self.row[part]] += BM25.idf(part.stop - part.start, n) * self.value[part]
        rows = np.flatnonzero(acc > 0)
        top = rows[np.lexsort((self.rank[rows], -acc[rows]))][:k]
        return Ranked([self.doc_ids[r] for r in top.tolist()], acc[top])
