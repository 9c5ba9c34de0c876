"""The bad-input matrix, run on every store: MemoryStore (RAM and folder), Qdrant local mode
(memory and folder) and Milvus Lite.

Each bad document or name must be refused before anything is written, with a ValueError naming
the position and the problem, and leave the collection as it was. Vectors are random unit
vectors (store-only tests).
"""

from __future__ import annotations

import datetime as dt
import decimal
import importlib.util
import re
import uuid

import numpy as np
import pytest

from bertino_rag.stores import (
    CollectionNotFoundError,
    MemoryStore,
    StoreConnectionError,
    StoreError,
    make_store,
)
from bertino_rag.stores.base import check_collection_name, safe_location
from bertino_rag.types import Document, Stamp

STAMP = Stamp(model="test-model", full_dim=16, index_dim=8)
HAS_QDRANT = importlib.util.find_spec("qdrant_client") is not None
HAS_MILVUS = all(importlib.util.find_spec(m) for m in ("pymilvus", "milvus_lite"))


def _vectors(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    full = rng.normal(size=(n, STAMP.full_dim)).astype(np.float32)
    full /= np.linalg.norm(full, axis=1, keepdims=True)
    index = full[:, : STAMP.index_dim] / np.linalg.norm(full[:, : STAMP.index_dim], axis=1,
                                                        keepdims=True)
    return index, full


def _store(kind: str, tmp_path):
    if kind == "memory":
        return MemoryStore()
    if kind == "memory-dir":
        return MemoryStore(path=tmp_path / "mem")
    if kind == "qdrant":
        if not HAS_QDRANT:
            pytest.skip("qdrant-client is not installed")
        from bertino_rag.stores import QdrantStore

        return QdrantStore()
    if kind == "qdrant-dir":
        if not HAS_QDRANT:
            pytest.skip("qdrant-client is not installed")
        from bertino_rag.stores import QdrantStore

        return QdrantStore(path=tmp_path / "qd")
    if not HAS_MILVUS:
        pytest.skip("pymilvus / milvus-lite are not installed")
    from bertino_rag.stores import MilvusStore

    return MilvusStore(uri=str(tmp_path / "m.db"))


KINDS = ["memory", "memory-dir", "qdrant", "qdrant-dir", "milvus"]


@pytest.fixture(scope="module")
def tmp_module(tmp_path_factory):
    return tmp_path_factory.mktemp("bad-input")


@pytest.fixture(scope="module", params=KINDS)
def opened(request, tmp_module):
    """One open store per kind, holding 3 good documents."""
    store = _store(request.param, tmp_module / request.param)
    store.open("bad_input", STAMP, recreate=True)
    index, full = _vectors(3)
    store.upsert([Document(text=f"buono {i}", id=f"g{i}", metadata={"n": i}) for i in range(3)],
                 index, full)
    yield request.param, store
    store.drop()
    store.close()


def _circular() -> dict:
    d: dict = {"a": 1}
    d["self"] = d
    return d


BAD_DOCUMENTS = [
    # (document, what the error says)
    (Document(text="x", id="nan", metadata={"v": float("nan")}), "only finite numbers"),
    (Document(text="x", id="inf", metadata={"v": float("inf")}), "only finite numbers"),
    (Document(text="x", id="ninf", metadata={"v": {"w": [float("-inf")]}}),
     r"metadata\['v'\]\['w'\]\[0\] is -inf"),
    (Document(text="x", id="set", metadata={"v": {1, 2}}), "is a set, which is not JSON"),
    (Document(text="x", id="dt", metadata={"v": dt.datetime(2024, 1, 1)}), "isoformat"),
    (Document(text="x", id="date", metadata={"v": dt.date(2024, 1, 1)}), "isoformat"),
    (Document(text="x", id="np", metadata={"v": np.int64(3)}), r"value\.item\(\)"),
    (Document(text="x", id="npb", metadata={"v": np.bool_(True)}), r"value\.item\(\)"),
    (Document(text="x", id="bytes", metadata={"v": b"abc"}), "is a bytes"),
    (Document(text="x", id="dec", metadata={"v": decimal.Decimal("1.5")}), "is a Decimal"),
    (Document(text="x", id="circ", metadata=_circular()), "refers to itself"),
    (Document(text="x", id="intkey", metadata={1: "a"}), "keys must be strings"),
    (Document(text="x", id="nonekey", metadata={"v": {None: "a"}}), "keys must be strings"),
    (Document(text="x", id="big", metadata={"v": 2**53}), r"beyond \+-\(2\*\*53 - 1\)"),
    (Document(text="x", id="small", metadata={"v": -(2**53)}), r"beyond \+-\(2\*\*53 - 1\)"),
    (Document(text="x", id="huge", metadata={"v": [2**63]}), r"beyond \+-\(2\*\*53 - 1\)"),
    (Document(text="x", id="nul\x00id"),
     r"the id contains a NUL character \(\\x00\) at character 3"),
    (Document(text="x", id="nulv", metadata={"s": "x\x00y"}), r"metadata\['s'\] contains a NUL"),
    (Document(text="x", id="nulk", metadata={"v": {"k\x00": 1}}), "a key of metadata.* NUL"),
    (Document(text="testo \ud800 rotto", id="sur"), "lone surrogate"),
    (Document(text="x", id="id\udfff"), "lone surrogate"),
    (Document(text="x", id="msur", metadata={"v": "\ud83d"}), "lone surrogate"),
    (Document(text="x", id="ksur", metadata={"\udc00": 1}), "lone surrogate"),
]


@pytest.mark.parametrize("bad,message", BAD_DOCUMENTS,
                         ids=[d.id.encode("utf-8", "replace").decode() for d, _ in BAD_DOCUMENTS])
def test_bad_document_is_refused_before_any_write(opened, bad, message):
    kind, store = opened
    index, full = _vectors(5, seed=1)
    good = [Document(text=f"nuovo {i}", id=f"n{i}") for i in range(4)]
    with pytest.raises(ValueError, match=message) as err:
        store.upsert([*good, bad], index, full)
    assert "position 4" in str(err.value)
    assert store.count() == 3 and store.get(["n0"]) == []
    # and filtered searches still work: nothing malformed reached the store
    assert [h.id for h in store.search(index[0], k=3, filter={"n": {"$gte": 0}})]


def test_duplicate_ids_in_one_call_are_refused(opened):
    kind, store = opened
    index, full = _vectors(3, seed=2)
    docs = [Document(text="a", id="7"), Document(text="b", id="x"), Document(text="c", id="7")]
    with pytest.raises(ValueError, match="positions 0 and 2 have the same id '7'"):
        store.upsert(docs, index, full)
    assert store.count() == 3


def test_valid_json_metadata_round_trips_alike(opened):
    kind, store = opened
    meta = {"s": "città", "i": -(2**53 - 1), "j": 2**53 - 1, "f": 0.5, "b": False, "none": None,
            "list": [1, "a", [True]], "nested": {"k": {"deep": 1.25}}, "t": (1, 2)}
    index, full = _vectors(1, seed=3)
    store.upsert([Document(text="meta", id="meta", metadata=meta)], index, full)
    got = store.get(["meta"])[0].metadata
    assert got == {**meta, "t": [1, 2]}  # a tuple comes back as a list on every store
    store.delete(["meta"])


def test_ids_with_a_nul_are_refused_by_reads_and_deletes(opened):
    """No stored id holds a NUL, and none is compared as if cut at one: ``"a\x00b"`` is
    refused, not taken for ``"a"`` (MemoryStore's JSON functions read strings up to a NUL)."""
    kind, store = opened
    index, full = _vectors(2, seed=4)
    store.upsert([Document(text="a", id="a"), Document(text="ac", id="ac#0",
                                                        metadata={"doc_id": "a"})], index, full)
    for call in (store.delete, store.get, store.delete_documents, store.ids_of_documents):
        with pytest.raises(ValueError, match=r"the id at position 1 contains a NUL"):
            call(["x", "a\x00b"])
    assert store.count() == 5 and store.ids_of_documents(["a"]) == ["ac#0"]
    with pytest.raises(ValueError, match="NUL"):
        store.search(index[0], k=3, filter={"doc_id": "a\x00b"})
    store.delete(["a", "ac#0"])
    assert store.count() == 3


def test_milvus_limits_are_checked_for_the_whole_list_first(tmp_path):
    store = _store("milvus", tmp_path)
    store.open("limits", STAMP)
    try:
        index, full = _vectors(6)
        docs = [Document(text=f"t{i}", id=f"i{i}") for i in range(5)]
        store.batch_size = 2  # several requests: a late bad document must stop the first one
        for bad, message in [
            (Document(text="è" * 40_000, id="long"), "80000 bytes of text"),
            (Document(text="ok", id="i" * 513), "513 UTF-8 bytes"),
        ]:
            with pytest.raises(ValueError, match=message) as err:
                store.upsert([*docs, bad], index, full)
            assert "position 5" in str(err.value)
        assert store.count() == 0
    finally:
        store.drop()
        store.close()


# ---------------------------------------------------------------------- collection names
BAD_NAMES = ["../v", "..", ".", "/tmp/abs", "a/b", "a\\b", "a.b", "", " ", "1abc", "x" * 201,
             "with space", "trattino-no", "città", None, 3]


@pytest.mark.parametrize("name", BAD_NAMES, ids=[repr(n)[:20] for n in BAD_NAMES])
def test_bad_collection_names_are_refused_by_the_shared_rule(name):
    with pytest.raises(ValueError, match="invalid collection name"):
        check_collection_name(name)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ["../v", "..", "/tmp/x"])
def test_no_store_accepts_a_name_that_leaves_its_folder(kind, name, tmp_path):
    store = _store(kind, tmp_path / "root")
    (tmp_path / "v").mkdir()
    np.save(tmp_path / "v" / "seg-000001.index.npy", np.zeros((1, 8), np.float32))
    with pytest.raises(ValueError, match="invalid collection name"):
        store.open(name, STAMP)
    assert (tmp_path / "v" / "seg-000001.index.npy").exists()
    store.close()


@pytest.mark.parametrize("name", ["bertino", "_x", "wiki_2024", "A" * 200])
def test_good_names_work_on_every_store(name, tmp_path):
    for kind in KINDS:
        if (kind.startswith("qdrant") and not HAS_QDRANT) or (kind == "milvus"
                                                               and not HAS_MILVUS):
            continue
        store = _store(kind, tmp_path / kind)
        store.open(name, STAMP)
        assert name in store.collections()
        store.drop()
        store.close()


# ---------------------------------------------------------------------- opening without creating
@pytest.mark.parametrize("kind", KINDS)
def test_open_without_create_never_creates_and_lists_what_exists(kind, tmp_path):
    store = _store(kind, tmp_path)
    store.open("esiste", STAMP)
    store.close()
    if kind not in ("memory", "qdrant"):  # in memory, the data lives in the object
        store = _store(kind, tmp_path)
    with pytest.raises(CollectionNotFoundError, match="'esist' does not exist") as err:
        store.open("esist", STAMP, create=False)
    assert "'esiste'" in str(err.value) and err.value.existing == ["esiste"]
    assert store.collections() == ["esiste"]
    store.open("esiste", STAMP, create=False)
    store.drop()
    store.close()


def test_open_without_create_on_a_missing_folder_creates_no_folder(tmp_path):
    store = MemoryStore(path=tmp_path / "typo")
    with pytest.raises(CollectionNotFoundError, match="existing collections: none"):
        store.open("bertino", STAMP, create=False)
    assert not (tmp_path / "typo").exists()


# ---------------------------------------------------------------------- credentials
def test_safe_location_strips_user_info_and_secret_parameters():
    assert safe_location("http://admin:SECRET@host:6333/x?api_key=K&db=1") == \
        "http://host:6333/x?db=1"
    assert safe_location("https://u@[::1]:19530") == "https://[::1]:19530"
    assert safe_location("./local/folder") == "./local/folder"


@pytest.mark.skipif(not HAS_QDRANT, reason="qdrant-client is not installed")
def test_qdrant_credentials_never_shown_and_unreachable_is_one_error():
    from bertino_rag.stores import QdrantStore

    store = QdrantStore(url="http://admin:SECRET@127.0.0.1:1", api_key="KEY123", max_retries=1)
    store.retry.base_delay = 0.01
    assert "SECRET" not in repr(store) and "admin" not in repr(store)
    with pytest.raises(StoreConnectionError) as err:
        store.open(f"c_{uuid.uuid4().hex[:8]}", STAMP)
    text = str(err.value)
    assert text.startswith("cannot reach Qdrant at http://127.0.0.1:1")
    assert "SECRET" not in text and "KEY123" not in text and "admin" not in text
    assert err.value.kind == "Qdrant" and isinstance(err.value, StoreError)


@pytest.mark.skipif(not HAS_MILVUS, reason="pymilvus is not installed")
def test_milvus_location_that_is_neither_file_nor_url_is_refused_fast():
    with pytest.raises(ValueError, match="neither a Milvus Lite file"):
        make_store("milvus:./m")


@pytest.mark.skipif(not HAS_MILVUS, reason="pymilvus is not installed")
def test_milvus_unreachable_is_a_connection_error_without_secrets():
    from bertino_rag.stores import MilvusStore

    store = MilvusStore(uri="http://bob:PW@127.0.0.1:1", token="TOK", timeout=2)
    with pytest.raises(StoreConnectionError, match=r"cannot reach Milvus at http://127\.0\.0\.1"
                       ) as err:
        store.open("c", STAMP)
    assert "PW" not in str(err.value) and "TOK" not in str(err.value)


# ---------------------------------------------------------------------- connecting
def _unreachable(kind: str):
    """A store on a server URL where nothing listens (port 1), and the kind it reports."""
    if kind == "qdrant":
        if not HAS_QDRANT:
            pytest.skip("qdrant-client is not installed")
        from bertino_rag.stores import QdrantStore

        return QdrantStore(url="http://127.0.0.1:1", timeout=1, max_retries=0), "Qdrant"
    if importlib.util.find_spec("pymilvus") is None:
        pytest.skip("pymilvus is not installed")
    from bertino_rag.stores import MilvusStore

    return MilvusStore(uri="http://127.0.0.1:1", timeout=1, max_retries=0), "Milvus"


@pytest.mark.parametrize("kind", ["qdrant", "milvus"])
def test_constructor_connects_to_nothing_and_first_use_names_the_url(kind):
    """Constructors validate, open() connects: building a store on an unreachable server
    succeeds; every call that needs the server raises StoreConnectionError naming the store
    and the URL, and the next call tries again."""
    store, name = _unreachable(kind)  # nothing listens there: no error yet
    assert not store.is_open
    calls = [lambda: store.open("c", STAMP), store.collections,
             lambda: store.stored_stamp("c"), lambda: store.open("c", STAMP)]
    for call in calls:
        with pytest.raises(StoreConnectionError,
                           match=f"^cannot reach {name} at {re.escape('http://127.0.0.1:1')}"
                           ) as err:
            call()
        assert err.value.kind == name and err.value.location == "http://127.0.0.1:1"
    assert not store.is_open
    store.close()  # closing a store that never connected is fine


@pytest.mark.skipif(not HAS_MILVUS, reason="pymilvus / milvus-lite are not installed")
def test_milvus_lite_close_frees_the_file_for_another_process(tmp_path):
    import subprocess
    import sys

    from bertino_rag.stores import MilvusStore

    path = str(tmp_path / "shared.db")
    store = MilvusStore(uri=path)
    store.open("c", STAMP)
    store.close()
    code = ("from bertino_rag.adapters.milvus import MilvusStore; "
            f"s = MilvusStore(uri={path!r}); print(s.collections())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "['c']" in out.stdout
    store.open("c", STAMP)  # and this process opens it again
    assert store.count() == 0
    store.close()


@pytest.mark.skipif(not HAS_MILVUS, reason="pymilvus / milvus-lite are not installed")
def test_milvus_lite_file_held_by_another_process_says_it_is_in_use(tmp_path):
    import subprocess
    import sys

    from bertino_rag.stores import MilvusStore

    path = str(tmp_path / "held.db")
    code = ("import sys, time; from bertino_rag.adapters.milvus import MilvusStore; "
            f"s = MilvusStore(uri={path!r}); s.collections(); print('ready', flush=True); "
            "sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreConnectionError, match="in use by another process") as err:
            MilvusStore(uri=path).collections()
        assert "held.db" in str(err.value)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=60)
    again = MilvusStore(uri=path)  # free once the other process has ended
    again.open("c", STAMP)
    again.close()
    second = MilvusStore(uri=path)  # and a second store object in this process opens it
    second.open("c", STAMP)
    assert second.count() == 0
    second.close()


@pytest.mark.skipif(not HAS_QDRANT, reason="qdrant-client is not installed")
def test_qdrant_reports_only_what_is_not_stored(monkeypatch):
    """A request that failed after it was applied (a timeout on the answer) is not reported."""
    import httpx
    from qdrant_client.http.exceptions import ResponseHandlingException

    from bertino_rag.stores import QdrantStore, StoreWriteError

    store = QdrantStore(batch_size=2, max_retries=0)
    store.open(f"c_{uuid.uuid4().hex[:8]}", STAMP)
    real, calls = store.client.upsert, []

    def flaky(name, points, wait):
        calls.append(1)
        if len(calls) == 1:  # applied, then the answer is lost
            real(name, points=points, wait=wait)
            raise ResponseHandlingException(httpx.ReadTimeout("timed out"))
        if len(calls) == 2:  # lost before it was applied
            raise ResponseHandlingException(httpx.ReadTimeout("timed out"))
        return real(name, points=points, wait=wait)

    monkeypatch.setattr(store.client, "upsert", flaky)
    index, full = _vectors(6)
    docs = [Document(text=f"t{i}", id=f"i{i}") for i in range(6)]
    with pytest.raises(StoreWriteError) as err:
        store.upsert(docs, index, full)
    assert err.value.failed_ids == ["i2", "i3"]  # i0, i1 were stored despite the error
    assert store.count() == 4
