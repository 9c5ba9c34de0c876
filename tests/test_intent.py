"""The intent record of chunked edits (issue 28, item 9): the roll-forward and roll-back
decisions, the record an indexing call keeps (one write per window at most, cleared at the
end), and the repair at open after a call that stopped between writing a document's new
chunks and deleting its old ones, on the ReferenceStore with the packaged MiniLM. The same
after a real SIGKILL on every store: tests/test_chunked_edit_kill.py."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from typing import Any

import pytest

from bertino_rag import Retriever
from bertino_rag.errors import StoreWriteError
from bertino_rag.stores import ReferenceStore
from bertino_rag.stores.intent import decide, record

from .test_chunked_edit_kill import _versions, articles


def test_decide_rolls_forward_a_whole_new_version_and_back_a_partial_one():
    docs = {"whole": {"new": ["w#0-a", "w#1-b"], "stale": ["w#0-z", "w#1-y"]},
            "partial": {"new": ["p#0-a", "p#1-b"], "stale": ["p#0-z"]},
            "shrunk": {"new": [], "stale": ["s#2-x"]},  # only deletions: forward
            "done": {"new": ["d#0-a"], "stale": ["d#0-z"]},  # stale already deleted
            "untouched": {"new": ["u#0-a"], "stale": ["u#0-z"]}}  # nothing written yet
    stored = {"w#0-a", "w#1-b", "w#0-z", "w#1-y", "p#0-a", "p#0-z", "s#2-x", "d#0-a",
              "u#0-z"}
    delete, forward, back = decide(docs, stored)
    assert sorted(delete) == ["p#0-a", "s#2-x", "w#0-z", "w#1-y"]
    assert forward == ["whole", "shrunk"] and back == ["partial"]
    # what is left: exactly one version of each document
    left = stored - set(delete)
    assert left == {"w#0-a", "w#1-b", "p#0-z", "d#0-a", "u#0-z"}


def _retriever(minilm_path: str, space: str) -> Retriever:
    from bertino_rag.encoder import Encoder

    return Retriever(dim=128, encoder=Encoder(minilm_path, dim=128, device="cpu"),
                     store=ReferenceStore(space), chunking={"max_tokens": 40})


@pytest.fixture
def indexed(minilm_path) -> tuple[str, dict[str, int], dict[str, int]]:
    """A space holding version 1 of the articles; chunks per article of versions 1 and 2."""
    space = uuid.uuid4().hex
    r = _retriever(minilm_path, space)
    r.index(articles(1), batch_size=4, window=2)
    old = {a: c[1] for a, c in _versions(r.store).items()}
    other = _retriever(minilm_path, uuid.uuid4().hex)
    other.index(articles(2), batch_size=4, window=2)
    new = {a: c[2] for a, c in _versions(other.store).items()}
    return space, old, new


def test_a_call_records_each_window_once_and_clears_at_the_end(minilm_path, indexed):
    space, _, new = indexed
    r = _retriever(minilm_path, space)
    writes: list[Any] = []
    real = r.store._write_intent

    def spy(rec: Any) -> None:
        writes.append(rec)
        real(rec)

    r.store._write_intent = spy  # type: ignore[method-assign]
    r.index(articles(2), batch_size=4, window=2)
    assert writes[-1] is None and r.store._read_intent() is None  # cleared at the end
    records = writes[:-1]
    assert 1 <= len(records) <= 3  # six edited articles in windows of two: one per window
    assert set(records[0]["docs"]) == {"art0", "art1"}  # the first window's, before its writes
    assert records[0]["owner"] == {"host": socket.gethostname(), "pid": os.getpid()}
    for rec in records:
        for doc_id, entry in rec["docs"].items():
            assert len(entry["new"]) == new[doc_id] and entry["stale"]
    assert _versions(r.store) == {a: {2: n} for a, n in new.items()}


def _fail_at(r: Retriever, method: str, call: int) -> None:
    real, calls = getattr(r.store, method), [0]

    def failing(*args: Any) -> Any:
        calls[0] += 1
        if calls[0] == call:
            raise StoreWriteError("the store went away", failed_ids=[])
        return real(*args)

    setattr(r.store, method, failing)


def test_open_rolls_back_a_document_whose_new_version_is_partial(minilm_path, indexed, caplog):
    space, old, new = indexed
    r = _retriever(minilm_path, space)
    _fail_at(r, "write_checked", 5)  # art0, art1 written; art2, art3 in progress
    with pytest.raises(StoreWriteError):
        r.index(articles(2), batch_size=4, window=2)
    left = _versions(r.store)
    assert any(len(c) == 2 for c in left.values()), left  # two versions of some article
    assert r.store._read_intent() is not None  # the record outlives the failed call
    with caplog.at_level(logging.WARNING, logger="bertino_rag.stores.intent"):
        reopened = _retriever(minilm_path, space)
        versions = _versions(reopened.store)
    assert reopened.store._read_intent() is None
    for a, counts in versions.items():
        assert counts in ({2: new[a]}, {1: old[a]}), (a, counts)
    assert versions["art0"] == {2: new["art0"]} and versions["art5"] == {1: old["art5"]}
    back = [a for a in left if len(left[a]) == 2]
    assert all(versions[a] == {1: old[a]} for a in back)
    (line,) = [r.getMessage() for r in caplog.records if "repaired" in r.getMessage()]
    assert all(repr(a) in line for a in back)
    # the same call again finishes it
    reopened.index(articles(2), batch_size=4, window=2)
    assert _versions(reopened.store) == {a: {2: n} for a, n in new.items()}


def test_open_rolls_forward_a_document_whose_new_version_is_whole(minilm_path, indexed):
    space, old, new = indexed
    r = _retriever(minilm_path, space)
    _fail_at(r, "delete", 1)  # art0 and art1 written, their old chunks not yet deleted
    with pytest.raises(StoreWriteError):
        r.index(articles(2), batch_size=4, window=2)
    left = _versions(r.store)
    doubled = [a for a, c in left.items() if c.get(2) == new[a] and c.get(1)]
    assert doubled, left  # a whole new version beside the whole old one
    versions = _versions(_retriever(minilm_path, space).store)
    for a in doubled:
        assert versions[a] == {2: new[a]}, (a, versions[a])
    for a, counts in versions.items():
        assert counts in ({2: new[a]}, {1: old[a]}), (a, counts)


def test_the_next_call_in_the_same_process_repairs_first(minilm_path, indexed):
    space, old, new = indexed
    r = _retriever(minilm_path, space)
    _fail_at(r, "write_checked", 5)
    with pytest.raises(StoreWriteError):
        r.index(articles(2), batch_size=4, window=2)
    r.index(articles(3)[:1], batch_size=4, window=2)  # another call, one other article
    versions = _versions(r.store)
    for a, counts in versions.items():
        if a != "art0":
            assert counts in ({2: new[a]}, {1: old[a]}), (a, counts)


def test_a_record_of_a_running_process_is_left_to_it(minilm_path, indexed):
    space, old, _ = indexed
    r = _retriever(minilm_path, space)
    stored = sorted(r.store.ids_of_documents(["art0"]))
    pending = record({"art0": ([*stored[:2], "art0#9-new"], stored[2:])})  # would roll back
    pending["owner"]["pid"] = os.getppid()  # alive on this host: its call is not over
    r.store._write_intent(pending)
    again = _retriever(minilm_path, space)
    assert again.store._read_intent() == pending
    assert _versions(again.store)["art0"] == {1: old["art0"]}  # nothing deleted
    pending["owner"]["host"] = "another host"  # a record from elsewhere is repaired
    r.store._write_intent(pending)
    last = _retriever(minilm_path, space)
    assert last.store._read_intent() is None
    assert _versions(last.store)["art0"] == {1: old["art0"] - 2}  # its "new" ids deleted


def test_a_record_of_a_call_in_flight_in_this_process_is_left_to_it(minilm_path, indexed):
    space, old, _ = indexed
    r = _retriever(minilm_path, space)
    stored = sorted(r.store.ids_of_documents(["art0"]))
    pending = record({"art0": ([*stored[:2], "art0#9-new"], stored[2:])})  # would roll back
    r.store._write_intent(pending)
    with r.store.editing():  # an indexing call of this process is editing the collection
        again = _retriever(minilm_path, space)
        assert again.store._read_intent() == pending
    assert _versions(again.store)["art0"] == {1: old["art0"]}
    last = _retriever(minilm_path, space)  # the call is over: its record is repaired
    assert last.store._read_intent() is None
