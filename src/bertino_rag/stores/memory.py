"""The embedded default store: exact numpy search, in memory or persisted to a folder.

Layout of ``MemoryStore(path=DIR)``, one folder per collection (``DIR/<collection>/``):

- ``seg-NNNNNN.index.npy``: index vectors, float32, one file per written segment;
- ``seg-NNNNNN.full.npy``: full vectors, float16 (only when the collection keeps them);
- ``meta.sqlite``: the stamp, the list of live segments with their sizes and CRC-32
  checksums, the segments whose files may be deleted, and, per document, its id, segment, row,
  text and metadata (JSON); for a hybrid collection, the lexical vocabulary (term → id). No
  pickle anywhere;
- ``meta.acked``: the generation of the last acknowledged write, fsynced before the write
  returns, so that a lost or garbled ``meta.sqlite-wal`` that undid acknowledged writes is
  refused at the next open (:meth:`MemoryStore._record_generation`);
- ``seg-NNNNNN.lex*.npy``: a hybrid collection's postings of the segment's rows
  (:mod:`._postings`), written and made live with the vectors; their sizes and CRC-32s are
  in ``segments.lex_sums`` and checked like the vectors'.

Writers in several processes take turns on the folder's ``.lock`` file; readers in other
processes see new data at their next call. Segments are memory-mapped and searched in chunks, so a
million vectors need no more RAM than the page cache gives them; small segments are merged
in size tiers, which keeps the number of files logarithmic in the corpus size.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import shutil
import sqlite3
import threading
import zlib
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..indexing.documents import DOC_ID
from ..lexical import postings as _postings
from ..types import Document, Hit, Stamp
from .base import (
    COLLECTION_NAME,
    HybridQuery,
    StoreCorruptionError,
    StoreError,
    StoreWriteError,
    VectorStore,
    check_found,
    id_ranks,
    lexical_config,
    ranking_key,
    rescore,
    rescore_rows,
)
from .filters import _FIELD, Node, Or

__all__ = ["MemoryStore"]

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS segments (seg INTEGER PRIMARY KEY, nrows INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS garbage (seg INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS docs (
    id TEXT PRIMARY KEY, seg INTEGER NOT NULL, row INTEGER NOT NULL,
    text TEXT NOT NULL, metadata TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS docs_seg ON docs (seg, row);
CREATE TABLE IF NOT EXISTS terms (id INTEGER PRIMARY KEY, term TEXT NOT NULL UNIQUE);
"""
_SQL_CHUNK = 500  # ids per "IN (...)" query
_SCORE_BLOCK = 1 << 24  # floats per score block (64 MiB): bounds memory of a search
_TIER_BASE = 4  # segments of the same size tier merged when this many accumulate
#: 2: files are deleted only when listed in ``garbage``; segments carry checksums
_LAYOUT = "2"
_CRC_BLOCK = 1 << 22
#: ``DIR/<collection>.replacing/``: a replacement being built (``open_replacement``), with its
#: ``.lock`` file beside it held while it is built; ``DIR/<collection>.replaced/``: the old
#: folder during the swap. Neither is a valid collection name, so no collection can collide.
_REPLACING = ".replacing"
_REPLACED = ".replaced"
#: written into a replacement once it is complete: only a complete one is swapped in
_COMPLETE = "complete"
#: the generation of the last acknowledged write, outside SQLite (see :meth:`_record_generation`)
_ACKED = "meta.acked"
_RESTORE = (
    "Nothing was deleted. Restore the folder (meta.sqlite with its -wal file, and the seg-* "
    "files) from a backup; or move the folder away and index the documents again"
)


def _crc32(path: Path) -> tuple[int, int]:
    """CRC-32 and size of a file, read in blocks."""
    crc = 0
    size = 0
    with open(path, "rb") as fh:
        while block := fh.read(_CRC_BLOCK):
            crc = zlib.crc32(block, crc)
            size += len(block)
    return crc, size


def _disk_full(err: BaseException, folder: Path | None) -> bool:
    """Whether a failed write ran out of space (ENOSPC, a short numpy write, SQLite's
    "database or disk is full", or almost no space left)."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return True
    text = str(err)
    if "requested and" in text and "written" in text:  # numpy's short write
        return True
    if isinstance(err, sqlite3.Error) and "disk is full" in text:
        return True
    if folder is not None and isinstance(err, (OSError, sqlite3.Error)):
        try:
            return shutil.disk_usage(folder).free < (1 << 20)
        except OSError:
            return False
    return False


_NO_ROWS = np.zeros(0, dtype=np.int64)


class _Segment:
    __slots__ = ("seg", "index", "full", "alive", "ids", "lex", "sums", "lex_sums")

    def __init__(
        self, seg: int, index: np.ndarray, full: np.ndarray | None,
        lex: _postings.Postings | None = None,
    ) -> None:
        self.seg = seg
        self.index = index
        self.full = full
        self.lex = lex
        n = index.shape[0]
        self.alive = np.zeros(n, dtype=bool)
        self.ids = np.empty(n, dtype=object)
        self.sums: tuple[int | None, ...] = (None, None, None, None)
        #: per postings file kind, its (CRC-32, size) when persisted
        self.lex_sums: dict[str, tuple[int, int]] | None = None


def _json_path(field: str) -> str:
    """``json_extract`` of a metadata field, as a SQL expression.

    The path is written literally (not bound) so that SQLite can use an expression index built
    by ``index_fields``; field names are validated by ``parse_filter`` (letters, digits, ``_``
    and ``-``), so they cannot close the quotes. Values are always bound parameters.
    """
    if not _FIELD.match(field):
        raise ValueError(f"invalid metadata field name {field!r}")
    return f"json_extract(metadata, '$.\"{field}\"')"


def _condition_sql(c: Node) -> tuple[str, list[Any]]:
    """One filter node as SQL over the JSON metadata; values are bound parameters.

    A condition on a missing field is SQL NULL, which WHERE treats as false; negations wrap
    the positive condition in ``COALESCE(..., 0)`` so that a missing field matches them.
    """
    if isinstance(c, Or):
        parts = [_conjunction_sql(list(branch)) for branch in c.branches]
        return "(" + " OR ".join(p for p, _ in parts) + ")", [x for _, ps in parts for x in ps]
    value_of = _json_path(c.field)
    type_of = value_of.replace("json_extract", "json_type", 1)

    def eq(value: Any) -> tuple[str, list[Any]]:
        if isinstance(value, bool):
            return f"{type_of} = ?", ["true" if value else "false"]
        if isinstance(value, str):
            return f"({type_of} = 'text' AND {value_of} = ?)", [value]
        return f"({type_of} IN ('integer', 'real') AND {value_of} = ?)", [value]

    def isin(values: tuple[Any, ...]) -> tuple[str, list[Any]]:
        # One IN list per type (not an OR per value: SQLite caps expression depth at 1000).
        if not values:
            return "0", []
        parts: list[str] = []
        params: list[Any] = []
        bools = sorted({"true" if v else "false" for v in values if isinstance(v, bool)})
        texts = [v for v in values if isinstance(v, str)]
        numbers = [v for v in values if not isinstance(v, (bool, str))]
        if bools:
            parts.append(f"{type_of} IN ({','.join('?' * len(bools))})")
            params += bools
        if texts:
            parts.append(f"({type_of} = 'text' AND {value_of} IN ({','.join('?' * len(texts))}))")
            params += texts
        if numbers:
            parts.append(f"({type_of} IN ('integer', 'real') AND "
                         f"{value_of} IN ({','.join('?' * len(numbers))}))")
            params += numbers
        return "(" + " OR ".join(parts) + ")", params

    if c.op == "$eq":
        return eq(c.value)
    if c.op == "$ne":
        sql, params = eq(c.value)
        return f"NOT COALESCE({sql}, 0)", params
    if c.op == "$in":
        return isin(c.value)
    if c.op == "$nin":
        sql, params = isin(c.value)
        return f"NOT COALESCE({sql}, 0)", params
    if c.op == "$exists":
        present = (f"({type_of} IS NOT NULL AND {type_of} != 'null' AND NOT ({type_of} = "
                   f"'array' AND json_array_length(metadata, '$.\"{c.field}\"') = 0))")
        return (present if c.value else f"NOT {present}"), []
    sql_op = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}[c.op]
    kind = "= 'text'" if isinstance(c.value, str) else "IN ('integer', 'real')"
    return f"({type_of} {kind} AND {value_of} {sql_op} ?)", [c.value]


def _conjunction_sql(nodes: list[Node]) -> tuple[str, list[Any]]:
    parts = [_condition_sql(n) for n in nodes]
    return "(" + " AND ".join(p for p, _ in parts) + ")", [x for _, ps in parts for x in ps]


class MemoryStore(VectorStore):
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

    Example:
        >>> store = MemoryStore(path="./bertino_index")  # doctest: +SKIP
    """

    kind = "memory"
    supports_lexical = True
    supports_atomic_replace = True

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        lock_timeout: float = 60.0,
        index_fields: Sequence[str] = (),
        verify_checksums: bool = True,
    ):
        super().__init__()
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
        self._mutex = threading.RLock()
        self._file_lock: Any = None
        self._ram: dict[str, tuple[sqlite3.Connection, dict[int, _Segment]]] = {}
        self._vocab: dict[str, int] = {}
        self._lex_stats: tuple[int, int, float] | None = None  # (generation, live docs, avgdl)
        self._key: str | None = None  # folder name (or RAM key) of the open collection
        self._guard: Any = None  # the lock held while a replacement is built

    # ------------------------------------------------------------------ plumbing
    def _connect(self, collection: str) -> sqlite3.Connection:
        """Connect to the collection stored under ``collection`` (a folder name or RAM key:
        a collection's name, or ``<name>.replacing`` for a replacement)."""
        self._key = collection
        if self.root is None:
            # In RAM, collections live in this object: closing keeps them, drop() removes one.
            if collection in self._ram:
                db, self._segments = self._ram[collection]
                return db
            db = sqlite3.connect(":memory:", check_same_thread=False)
            self._ram[collection] = (db, self._segments)
        else:
            from filelock import FileLock  # installed with sentence-transformers (huggingface-hub)

            folder = self.root / collection
            if folder.resolve().parent != self.root.resolve():  # names are validated; belt
                raise ValueError(f"collection {collection!r} would leave the folder {self.root}")
            if not collection.endswith(_REPLACING):
                _finish_swap(self.root, collection)
            _check_metadata_present(folder)
            self._dir = folder
            self._dir.mkdir(parents=True, exist_ok=True)
            self._file_lock = FileLock(str(self._dir / ".lock"))
            db = sqlite3.connect(str(self._dir / "meta.sqlite"), check_same_thread=False,
                                 timeout=self.lock_timeout)
        try:
            if self.root is not None:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(segments)")}
            for column, kind in (("index_crc", "INTEGER"), ("index_size", "INTEGER"),
                                 ("full_crc", "INTEGER"), ("full_size", "INTEGER"),
                                 ("lex_sums", "TEXT")):
                if column not in columns:  # written before checksums: NULL, not verified
                    db.execute(f"ALTER TABLE segments ADD COLUMN {column} {kind}")
            db.commit()
        except sqlite3.DatabaseError as err:
            if self.root is None or isinstance(err, sqlite3.OperationalError) and (
                    "locked" in str(err)):
                raise
            db.close()
            path = folder / "meta.sqlite"
            raise StoreCorruptionError(
                path, f"{path} cannot be read ({err}): the metadata of the collection is "
                f"damaged. {_RESTORE}."
            ) from err
        return db

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("MemoryStore: no collection is open; call open() first")
        return self._db

    @contextmanager
    def _writing(self, refresh: bool = True) -> Iterator[None]:
        """Hold the in-process mutex and, when persisted, the folder's lock file; after the
        write, checkpoint the WAL into ``meta.sqlite``."""
        with self._mutex:
            if self._file_lock is None:
                yield
                return
            from filelock import Timeout

            def acquire() -> Any:
                lock = self._file_lock
                try:
                    lock.acquire(timeout=self.lock_timeout)
                except Timeout as err:
                    raise StoreError(
                        f"another process is writing {self._dir} (lock held for more than "
                        f"{self.lock_timeout:.0f}s); try again when it finishes"
                    ) from err
                return lock

            lock = acquire()
            try:
                if refresh:
                    self._refresh()
                    while self._file_lock is not lock:  # followed a replacement: lock it
                        lock.release()
                        lock = acquire()
                        self._refresh()
                    self._check_acknowledged()  # before garbage is deleted
                    self._collect_garbage()
                yield
                try:
                    self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                except sqlite3.Error as err:  # the write is durable in the WAL already
                    logger.warning("MemoryStore: checkpoint of %s failed: %s", self._dir, err)
                self._record_generation()
            finally:
                lock.release()

    def _record_generation(self) -> None:
        """Write the generation of the write that is about to be acknowledged to
        ``meta.acked``, beside ``meta.sqlite`` and fsynced.

        Why outside SQLite: a commit that the checkpoint has not copied into ``meta.sqlite``
        yet (a crash right after it, a reader blocking the checkpoint) lives only in
        ``meta.sqlite-wal``; if that file is then lost or garbled, SQLite drops the bad frame
        and every frame after it without an error, and the collection silently goes back in
        time (a delete is undone, new documents vanish). SQLite's own checks cannot see this
        (the older state is consistent), and a counter inside the database is rolled back
        with it. A write's generation recorded here before it returns makes the rollback of
        any acknowledged write detectable at the next open (:meth:`_check_acknowledged`).
        Cost: one 32-byte write and fsync per write call (``docs/benchmarks.md``).
        """
        if self._dir is None:
            return
        gen = int(self._meta("generation") or 0)
        body = f"{gen:020d} {zlib.crc32(str(gen).encode()):010d}\n".encode()
        path = self._dir / _ACKED
        created = not path.exists()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                os.pwrite(fd, body, 0)  # fixed width: rewritten in place
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:
                self._fsync_dir()
        except OSError as err:  # the write is committed; only the check of it is weaker
            logger.warning("MemoryStore: recording the write in %s failed: %s", path, err)

    def _check_acknowledged(self) -> None:
        """Refuse a collection whose metadata is older than its last acknowledged write."""
        if self._dir is None:
            return
        path = self._dir / _ACKED
        try:  # read before the database: a writer records after its commit
            text = path.read_text(encoding="ascii")
        except FileNotFoundError:  # written before this check existed
            return
        except (OSError, UnicodeDecodeError):
            text = ""
        parts = text.split()
        if len(parts) != 2 or not all(p.isdigit() for p in parts) or zlib.crc32(
                str(int(parts[0])).encode()) != int(parts[1]):
            logger.warning("MemoryStore: %s is unreadable and is ignored; the next write "
                           "rewrites it", path)
            return
        acked = int(parts[0])
        gen = int(self._meta("generation") or 0)
        if gen < acked:
            wal = self._dir / "meta.sqlite-wal"
            raise StoreCorruptionError(
                wal, f"{self._dir / 'meta.sqlite'} holds the collection as of write {gen}, but "
                f"write {acked} was acknowledged ({path.name}): the write-ahead log {wal} was "
                f"lost or damaged, which silently undid the last {acked - gen} write(s) "
                f"(deleted documents come back, new ones vanish). {_RESTORE}."
            )

    def _meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _seg_path(self, seg: int, kind: str) -> Path:
        assert self._dir is not None
        return self._dir / f"seg-{seg:06d}.{kind}.npy"

    def _refresh(self) -> None:
        """Reload segments when another process (or a rollback) changed the collection."""
        for _ in range(3):
            gen = int(self._meta("generation") or 0)
            if gen == self._generation:
                return
            if self._dir is not None and self._meta("replaced") is not None:
                self._follow_replacement()
                return
            try:
                self._reload(gen)
                return
            except StoreCorruptionError:
                # a writer may have retired the segment meanwhile: a changed generation says so
                if int(self._meta("generation") or 0) == gen:
                    raise
        self._reload(int(self._meta("generation") or 0))

    def _reload(self, gen: int) -> None:
        rows = {r[0]: r for r in self.db.execute(
            "SELECT seg, nrows, index_crc, index_size, full_crc, full_size, lex_sums "
            "FROM segments")}
        live = set(rows)
        for seg in list(self._segments):
            if seg not in live:
                del self._segments[seg]
        if self._dir is not None and live - set(self._segments):
            raw = self._meta("stamp")
            stamp = None if raw is None else Stamp.from_dict(json.loads(raw))
            for seg in sorted(live - set(self._segments)):
                self._segments[seg] = self._load_segment(rows[seg], stamp)
        for s in self._segments.values():
            s.alive[:] = False
            s.ids[:] = None
        for doc_id, seg, row in self.db.execute("SELECT id, seg, row FROM docs"):
            found = self._segments.get(seg)
            if found is not None:
                found.alive[row] = True
                found.ids[row] = doc_id
        self._refresh_vocab()
        self._generation = gen

    def _refresh_vocab(self) -> None:
        """Load the terms added since the last look (ids only grow, until a drop/recreate)."""
        n = int(self.db.execute("SELECT COUNT(*) FROM terms").fetchone()[0])
        if n < len(self._vocab):
            self._vocab = {}
        if n > len(self._vocab):
            self._vocab.update(self.db.execute(
                "SELECT term, id FROM terms WHERE id >= ?", (len(self._vocab),)
            ))

    def _load_segment(self, row: tuple[Any, ...], stamp: Stamp | None) -> _Segment:
        seg, nrows, index_crc, index_size, full_crc, full_size, lex_sums = row
        nrows = int(nrows)
        index = self._load_array(seg, "index", nrows, index_crc, index_size,
                                 (nrows, None if stamp is None else stamp.index_dim))
        full = None
        if full_size is not None or (stamp is not None and stamp.full_vectors):
            full = self._load_array(seg, "full", nrows, full_crc, full_size,
                                    (nrows, None if stamp is None else stamp.full_dim))
        lex = None
        sums = None if lex_sums is None else json.loads(lex_sums)
        # a segment has postings when its row lists them (or, written before they had
        # checksums, when the collection is hybrid): a missing postings file is damage
        if sums is not None or (stamp is not None and stamp.lexical is not None):
            shapes: dict[str, tuple[int | None, ...]] = {
                "lexterm": (None,), "lexptr": (None,), "lexpost": (None, 2),
                "lexlength": (nrows,)}
            arrays = {}
            for kind in _postings.KINDS:
                crc, size = (sums or {}).get(kind, (None, None))
                arrays[kind] = self._load_array(seg, kind, nrows, crc, size, shapes[kind])
            if len(arrays["lexptr"]) != len(arrays["lexterm"]) + 1:
                path = self._seg_path(seg, "lexptr")
                raise StoreCorruptionError(
                    path, f"{path} does not match {self._seg_path(seg, 'lexterm').name}: the "
                    f"lexical postings of {nrows} documents cannot be trusted. {_RESTORE}.")
            lex = _postings.Postings(**{k.removeprefix("lex"): a for k, a in arrays.items()})
        return _Segment(seg, index, full, lex)

    def _load_array(self, seg: int, kind: str, nrows: int, crc: int | None, size: int | None,
                    shape: tuple[int | None, ...]) -> np.ndarray:
        """Memory-map one segment file after checking its size, checksum and shape
        (``None`` in ``shape``: any length)."""
        path = self._seg_path(seg, kind)
        what = {"index": "index vectors", "full": "full vectors (for rescoring)"}.get(
            kind, "lexical postings (for lexical and hybrid search)")
        if not path.exists():
            raise StoreCorruptionError(
                path, f"{path} is missing: it holds the {what} of {nrows} documents listed in "
                f"meta.sqlite. {_RESTORE}."
            )
        problem = None
        if size is not None and path.stat().st_size != size:
            problem = f"has {path.stat().st_size} bytes where {size} were written (truncated?)"
        elif crc is not None and self.verify_checksums and _crc32(path)[0] != crc:
            problem = "fails its checksum (it was changed after it was written)"
        if problem is None:
            try:
                arr: np.ndarray = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as err:
                problem = f"cannot be read ({err})"
            else:
                if arr.ndim != len(shape) or any(
                        want is not None and got != want
                        for got, want in zip(arr.shape, shape, strict=True)):
                    expected = ", ".join("?" if n is None else str(n) for n in shape)
                    problem = f"holds an array of shape {arr.shape} where ({expected}) is expected"
                else:
                    return arr
        raise StoreCorruptionError(
            path, f"{path} {problem}: the {what} of {nrows} documents cannot be trusted. "
            f"{_RESTORE}."
        )

    def _segment_files(self) -> Iterator[tuple[int, Path]]:
        assert self._dir is not None
        for p in self._dir.glob("seg-*.npy*"):
            try:
                yield int(p.name.split(".")[0].split("-")[1]), p
            except (IndexError, ValueError):
                continue

    def _check_accounted(self) -> None:
        """Refuse a folder holding segment files that the metadata does not list."""
        if self._dir is None:
            return
        known = {s for (s,) in self.db.execute("SELECT seg FROM segments UNION "
                                               "SELECT seg FROM garbage")}
        unknown = sorted(p for seg, p in self._segment_files()
                         if seg not in known and not p.name.endswith(".tmp"))
        if unknown:
            raise StoreCorruptionError(
                unknown[0],
                f"{unknown[0]} ({len(unknown)} segment file(s) in all) is not listed in "
                f"{self._dir / 'meta.sqlite'}: the metadata was lost or rolled back (a missing "
                f"or damaged meta.sqlite-wal?), and opening would hide these vectors. "
                f"{_RESTORE}; if the listed files are leftovers you do not need, delete them."
            )

    def _collect_garbage(self) -> None:
        """Delete the files of segments listed as garbage (retired, or a crashed write)."""
        if self._dir is None:
            return
        garbage = {s for (s,) in self.db.execute("SELECT seg FROM garbage")}
        if not garbage:
            return
        for seg, p in self._segment_files():
            if seg in garbage or (p.name.endswith(".tmp") and seg not in self._segments):
                p.unlink(missing_ok=True)
        with self.db:
            self.db.executemany("DELETE FROM garbage WHERE seg = ?", [(g,) for g in garbage])

    def _allocate(self) -> int:
        """A new segment number, recorded as garbage until its commit makes it live."""
        last = self.db.execute(
            "SELECT MAX(seg) FROM (SELECT seg FROM segments UNION SELECT seg FROM garbage)"
        ).fetchone()[0]
        seg = max([int(last or 0), int(self._meta("last_seg") or 0), *self._segments]) + 1
        if self._dir is not None:
            with self.db:
                self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('last_seg', ?)",
                                (str(seg),))
                self.db.execute("INSERT OR IGNORE INTO garbage (seg) VALUES (?)", (seg,))
        return seg

    def _write_array(self, seg: int, kind: str, arr: np.ndarray
                     ) -> tuple[np.ndarray, int | None, int | None]:
        """Write, fsync and rename one segment file; its mmap, CRC-32 and size."""
        if self._dir is None:
            return arr, None, None
        final = self._seg_path(seg, kind)
        tmp = final.with_name(final.name + ".tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, arr)
            fh.flush()
            os.fsync(fh.fileno())
        crc, size = _crc32(tmp)
        os.replace(tmp, final)
        return np.load(final, mmap_mode="r"), crc, size

    def _bump_generation(self) -> None:
        self._generation = int(self._meta("generation") or 0) + 1
        self.db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('generation', ?)",
            (str(self._generation),),
        )

    def _fsync_dir(self) -> None:
        if self._dir is not None and hasattr(os, "O_DIRECTORY"):
            fd = os.open(self._dir, os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    # ------------------------------------------------------------------ contract
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

    def _follow_replacement(self) -> None:
        """The folder this store reads was replaced (``publish`` in another store object or
        process): open the collection that took its name. A stamp that differs from this
        store's raises :class:`StampMismatchError`, and the store is left closed."""
        collection, stamp = self._collection, self._stamp
        assert collection is not None and stamp is not None
        self._close_files()
        self._open_collection(collection, stamp, False)

    # ------------------------------------------------------------------ replacement
    def _open_replacement(self, collection: str, stamp: Stamp) -> None:
        """Build the replacement beside the old collection: ``DIR/<collection>.replacing/``
        (in RAM: its own key), swapped in by :meth:`_publish`."""
        self.close()
        key = collection + _REPLACING
        if self.root is None:
            if key in self._ram:
                self._ram.pop(key)[0].close()
            self._open_collection(key, stamp, True)
            return
        from filelock import FileLock, Timeout

        self.root.mkdir(parents=True, exist_ok=True)
        guard = FileLock(str(self.root / f"{key}.lock"))
        try:
            guard.acquire(timeout=0)
        except Timeout as err:
            raise StoreError(
                f"another process is replacing collection {collection!r} in {self.root} "
                "(index --recreate or recreate=True); try again when it finishes"
            ) from err
        try:
            # an abandoned replacement (a crash before its publish) was never acknowledged
            shutil.rmtree(self.root / key, ignore_errors=True)
            self._open_collection(key, stamp, True)
        except BaseException:
            guard.release()
            raise
        self._guard = guard

    def _publish(self) -> None:
        """Swap the replacement in: the old folder is marked replaced (so that readers of it
        follow), renamed aside, the replacement renamed to the collection's name, and the
        old folder deleted. A crash at any step leaves either the old collection or the
        complete replacement, which the next open finishes swapping in (:func:`_finish_swap`).
        """
        with self._mutex:
            collection, stamp, key = self.collection, self.stamp, self._key
            assert key is not None
            if self.root is None:
                entry = self._ram.pop(key)
                previous = self._ram.pop(collection, None)
                if previous is not None:
                    previous[0].close()
                self._ram[collection] = entry
                self._key = collection
                return
            new = self.root / key
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._close_files()
            complete = new / _COMPLETE
            with open(complete, "wb") as fh:
                os.fsync(fh.fileno())
            _fsync_folder(new)
            live, old = self.root / collection, self.root / (collection + _REPLACED)
            if live.exists():
                shutil.rmtree(old, ignore_errors=True)
                _mark_replaced(live, self.lock_timeout)
                os.rename(live, old)
            try:
                os.rename(new, live)
            except FileNotFoundError:  # another opener finished the swap meanwhile
                if not live.exists():
                    raise
            _fsync_folder(self.root)
            (live / _COMPLETE).unlink(missing_ok=True)
            shutil.rmtree(old, ignore_errors=True)
            self._release_guard()
            self._replacing = False  # published: a failure from here on must not discard it
            self._open_collection(collection, stamp, False)

    def _discard_replacement(self) -> None:
        with self._mutex:
            key = self._key
            if self.root is None:
                if key is not None and key in self._ram:
                    self._ram.pop(key)[0].close()
                self._db = None
                self._close_files()
                return
            self._close_files()
            if key is not None and key.endswith(_REPLACING):
                shutil.rmtree(self.root / key, ignore_errors=True)
            self._release_guard()

    def _release_guard(self) -> None:
        if self._guard is not None:
            self._guard.release()
            self._guard = None

    def _adopt_legacy_orphans(self) -> None:
        """A folder written before the garbage table: files of non-live segments numbered
        below the newest live one were retired by merges; newer ones are a crashed write's.
        Both were deleted by the old rule; list them as garbage once."""
        live = {s for (s,) in self.db.execute("SELECT seg FROM segments")}
        if not live:
            return
        with self.db:
            self.db.executemany(
                "INSERT OR IGNORE INTO garbage (seg) VALUES (?)",
                [(seg,) for seg, _ in self._segment_files() if seg not in live],
            )

    def collections(self) -> list[str]:
        if self.root is None:
            return sorted(name for name, (db, _) in self._ram.items()
                          if db.execute("SELECT 1 FROM meta WHERE key = 'stamp'").fetchone())
        if not self.root.is_dir():
            return []
        for folder in list(self.root.glob(f"*{_REPLACING}")):
            if (folder / _COMPLETE).exists():  # a swap that a crash interrupted
                _finish_swap(self.root, folder.name.removesuffix(_REPLACING))
        found = []
        for folder in self.root.iterdir():
            if not COLLECTION_NAME.match(folder.name):  # a replacement, or not ours
                continue
            if (folder / "meta.sqlite").is_file() or any(folder.glob("seg-*.npy")):
                found.append(folder.name)  # a folder with data, even damaged, is listed
        return sorted(found)

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

    def _close_files(self) -> None:
        """Close the open collection's connection and forget its state (the data stays)."""
        with self._mutex:
            if self._db is not None and self.root is not None:
                self._db.close()
            self._db = None
            self._dir = None
            self._file_lock = None
            self._segments = {}
            self._generation = None
            self._vocab = {}
            self._lex_stats = None
            self._key = None

    def _new_segment(
        self, index: np.ndarray, full: np.ndarray | None,
        lex: _postings.Postings | None = None,
    ) -> _Segment:
        seg = self._allocate()
        index, icrc, isize = self._write_array(
            seg, "index", np.ascontiguousarray(index, dtype=np.float32))
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
        return segment

    def _insert_segment(self, segment: _Segment, nrows: int) -> None:
        """In a transaction: make ``segment`` live (it stops being garbage)."""
        self.db.execute(
            "INSERT INTO segments (seg, nrows, index_crc, index_size, full_crc, full_size, "
            "lex_sums) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (segment.seg, nrows, *segment.sums,
             None if segment.lex_sums is None else json.dumps(segment.lex_sums)))
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

    def _upsert(
        self, documents: list[Document], vectors: np.ndarray, full_vectors: np.ndarray | None
    ) -> None:
        self._write_segment(documents, vectors, full_vectors, None)

    def _write_segment(
        self, documents: list[Document], vectors: np.ndarray, full_vectors: np.ndarray | None,
        terms: list[dict[str, int]] | None,
    ) -> None:
        """One upsert: a new segment (vectors, and postings of ``terms`` when hybrid) made
        live by one transaction, then the size-tiered merge as housekeeping."""
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
                segment = self._new_segment(vectors, full_vectors, lex)
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

    def _upsert_lexical(
        self, documents: list[Document], vectors: np.ndarray, full_vectors: np.ndarray | None,
        terms: list[dict[str, int]],
    ) -> None:
        self._write_segment(documents, vectors, full_vectors, terms)

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

    def _get(self, ids: list[str]) -> list[Document]:
        with self._mutex:
            found = self._rows_of(ids)
        return [
            Document(text=found[i][2], id=i, metadata=json.loads(found[i][3]))
            for i in ids if i in found
        ]

    def _fetch_full(self, ids: list[str]) -> np.ndarray:
        with self._mutex:
            self._refresh()
            found = self._rows_of(ids)
            check_found(ids, found, self.collection)
            out = np.empty((len(ids), self.stamp.full_dim), dtype=np.float32)
            for j, doc_id in enumerate(ids):
                seg, row = found[doc_id][:2]
                out[j] = self._segments[seg].full[row]  # type: ignore[index]
            return out

    def _ids_where(self, conditions: list[Node]) -> list[str]:
        where, params = _conjunction_sql(conditions)
        with self._mutex:
            return [row[0] for row in self.db.execute(f"SELECT id FROM docs WHERE {where}", params)]

    def _candidate_rows(self, conditions: list[Node]) -> dict[int, np.ndarray] | None:
        """Rows allowed by a filter, per segment; ``None`` when there is no filter."""
        if not conditions:
            return None
        where, params = _conjunction_sql(conditions)
        sql = "SELECT seg, row FROM docs WHERE " + where
        per_seg: dict[int, list[int]] = defaultdict(list)
        for seg, row in self.db.execute(sql, params):
            per_seg[seg].append(row)
        return {seg: np.asarray(rows, dtype=np.int64) for seg, rows in per_seg.items()}

    def _top_keys(
        self, vectors: np.ndarray, k: int, allowed: dict[int, np.ndarray] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The best ``k`` scores per query and their (segment, row), in no order.

        Returns ``(scores (m, <=k), keys (m, <=k, 2))``; a score is ``-inf`` where a query has
        fewer than ``k`` live rows. The caller holds the mutex and has refreshed.
        """
        m = vectors.shape[0]
        best_scores = np.full((m, 0), -np.inf, dtype=np.float32)
        best_keys = np.zeros((m, 0, 2), dtype=np.int64)  # (segment, row)
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
                top_scores = np.take_along_axis(scores, top, axis=1)
                keys = np.stack(
                    [np.full_like(top, seg), local[top]], axis=-1
                )
                best_scores = np.concatenate([best_scores, top_scores], axis=1)
                best_keys = np.concatenate([best_keys, keys], axis=1)
                if best_scores.shape[1] > k:
                    sel = np.argpartition(-best_scores, k - 1, axis=1)[:, :k]
                    best_scores = np.take_along_axis(best_scores, sel, axis=1)
                    best_keys = np.take_along_axis(best_keys, sel[..., None], axis=1)
        return best_scores, best_keys

    def _hits_of(self, results: list[list[tuple[str, float]]]) -> list[list[Hit]]:
        """Hits with text and metadata for (id, score) pairs; holds the mutex."""
        wanted = list(dict.fromkeys(doc_id for pairs in results for doc_id, _ in pairs))
        found = self._rows_of(wanted)
        return [
            [
                Hit(id=doc_id, text=found[doc_id][2], score=score,
                    metadata=json.loads(found[doc_id][3]))
                for doc_id, score in pairs
                if doc_id in found  # deleted by another process since the scores were taken
            ]
            for pairs in results
        ]

    def _search(self, vectors: np.ndarray, k: int, conditions: Any) -> list[list[Hit]]:
        with self._mutex:
            self._refresh()
            best_scores, best_keys = self._top_keys(vectors, k, self._candidate_rows(conditions))
            results: list[list[tuple[str, float]]] = []
            for qi in range(vectors.shape[0]):
                pairs = [
                    (self._segments[int(seg)].ids[int(row)], float(score))
                    for score, (seg, row) in zip(best_scores[qi], best_keys[qi], strict=True)
                    if np.isfinite(score)
                ]
                pairs.sort(key=lambda p: ranking_key(p[1], p[0]))
                results.append(pairs[:k])
            return self._hits_of(results)

    def _search_two_stage(
        self, vectors: np.ndarray, full_vectors: np.ndarray, k: int, rerank_k: int,
        conditions: Any,
    ) -> list[list[Hit]]:
        """Two-stage search on the arrays themselves: the candidates' full vectors are gathered
        from the segments by (segment, row), and only the final hits are read from SQLite.

        Same results as the generic path (same candidates, same :func:`rescore_rows`), without
        building a hit per candidate. Queries go in blocks of ``candidate_block`` candidates.
        """
        results: list[list[tuple[str, float]]] = []
        with self._mutex:
            self._refresh()
            allowed = self._candidate_rows(conditions)
            step = self._queries_per_block(rerank_k)
            for start in range(0, vectors.shape[0], step):
                part = slice(start, start + step)
                scores, keys = self._top_keys(vectors[part], rerank_k, allowed)
                valid = np.isfinite(scores)
                distinct, inverse = np.unique(
                    (keys[..., 0] << 32 | keys[..., 1])[valid], return_inverse=True
                )
                candidates = np.full(scores.shape, -1, dtype=np.int64)
                candidates[valid] = inverse.ravel()
                segs, rows = distinct >> 32, distinct & 0xFFFFFFFF
                full = np.empty((len(distinct), self.stamp.full_dim), dtype=np.float32)
                ids = np.empty(len(distinct), dtype=object)
                for seg in np.unique(segs).tolist():
                    here = segs == seg
                    s = self._segments[seg]
                    full[here] = s.full[rows[here]]  # type: ignore[index]
                    ids[here] = s.ids[rows[here]]
                names = ids.tolist()
                top, top_scores = rescore_rows(candidates, full, full_vectors[part], k,
                                               id_ranks(names), first_scores=scores)
                for picked, got in zip(top.tolist(), top_scores.tolist(), strict=True):
                    results.append([(names[r], sc) for r, sc in zip(picked, got, strict=True)
                                    if r >= 0])
            return self._hits_of(results)

    def _stored_stamp(self, collection: str) -> Stamp | None:
        if self.root is None:
            if collection not in self._ram:
                return None
            row = self._ram[collection][0].execute(
                "SELECT value FROM meta WHERE key = 'stamp'").fetchone()
        else:
            path = self.root / collection / "meta.sqlite"
            if not path.exists():
                return None
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=self.lock_timeout)
            try:
                row = db.execute("SELECT value FROM meta WHERE key = 'stamp'").fetchone()
            except sqlite3.OperationalError:  # a folder without our schema
                row = None
            finally:
                db.close()
        return None if row is None else Stamp.from_dict(json.loads(row[0]))

    def _export(
        self, batch_size: int
    ) -> Iterator[tuple[list[Document], np.ndarray, np.ndarray | None]]:
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
            yield docs, index, full
            last = rows[-1][0]
    def _lexical_pairs(
        self, terms: list[list[str]], k: int, allowed: dict[int, np.ndarray] | None
    ) -> list[list[tuple[str, float, int, int]]]:
        """The best ``k`` (id, BM25 score, segment, row) per query, ranked; holds the mutex
        and has refreshed."""
        bm25 = lexical_config(self.stamp.lexical or "")[1]
        segs = [s for _, s in sorted(self._segments.items()) if s.lex is not None]
        if self._lex_stats is None or self._lex_stats[0] != self._generation:
            n_docs = total = 0
            for part in segs:
                assert part.lex is not None
                n_docs += int(part.alive.sum())
                total += int(np.asarray(part.lex.length)[part.alive].sum())
            self._lex_stats = (self._generation or 0, n_docs, total / max(n_docs, 1))
        _, n_docs, avg_len = self._lex_stats
        results: list[list[tuple[str, float, int, int]]] = []
        for query in terms:
            tids = [self._vocab[t] for t in query if t in self._vocab]
            if not tids:
                results.append([])
                continue
            parts = [
                (s.lex, s.alive, None if allowed is None else allowed.get(s.seg, _NO_ROWS))
                for s in segs
            ]
            scored = _postings.score(parts, tids, bm25, n_docs, avg_len)  # type: ignore[arg-type]
            pairs: list[tuple[str, float, int, int]] = []
            for s, (rows, scores) in zip(segs, scored, strict=True):
                if len(rows) > k:  # keep the top k and everything tied with the k-th
                    kth = np.partition(scores, len(scores) - k)[len(scores) - k]
                    sel = scores >= kth
                    rows, scores = rows[sel], scores[sel]
                pairs.extend(zip(s.ids[rows], scores.tolist(), [s.seg] * len(rows),
                                 rows.tolist(), strict=True))
            pairs.sort(key=lambda p: ranking_key(p[1], p[0]))
            results.append(pairs[:k])
        return results

    def _lexical_search(
        self, terms: list[list[str]], k: int, conditions: Any
    ) -> list[list[Hit]]:
        with self._mutex:
            self._refresh()
            pairs = self._lexical_pairs(terms, k, self._candidate_rows(conditions))
            return self._hits_of([[(p[0], float(p[1])) for p in row] for row in pairs])

    def _hybrid_search(self, query: HybridQuery) -> list[list[Hit]]:
        """The funnel on the arrays themselves, as :meth:`_search_two_stage` runs two-stage
        search: both sides' candidates as (segment, row), the union's full vectors gathered
        from the segments and rescored by :func:`rescore`, the fusion, and only the final
        hits read from SQLite. Same results as the generic funnel, without building a hit
        (a SQLite read and a JSON parse) per candidate."""
        d = query.dense
        if d.full is None:
            return super()._hybrid_search(query)
        results: list[list[tuple[str, float]]] = []
        with self._mutex:
            self._refresh()
            allowed = self._candidate_rows(d.conditions)
            scores, keys = self._top_keys(d.vectors, d.k, allowed)
            lexical = self._lexical_pairs(query.terms, d.k, allowed)
            for qi, lex in enumerate(lexical):
                union: dict[str, tuple[int, int]] = {p[0]: (p[2], p[3]) for p in lex}
                for score, (seg, row) in zip(scores[qi], keys[qi], strict=True):
                    if np.isfinite(score):
                        union.setdefault(self._segments[int(seg)].ids[int(row)],
                                         (int(seg), int(row)))
                ids = list(union)
                full = np.empty((len(ids), self.stamp.full_dim), dtype=np.float32)
                for j, (seg, row) in enumerate(union.values()):
                    full[j] = self._segments[seg].full[row]  # type: ignore[index]
                dense = rescore([Hit(id=i, text="", score=0.0) for i in ids], full,
                                d.full[qi], len(ids))
                fused = query.fusion.fuse(
                    dense, [Hit(id=p[0], text="", score=float(p[1])) for p in lex], query.k)
                results.append([(h.id, h.score) for h in fused])
            return self._hits_of(results)

    def __repr__(self) -> str:
        where = "memory" if self.root is None else str(self.root)
        return f"MemoryStore({where}, collection={self._collection!r})"


def _check_metadata_present(folder: Path) -> None:
    """Refuse a collection folder whose metadata is gone while its data is still there."""
    if not folder.is_dir():
        return
    db = folder / "meta.sqlite"
    wal = folder / "meta.sqlite-wal"
    if db.exists() and db.stat().st_size > 0:
        return
    segments = sorted(folder.glob("seg-*.npy"))
    if segments:
        held = f"{len(segments)} segment file(s) such as {segments[0].name}"
    elif wal.exists() and wal.stat().st_size > 0:
        held = f"its write-ahead log {wal.name} ({wal.stat().st_size} bytes)"
    else:
        return
    state = "empty" if db.exists() else "missing"
    raise StoreCorruptionError(
        db, f"{db} is {state}, but the folder holds {held}: the metadata listing the documents "
        f"is lost, and opening would discard them. {_RESTORE}."
    )


def _fsync_folder(folder: Path) -> None:
    if hasattr(os, "O_DIRECTORY"):
        fd = os.open(folder, os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _mark_replaced(live: Path, lock_timeout: float) -> None:
    """Record in a collection folder about to be swapped out that it was replaced (and bump
    its generation), under its write lock, so that its readers reopen the new one."""
    from filelock import FileLock

    lock = FileLock(str(live / ".lock"))
    lock.acquire(timeout=lock_timeout)
    try:
        if not (live / "meta.sqlite").is_file():
            return
        db = sqlite3.connect(str(live / "meta.sqlite"), timeout=lock_timeout)
        try:
            with db:
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('replaced', '1')")
                db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 "
                           "WHERE key = 'generation'")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as err:  # a damaged collection is replaced all the same
            logger.warning("MemoryStore: could not mark %s as replaced: %s", live, err)
        finally:
            db.close()
    finally:
        lock.release()


def _finish_swap(root: Path, collection: str) -> None:
    """Finish a swap that a crash interrupted: a complete replacement with no collection
    beside it takes the collection's name; an old folder left aside is deleted."""
    live = root / collection
    new, old = root / (collection + _REPLACING), root / (collection + _REPLACED)
    if not live.exists() and (new / _COMPLETE).exists():
        try:
            os.rename(new, live)
        except FileNotFoundError:  # finished by another process meanwhile
            pass
        else:
            _fsync_folder(root)
            (live / _COMPLETE).unlink(missing_ok=True)
    if live.exists() and old.exists():
        shutil.rmtree(old, ignore_errors=True)


def _chunks(items: list[str], size: int = _SQL_CHUNK) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
