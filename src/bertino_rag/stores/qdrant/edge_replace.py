"""QdrantEdgeStore's atomic replacement (``index --recreate``): the new collection is built in
``ROOT/<collection>.replacing/`` beside the live one, which stays whole until ``publish``;
``publish`` marks the replacement complete, renames the live folder aside, renames the
replacement into place and deletes the old folder. A crash at any step leaves either the old
collection or the complete replacement, which the next open or listing finishes swapping in
(as MemoryStore does). A mixin of :class:`~.edge.QdrantEdgeStore`."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...types import Stamp
from ...validation import COLLECTION_NAME
from ..locations import create_new, fsync_folder
from .edge_shard import REGISTRY, Shard

__all__ = ["REPLACING", "finish_swap"]

#: a replacement being built, and the old folder during the swap: neither is a valid
#: collection name, so no collection can collide with them
REPLACING = ".replacing"
REPLACED = ".replaced"
#: written into a replacement once it is complete: only a complete one is swapped in
COMPLETE = "complete"


def finish_swap(root: Path, collection: str) -> None:
    """Finish a swap of ``collection`` that a crash interrupted: a complete replacement takes
    the name; an old folder left aside beside the live one is deleted."""
    new, live, old = (root / (collection + REPLACING), root / collection,
                      root / (collection + REPLACED))
    if (new / COMPLETE).exists():
        if live.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.rename(live, old)
        os.rename(new, live)
        fsync_folder(root)
        (live / COMPLETE).unlink(missing_ok=True)
    if old.exists() and live.exists():
        shutil.rmtree(old, ignore_errors=True)


class _EdgeReplacement:
    """Replacement and publishing of a Qdrant Edge collection (see the module docstring)."""

    root: Path
    _handle: Shard | None
    _replacing: bool

    if TYPE_CHECKING:  # provided by QdrantEdgeStore and VectorStore
        def _open(self, collection: str, stamp: Stamp, recreate: bool) -> None: ...

        def _release(self) -> None: ...

        @property
        def collection(self) -> str: ...

        @property
        def stamp(self) -> Stamp: ...

    def _folder(self, collection: str) -> Path:
        """The folder of ``collection`` (or of its replacement), never outside the root."""
        if collection in (".", "..") or "/" in collection or "\\" in collection:
            raise ValueError(
                f"QdrantEdgeStore: collection name {collection!r} must not contain path "
                "separators"
            )
        if (self.root / collection).resolve().parent != self.root:  # a link out of the root
            raise ValueError(f"collection {collection!r} would leave the folder {self.root}")
        if not collection.endswith(REPLACING):
            finish_swap(self.root, collection)
        return self.root / collection

    def _collection_folders(self) -> list[Path]:
        """The folders under the root named as collections (not replacements)."""
        for folder in list(self.root.glob(f"*{REPLACING}")):
            if (folder / COMPLETE).exists():  # a swap that a crash interrupted
                finish_swap(self.root, folder.name.removesuffix(REPLACING))
        return [f for f in self.root.iterdir() if COLLECTION_NAME.match(f.name)]

    def _open_replacement(self, collection: str, stamp: Stamp) -> None:
        """Build the replacement in ``ROOT/<collection>.replacing/`` (an abandoned one, never
        acknowledged, starts again from empty)."""
        self._folder(collection)
        self._open(collection + REPLACING, stamp, True)

    def _publish(self) -> None:
        collection, stamp = self.collection, self.stamp
        new, live = self.root / (collection + REPLACING), self.root / collection
        self._release()  # closes the replacement's shard and records its checksums
        with create_new(new / COMPLETE) as fh:
            os.fsync(fh.fileno())
        fsync_folder(new)
        self._replacing = False  # complete: a failure from here on must not discard it
        handle: Any = REGISTRY.acquire(live)
        try:
            with handle.lock:  # other stores of this process on the old one reopen it
                handle.close(seal=False)
                finish_swap(self.root, collection)
        finally:
            REGISTRY.release(handle)
        self._open(collection, stamp, False)

    def _discard_replacement(self) -> None:
        self._release()
        folder = self.root / (self.collection + REPLACING)
        if not (folder / COMPLETE).exists():
            shutil.rmtree(folder, ignore_errors=True)

