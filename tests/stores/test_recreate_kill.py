"""A process killed while ``publish`` swaps a replacement in (``index --recreate``,
``open_replacement`` + ``publish``) loses nothing acknowledged: the next open or listing finishes
the swap, and the next recreate never drops a complete replacement (Milvus Lite, Qdrant Edge;
MemoryStore's own swap is tested in ``test_atomic_replace.py``). Each kill lands
deterministically: the child process patches the store's checkpoint to SIGKILL itself (with
Milvus Lite, its whole process group, the Lite server included) at the window."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bertino_rag
from bertino_rag.types import Document, Stamp

HAS_MILVUS = all(importlib.util.find_spec(m) for m in ("pymilvus", "milvus_lite"))
if HAS_MILVUS:
    from bertino_rag.stores.milvus import MilvusStore
needs_milvus = pytest.mark.skipif(not HAS_MILVUS, reason="pymilvus / milvus-lite not installed")
needs_edge = pytest.mark.skipif(importlib.util.find_spec("qdrant_edge") is None,
                                reason="qdrant-edge-py is not installed")

STAMP = Stamp(model="test-model", full_dim=16, index_dim=8)
SRC = str(Path(bertino_rag.__file__).parents[1])


def _write(store: Any, prefix: str, n: int) -> None:
    rng = np.random.default_rng(len(prefix) + n)
    full = rng.normal(size=(n, 16)).astype(np.float32)
    full /= np.linalg.norm(full, axis=1, keepdims=True)
    index = full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True)
    store.upsert([Document(text=f"{prefix} {i}", id=f"{prefix}{i}") for i in range(n)],
                 index, full)


def _killed_publish(uri: str, window: str) -> None:
    """In a child process: build a replacement of 7 documents and publish it, killed at
    ``window``: ``drop`` (the old collection dropped, the replacement not yet renamed) or
    ``marked`` (the replacement renamed complete, the old collection not yet dropped)."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {SRC!r})
        from bertino_rag.stores.milvus import MilvusStore
        from tests.stores.test_recreate_kill import STAMP, _write

        def die():
            os.killpg(os.getpgid(0), signal.SIGKILL)

        store = MilvusStore(uri={uri!r})
        store.open_replacement("c", STAMP)
        _write(store, "new", 7)
        if {window!r} == "drop":
            real = store._drop_collection
            def drop(name):
                real(name)
                if name == "c":
                    die()
            store._drop_collection = drop
        else:
            real = store._finish_swap
            store._finish_swap = lambda name: die()
        store.publish()
        sys.exit(3)  # not reached
    """)
    done = subprocess.run([sys.executable, "-c", script], timeout=300, start_new_session=True,
                          cwd=str(Path(__file__).parents[2]), capture_output=True, text=True)
    assert done.returncode == -9, done.stderr[-2000:]


@needs_milvus
@pytest.mark.parametrize("window", ["drop", "marked"])
def test_milvus_publish_killed_in_the_swap_loses_nothing(tmp_path, window):
    uri = str(tmp_path / "m.db")
    store = MilvusStore(uri=uri)
    store.open("c", STAMP)
    _write(store, "old", 10)
    store.close()
    _killed_publish(uri, window)
    store = MilvusStore(uri=uri)
    try:
        assert store.collections() == ["c"]  # the complete replacement takes the name
        store.open("c", STAMP, create=False)
        assert store.count() == 7 and store.get(["new3"])[0].text == "new 3"
        names = store.client.list_collections()
        assert names == ["c"], names
    finally:
        store.close()


@needs_milvus
def test_milvus_next_recreate_keeps_a_complete_replacement(tmp_path):
    uri = str(tmp_path / "m.db")
    store = MilvusStore(uri=uri)
    store.open("c", STAMP)
    _write(store, "old", 10)
    store.close()
    _killed_publish(uri, "drop")
    store = MilvusStore(uri=uri)
    try:
        store.open_replacement("c", STAMP)  # the next --recreate, killed before its publish
        _write(store, "third", 3)
        reader = MilvusStore(uri=uri)
        reader.open("c", STAMP, create=False)
        assert reader.count() == 7  # the acknowledged replacement, not dropped
        reader.close()
        store.publish()
        assert store.count() == 3
    finally:
        store.close()


# ---------------------------------------------------------------------- Qdrant Edge
def _edge_child(root: Path, body: str) -> None:
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {SRC!r})
        from bertino_rag.stores import QdrantEdgeStore
        from bertino_rag.stores.qdrant import edge_replace
        from tests.stores.test_recreate_kill import STAMP, _write
        store = QdrantEdgeStore(path={str(root)!r})
        store.open_replacement("c", STAMP)
        _write(store, "new", 7)
    """) + textwrap.dedent(body)
    done = subprocess.run([sys.executable, "-c", script], timeout=300, capture_output=True,
                          text=True, cwd=str(Path(__file__).parents[2]))
    assert done.returncode == -9, done.stderr[-2000:]


def _edge_with_old(root: Path) -> None:
    from bertino_rag.stores import QdrantEdgeStore

    store = QdrantEdgeStore(path=root)
    store.open("c", STAMP)
    _write(store, "old", 10)
    store.close()


def _edge_count(root: Path) -> int:
    from bertino_rag.stores import QdrantEdgeStore

    store = QdrantEdgeStore(path=root)
    store.open("c", STAMP, create=False)
    try:
        return store.count()
    finally:
        store.close()


@needs_edge
def test_edge_replacement_killed_before_publish_leaves_the_old_collection(tmp_path):
    _edge_with_old(tmp_path)
    _edge_child(tmp_path, "os.kill(os.getpid(), signal.SIGKILL)\n")
    assert (tmp_path / "c.replacing").is_dir()  # the unfinished replacement
    assert _edge_count(tmp_path) == 10
    from bertino_rag.stores import QdrantEdgeStore

    again = QdrantEdgeStore(path=tmp_path)
    assert again.collections() == ["c"]
    again.open_replacement("c", STAMP)  # starts from empty: the abandoned one is not kept
    assert again.count() == 0
    _write(again, "third", 3)
    again.publish()
    again.close()
    assert _edge_count(tmp_path) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


@needs_edge
def test_edge_publish_killed_in_the_swap_is_finished_by_the_next_open(tmp_path):
    _edge_with_old(tmp_path)
    _edge_child(tmp_path, """
        real = os.rename
        def rename(src, dst):
            real(src, dst)
            if str(dst).endswith("c.replaced"):  # the old folder aside, the new not in place
                os.kill(os.getpid(), signal.SIGKILL)
        edge_replace.os.rename = rename
        store.publish()
    """)
    assert not (tmp_path / "c").exists() and (tmp_path / "c.replaced").exists()
    assert _edge_count(tmp_path) == 7  # the complete replacement takes the name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


@needs_edge
def test_edge_drop_of_a_replacement_drops_both(tmp_path):
    from bertino_rag.stores import QdrantEdgeStore

    _edge_with_old(tmp_path)
    store = QdrantEdgeStore(path=tmp_path)
    store.open_replacement("c", STAMP)
    _write(store, "new", 2)
    store.drop()
    store.close()
    assert QdrantEdgeStore(path=tmp_path).collections() == []
