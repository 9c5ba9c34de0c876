"""No write of a store lands outside its folder through a symbolic link: a link planted at the
name of a temporary file (``seg-*.npy.tmp``, ``stamp.json.tmp``, ``meta.acked``) is replaced,
never followed, and a collection folder that is a link out of the store is refused by
``open``, ``recreate`` (``open_replacement``) and ``clear`` alike, before any file (``.lock``)
is made. MemoryStore and Qdrant Edge (the stores that write their own files); random unit
vectors."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

from bertino_rag.stores import MemoryStore
from bertino_rag.types import Document, Stamp

STAMP = Stamp(model="test-model", full_dim=16, index_dim=8)
HAS_EDGE = importlib.util.find_spec("qdrant_edge") is not None
VICTIM = b"outside the store: must never change\n"


def _write(store, prefix: str, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    full = rng.normal(size=(n, 16)).astype(np.float32)
    full /= np.linalg.norm(full, axis=1, keepdims=True)
    index = full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True)
    store.upsert([Document(text=f"{prefix} {i}", id=f"{prefix}{i}") for i in range(n)],
                 index, full)


def _victims(outside: Path, n: int) -> list[Path]:
    outside.mkdir(exist_ok=True)
    paths = [outside / f"victim{i}" for i in range(n)]
    for p in paths:
        p.write_bytes(VICTIM)
    return paths


def _edge(root: Path):
    if not HAS_EDGE:
        pytest.skip("qdrant-edge-py is not installed")
    from bertino_rag.stores import QdrantEdgeStore

    return QdrantEdgeStore(path=root)


def test_memory_temporaries_planted_as_links_are_not_followed(tmp_path):
    store = MemoryStore(path=tmp_path / "store")
    store.open("c", STAMP)
    _write(store, "a", 5)
    store.close()
    folder = tmp_path / "store" / "c"
    names = [f"seg-{seg:06d}.{kind}.npy.tmp" for seg in range(1, 8) for kind in ("index", "full")]
    (folder / "meta.acked").unlink()
    names.append("meta.acked")
    victims = _victims(tmp_path / "outside", len(names))
    for name, victim in zip(names, victims, strict=True):
        os.symlink(victim, folder / name)
    store = MemoryStore(path=tmp_path / "store")
    store.open("c", STAMP)
    _write(store, "b", 6, seed=1)
    _write(store, "c", 3, seed=2)
    assert store.count() == 14 and store.get(["b5"])[0].text == "b 5"
    store.close()
    assert all(v.read_bytes() == VICTIM for v in victims)
    assert (folder / "meta.acked").is_file() and not (folder / "meta.acked").is_symlink()


@pytest.mark.parametrize("kind", ["memory", "edge"])
@pytest.mark.parametrize("call", ["open", "recreate", "replacement", "clear"])
def test_a_collection_folder_linked_out_of_the_store_is_refused(tmp_path, kind, call):
    make = (lambda: MemoryStore(path=tmp_path / "store")) if kind == "memory" else (
        lambda: _edge(tmp_path / "store"))
    elsewhere = make()
    elsewhere.open("real", STAMP)
    _write(elsewhere, "x", 4)
    elsewhere.close()
    (tmp_path / "store").rename(tmp_path / "outside")
    (tmp_path / "store").mkdir()
    os.symlink(tmp_path / "outside" / "real", tmp_path / "store" / "c")
    before = sorted(p.name for p in (tmp_path / "outside" / "real").rglob("*"))
    store = make()
    with pytest.raises(ValueError, match="would leave the folder"):
        if call == "open":
            store.open("c", STAMP)
        elif call == "recreate":
            store.open("c", STAMP, recreate=True)
        elif call == "replacement":
            store.open_replacement("c", STAMP)
        else:
            store.open("c", STAMP)
            store.clear()
    store.close()
    assert sorted(p.name for p in (tmp_path / "outside" / "real").rglob("*")) == before
    outside = MemoryStore(path=tmp_path / "outside") if kind == "memory" else _edge(
        tmp_path / "outside")
    outside.open("real", STAMP, create=False)
    assert outside.count() == 4
    outside.close()


def test_edge_stamp_temporary_planted_as_a_link_is_not_followed(tmp_path):
    [victim] = _victims(tmp_path / "outside", 1)
    (tmp_path / "store" / "c").mkdir(parents=True)  # planted before the collection is made
    os.symlink(victim, tmp_path / "store" / "c" / "stamp.json.tmp")
    store = _edge(tmp_path / "store")
    store.open("c", STAMP)  # writes the stamp through stamp.json.tmp
    _write(store, "b", 2)
    assert store.count() == 2
    store.close()
    assert victim.read_bytes() == VICTIM
    assert _edge(tmp_path / "store").collections() == ["c"]
