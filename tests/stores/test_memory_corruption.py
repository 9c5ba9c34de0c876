"""MemoryStore folders damaged file by file: every kind of file, missing, truncated or changed.

The promise under test: opening or searching a damaged folder raises StoreCorruptionError naming
the file and saying what to do, never answers from damaged vectors, and never deletes data that
the metadata cannot account for. Vectors are random unit vectors (store-only tests).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from bertino_rag.lexical import BM25, Analyzer, lexical_spec
from bertino_rag.stores import MemoryStore, StoreCorruptionError, StoreWriteError
from bertino_rag.stores.memory import folder as memory_module
from bertino_rag.types import Document, Stamp

STAMP = Stamp(model="test-model", full_dim=32, index_dim=8)
#: a hybrid collection: every kind of segment file (vectors and lexical postings)
HYBRID = Stamp(model="test-model", full_dim=32, index_dim=8,
               lexical=lexical_spec(Analyzer(), BM25()))
#: every kind of file of a segment, seg-N.<kind>.npy
KINDS = ("index", "full", "lexterm", "lexptr", "lexpost", "lexlength")
N, BATCH = 90, 30  # three segments of 30 (merging starts at four)


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    v = rng.normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture
def data():
    rng = np.random.default_rng(7)
    full = _unit(rng, N, STAMP.full_dim)
    index = full[:, : STAMP.index_dim] / np.linalg.norm(full[:, : STAMP.index_dim], axis=1,
                                                        keepdims=True)
    docs = [Document(text=f"documento {i}", id=f"d{i}", metadata={"n": i}) for i in range(N)]
    return docs, index, full


def _fill(root: Path, data, n: int = N, stamp: Stamp = STAMP) -> MemoryStore:
    docs, index, full = data
    store = MemoryStore(path=root)
    store.open("c", stamp)
    for start in range(0, n, BATCH):
        store.upsert(docs[start:start + BATCH], index[start:start + BATCH],
                     full[start:start + BATCH])
    return store


@pytest.fixture
def folder(tmp_path, data) -> Path:
    _fill(tmp_path, data).close()
    return tmp_path / "c"


@pytest.fixture
def hybrid(tmp_path, data) -> Path:
    """A hybrid collection's folder: three segments of six files each."""
    _fill(tmp_path, data, stamp=HYBRID).close()
    return tmp_path / "c"


def _open(folder: Path, **kwargs) -> MemoryStore:
    store = MemoryStore(path=folder.parent, **kwargs)
    stamp = HYBRID if any(folder.glob("seg-*.lex*.npy")) else STAMP
    store.open(folder.name, stamp)
    return store


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("seg-*"))


def test_healthy_folder_has_three_segments_with_checksums(folder, data):
    store = _open(folder)
    rows = store.db.execute("SELECT index_crc, index_size, full_crc, full_size FROM segments")
    rows = rows.fetchall()
    assert len(rows) == 3 and all(None not in r for r in rows)
    assert store.count() == N
    assert store.search(data[1][5], k=1)[0].id == "d5"


def test_hybrid_folder_has_checksums_for_every_postings_file(hybrid, data):
    assert _files(hybrid) == sorted(f"seg-{s:06d}.{k}.npy" for s in (1, 2, 3) for k in KINDS)
    store = _open(hybrid)
    sums = [json.loads(r) for (r,) in store.db.execute("SELECT lex_sums FROM segments")]
    assert len(sums) == 3 and all(set(s) == set(KINDS[2:]) for s in sums)
    assert store.lexical_search("documento 17", k=1)[0].id == "d17"


def test_postings_written_before_checksums_still_open(hybrid):
    db = sqlite3.connect(hybrid / "meta.sqlite")
    with db:
        db.execute("UPDATE segments SET lex_sums = NULL")
    db.close()
    assert _open(hybrid).lexical_search("documento 42", k=1)[0].id == "d42"


@pytest.mark.parametrize("how", ["missing", "empty"])
def test_lost_meta_sqlite_is_refused_and_segments_are_kept(folder, how):
    before = _files(folder)
    db = folder / "meta.sqlite"
    if how == "missing":
        db.unlink()
    else:
        db.write_bytes(b"")
    with pytest.raises(StoreCorruptionError, match=f"meta.sqlite is {how}") as err:
        _open(folder)
    assert err.value.path == db and "Restore the folder" in str(err.value)
    assert _files(folder) == before  # nothing deleted


def test_meta_sqlite_lost_with_its_wal_still_there_is_refused(folder):
    for p in folder.glob("seg-*"):
        p.unlink()
    (folder / "meta.sqlite").unlink()
    (folder / "meta.sqlite-wal").write_bytes(b"\x37\x7f\x06\x82" + b"\0" * 4092)
    with pytest.raises(StoreCorruptionError, match="write-ahead log meta.sqlite-wal"):
        _open(folder)


def test_meta_sqlite_that_is_not_a_database_is_named(folder):
    (folder / "meta.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreCorruptionError, match=r"meta.sqlite cannot be read"):
        _open(folder)
    assert len(_files(folder)) == 6


def test_metadata_rolled_back_is_refused_and_newer_segments_are_kept(tmp_path, data):
    store = _fill(tmp_path, data, n=BATCH)
    store.close()
    folder = tmp_path / "c"
    shutil.copy(folder / "meta.sqlite", tmp_path / "old.sqlite")
    store = _open(folder)
    docs, index, full = data
    store.upsert(docs[BATCH:], index[BATCH:], full[BATCH:])
    store.close()
    before = _files(folder)
    shutil.copy(tmp_path / "old.sqlite", folder / "meta.sqlite")  # a lost WAL, in effect
    with pytest.raises(StoreCorruptionError, match="is not listed in") as err:
        _open(folder)
    assert "seg-000002" in str(err.value)
    assert _files(folder) == before


def test_unknown_segment_file_is_refused_not_deleted(folder):
    shutil.copy(folder / "seg-000001.index.npy", folder / "seg-000099.index.npy")
    with pytest.raises(StoreCorruptionError, match="seg-000099.index.npy"):
        _open(folder)
    assert (folder / "seg-000099.index.npy").exists()


def _flip_last_bytes(path: Path, n: int = 8) -> None:
    """Change the last ``n`` bytes of a file in place (same size: only a checksum sees it)."""
    with open(path, "r+b") as fh:
        fh.seek(-n, os.SEEK_END)
        old = fh.read(n)
        fh.seek(-n, os.SEEK_END)
        fh.write(bytes(b ^ 0xFF for b in old))


@pytest.mark.parametrize("kind", KINDS)
def test_overwritten_bytes_fail_the_checksum(hybrid, kind):
    path = hybrid / f"seg-000002.{kind}.npy"
    _flip_last_bytes(path)
    with pytest.raises(StoreCorruptionError, match="fails its checksum") as err:
        _open(hybrid)
    assert err.value.path == path and str(path) in str(err.value)
    assert "Restore the folder" in str(err.value)
    assert len(_files(hybrid)) == 18  # nothing deleted


def test_checksums_can_be_skipped_and_sizes_are_still_checked(folder):
    path = folder / "seg-000002.index.npy"
    with open(path, "r+b") as fh:
        fh.seek(200)
        fh.write(os.urandom(16))
    _open(folder, verify_checksums=False).close()  # same size: not noticed without checksums
    with open(path, "ab") as fh:
        fh.write(b"\0" * 4)
    with pytest.raises(StoreCorruptionError, match="bytes where"):
        _open(folder, verify_checksums=False)


@pytest.mark.parametrize("kind", KINDS)
def test_truncated_file_is_named(hybrid, kind):
    path = hybrid / f"seg-000003.{kind}.npy"
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(size // 2)
    with pytest.raises(StoreCorruptionError, match="truncated") as err:
        _open(hybrid)
    assert f"seg-000003.{kind}.npy" in str(err.value)


@pytest.mark.parametrize("kind", KINDS)
def test_missing_segment_file_is_named(hybrid, kind):
    (hybrid / f"seg-000001.{kind}.npy").unlink()
    with pytest.raises(StoreCorruptionError, match=f"seg-000001.{kind}.npy is missing"):
        _open(hybrid)


@pytest.mark.parametrize("kind", KINDS)
def test_damage_found_without_checksums_by_size_and_shape(hybrid, kind):
    """A file replaced by another valid array (same segment, other kind) is refused even with
    verify_checksums=False: by its size, or else by its shape."""
    path = hybrid / f"seg-000002.{kind}.npy"
    other = "lexlength" if kind != "lexlength" else "lexterm"
    shutil.copy(hybrid / f"seg-000002.{other}.npy", path)
    with pytest.raises(StoreCorruptionError, match="seg-000002") as err:
        _open(hybrid, verify_checksums=False)
    assert err.value.path == path


@pytest.mark.parametrize("kind", ["index", "lexpost"])
def test_damage_after_open_is_found_by_the_next_reader(hybrid, data, kind):
    store = _open(hybrid)
    assert store.search(data[1][0], k=1)[0].id == "d0"
    _flip_last_bytes(hybrid / f"seg-000001.{kind}.npy")
    with pytest.raises(StoreCorruptionError, match=f"seg-000001.{kind}.npy fails its checksum"):
        _open(hybrid)


def test_lost_wal_loses_nothing_acknowledged(tmp_path, data):
    """A writer killed after its writes returned, then its -wal and -shm files lost."""
    script = textwrap.dedent(f"""
        import numpy as np, os, sys
        sys.path.insert(0, {str(Path(memory_module.__file__).parents[3])!r})
        from bertino_rag.stores import MemoryStore
        from bertino_rag.types import Document, Stamp
        stamp = Stamp(model="test-model", full_dim=32, index_dim=8)
        rng = np.random.default_rng(0)
        store = MemoryStore(path={str(tmp_path)!r})
        store.open("c", stamp)
        for b in range(5):
            full = rng.normal(size=(10, 32)).astype(np.float32)
            full /= np.linalg.norm(full, axis=1, keepdims=True)
            index = full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True)
            store.upsert([Document(text=f"t{{b}}-{{i}}", id=f"{{b}}-{{i}}") for i in range(10)],
                         index, full)
        os._exit(0)  # no close: as if killed
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    for suffix in ("-wal", "-shm"):
        (tmp_path / "c" / f"meta.sqlite{suffix}").unlink(missing_ok=True)
    store = _open(tmp_path / "c")
    assert store.count() == 50


_UNCHECKPOINTED = textwrap.dedent("""
    import os, sqlite3, sys
    sys.path.insert(0, sys.argv[2])
    from bertino_rag.stores import MemoryStore
    from bertino_rag.types import Stamp
    folder = os.path.join(sys.argv[1], "c")
    store = MemoryStore(path=sys.argv[1], lock_timeout=0.2)
    store.open("c", Stamp(model="test-model", full_dim=32, index_dim=8))
    reader = sqlite3.connect(os.path.join(folder, "meta.sqlite"))
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM docs").fetchone()  # a snapshot: no checkpoint
    store.delete([f"d{i}" for i in range(10)])  # acknowledged, and only in the WAL
    os._exit(0)  # killed before anything else
""")


def _delete_left_in_the_wal(folder: Path) -> Path:
    """A writer deletes d0..d9 and is killed while a reader keeps the delete in the WAL."""
    src = str(Path(memory_module.__file__).parents[3])
    subprocess.run([sys.executable, "-c", _UNCHECKPOINTED, str(folder.parent), src],
                   check=True, timeout=120)
    wal = folder / "meta.sqlite-wal"
    assert wal.stat().st_size > 0
    return wal


def test_garbled_wal_that_undoes_a_delete_is_detected(folder):
    wal = _delete_left_in_the_wal(folder)
    with open(wal, "r+b") as fh:  # garble the delete's commit frame, the WAL's last
        fh.seek(-64, os.SEEK_END)
        fh.write(os.urandom(64))
    with pytest.raises(StoreCorruptionError, match="write-ahead log") as err:
        _open(folder)
    assert err.value.path == wal and "undid the last 1 write" in str(err.value)
    assert len(_files(folder)) == 6  # nothing deleted


def test_an_intact_wal_replays_the_acknowledged_delete(folder):
    _delete_left_in_the_wal(folder)
    store = _open(folder)
    assert store.count() == N - 10 and store.get(["d3"]) == []


def test_an_unreadable_acknowledgement_file_is_ignored_and_rewritten(folder, data, caplog):
    (folder / "meta.acked").write_bytes(b"\xff garbage")
    with caplog.at_level(logging.WARNING, logger="bertino_rag.stores.memory"):
        store = _open(folder)
    assert "meta.acked is unreadable" in caplog.text and store.count() == N
    store.delete(["d0"])
    gen = store.db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0]
    assert int((folder / "meta.acked").read_text().split()[0]) == int(gen)


def test_drop_keeps_the_generation_growing(folder, data):
    store = _open(folder)
    store.drop()
    again = _open(folder)  # a generation that restarted would look like a lost WAL
    docs, index, full = data
    again.upsert(docs[:3], index[:3], full[:3])
    assert _open(folder).count() == 3


# ---------------------------------------------------------------------- a full disk
def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_in_the_write_says_so_and_keeps_the_old_contents(tmp_path, data, monkeypatch):
    docs, index, full = data
    store = _fill(tmp_path, data, n=BATCH)
    monkeypatch.setattr(memory_module.np, "save", _enospc)
    with pytest.raises(StoreWriteError, match="disk full") as err:
        store.upsert(docs[BATCH:60], index[BATCH:60], full[BATCH:60])
    assert err.value.failed_ids == [d.id for d in docs[BATCH:60]]
    assert "None of them was written" in str(err.value)
    monkeypatch.undo()
    assert store.count() == BATCH
    store.upsert(docs[BATCH:60], index[BATCH:60], full[BATCH:60])
    assert store.count() == 60


def test_disk_full_in_a_hybrid_write_says_so_and_keeps_the_old_contents(tmp_path, data,
                                                                       monkeypatch):
    docs, index, full = data
    store = _fill(tmp_path, data, n=BATCH, stamp=HYBRID)
    real_save = np.save
    calls = {"n": 0}

    def save(fh, arr, *a, **k):  # vectors written, the disk fills on the postings
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(fh, arr, *a, **k)

    monkeypatch.setattr(memory_module.np, "save", save)
    with pytest.raises(StoreWriteError, match="disk full") as err:
        store.upsert(docs[BATCH:60], index[BATCH:60], full[BATCH:60])
    assert err.value.failed_ids == [d.id for d in docs[BATCH:60]]
    monkeypatch.undo()
    assert store.count() == BATCH
    assert store.lexical_search("documento 40", k=1)[0].id != "d40"
    reopened = _open(tmp_path / "c")
    assert reopened.count() == BATCH


def test_numpy_short_write_is_reported_as_disk_full(tmp_path, data, monkeypatch):
    docs, index, full = data
    store = _fill(tmp_path, data, n=BATCH)

    def short(*args, **kwargs):
        raise OSError("1536000 requested and 1478592 written")

    monkeypatch.setattr(memory_module.np, "save", short)
    with pytest.raises(StoreWriteError, match="disk full"):
        store.upsert(docs[BATCH:60], index[BATCH:60], full[BATCH:60])


def test_disk_full_in_the_merge_after_a_commit_is_not_a_failed_write(tmp_path, data,
                                                                      monkeypatch, caplog):
    docs, index, full = data
    store = _fill(tmp_path, data)  # three segments: the next write merges four
    real_save = np.save
    calls = {"n": 0}

    def save(fh, arr, *a, **k):
        calls["n"] += 1
        if calls["n"] > 2:  # the batch's own two files succeed, the merge's fail
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(fh, arr, *a, **k)

    more = [Document(text=f"nuovo {i}", id=f"n{i}") for i in range(BATCH)]
    monkeypatch.setattr(memory_module.np, "save", save)
    with caplog.at_level(logging.WARNING, logger="bertino_rag.stores.memory"):
        store.upsert(more, index[:BATCH], full[:BATCH])  # acknowledged: no error
    monkeypatch.undo()
    assert "disk full" in caplog.text and "are written" in caplog.text
    assert store.count() == N + BATCH
    reopened = _open(tmp_path / "c")
    assert reopened.count() == N + BATCH
    assert reopened.get(["n0"])[0].text == "nuovo 0"


# ---------------------------------------------------------------------- kills mid-index
_WRITER = textwrap.dedent("""
    import numpy as np, os, sys
    sys.path.insert(0, sys.argv[3])
    from bertino_rag.stores import MemoryStore
    from bertino_rag.types import Document, Stamp
    stamp = Stamp(model="test-model", full_dim=32, index_dim=8)
    root, acks = sys.argv[1], sys.argv[2]
    store = MemoryStore(path=root)
    store.open("c", stamp)
    rng = np.random.default_rng(os.getpid())
    b = int(open(acks).read().split()[-1]) + 1 if os.path.getsize(acks) else 0
    while True:
        full = rng.normal(size=(25, 32)).astype(np.float32)
        full /= np.linalg.norm(full, axis=1, keepdims=True)
        index = full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True)
        store.upsert([Document(text=f"t{b}-{i}", id=f"{b}-{i}") for i in range(25)],
                     index, full)
        with open(acks, "a") as fh:  # acknowledged only once upsert returned
            fh.write(f"{b}\\n")
            fh.flush()
            os.fsync(fh.fileno())
        b += 1
""")


def test_kill_mid_index_loses_no_acknowledged_document(tmp_path):
    import time

    acks = tmp_path / "acks"
    acks.write_text("")
    src = str(Path(memory_module.__file__).parents[3])
    rng = np.random.default_rng(1)
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), str(acks), src])
        time.sleep(float(rng.uniform(2.5, 4.0)))  # start-up (imports) and a few writes
        proc.kill()
        proc.wait()
        acked = [int(x) for x in acks.read_text().split()]
        store = _open(tmp_path / "c")
        stored = {d.id for d in store.get([f"{b}-{i}" for b in acked for i in range(25)])}
        assert len(stored) == 25 * len(acked)  # every acknowledged document is there
        count = store.count()
        assert count in (25 * len(acked), 25 * (len(acked) + 1))  # at most the batch in flight
        assert len(store.search(np.ones(8, dtype=np.float32) / np.sqrt(8), k=3)) == 3
        store.close()
    assert len(acked) > 0


def test_a_crashed_write_leaves_only_files_the_metadata_lists(tmp_path, data, monkeypatch):
    docs, index, full = data
    store = _fill(tmp_path, data, n=BATCH)

    def boom(*args, **kwargs):
        raise KeyboardInterrupt("simulated crash before commit")

    monkeypatch.setattr(MemoryStore, "_commit_segment", boom)
    with pytest.raises(KeyboardInterrupt):
        store.upsert(docs[BATCH:60], index[BATCH:60], full[BATCH:60])
    monkeypatch.undo()
    folder = tmp_path / "c"
    db = sqlite3.connect(folder / "meta.sqlite")
    garbage = {s for (s,) in db.execute("SELECT seg FROM garbage")}
    db.close()
    assert garbage == {2}  # the crashed segment is listed, so it may be deleted
    reopened = _open(folder)  # opens (the crash's files are accounted for) and cleans up
    assert _files(folder) == ["seg-000001.full.npy", "seg-000001.index.npy"]
    assert reopened.count() == BATCH


def _damaged_meta_cases(meta: bytes) -> list[tuple[str, bytes]]:
    """``meta.sqlite`` damaged while it is still a database: one byte cut off, the type byte
    of each b-tree page flipped, and bytes of the stamp's JSON text flipped."""
    cases = [("truncated by one byte", meta[:-1])]
    for page in range(len(meta) // 4096):
        at = page * 4096 + (100 if page == 0 else 0)
        cases.append((f"page {page} type flipped", meta[:at] + bytes([meta[at] ^ 0xFF])
                      + meta[at + 1:]))
    stamp = meta.find(b'{"')
    assert stamp > 0
    for at in (stamp, stamp + 1, stamp + 9):  # the JSON's brace, quote and a letter
        cases.append((f"stamp byte {at - stamp} flipped",
                      meta[:at] + bytes([meta[at] ^ 0xC0]) + meta[at + 1:]))
    return cases


def test_damaged_meta_sqlite_that_is_still_a_database_is_named(hybrid, data):
    """Every read of a meta.sqlite damaged in place (not JSONDecodeError, UnicodeDecodeError
    or sqlite3.DatabaseError from deep inside) raises StoreCorruptionError naming it, or
    answers: a damaged page may hold nothing this collection reads."""
    _, index, _ = data
    meta = (hybrid / "meta.sqlite").read_bytes()
    good = hybrid.parent / "good"
    shutil.copytree(hybrid, good)
    named = []
    for what, damaged in _damaged_meta_cases(meta):
        shutil.rmtree(hybrid)
        shutil.copytree(good, hybrid)
        (hybrid / "meta.sqlite").write_bytes(damaged)
        try:
            store = _open(hybrid)
            store.count()
            store.search(index[0], k=5, filter={"n": {"$gte": 3}})
            store.lexical_search("documento", k=3)
            store.get(["d1", "d40"])
            store.close()
        except StoreCorruptionError as err:
            assert Path(err.path) == hybrid / "meta.sqlite", what
            assert "meta.sqlite cannot be read" in str(err) and "backup" in str(err), what
            named.append(what)
    assert "truncated by one byte" in named or len(named) >= 4, named
    assert any(w.startswith("stamp") for w in named) and any(w.startswith("page") for w in named)
