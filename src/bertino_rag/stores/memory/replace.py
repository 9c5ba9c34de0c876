"""MemoryStore's atomic replacement: a new collection built beside the live one and swapped in
at ``publish`` (``DIR/<collection>.replacing/``); a crash at any step leaves either the old
collection or the complete replacement, which the next open finishes swapping in. A mixin of
:class:`~.store.MemoryStore`."""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING, Any

from ...errors import StoreError
from ...types import Stamp
from ...validation import COLLECTION_NAME
from ..locations import create_new, fsync_folder
from .files import (
    _COMPLETE,
    _REPLACED,
    _REPLACING,
    _finish_swap,
    _inside,
    _mark_replaced,
)
from .folder import _Folder


class _Replacement(_Folder):
    """Replacement and publishing of a MemoryStore collection."""

    _guard: Any
    _replacing: bool
    _collection: str | None
    _stamp: Stamp | None

    if TYPE_CHECKING:  # provided by MemoryStore and VectorStore
        def _open_collection(self, collection: str, stamp: Stamp, recreate: bool) -> None: ...

        def close(self) -> None: ...

        @property
        def collection(self) -> str: ...

        @property
        def stamp(self) -> Stamp: ...

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

        _inside(self.root, collection)  # a link out of the folder is refused before any lock
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
            if (self.root / key).is_symlink():
                (self.root / key).unlink()
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
            with create_new(complete) as fh:
                os.fsync(fh.fileno())
            fsync_folder(new)
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
            fsync_folder(self.root)
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


    def _collections(self) -> list[str]:
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

