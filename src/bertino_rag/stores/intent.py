"""The intent record of chunked edits, and its repair at open.

Re-indexing an edited, chunked document writes its new chunks (new ids: a chunk's id covers
its text), then deletes its old ("stale") ones. A kill between the two leaves both versions
searchable. Before the first write of a window that edits documents, the indexer records
them with the collection (``StoreProtocol._write_intent``)::

    {"owner": {"host": ..., "pid": ...},
     "docs": {doc_id: {"new": [every new chunk id], "stale": [its stored ids to delete]}}}

and clears the record when its call ends. :meth:`VectorStore.open` repairs what a killed
call left (:func:`repair`): a document whose new ids are all stored keeps its new version
(its stale ids are deleted: roll forward); one whose new version is not whole keeps its old
one (its new ids are deleted: roll back). The old version is whole in that case, because
stale ids are deleted only once every new id of the document is written. Either way every
document ends with exactly one whole version.

A record left by a process that is still running on this host is left alone (that call is
not over; it clears its own record), and so is one of this process while one of its indexing
calls on the collection is in flight (:func:`editing`). A record of another host is
repaired: one indexing process per collection at a time, as for every write of a chunked edit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .protocol import StoreProtocol

__all__ = ["decide", "editing", "owner", "record", "repair"]

logger = logging.getLogger(__name__)

#: indexing calls of this process in flight, by (store location, collection)
_EDITING: Counter[tuple[str, str]] = Counter()
_EDITING_LOCK = threading.Lock()


def _key(store: StoreProtocol) -> tuple[str, str]:
    return (str(getattr(store, "location", "")), str(getattr(store, "collection", "")))


@contextlib.contextmanager
def editing(store: StoreProtocol) -> Iterator[None]:
    """Mark an indexing call of this process on the store's open collection as in flight:
    no repair of this process touches the record meanwhile."""
    key = _key(store)
    with _EDITING_LOCK:
        _EDITING[key] += 1
    try:
        yield
    finally:
        with _EDITING_LOCK:
            _EDITING[key] -= 1
            if not _EDITING[key]:
                del _EDITING[key]


def owner() -> dict[str, Any]:
    """Who writes a record: this host and process."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def record(docs: Mapping[str, tuple[list[str], list[str]]]) -> dict[str, Any]:
    """The record of documents in flight, ``doc_id -> (new ids, stale ids)``."""
    return {"owner": owner(),
            "docs": {d: {"new": list(new), "stale": list(stale)}
                     for d, (new, stale) in docs.items()}}


def _running_elsewhere(found: Mapping[str, Any]) -> bool:
    """Whether the record's writer is another process still running on this host."""
    who = found.get("owner") or {}
    pid = who.get("pid")
    if who.get("host") != socket.gethostname() or not isinstance(pid, int) or \
            pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def decide(docs: Mapping[str, Mapping[str, list[str]]], stored: set[str]
           ) -> tuple[list[str], list[str], list[str]]:
    """What to delete for each recorded document, given the ids stored now: its stale ids
    where every new id is stored (roll forward), else its new ids that are stored (roll
    back). Returns the ids to delete and the documents rolled forward and back (those with
    something to delete: a document already whole is neither)."""
    delete: list[str] = []
    forward: list[str] = []
    back: list[str] = []
    for doc_id, entry in docs.items():
        new, stale = list(entry.get("new", [])), list(entry.get("stale", []))
        if all(i in stored for i in new):
            gone = [i for i in stale if i in stored]
            forward += [doc_id] if gone else []
        else:
            gone = [i for i in new if i in stored]
            back += [doc_id] if gone else []
        delete += gone
    return list(dict.fromkeys(delete)), forward, back


def repair(store: StoreProtocol) -> list[str]:
    """Repair the edits a killed call left in the open collection (see the module docstring)
    and clear the record; the documents repaired (``[]`` when there was nothing to do)."""
    found = store._read_intent()
    if not found:
        return []
    if _running_elsewhere(found) or _EDITING.get(_key(store)):
        logger.info("an indexing call of process %s is editing chunked documents of %r: "
                    "its record is left to it", (found.get("owner") or {}).get("pid"),
                    getattr(store, "collection", "?"))
        return []
    docs: Mapping[str, Mapping[str, list[str]]] = found.get("docs") or {}
    ids = list(dict.fromkeys(i for e in docs.values()
                             for i in [*e.get("new", []), *e.get("stale", [])]))
    stored: set[str] = set()
    if ids:
        fetched = store._fetch(ids, documents=True)  # every store reads documents by id
        stored = {i for i, ok in zip(ids, fetched.found, strict=True) if ok}
    delete, forward, back = decide(docs, stored)
    if delete:
        store._delete(delete)
    store._write_intent(None)
    if delete:
        logger.warning(
            "repaired %d chunked document(s) that an interrupted indexing call left with two "
            "versions in %r: kept the new version of %s; kept the old version of %s (index "
            "them again)", len(forward) + len(back), getattr(store, "collection", "?"),
            ", ".join(map(repr, forward)) or "none", ", ".join(map(repr, back)) or "none")
    return forward + back
