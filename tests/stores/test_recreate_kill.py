"""A process killed while ``publish`` swaps a replacement in (``index --recreate``,
``open_replacement`` + ``publish``) loses nothing acknowledged: the next open or listing finishes
the swap, and the next recreate never drops a complete replacement (Milvus Lite; MemoryStore's
own swap is tested in ``test_atomic_replace.py``). Each kill lands deterministically: the child
process patches the store's checkpoint to SIGKILL its whole process group (Milvus Lite's server
included) at the window."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pymilvus", reason="pymilvus is not installed")
pytest.importorskip("milvus_lite", reason="milvus-lite is not installed")

import bertino_rag  # noqa: E402
from bertino_rag.stores.milvus import MilvusStore  # noqa: E402
from bertino_rag.types import Document, Stamp  # noqa: E402

STAMP = Stamp(model="test-model", full_dim=16, index_dim=8)
SRC = str(Path(bertino_rag.__file__).parents[1])


def _write(store: MilvusStore, prefix: str, n: int) -> None:
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
