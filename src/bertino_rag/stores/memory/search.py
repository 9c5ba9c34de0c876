"""MemoryStore's reads and primitive searches: exact dot products over memory-mapped segments,
exact BM25 over the segments' postings, reads from SQLite. A mixin of
:class:`~.store.MemoryStore`.

Candidates carry their row handle (``segment << 32 | row``), so that the funnel's rescoring
gathers their full vectors straight from the segment arrays and only the final hits are read
from SQLite. Handles are valid inside :meth:`_Search._snapshot`, which holds the store's lock
(no write of this process can move a row meanwhile) and refreshes once.
"""

from __future__ import annotations

import contextlib
import json
from collections import defaultdict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from ...lexical import BM25, parse_lexical_spec
from ...lexical import postings as _postings
from ...search.ranked import Fetched, Ranked, ranked_arrays
from ...search.rescore import id_ranks, rescore_rows
from ...types import Document, Stamp
from .binary import binary_top_keys
from .files import _NO_ROWS
from .folder import _Folder
from .sql import _chunks, _conjunction_sql

#: floats per score block (64 MiB): bounds the memory of a search
_SCORE_BLOCK = 1 << 24
_ROW_BITS = 32


class _Search(_Folder):
    """The read side of a MemoryStore collection."""

    binary_candidates: int

    if TYPE_CHECKING:  # provided by VectorStore
        @property
        def stamp(self) -> Stamp: ...

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[None]:
        """Hold the lock and refresh once: row handles stay valid and reads see one state."""
        with self._mutex:
            self._refresh()
            self._frozen += 1
            try:
                yield
            finally:
                self._frozen -= 1

    def _fresh(self) -> None:
        """Refresh unless a snapshot holds the state still (the caller holds the mutex)."""
        if not self._frozen:
            self._refresh()

    def _rows_of(self, ids: list[str]) -> dict[str, tuple[int, int, str, str]]:
        found: dict[str, tuple[int, int, str, str]] = {}
        for chunk in _chunks(ids):
            for doc_id, seg, row, text, meta in self.db.execute(
                f"SELECT id, seg, row, text, metadata FROM docs WHERE id IN "
                f"({','.join('?' * len(chunk))})",
                chunk,
            ):
                found[doc_id] = (seg, row, text, meta)
        return found

    def _fetch(self, ids: list[str], rows: np.ndarray | None = None, *,
               documents: bool = False, full: bool = False) -> Fetched:
        with self._mutex:
            self._fresh()
            found_rows = self._rows_of(ids) if documents or rows is None else {}
            docs: list[Document | None] | None = None
            if documents:
                docs = [None if i not in found_rows else
                        Document(text=found_rows[i][2], id=i,
                                 metadata=json.loads(found_rows[i][3])) for i in ids]
            if not full:
                assert docs is not None
                return Fetched(np.fromiter((d is not None for d in docs), dtype=bool,
                                           count=len(docs)), docs)
            if rows is None:
                handles = np.asarray(
                    [found_rows[i][0] << _ROW_BITS | found_rows[i][1] if i in found_rows else -1
                     for i in ids], dtype=np.int64)
            else:
                handles = np.asarray(rows, dtype=np.int64)
            found, vectors = self._gather_full(handles)
            if docs is not None:
                found &= np.fromiter((d is not None for d in docs), dtype=bool, count=len(docs))
            return Fetched(found, docs, vectors)

    def _gather_full(self, handles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The full vectors of row handles (``-1``: none), and which of them are live rows;
        the caller holds the mutex."""
        found = handles >= 0
        segs, at = handles >> _ROW_BITS, handles & ((1 << _ROW_BITS) - 1)
        present = np.unique(segs[found]).tolist()
        if len(present) == 1 and found.all() and present[0] in self._segments:
            only = self._segments[present[0]]  # one segment, every handle in it: no masks
            return only.alive[at], np.asarray(only.full[at], dtype=np.float32)  # type: ignore[index]
        vectors = np.zeros((len(handles), self.stamp.full_dim), dtype=np.float32)
        for seg in present:
            here = found & (segs == seg)
            part = self._segments.get(seg)
            if part is None:
                found &= ~here
                continue
            found[here] = part.alive[at[here]]
            vectors[here] = part.full[at[here]]  # type: ignore[index]
        vectors[~found] = 0.0
        return found, vectors

    def _ids_where(self, conditions: Any) -> list[str]:
        where, params = _conjunction_sql(conditions)
        with self._mutex:
            return [row[0] for row in self.db.execute(f"SELECT id FROM docs WHERE {where}", params)]

    def _candidate_rows(self, conditions: Any) -> dict[int, np.ndarray] | None:
        """Rows allowed by a filter, per segment; ``None`` when there is no filter."""
        if not conditions:
            return None
        where, params = _conjunction_sql(conditions)
        per_seg: dict[int, list[int]] = defaultdict(list)
        for seg, row in self.db.execute("SELECT seg, row FROM docs WHERE " + where, params):
            per_seg[seg].append(row)
        return {seg: np.asarray(rows, dtype=np.int64) for seg, rows in per_seg.items()}

    def _top_keys(self, vectors: np.ndarray, k: int, allowed: dict[int, np.ndarray] | None
                  ) -> tuple[np.ndarray, np.ndarray]:
        """The best ``k`` scores per query and their row handles, in no order: ``(m, <=k)``
        each; a score is ``-inf`` where a query has fewer than ``k`` live rows. With
        ``first_stage="binary"``, among each query's nearest sign codes (:mod:`.binary`)."""
        if self.first_stage == "binary":
            return binary_top_keys([s for _, s in sorted(self._segments.items())], vectors,
                                   k, self.binary_candidates, allowed)
        m = vectors.shape[0]
        best_scores = np.full((m, 0), -np.inf, dtype=np.float32)
        best_keys = np.zeros((m, 0), dtype=np.int64)
        for seg, s in sorted(self._segments.items()):
            if allowed is None:
                rows = None
                n = int(s.index.shape[0])
            else:
                rows = allowed.get(seg)
                if rows is None or len(rows) == 0:
                    continue
                n = len(rows)
            block = max(1, _SCORE_BLOCK // max(m, 1))
            for start in range(0, n, block):
                stop = min(n, start + block)
                if rows is None:
                    mat = np.asarray(s.index[start:stop], dtype=np.float32)
                    local = np.arange(start, stop)
                    alive = s.alive[start:stop]
                else:
                    local = rows[start:stop]
                    mat = np.asarray(s.index[local], dtype=np.float32)
                    alive = s.alive[local]
                scores = vectors @ mat.T
                scores[:, ~alive] = -np.inf
                take = min(k, scores.shape[1])
                top = np.argpartition(-scores, take - 1, axis=1)[:, :take]
                best_scores = np.concatenate(
                    [best_scores, np.take_along_axis(scores, top, axis=1)], axis=1)
                best_keys = np.concatenate([best_keys, (seg << _ROW_BITS) | local[top]], axis=1)
                if best_scores.shape[1] > k:
                    sel = np.argpartition(-best_scores, k - 1, axis=1)[:, :k]
                    best_scores = np.take_along_axis(best_scores, sel, axis=1)
                    best_keys = np.take_along_axis(best_keys, sel, axis=1)
        return best_scores, best_keys

    def _ids_of(self, keys: np.ndarray) -> np.ndarray:
        """The ids of row handles (object array)."""
        ids = np.empty(len(keys), dtype=object)
        segs, rows = keys >> _ROW_BITS, keys & ((1 << _ROW_BITS) - 1)
        for seg in np.unique(segs).tolist():
            here = segs == seg
            ids[here] = self._segments[seg].ids[rows[here]]
        return ids

    def _knn(self, vectors: np.ndarray, k: int, conditions: Any, *,
             documents: bool = False) -> list[Ranked]:
        with self._mutex:
            self._fresh()
            scores, keys = self._top_keys(vectors, k, self._candidate_rows(conditions))
            # the whole batch sorted and named at once; a query whose scores tie is sorted
            # again by the one rule (ties by id)
            order = np.argsort(-scores, axis=1, kind="stable")
            scores = np.take_along_axis(scores, order, axis=1).astype(np.float64)
            keys = np.take_along_axis(keys, order, axis=1)
            counts = np.isfinite(scores).sum(axis=1)  # the -inf of missing rows sort last
            names = self._ids_of(keys[np.arange(keys.shape[1]) < counts[:, None]])
            ties = (scores[:, 1:] == scores[:, :-1]) & np.isfinite(scores[:, 1:])
            tied = ties.any(axis=1) if ties.size else np.zeros(len(scores), dtype=bool)
            out, at = [], 0
            for qi, n in enumerate(counts.tolist()):
                ids = names[at : at + n]
                at += n
                if tied[qi]:
                    out.append(ranked_arrays(ids, scores[qi, :n], keys[qi, :n], k))
                else:
                    out.append(Ranked(ids.tolist(), scores[qi, :n], keys[qi, :n]))
            return out

    def _knn_rescored(self, vectors: np.ndarray, full: np.ndarray, k: int, n: int,
                      conditions: Any, *, documents: bool = False) -> list[Ranked]:
        """Both stages on the segment arrays (``capabilities.rescore``): the ``n`` best rows
        per query on the index vectors, their full vectors gathered once per batch by row, and
        the rescoring of :func:`~bertino_rag.search.rescore.rescore_rows` (the funnel's own,
        so the results are the generic stage's; kept as a pushdown because it skips building
        a candidate list per query: 30 us a query, ~10% of a batch, measured with
        ``benchmarks/bench_rescore.py``)."""
        with self._mutex:
            self._fresh()
            scores, keys = self._top_keys(vectors, n, self._candidate_rows(conditions))
            valid = np.isfinite(scores)
            distinct, inverse = np.unique(keys[valid], return_inverse=True)
            candidates = np.full(scores.shape, -1, dtype=np.int64)
            candidates[valid] = inverse.ravel()
            names = self._ids_of(distinct)
            _, vectors = self._gather_full(distinct)  # rows of this snapshot: all live
            top, top_scores = rescore_rows(candidates, vectors, full, k,
                                           id_ranks(names.tolist()), first_scores=scores)
            out = []
            for picked, got in zip(top, top_scores, strict=True):
                sel = picked[picked >= 0]
                out.append(Ranked(names[sel].tolist(), got[: len(sel)].astype(np.float64),
                                  distinct[sel]))
            return out

    def _bm25(self, terms: list[list[str]], k: int, conditions: Any, *,
              documents: bool = False) -> list[Ranked]:
        with self._mutex:
            self._fresh()
            return self._lexical(terms, k, self._candidate_rows(conditions))

    def _lexical(self, terms: list[list[str]], k: int, allowed: dict[int, np.ndarray] | None
                 ) -> list[Ranked]:
        bm25: BM25 = parse_lexical_spec(self.stamp.lexical or "")[1]
        segs = [s for _, s in sorted(self._segments.items()) if s.lex is not None]
        if self._lex_stats is None or self._lex_stats[0] != self._generation:
            n_docs = total = 0
            for part in segs:
                assert part.lex is not None
                n_docs += int(part.alive.sum())
                total += int(np.asarray(part.lex.length)[part.alive].sum())
            self._lex_stats = (self._generation or 0, n_docs, total / max(n_docs, 1))
        _, n_docs, avg_len = self._lex_stats
        out = []
        for query in terms:
            tids = [self._vocab[t] for t in query if t in self._vocab]
            if not tids:
                out.append(Ranked.empty())
                continue
            parts = [(s.lex, s.alive, None if allowed is None else allowed.get(s.seg, _NO_ROWS))
                     for s in segs]
            scored = _postings.score(parts, tids, bm25, n_docs, avg_len)  # type: ignore[arg-type]
            keys, values = [], []
            for s, (rows, scores) in zip(segs, scored, strict=True):
                if len(rows) > k:  # keep the top k and everything tied with the k-th
                    kth = np.partition(scores, len(scores) - k)[len(scores) - k]
                    sel = scores >= kth
                    rows, scores = rows[sel], scores[sel]
                keys.append((s.seg << _ROW_BITS) | rows.astype(np.int64))
                values.append(scores)
            handles = np.concatenate(keys) if keys else np.zeros(0, dtype=np.int64)
            scores_all = np.concatenate(values) if values else np.zeros(0)
            out.append(ranked_arrays(self._ids_of(handles), scores_all, handles, k))
        return out
