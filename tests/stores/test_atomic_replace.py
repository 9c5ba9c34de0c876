"""Replacing a collection (``open_replacement`` + ``publish``; ``recreate=True``) is atomic on
MemoryStore: the old collection stays whole until the replacement is complete, whatever fails
or dies in between. Store-only tests on random unit vectors.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from bertino_rag.stores import MemoryStore, StoreError
from bertino_rag.stores.memory import folder as memory_module
from bertino_rag.types import Document, Stamp, StampMismatchError

OLD = Stamp(model="test-model", full_dim=32, index_dim=8)
NEW = Stamp(model="test-model", full_dim=32, index_dim=16)


def _vectors(n: int, stamp: Stamp, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    full = rng.normal(size=(n, stamp.full_dim)).astype(np.float32)
    full /= np.linalg.norm(full, axis=1, keepdims=True)
    index = full[:, : stamp.index_dim] / np.linalg.norm(full[:, : stamp.index_dim], axis=1,
                                                        keepdims=True)
    return index, full


def _write(store: MemoryStore, prefix: str, n: int, stamp: Stamp, seed: int = 0) -> None:
    index, full = _vectors(n, stamp, seed)
    store.upsert([Document(text=f"{prefix} {i}", id=f"{prefix}{i}") for i in range(n)],
                 index, full)


@pytest.fixture
def root(tmp_path) -> Path:
    store = MemoryStore(path=tmp_path)
    store.open("c", OLD)
    _write(store, "old", 40, OLD)
    store.close()
    return tmp_path


def _reader(root: Path, stamp: Stamp = OLD) -> MemoryStore:
    store = MemoryStore(path=root)
    store.open("c", stamp, create=False)
    return store


def test_the_old_collection_is_whole_until_publish(root):
    reader = _reader(root)
    new = MemoryStore(path=root)
    new.open_replacement("c", NEW)
    assert new.replacing and new.count() == 0 and new.stamp == NEW
    _write(new, "new", 25, NEW)
    assert new.count() == 25
    assert reader.count() == 40 and _reader(root).count() == 40  # others see the old one
    assert MemoryStore(path=root).collections() == ["c"]  # the replacement is not listed
    new.publish()
    assert not new.replacing and new.count() == 25
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["c"]
    assert _reader(root, NEW).count() == 25
    with pytest.raises(StampMismatchError, match="index_dim"):  # a reader of the old follows
        reader.search(np.ones(8, np.float32) / np.sqrt(8), k=1)


def test_a_reader_with_the_same_stamp_follows_the_replacement(root):
    reader = _reader(root)
    new = MemoryStore(path=root)
    new.open_replacement("c", OLD)
    _write(new, "new", 10, OLD, seed=3)
    assert reader.count() == 40
    new.publish()
    hits = reader.search(_vectors(10, OLD, 3)[0][4], k=1)
    assert hits[0].id == "new4" and reader.count() == 10
    _write(reader, "more", 5, OLD, seed=4)  # the reader writes into the new collection
    assert new.count() == 15


@pytest.mark.parametrize("failure", ["exception", "close"])
def test_a_replacement_that_fails_or_is_closed_leaves_the_old_collection(root, failure,
                                                                          monkeypatch):
    new = MemoryStore(path=root)
    new.open_replacement("c", NEW)
    _write(new, "new", 10, NEW)
    if failure == "exception":
        def full_disk(*args, **kwargs):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(memory_module.np, "save", full_disk)
        with pytest.raises(StoreError, match="disk full"):
            _write(new, "more", 10, NEW, seed=1)
        monkeypatch.undo()
    new.close()
    assert not (root / "c.replacing").exists()
    reader = _reader(root)
    assert reader.count() == 40 and reader.get(["old7"])[0].text == "old 7"


def test_a_replacement_killed_mid_build_leaves_the_old_collection(root):
    script = textwrap.dedent(f"""
        import os, sys
        import numpy as np
        sys.path.insert(0, {str(Path(memory_module.__file__).parents[3])!r})
        from bertino_rag.stores import MemoryStore
        from bertino_rag.types import Document, Stamp
        stamp = Stamp(model="test-model", full_dim=32, index_dim=16)
        store = MemoryStore(path={str(root)!r})
        store.open_replacement("c", stamp)
        v = np.eye(32, dtype=np.float32)[:20]
        store.upsert([Document(text=f"n {{i}}", id=f"n{{i}}") for i in range(20)],
                     v[:, :16] + 1e-3, v)
        os._exit(0)  # killed before publish
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    assert (root / "c.replacing" / "meta.sqlite").exists()  # the unfinished replacement
    assert _reader(root).count() == 40
    again = MemoryStore(path=root)
    again.open_replacement("c", NEW)  # starts from empty: the abandoned one is not kept
    assert again.count() == 0
    again.publish()
    assert _reader(root, NEW).count() == 0


def test_a_crash_in_the_swap_is_finished_by_the_next_open(root, monkeypatch):
    new = MemoryStore(path=root)
    new.open_replacement("c", NEW)
    _write(new, "new", 12, NEW)
    real_rename = os.rename
    calls = {"n": 0}

    def crash(src, dst):
        calls["n"] += 1
        if calls["n"] == 2:  # the old folder is aside, the replacement not yet in place
            raise KeyboardInterrupt("killed in the swap")
        return real_rename(src, dst)

    monkeypatch.setattr(memory_module.os, "rename", crash)
    with pytest.raises(KeyboardInterrupt):
        new.publish()
    monkeypatch.undo()
    assert not (root / "c").exists() and (root / "c.replaced").exists()
    reader = _reader(root, NEW)  # the complete replacement takes the name
    assert reader.count() == 12
    assert not (root / "c.replaced").exists() and not (root / "c.replacing").exists()


def test_an_incomplete_replacement_is_never_swapped_in(tmp_path):
    new = MemoryStore(path=tmp_path)
    new.open_replacement("c", NEW)  # no collection "c" yet
    _write(new, "new", 5, NEW)
    assert MemoryStore(path=tmp_path).collections() == []  # not complete: not "c"
    new.publish()
    assert _reader(tmp_path, NEW).count() == 5


def test_two_replacements_at_once_are_refused(root):
    first = MemoryStore(path=root)
    first.open_replacement("c", NEW)
    second = MemoryStore(path=root)
    with pytest.raises(StoreError, match="another process is replacing collection 'c'"):
        second.open_replacement("c", NEW)
    first.close()
    second.open_replacement("c", NEW)
    second.close()


def test_a_damaged_collection_can_be_replaced(root):
    (root / "c" / "meta.sqlite").unlink()
    with pytest.raises(StoreError, match="meta.sqlite is missing"):
        _reader(root)
    new = MemoryStore(path=root)
    new.open_replacement("c", NEW)
    _write(new, "new", 3, NEW)
    new.publish()
    assert _reader(root, NEW).count() == 3
    assert not list((root / "c").glob("seg-000003*"))  # nothing of the old folder is left


def test_recreate_keeps_its_meaning_for_the_store_itself(root):
    store = MemoryStore(path=root)
    store.open("c", NEW, recreate=True)  # open(recreate=True) drops at once, as documented
    assert store.count() == 0 and not store.replacing
    assert _reader(root, NEW).count() == 0


def test_replacement_in_ram_is_swapped_on_publish_and_discarded_on_close():
    store = MemoryStore()
    store.open("c", OLD)
    _write(store, "old", 8, OLD)
    store.open_replacement("c", NEW)
    _write(store, "new", 3, NEW)
    store.close()
    store.open("c", OLD)
    assert store.count() == 8 and store.collections() == ["c"]
    store.open_replacement("c", NEW)
    _write(store, "new", 3, NEW)
    store.publish()
    assert store.count() == 3
    store.close()
    store.open("c", NEW)
    assert store.count() == 3 and store.collections() == ["c"]


def test_drop_of_a_replacement_drops_both(root):
    store = MemoryStore(path=root)
    store.open_replacement("c", NEW)
    _write(store, "new", 3, NEW)
    store.drop()
    assert [p.name for p in root.iterdir() if p.is_dir()] == ["c"]
    again = MemoryStore(path=root)
    again.open("c", OLD)  # no stamp is left to check against: everything went
    assert again.count() == 0 and not list((root / "c").glob("seg-*"))
