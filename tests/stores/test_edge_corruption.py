"""Qdrant Edge folders damaged file by file: the checksums recorded at close are verified at
the next open, before the engine reads (or deletes) anything. A segment's ``version.info``
deleted, ``mutable_id_tracker.mappings`` damaged, a byte flipped in a vector chunk, a vector
chunk deleted, a file added: each raises ``StoreCorruptionError`` naming the file, and no file
is changed. A folder whose process died is opened without the check (docs/reliability.md).
Random unit vectors (store-only tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("qdrant_edge", reason="qdrant-edge-py is not installed")

from bertino_rag.stores import QdrantEdgeStore, StoreCorruptionError  # noqa: E402
from bertino_rag.types import Document, Stamp  # noqa: E402

STAMP = Stamp(model="test-model", full_dim=16, index_dim=8)
N = 120
SRC = str(Path(__file__).parents[2] / "src")


def _data():
    rng = np.random.default_rng(3)
    full = rng.normal(size=(N, 16)).astype(np.float32)
    full /= np.linalg.norm(full, axis=1, keepdims=True)
    index = full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True)
    return [Document(text=f"t{i}", id=f"d{i}", metadata={"n": i}) for i in range(N)], index, full


@pytest.fixture
def folder(tmp_path) -> Path:
    docs, index, full = _data()
    store = QdrantEdgeStore(path=tmp_path)
    store.open("c", STAMP)
    for start in range(0, N, 40):
        store.upsert(docs[start:start + 40], index[start:start + 40], full[start:start + 40])
    store.close()
    return tmp_path / "c"


def _open(folder: Path) -> QdrantEdgeStore:
    store = QdrantEdgeStore(path=folder.parent)
    store.open(folder.name, STAMP, create=False)
    return store


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _one(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(f"shard/segments/*/{pattern}"))
    assert found, pattern
    return found[0]


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x55
    path.write_bytes(bytes(data))


DAMAGE = {
    "version.info deleted": lambda f: _one(f, "version.info").unlink(),
    "id tracker mappings flipped": lambda f: _flip(_one(f, "mutable_id_tracker.mappings"), 40),
    "id tracker mappings truncated": lambda f: os.truncate(
        _one(f, "mutable_id_tracker.mappings"), 64),
    "vector byte flipped": lambda f: _flip(_one(f, "vector_storage-dim8/vectors/chunk_0.mmap"),
                                           100),
    "vector chunk deleted": lambda f: _one(f, "vector_storage-full/vectors/chunk_0.mmap").unlink(),
    "file added": lambda f: (f / "shard" / "segments" / "stray.bin").write_bytes(b"x"),
}


def test_a_closed_folder_records_checksums_and_reopens(folder):
    record = json.loads((folder / "checksums.json").read_text())["files"]
    assert any(name.endswith("version.info") for name in record)
    store = _open(folder)
    assert store.count() == N and not (folder / "checksums.json").exists()  # open: removed
    store.close()
    assert (folder / "checksums.json").exists()
    assert _open(folder).count() == N


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_edge_folder_is_refused_naming_the_file(folder, damage):
    DAMAGE[damage](folder)
    before = _snapshot(folder)
    with pytest.raises(StoreCorruptionError, match="Restore the folder from a backup") as err:
        _open(folder)
    assert str(folder / "shard") in str(err.value.path)
    assert _snapshot(folder) == before  # nothing deleted or rewritten


def test_a_folder_of_a_killed_process_opens_without_the_check(folder):
    script = textwrap.dedent(f"""
        import os, sys
        import numpy as np
        sys.path.insert(0, {SRC!r})
        from bertino_rag.stores import QdrantEdgeStore
        from bertino_rag.types import Document, Stamp
        store = QdrantEdgeStore(path={str(folder.parent)!r})
        store.open("c", Stamp(model="test-model", full_dim=16, index_dim=8), create=False)
        v = np.eye(16, dtype=np.float32)[:2]
        store.upsert([Document(text="new", id="new0"), Document(text="new", id="new1")],
                     v[:, :8] + 1e-3, v)
        os._exit(0)  # killed: no close, no checksums
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    assert not (folder / "checksums.json").exists()
    store = _open(folder)
    assert store.count() == N + 2
    store.close()


def test_without_checksums_damage_the_engine_meets_is_a_corruption_error(folder):
    (folder / "checksums.json").unlink()  # as after a killed process: nothing to verify
    _one(folder, "vector_storage-full/vectors/chunk_0.mmap").unlink()
    store = _open(folder)  # the engine opens it (it reads vectors when asked)
    _, index, full = _data()
    with pytest.raises(StoreCorruptionError, match="not readable|out of bounds") as err:
        store.search(index[0], k=3, full_vector=full[0])
    assert Path(err.value.path) == folder / "shard"
    with pytest.raises(StoreCorruptionError, match="Restore the folder"):
        store.fetch_full(["d1"])
    store.close()
