"""MemoryStore's durability: the folder's lock, generations, acknowledged writes, segment
files loaded and checked, garbage collected. A mixin of :class:`~.store.MemoryStore`, whose
state it shares (declared here for the type checker)."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import StoreCorruptionError, StoreError
from ...lexical import postings as _postings
from ...types import Stamp
from ..locations import create_new
from .binary import code_words
from .files import (
    _ACKED,
    _REPLACING,
    _RESTORE,
    _check_metadata_present,
    _crc32,
    _finish_swap,
    _inside,
    _MetaGuard,
    _Segment,
)
from .sql import _SCHEMA

logger = logging.getLogger("bertino_rag.stores.memory")


class _Folder:
    """The durable side of a MemoryStore collection (see the package docstring)."""

    root: Path | None
    lock_timeout: float
    verify_checksums: bool
    first_stage: str
    _db: sqlite3.Connection | None
    _dir: Path | None
    _segments: dict[int, _Segment]
    _generation: int | None
    _mutex: _MetaGuard
    _file_lock: Any
    _ram: dict[str, tuple[sqlite3.Connection, dict[int, _Segment]]]
    _vocab: dict[str, int]
    _lex_stats: tuple[int, int, float] | None
    _key: str | None
    _frozen: int

    if TYPE_CHECKING:  # provided by the replacement mixin
        def _follow_replacement(self) -> None: ...

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

            folder = _inside(self.root, collection)
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
                                 ("lex_sums", "TEXT"), ("sign_crc", "INTEGER"),
                                 ("sign_size", "INTEGER")):
                if column not in columns:  # written before checksums: NULL, not verified
                    db.execute(f"ALTER TABLE segments ADD COLUMN {column} {kind}")
            db.commit()
        except (sqlite3.DatabaseError, UnicodeDecodeError) as err:
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
        if path.is_symlink():  # planted: never written through, replaced by a file
            path.unlink()
        created = not path.exists()
        try:
            # never through a link planted at its name: rewritten in place, not renamed
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
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
            "SELECT seg, nrows, index_crc, index_size, full_crc, full_size, lex_sums, "
            "sign_crc, sign_size FROM segments")}
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
        seg, nrows, index_crc, index_size, full_crc, full_size, lex_sums, sign_crc, sign_size = row
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
        segment = _Segment(seg, index, full, lex)
        if sign_size is not None and self.first_stage == "binary":  # read by that stage only
            segment.codes = self._load_array(seg, "sign", nrows, sign_crc, sign_size,
                                             (code_words(int(index.shape[1])), nrows))
        return segment

    def _load_array(self, seg: int, kind: str, nrows: int, crc: int | None, size: int | None,
                    shape: tuple[int | None, ...]) -> np.ndarray:
        """Memory-map one segment file after checking its size, checksum and shape
        (``None`` in ``shape``: any length)."""
        path = self._seg_path(seg, kind)
        what = {"index": "index vectors", "full": "full vectors (for rescoring)",
                "sign": "sign codes (for the binary first stage)"}.get(
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
        with create_new(tmp) as fh:
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

