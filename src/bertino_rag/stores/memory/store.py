"""MemoryStore itself: the store protocol on segment files, SQLite and numpy."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sqlite3
import weakref
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import StoreWriteError
from ...indexing.documents import DOC_ID
from ...lexical import postings as _postings
from ...types import Document, Stamp
from ...validation import positive_int
from ..base import VectorStore
from ..protocol import Capabilities, ExportBatch, WriteBatch
from .binary import DEFAULT_CANDIDATES, FIRST_STAGES, FirstStage, sign_codes
from .files import _LAYOUT, _TIER_BASE, _disk_full, _MetaGuard, _Segment
from .replace import _Replacement
from .search import _Search
from .sql import _chunks, _json_path

__all__ = ["MemoryStore"]

logger = logging.getLogger("bertino_rag.stores.memory")


class MemoryStore(_Replacement, _Search, VectorStore):
    """Exact search with numpy; in memory, or persisted with ``path=``.

    Args:
        path: folder to persist collections in (one subfolder each); ``None`` keeps everything
            in memory.
        lock_timeout: seconds to wait for another process's write to finish.
        index_fields: metadata fields to build SQLite expression indexes on, so that filters on
            them do not scan every document's metadata (worth it from ~100k documents).
        verify_checksums: check each segment file against its CRC-32 when this process first
            loads it (reads the file once: about 1 s per GB); sizes and shapes are always
            checked.
        first_stage: ``"exact"`` (every index vector scored: exact results) or ``"binary"``
            (sign codes of the index vectors searched by Hamming distance, their
            ``binary_candidates`` nearest scored exactly: a faster first stage at a million
            points whose recall against exact is measured in ``docs/benchmarks.md``; see
            :mod:`~bertino_rag.stores.memory.binary`). A search-time choice: a collection is
            searched either way, whichever wrote it.
        binary_candidates: with ``first_stage="binary"``, the rows per query scored at the
            index dim (at least the ``k``, or ``rescore_k``, asked).

    Example:
        >>> store = MemoryStore(path="./bertino_index")  # doctest: +SKIP
    """

    kind = "memory"

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        lock_timeout: float = 60.0,
        index_fields: Sequence[str] = (),
        verify_checksums: bool = True,
        first_stage: FirstStage = "exact",
        binary_candidates: int = DEFAULT_CANDIDATES,
    ):
        super().__init__()
        if first_stage not in FIRST_STAGES:
            raise ValueError(f"MemoryStore: first_stage={first_stage!r} is not one of "
                             f"{', '.join(map(repr, FIRST_STAGES))}")
        self.first_stage = first_stage
        self.binary_candidates = positive_int(binary_candidates, "binary_candidates")
        self.root = None if path is None else Path(path)
        self.lock_timeout = lock_timeout
        self.verify_checksums = verify_checksums
        self.index_fields = tuple(index_fields)
        for name in self.index_fields:
            _json_path(name)  # validates the name now rather than at open()
        self._db: sqlite3.Connection | None = None
        self._dir: Path | None = None
        self._segments: dict[int, _Segment] = {}
        self._generation: int | None = None
        # through a weak reference: no cycle that would keep the store (and its file locks)
        # alive after its last user lets go
        me = weakref.ref(self)
        self._mutex = _MetaGuard(lambda: getattr(me(), "_dir", None))
        self._file_lock: Any = None
        self._ram: dict[str, tuple[sqlite3.Connection, dict[int, _Segment]]] = {}
        self._vocab: dict[str, int] = {}
        self._lex_stats: tuple[int, int, float] | None = None  # (generation, live docs, avgdl)
        self._key: str | None = None  # folder name (or RAM key) of the open collection
        self._guard: Any = None  # the lock held while a replacement is built
        self._frozen = 0  # snapshots open (see _snapshot)

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(lexical=True, atomic_replace=True, rescore=True, intent=True)


    def _open(self, collection: str, stamp: Stamp, recreate: bool) -> None:
        previous = (self._collection, self._stamp) if self.is_open else None
        self.close()
        try:
            self._open_collection(collection, stamp, recreate)
        except BaseException:
            if previous is not None:  # a refused open leaves the store as it was
                assert previous[0] is not None and previous[1] is not None
                self._open_collection(previous[0], previous[1], False)
                self._collection, self._stamp = previous
            raise

    def _open_collection(self, collection: str, stamp: Stamp, recreate: bool) -> None:
        self._db = self._connect(collection)
        try:
            with self._writing(refresh=False):
                found = self._meta("stamp")
                if found is not None and not recreate:
                    stamp.check(Stamp.from_dict(json.loads(found)), collection)
                if found is not None and self._meta("layout") != _LAYOUT and not recreate:
                    self._adopt_legacy_orphans()
                if not recreate:
                    self._check_accounted()
                    self._check_acknowledged()
                if found is None or recreate:
                    with self.db:
                        if self._dir is not None:  # everything of the old collection goes
                            self.db.execute("INSERT OR IGNORE INTO garbage (seg) "
                                            "SELECT seg FROM segments")
                            self.db.executemany(
                                "INSERT OR IGNORE INTO garbage (seg) VALUES (?)",
                                [(seg,) for seg, _ in self._segment_files()])
                        self.db.execute("DELETE FROM docs")
                        self.db.execute("DELETE FROM segments")
                        self.db.execute("DELETE FROM terms")
                        self.db.execute("DELETE FROM meta WHERE key = 'intent'")
                        self.db.execute(
                            "INSERT OR REPLACE INTO meta (key, value) VALUES ('stamp', ?)",
                            (json.dumps(stamp.to_dict()),),
                        )
                        self._bump_generation()
                    self._segments.clear()
                    self._vocab = {}
                with self.db:
                    self.db.execute(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES ('layout', ?)", (_LAYOUT,))
                self._collect_garbage()
                for name in dict.fromkeys([*self.index_fields, DOC_ID]):
                    self.db.execute(
                        f'CREATE INDEX IF NOT EXISTS "docs_meta_{name}" '
                        f"ON docs ({_json_path(name)})"
                    )
                self.db.commit()
                self._generation = None
                self._refresh()
        except BaseException:
            self.close()
            raise


    @property
    def full_vector_dtype(self) -> str:
        return "float16"

    @property
    def location(self) -> str:
        return "memory" if self.root is None else str(self.root)

    def close(self) -> None:
        with self._mutex:
            if self._replacing:
                self._replacing = False
                self._discard_replacement()
            self._close_files()
        super().close()


    def _new_segment(
        self, index: np.ndarray, full: np.ndarray | None,
        lex: _postings.Postings | None = None,
    ) -> _Segment:
        seg = self._allocate()
        index, icrc, isize = self._write_array(
            seg, "index", np.ascontiguousarray(index, dtype=np.float32))
        codes: np.ndarray | None = None
        code_sums: tuple[int | None, int | None] = (None, None)
        if self.first_stage == "binary":
            codes, ccrc, csize = self._write_array(seg, "sign", sign_codes(index))
            code_sums = (ccrc, csize)
        fcrc = fsize = None
        if full is not None:
            full, fcrc, fsize = self._write_array(
                seg, "full", np.ascontiguousarray(full, dtype=np.float16))
        lex_sums: dict[str, tuple[int, int]] | None = None
        if lex is not None:
            arrays = {}
            lex_sums = {}
            for kind, arr in lex.arrays().items():
                arrays[kind.removeprefix("lex")], crc, size = self._write_array(
                    seg, kind, np.ascontiguousarray(arr))
                if crc is not None and size is not None:
                    lex_sums[kind] = (crc, size)
            lex = _postings.Postings(**arrays)
        self._fsync_dir()
        segment = _Segment(seg, index, full, lex)
        segment.sums = (icrc, isize, fcrc, fsize)
        segment.lex_sums = lex_sums or None
        segment.codes, segment.code_sums = codes, code_sums
        return segment

    def _insert_segment(self, segment: _Segment, nrows: int) -> None:
        """In a transaction: make ``segment`` live (it stops being garbage)."""
        self.db.execute(
            "INSERT INTO segments (seg, nrows, index_crc, index_size, full_crc, full_size, "
            "lex_sums, sign_crc, sign_size) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (segment.seg, nrows, *segment.sums,
             None if segment.lex_sums is None else json.dumps(segment.lex_sums),
             *segment.code_sums))
        self.db.execute("DELETE FROM garbage WHERE seg = ?", (segment.seg,))

    def _locate(self, ids: list[str]) -> list[tuple[int, int]]:
        """Current (segment, row) of the stored ids among ``ids``."""
        found: list[tuple[int, int]] = []
        for chunk in _chunks(ids):
            found.extend(self.db.execute(
                f"SELECT seg, row FROM docs WHERE id IN ({','.join('?' * len(chunk))})", chunk
            ))
        return found

    def _retire(self, rows: list[tuple[int, int]]) -> None:
        """Mark rows dead in RAM and forget segments left with no live row (SQL and RAM)."""
        touched = set()
        for seg, row in rows:
            s = self._segments.get(seg)
            if s is not None:
                s.alive[row] = False
                s.ids[row] = None
                touched.add(seg)
        for seg in touched:
            if not self._segments[seg].alive.any():
                del self._segments[seg]

    def _drop_empty_segments(self, segs: set[int]) -> None:
        if self._dir is not None:
            self.db.executemany(
                "INSERT OR IGNORE INTO garbage (seg) SELECT seg FROM segments WHERE seg = ? "
                "AND NOT EXISTS (SELECT 1 FROM docs WHERE seg = ?)",
                [(seg, seg) for seg in segs],
            )
        self.db.executemany(
            "DELETE FROM segments WHERE seg = ? AND NOT EXISTS (SELECT 1 FROM docs WHERE seg = ?)",
            [(seg, seg) for seg in segs],
        )

    def _commit_segment(
        self, segment: _Segment, rows: list[tuple[str, int, str, str]],
        replaced: list[tuple[int, int]], new_terms: dict[str, int] | None = None,
    ) -> None:
        """Make a written segment live and point ``rows`` (id, row, text, metadata) at it;
        ``new_terms`` join the lexical vocabulary in the same transaction."""
        with self.db:
            if new_terms:
                self.db.executemany("INSERT INTO terms (id, term) VALUES (?, ?)",
                                    [(i, t) for t, i in new_terms.items()])
            self._insert_segment(segment, int(segment.index.shape[0]))
            self.db.executemany(
                "INSERT OR REPLACE INTO docs (id, seg, row, text, metadata) VALUES (?, ?, ?, ?, ?)",
                [(i, segment.seg, r, t, m) for i, r, t, m in rows],
            )
            self._drop_empty_segments({seg for seg, _ in replaced})
            self._bump_generation()
        # RAM follows only once the transaction is committed
        if new_terms:
            self._vocab.update(new_terms)
        self._retire(replaced)
        for doc_id, r, _, _ in rows:
            segment.alive[r] = True
            segment.ids[r] = doc_id
        self._segments[segment.seg] = segment

    def _write(self, batch: WriteBatch) -> None:
        """One write: a new segment (vectors, and postings of ``terms`` when hybrid) made
        live by one transaction, then the size-tiered merge as housekeeping."""
        documents, terms = batch.documents, batch.terms
        rows = [
            (d.id, r, d.text, json.dumps(d.metadata, ensure_ascii=False, allow_nan=False))
            for r, d in enumerate(documents)
        ]
        with self._writing():
            new_terms: dict[str, int] | None = None
            lex = None
            if terms is not None:
                new_terms = {}
                doc_terms = []
                for counts in terms:
                    ids = {}
                    for term, c in counts.items():
                        tid = self._vocab.get(term)
                        if tid is None:
                            tid = new_terms.setdefault(term, len(self._vocab) + len(new_terms))
                        ids[tid] = c
                    doc_terms.append(ids)
                lex = _postings.build(doc_terms)
            replaced = self._locate([d.id for d in documents])
            try:
                segment = self._new_segment(batch.vectors, batch.full, lex)
                self._commit_segment(segment, rows, replaced, new_terms)
            except (OSError, sqlite3.Error) as err:
                raise self._write_failed(err, documents) from err
            try:
                self._merge_tiers()
            except (OSError, sqlite3.Error) as err:  # housekeeping: the write is committed
                logger.warning(
                    "MemoryStore: merging segments of %s failed (%s%s); the %d documents are "
                    "written, and the merge is tried again at the next write", self._dir,
                    "disk full: " if _disk_full(err, self._dir) else "", err, len(documents))

    def _write_failed(self, err: BaseException, documents: list[Document]) -> StoreWriteError:
        where = "memory" if self._dir is None else str(self._dir)
        ids = [d.id for d in documents]
        if _disk_full(err, self._dir):
            free = shutil.disk_usage(self._dir).free if self._dir is not None else 0
            return StoreWriteError(
                f"disk full: writing {len(ids)} documents to {where} failed ({err}; "
                f"{free // (1 << 20)} MiB free). None of them was written and the collection "
                "holds what it held before; free some space and run the same call again",
                ids,
            )
        return StoreWriteError(
            f"writing {len(ids)} documents to {where} failed ({type(err).__name__}: {err}). "
            "None of them was written and the collection holds what it held before", ids,
        )

    def _merge_tiers(self) -> None:
        """Size-tiered merging: _TIER_BASE segments of one size tier become one segment."""
        while True:
            tiers: dict[int, list[int]] = defaultdict(list)
            for s in self._segments.values():
                tiers[int(math.log(max(int(s.alive.sum()), 1), _TIER_BASE))].append(s.seg)
            group = next((segs for _, segs in sorted(tiers.items()) if len(segs) >= _TIER_BASE),
                         None)
            if group is None:
                return
            self._merge(sorted(group))

    def _merge(self, segs: list[int]) -> None:
        parts = [self._segments[s] for s in segs]
        keep = [np.flatnonzero(p.alive) for p in parts]
        index = np.concatenate([np.asarray(p.index[k]) for p, k in zip(parts, keep, strict=True)])
        full = None
        if parts[0].full is not None:
            full = np.concatenate(
                [np.asarray(p.full[k]) for p, k in zip(parts, keep, strict=True)]  # type: ignore[index]
            )
        ids = [doc_id for p, k in zip(parts, keep, strict=True) for doc_id in p.ids[k]]
        lex = None
        if parts[0].lex is not None:
            lex = _postings.merge([p.lex for p in parts], keep)  # type: ignore[misc]
        merged = self._new_segment(index, full, lex)
        with self.db:
            self._insert_segment(merged, len(ids))
            self.db.executemany(
                "UPDATE docs SET seg = ?, row = ? WHERE id = ?",
                [(merged.seg, r, doc_id) for r, doc_id in enumerate(ids)],
            )
            self._drop_empty_segments(set(segs))
            self._bump_generation()
        for seg in segs:
            del self._segments[seg]
        merged.alive[:] = True
        merged.ids[:] = ids
        self._segments[merged.seg] = merged
        self._collect_garbage()

    def _delete(self, ids: list[str]) -> None:
        with self._writing():
            gone = self._locate(ids)
            with self.db:
                for chunk in _chunks(ids):
                    self.db.execute(
                        f"DELETE FROM docs WHERE id IN ({','.join('?' * len(chunk))})", chunk
                    )
                self._drop_empty_segments({seg for seg, _ in gone})
                self._bump_generation()
            self._retire(gone)
            self._collect_garbage()

    # the intent record lives in the meta table beside the stamp: one SQLite transaction
    # replaces it at once, in a folder or in RAM alike (no file of its own to keep atomic)
    def _read_intent(self) -> dict[str, Any] | None:
        with self._mutex:
            found = self._meta("intent")
        return None if found is None else dict(json.loads(found))

    def _write_intent(self, record: dict[str, Any] | None) -> None:
        with self._writing(), self.db:
            if record is None:
                self.db.execute("DELETE FROM meta WHERE key = 'intent'")
            else:
                self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('intent', ?)",
                                (json.dumps(record, ensure_ascii=False),))

    def _count(self) -> int:
        with self._mutex:
            return int(self.db.execute("SELECT COUNT(*) FROM docs").fetchone()[0])

    def _drop(self) -> None:
        with self._writing():
            with self.db:
                if self._dir is not None:
                    self.db.execute("INSERT OR IGNORE INTO garbage (seg) SELECT seg FROM segments")
                self.db.execute("DELETE FROM docs")
                self.db.execute("DELETE FROM segments")
                # the generation only grows: meta.acked compares with it
                self.db.execute("DELETE FROM meta WHERE key NOT IN ('last_seg', 'generation')")
                self.db.execute("DELETE FROM terms")
            self._segments.clear()
            self._vocab = {}
            self._collect_garbage()
        if self.root is None and self._key in self._ram:
            self._ram.pop(self._key)[0].close()
            self._db = None
        self.close()


    def _scan(self, batch_size: int) -> Iterator[ExportBatch]:
        """Documents in id order, a page at a time (keyset pagination on the id)."""
        last: str | None = None
        while True:
            with self._mutex:
                self._refresh()
                if last is None:
                    rows = self.db.execute(
                        "SELECT id, seg, row, text, metadata FROM docs ORDER BY id LIMIT ?",
                        (batch_size,)).fetchall()
                else:
                    rows = self.db.execute(
                        "SELECT id, seg, row, text, metadata FROM docs WHERE id > ? "
                        "ORDER BY id LIMIT ?", (last, batch_size)).fetchall()
                if not rows:
                    return
                docs = [Document(text=t, id=i, metadata=json.loads(m)) for i, _, _, t, m in rows]
                index = np.stack([np.asarray(self._segments[seg].index[row], dtype=np.float32)
                                  for _, seg, row, _, _ in rows])
                full = None
                if self.stamp.full_vectors:
                    fulls = [self._segments[seg].full for _, seg, _, _, _ in rows]
                    full = np.stack([np.asarray(f[row], dtype=np.float32)  # type: ignore[index]
                                     for f, (_, _, row, _, _) in zip(fulls, rows, strict=True)])
            yield ExportBatch(docs, index, full)
            last = rows[-1][0]

    def __repr__(self) -> str:
        where = "memory" if self.root is None else str(self.root)
        return f"MemoryStore({where}, collection={self._collection!r})"

