"""MemoryStore on disk: crash safety, the write lock, other processes' writes, merging, chunks."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pytest

from bertino_rag.stores import MemoryStore, StoreError
from bertino_rag.stores.memory import folder as memory_module
from bertino_rag.types import Document, Stamp


@pytest.fixture
def vectors(slice_vectors):
    return slice_vectors["docs"]


@pytest.fixture
def docs(squad_slice):
    return [Document(text=d["text"], id=d["id"], metadata=d["metadata"])
            for d in squad_slice["docs"]]


@pytest.fixture
def stamp(encoder):
    return Stamp(model=encoder.model_id, full_dim=encoder.full_dim, index_dim=128)


def _fill(path, stamp, docs, vectors, n):
    store = MemoryStore(path=path)
    store.open("c", stamp)
    store.upsert(docs[:n], vectors.index[:n], vectors.full[:n])
    return store


@pytest.mark.parametrize("crash_at", ["after_files", "during_save"])
def test_crash_mid_write_keeps_previous_contents(tmp_path, stamp, docs, vectors, monkeypatch,
                                                 crash_at):
    store = _fill(tmp_path, stamp, docs, vectors, 40)
    before = [h.id for h in store.search(vectors.index[3], k=5)]

    if crash_at == "after_files":
        def boom(*args, **kwargs):
            raise KeyboardInterrupt("simulated crash before commit")
        monkeypatch.setattr(MemoryStore, "_commit_segment", boom)
    else:
        real_save = np.save
        calls = {"n": 0}

        def save(fh, arr, *a, **k):
            calls["n"] += 1
            if calls["n"] == 2:  # the full vectors of the batch: index file already written
                fh.write(b"partial")
                raise OSError("disk full (simulated)")
            return real_save(fh, arr, *a, **k)
        monkeypatch.setattr(memory_module.np, "save", save)

    with pytest.raises((KeyboardInterrupt, StoreError)):
        store.upsert(docs[40:80], vectors.index[40:80], vectors.full[40:80])
    monkeypatch.undo()

    reopened = MemoryStore(path=tmp_path)
    reopened.open("c", stamp)
    assert reopened.count() == 40
    assert [h.id for h in reopened.search(vectors.index[3], k=5)] == before
    # the next write cleans the leftovers and completes
    reopened.upsert(docs[40:80], vectors.index[40:80], vectors.full[40:80])
    assert reopened.count() == 80
    seg_files = sorted(p.name for p in (tmp_path / "c").glob("seg-*"))
    live = {f"seg-{s:06d}" for s in reopened._segments}
    assert all(name.split(".")[0] in live for name in seg_files), seg_files
    assert not any(name.endswith(".tmp") for name in seg_files)


def _hold_lock(path, ready, release):
    from filelock import FileLock

    with FileLock(str(path / "c" / ".lock")):
        ready.set()
        release.wait(30)


def test_second_writer_is_refused_while_one_writes(tmp_path, stamp, docs, vectors):
    store = _fill(tmp_path, stamp, docs, vectors, 10)
    store.lock_timeout = 0.5
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold_lock, args=(tmp_path, ready, release))
    proc.start()
    try:
        assert ready.wait(60)
        with pytest.raises(StoreError, match="another process is writing"):
            store.upsert(docs[10:20], vectors.index[10:20], vectors.full[10:20])
        assert store.count() == 10
    finally:
        release.set()
        proc.join(30)
    store.upsert(docs[10:20], vectors.index[10:20], vectors.full[10:20])
    assert store.count() == 20


def test_reader_sees_another_writer(tmp_path, stamp, docs, vectors):
    writer = _fill(tmp_path, stamp, docs, vectors, 10)
    reader = MemoryStore(path=tmp_path)
    reader.open("c", stamp)
    assert reader.count() == 10
    writer.upsert(docs[10:30], vectors.index[10:30], vectors.full[10:30])
    writer.delete([docs[0].id])
    hits = reader.search(vectors.index[20], k=1)
    assert hits[0].id == docs[20].id
    assert reader.count() == 29
    assert docs[0].id not in {h.id for h in reader.search(vectors.index[0], k=30)}


def test_tiered_merging_keeps_results(tmp_path, stamp, docs, vectors):
    store = MemoryStore(path=tmp_path)
    store.open("c", stamp)
    for start in range(0, 160, 5):  # 32 small writes
        store.upsert(docs[start:start + 5], vectors.index[start:start + 5],
                     vectors.full[start:start + 5])
    assert store.count() == 160
    assert len(store._segments) < 8
    exact = np.argsort(-(vectors.index[:160] @ vectors.index[7]), kind="stable")[:10]
    assert [h.id for h in store.search(vectors.index[7], k=10)] == [docs[i].id for i in exact]
    np.testing.assert_allclose(store.fetch_full([docs[99].id])[0], vectors.full[99], atol=2e-3)


def test_search_in_small_blocks_equals_one_block(tmp_path, stamp, docs, vectors, monkeypatch):
    store = _fill(tmp_path, stamp, docs, vectors, 150)
    q = vectors.index[:6]
    whole = store.search_batch(q, k=7)
    monkeypatch.setattr("bertino_rag.stores.memory.search._SCORE_BLOCK", 6 * 16)  # 16 rows a block
    blocks = store.search_batch(q, k=7)
    assert [[h.id for h in r] for r in blocks] == [[h.id for h in r] for r in whole]


def test_no_pickle_in_the_folder(tmp_path, stamp, docs, vectors):
    _fill(tmp_path, stamp, docs, vectors, 10).close()
    for p in (tmp_path / "c").glob("*.npy"):
        arr = np.load(p, allow_pickle=False)  # raises if the file needed pickle
        assert arr.dtype in (np.float32, np.float16)


def test_index_fields_serve_filters(tmp_path, stamp, docs, vectors):
    plain = _fill(tmp_path / "plain", stamp, docs, vectors, 120)
    indexed = MemoryStore(path=tmp_path / "indexed", index_fields=["para", "title"])
    indexed.open("c", stamp)
    indexed.upsert(docs[:120], vectors.index[:120], vectors.full[:120])
    plan = " ".join(str(r) for r in indexed.db.execute(
        "EXPLAIN QUERY PLAN SELECT seg, row FROM docs WHERE "
        "json_extract(metadata, '$.\"para\"') >= 3"))
    assert "docs_meta_para" in plan
    for flt in ({"para": {"$gte": 3, "$lt": 9}}, {"title": "Amazzonia"},
                {"para": {"$in": [1, 2, 40]}}, {"para": 2, "title": {"$in": ["x"]}}):
        want = [h.id for h in plain.search(vectors.index[5], k=20, filter=flt)]
        assert [h.id for h in indexed.search(vectors.index[5], k=20, filter=flt)] == want
    with pytest.raises(ValueError, match="invalid metadata field name"):
        MemoryStore(index_fields=['a"b'])
