"""MemoryStore's files: their names, checksums, and the folder-level steps of a swap.

See :mod:`bertino_rag.stores.memory` for the layout of a collection folder.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import sqlite3
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import numpy as np

from ...errors import StoreCorruptionError
from ...lexical import postings as _postings
from ..locations import fsync_folder

logger = logging.getLogger("bertino_rag.stores.memory")

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
#: what SQLite says of a ``meta.sqlite`` damaged while still a database (an error of its own
#: reading, never of a lock, a full disk or the caller)
_DAMAGE = ("malformed", "not a database", "no such table", "no such column", "could not decode")


def _damaged(err: BaseException) -> bool:
    """Whether ``err`` is what reading a damaged ``meta.sqlite`` raises: a page SQLite finds
    malformed, a schema or text that no longer decodes, a stored JSON that no longer parses."""
    if isinstance(err, (UnicodeDecodeError, json.JSONDecodeError)):
        return True
    if isinstance(err, sqlite3.OperationalError):
        return any(word in str(err).lower() for word in _DAMAGE)
    return type(err) in (sqlite3.DatabaseError, sqlite3.IntegrityError)


class _MetaGuard:
    """The store's reentrant mutex, which also names damage to the open folder's
    ``meta.sqlite``: an error that only a damaged database raises (:func:`_damaged`), from any
    read or write made under the mutex, leaves it as :class:`StoreCorruptionError` naming the
    file (one place, rather than a ``try`` around each of the store's queries)."""

    def __init__(self, folder: Callable[[], Path | None]) -> None:
        self._lock = threading.RLock()
        self._folder = folder

    def __enter__(self) -> _MetaGuard:
        self._lock.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._lock.release()
        folder = self._folder()
        if err is None or folder is None or not _damaged(err):
            return
        path = folder / "meta.sqlite"
        raise StoreCorruptionError(
            path, f"{path} cannot be read ({type(err).__name__}: {err}): the metadata of the "
            f"collection is damaged. {_RESTORE}."
        ) from err


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
    __slots__ = ("seg", "index", "full", "alive", "ids", "lex", "sums", "lex_sums", "codes",
                 "code_sums")

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
        #: sign codes of the index vectors (binary first stage, :mod:`.binary`), when known
        self.codes: np.ndarray | None = None
        self.code_sums: tuple[int | None, int | None] = (None, None)


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


def _inside(root: Path, name: str) -> Path:
    """``root / name``, refused when it leads out of ``root`` (a symbolic link to a folder
    elsewhere): no open, replacement or lock file of a store is ever made outside its folder.

    Raises:
        ValueError: naming the collection and the folder.
    """
    folder = root / name
    if folder.resolve().parent != root.resolve():
        raise ValueError(f"collection {name.removesuffix(_REPLACING)!r} would leave the folder "
                         f"{root} ({folder} is a link to {folder.resolve()}): move the "
                         "collection into the folder, or open the folder it is in")
    return folder


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
            fsync_folder(root)
            (live / _COMPLETE).unlink(missing_ok=True)
    if live.exists() and old.exists():
        shutil.rmtree(old, ignore_errors=True)

