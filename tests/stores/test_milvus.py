"""MilvusStore on Milvus Lite: the conformance suite, index choice, writes and async.

One Milvus Lite file serves the whole module (starting Milvus Lite costs seconds); every test
uses its own collection. Filters are in ``test_milvus_filters.py``, congruence with the other
stores in ``test_milvus_congruence.py``.
"""

from __future__ import annotations

import asyncio
import os
import warnings

import numpy as np
import pytest

pytest.importorskip(
    "pymilvus", reason="pymilvus is not installed (pip install 'bertino-rag[milvus]')"
)
pytest.importorskip("milvus_lite", reason="milvus-lite is not installed")

from bertino_rag.stores import StoreError, StoreWriteError  # noqa: E402
from bertino_rag.stores.milvus import IndexFallbackWarning, MilvusStore  # noqa: E402
from bertino_rag.testing.conformance import StoreConformance  # noqa: E402
from bertino_rag.types import Document, Stamp  # noqa: E402


@pytest.fixture(scope="module")
def lite_uri(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("milvus") / "bertino.db")


class TestMilvusLite(StoreConformance):
    persistent = True
    full_tol = 1e-4  # full vectors are float16-rounded exactly as in the oracle
    full_vector_dtype = "float32"  # Milvus Lite: float16-rounded values held as float32

    @pytest.fixture
    def make_store(self, lite_uri):
        return lambda: MilvusStore(uri=lite_uri)


@pytest.mark.server
@pytest.mark.skipif(not os.environ.get("MILVUS_URI"),
                    reason="MILVUS_URI is not set: no Milvus server to test against")
class TestMilvusServer(StoreConformance):
    persistent = True
    full_tol = 1e-4

    @pytest.fixture
    def make_store(self):
        return lambda: MilvusStore(uri=os.environ["MILVUS_URI"])


# ---------------------------------------------------------------------- helpers
@pytest.fixture
def stamp(encoder) -> Stamp:
    return Stamp(model=encoder.model_id, full_dim=encoder.full_dim, index_dim=128)


@pytest.fixture
def docs_vectors(squad_slice, slice_vectors):
    docs = [Document(text=d["text"], id=d["id"], metadata=d["metadata"])
            for d in squad_slice["docs"]]
    return docs, slice_vectors["docs"], slice_vectors["queries"]


def _open(uri, name, stamp, **kw) -> MilvusStore:
    store = MilvusStore(uri=uri, **kw)
    store.open(name, stamp)
    return store


# ---------------------------------------------------------------------- index choice
@pytest.mark.parametrize("index", ["HNSW", "HNSW_SQ", "IVF_FLAT", "IVF_SQ8", "FLAT", "AUTOINDEX"])
def test_lite_builds_each_index_and_small_collections_work(lite_uri, stamp, docs_vectors, index):
    docs, vec, queries = docs_vectors
    with warnings.catch_warnings():
        warnings.simplefilter("error", IndexFallbackWarning)
        store = _open(lite_uri, f"idx_{index.lower()}", stamp, index=index, nlist=64)
    try:
        assert store._index_type == index
        store.upsert(docs[:5], vec.index[:5], vec.full[:5])  # fewer rows than nlist
        store.flush()  # seals a segment: Milvus Lite builds the index now
        hits = store.search(vec.index[3], k=2)
        assert hits[0].id == docs[3].id
        two = store.search(queries.index[0], k=3, full_vector=queries.full[0], rescore_k=5)
        assert len(two) == 3
    finally:
        store.drop()
        store.close()


@pytest.mark.parametrize(("index", "nearest"),
                         [("DISKANN", "HNSW"), ("IVF_PQ", "IVF_SQ8"), ("SCANN", "IVF_SQ8")])
def test_unbuildable_index_falls_back_with_one_warning(lite_uri, stamp, index, nearest):
    with pytest.warns(IndexFallbackWarning, match=f"{index}.*{nearest}") as record:
        store = _open(lite_uri, f"fb_{index.lower()}", stamp, index=index)
    try:
        assert len([w for w in record if w.category is IndexFallbackWarning]) == 1
        assert store._index_type == nearest
    finally:
        store.drop()
        store.close()


def test_bad_index_names():
    with pytest.raises(ValueError, match="binary vectors"):
        MilvusStore(uri="unused.db", index="BIN_FLAT")
    with pytest.raises(ValueError, match="unknown index 'FOO'"):
        MilvusStore(uri="unused.db", index="foo")


# ---------------------------------------------------------------------- connection
def test_unreachable_server_names_the_uri_and_hides_the_token():
    store = MilvusStore(uri="http://alice:s3cret@127.0.0.1:9", token="tok-123", timeout=2)
    with pytest.raises(StoreError, match=r"127\.0\.0\.1:9") as err:
        store.open("c", Stamp(model="m", full_dim=8, index_dim=4))
    assert "s3cret" not in str(err.value) and "tok-123" not in str(err.value)


def test_lite_file_is_opened_at_first_use_not_by_the_constructor(tmp_path):
    path = tmp_path / "sub" / "lazy.db"
    store = MilvusStore(uri=str(path))
    assert not path.exists()  # the constructor validates (and makes the folder) only
    assert store.is_lite and store.server_version.startswith("milvus_lite")  # connects
    assert path.exists() and store.collections() == []
    store.close()
    store.open("c", Stamp(model="m", full_dim=8, index_dim=4))  # connects again
    assert store.collections() == ["c"]
    store.close()


def test_token_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("MILVUS_TOKEN", "env-token-xyz")
    store = MilvusStore(uri="http://127.0.0.1:9", timeout=2)
    with pytest.raises(StoreError) as err:
        store.collections()
    assert "env-token-xyz" not in str(err.value) and "env-token-xyz" not in repr(err.value)


def test_existing_client_is_used(lite_uri, stamp, docs_vectors):
    from pymilvus import MilvusClient

    docs, vec, _ = docs_vectors
    client = MilvusClient(lite_uri)
    store = MilvusStore(client=client)
    store.open("given_client", stamp)
    try:
        store.upsert(docs[:3], vec.index[:3], vec.full[:3])
        assert client.query("given_client", filter="", output_fields=["count(*)"])[0][
            "count(*)"] == 3
        assert "given MilvusClient" in repr(store)
    finally:
        store.drop()
        store.close()
    assert client.list_collections() is not None  # not closed by the store


def test_foreign_collection_is_refused(lite_uri, stamp):
    from pymilvus import MilvusClient

    client = MilvusClient(lite_uri)
    client.create_collection("foreign", dimension=4)
    client.insert("foreign", [{"id": 1, "vector": [0.1, 0.2, 0.3, 0.4]}])
    with pytest.raises(StoreError, match="not created by bertino-rag"):
        _open(lite_uri, "foreign", stamp)
    assert client.query("foreign", filter="", output_fields=["count(*)"])[0]["count(*)"] == 1
    client.drop_collection("foreign")


# ---------------------------------------------------------------------- writes
def test_schema_limits_are_checked_before_writing(lite_uri, stamp, docs_vectors):
    docs, vec, _ = docs_vectors
    store = _open(lite_uri, "limits", stamp)
    try:
        for bad, msg in [
            (Document(text="x" * 70_000, id="long"), "split it into chunks"),
            (Document(text="ok", id="i" * 600), "at most 512 bytes"),
            (Document(text="ok", id="nan", metadata={"x": float("nan")}), "only finite numbers"),
        ]:
            with pytest.raises(ValueError, match=msg):
                store.upsert([docs[0], bad], vec.index[:2], vec.full[:2])
        assert store.count() == 0
    finally:
        store.drop()
        store.close()


def test_crash_mid_index_then_same_index_leaves_no_duplicates(lite_uri, minilm_path, encoder,
                                                             squad_slice, monkeypatch):
    from bertino_rag import Retriever

    texts = [q for q in squad_slice["queries"][:12]]  # short texts: fast to encode
    store = MilvusStore(uri=lite_uri, batch_size=2)
    retriever = Retriever(dim=128, store=store, encoder=encoder, collection="crash",
                          write_batch_size=4)  # no recreate: a failed call keeps its writes
    calls = {"n": 0}
    real = store.client.upsert

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise ConnectionError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(store.client, "upsert", failing)
    with pytest.raises(Exception, match="simulated crash"):
        retriever.index(texts)
    assert 0 < store.count() < len(texts)
    monkeypatch.setattr(store.client, "upsert", real)
    ids = retriever.index(texts)
    assert store.count() == len(set(ids)) == len(texts)
    store.drop()
    store.close()


def test_full_vectors_are_float16_rounded(lite_uri, stamp, docs_vectors):
    docs, vec, _ = docs_vectors
    store = _open(lite_uri, "f16", stamp)
    try:
        store.upsert(docs[:4], vec.index[:4], vec.full[:4])
        got = store.fetch_full([d.id for d in docs[:4]])
        np.testing.assert_array_equal(got, vec.full[:4].astype(np.float16).astype(np.float32))
    finally:
        store.drop()
        store.close()


def test_failed_writes_raise_store_write_error_sync_and_async(lite_uri, stamp, docs_vectors,
                                                             monkeypatch):
    """Every client call goes through one Retry: a transient error is retried and the write
    lands; an engine error fails the write with StoreWriteError naming the ids not stored,
    from upsert and aupsert alike (async is the same code in a worker thread)."""
    from pymilvus import MilvusException
    from pymilvus.exceptions import MilvusUnavailableException

    docs, vec, _ = docs_vectors
    store = _open(lite_uri, "write_errors", stamp, batch_size=4)
    store._retry.base_delay = 0.01
    real = store.client.upsert
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise MilvusUnavailableException(message="server restarting")
        return real(*args, **kwargs)

    def broken(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= 2:  # the first request (4 entities) is stored
            raise MilvusException(message="disk quota exceeded")
        return real(*args, **kwargs)

    try:
        monkeypatch.setattr(store.client, "upsert", flaky)
        store.upsert(docs[:8], vec.index[:8], vec.full[:8])
        assert calls["n"] == 3 and store.count() == 8
        ids = [d.id for d in docs[8:18]]
        monkeypatch.setattr(store.client, "upsert", broken)
        for write in (store.upsert, lambda *a: asyncio.run(store.aupsert(*a))):
            calls["n"] = 0
            with pytest.raises(StoreWriteError, match="disk quota exceeded") as err:
                write(docs[8:18], vec.index[8:18], vec.full[8:18])
            assert err.value.failed_ids == ids[4:]
            assert "Milvus at" in str(err.value)
        assert sorted(d.id for d in store.get(ids)) == sorted(ids[:4])
    finally:
        monkeypatch.setattr(store.client, "upsert", real)
        store.drop()
        store.close()


def test_fetch_marks_vanished_ids_missing(lite_uri, stamp, docs_vectors):
    """A candidate deleted between a search and the read of its documents or full vectors is
    marked missing, never raised (a search racing a delete)."""
    docs, vec, queries = docs_vectors
    store = _open(lite_uri, "vanished", stamp)
    try:
        store.upsert(docs[:6], vec.index[:6], vec.full[:6])
        ids = [docs[2].id, "gone", docs[4].id, docs[2].id]
        store.delete([docs[4].id])
        got = store._fetch(ids, documents=True, full=True)
        assert got.found.tolist() == [True, False, False, True]
        assert [d.id if d else None for d in got.documents] == [docs[2].id, None, None,
                                                                docs[2].id]
        np.testing.assert_array_equal(got.full[1], 0)
        np.testing.assert_array_equal(got.full[0], vec.full[2].astype(np.float16))
        with pytest.raises(KeyError, match="gone"):  # the public read still names them
            store.fetch_full(ids)
        hits = store.search(queries.index[0], k=6, full_vector=queries.full[0], rescore_k=6)
        assert docs[4].id not in {h.id for h in hits} and len(hits) == 5
    finally:
        store.drop()
        store.close()


# ---------------------------------------------------------------------- async
def test_async_upsert_and_search_equal_sync(lite_uri, stamp, docs_vectors):
    """Async calls run the sync code in a worker thread: concurrent async searches give the
    sync results."""
    docs, vec, queries = docs_vectors
    store = _open(lite_uri, "async_api", stamp)

    async def run():
        await store.aupsert(docs[:20], vec.index[:20], vec.full[:20])
        return await asyncio.gather(*(
            store.asearch(queries.index[i], k=3, full_vector=queries.full[i], rescore_k=10,
                          filter={"para": {"$lt": 15}})
            for i in range(3)
        ))

    try:
        results = asyncio.run(run())
        assert store.count() == 20
        for i, hits in enumerate(results):
            want = store.search(queries.index[i], k=3, full_vector=queries.full[i], rescore_k=10,
                                filter={"para": {"$lt": 15}})
            assert [(h.id, h.score) for h in hits] == [(h.id, h.score) for h in want]
    finally:
        store.drop()
        store.close()


def test_missing_pymilvus_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pymilvus", None)  # makes "import pymilvus" fail
    with pytest.raises(ImportError, match=r"pip install 'bertino-rag\[milvus\]'"):
        MilvusStore(uri="x.db")


_IDLE_CLIENT = """
import sys, time
import numpy as np
from bertino_rag.stores.milvus import MilvusStore
from bertino_rag.types import Document, Stamp

store = MilvusStore(uri=sys.argv[1])
store.open("idle", Stamp(model="m", full_dim=8, index_dim=4))
store.upsert([Document(text="uno", id="a")], np.eye(4, dtype=np.float32)[:1],
             np.eye(8, dtype=np.float32)[:1])
time.sleep(45)  # idle: pymilvus' default keepalive pings every 10 s
assert [h.id for h in store.search(np.eye(4, dtype=np.float32)[0], k=1)] == ["a"]
store.close()
"""


@pytest.mark.slow
def test_lite_connection_is_not_dropped_for_pinging(tmp_path):
    """An idle Milvus Lite client is not sent GOAWAY "too_many_pings" (it is with pymilvus'
    default 10 s keepalive, after about 40 s idle)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _IDLE_CLIENT, str(tmp_path / "idle.db")],
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "too_many_pings" not in out.stderr and "GOAWAY" not in out.stderr, out.stderr[-2000:]


def test_lexical_schema_and_too_many_terms(lite_uri, stamp, docs_vectors):
    """A hybrid collection has Milvus's BM25 function over the analyzer's terms, indexed with
    the stamp's k1 and b; a document with more terms than the lexical field holds is refused
    before anything of the call is written."""
    from bertino_rag.lexical import BM25, Analyzer, lexical_spec, term_token

    docs, vec, _ = docs_vectors
    lex = Stamp(model=stamp.model, full_dim=stamp.full_dim, index_dim=stamp.index_dim,
                lexical=lexical_spec(Analyzer(), BM25()))
    store = _open(lite_uri, "lexical_schema", lex)
    try:
        store.upsert(docs[:5], vec.index[:5], vec.full[:5])
        desc = store.client.describe_collection("lexical_schema")
        (function,) = desc["functions"]
        from pymilvus import FunctionType

        assert function["type"] == FunctionType.BM25
        assert function["input_field_names"] == ["lexical_text"]
        assert function["output_field_names"] == ["lexical"]
        index = store.client.describe_index("lexical_schema", "lexical")
        # k1 and b: Lite does not describe them; the scores show them (conformance, 1e-3)
        assert index["index_type"] == "SPARSE_INVERTED_INDEX"
        assert index["metric_type"] == "BM25"
        row = store.client.query("lexical_schema", filter=f'id == "{docs[0].id}"',
                                 output_fields=["lexical_text"])[0]
        terms = Analyzer().terms(docs[0].text)
        assert sorted(row["lexical_text"].split()) == sorted(term_token(t) for t in terms)
        long = Document(text=" ".join(str(i) for i in range(7000)), id="long")
        with pytest.raises(ValueError, match="split it into chunks"):
            store.upsert([docs[5], long], vec.index[5:7], vec.full[5:7])
        assert store.count() == 5
    finally:
        store.drop()
        store.close()


def _same_groups(got, want):
    assert [h.id for h in got] == [h.id for h in want]
    np.testing.assert_allclose([h.score for h in got], [h.score for h in want], atol=1e-5)
    for g, w in zip(got, want, strict=True):
        assert g.text == g.chunks[0].text and g.metadata == g.chunks[0].metadata
        # the native group holds the document's best chunks: what the generic one holds
        # (the chunks among its candidates), or more
        assert len(g.chunks) >= len(w.chunks)
        assert [c.id for c in g.chunks[: len(w.chunks)]] == [c.id for c in w.chunks]


def test_group_by_document_uses_grouping_search_and_equals_the_reference(lite_uri,
                                                                         monkeypatch):
    """Single-stage grouped search is Milvus's grouping search (capability ``grouping``) and
    returns what the funnel's generic grouping returns on the reference store; two-stage
    search, a collection without the ``document`` field and a search over Milvus's cap of
    chunks go through the funnel's generic grouping, with the same results."""
    from bertino_rag.stores import ReferenceStore
    from bertino_rag.testing.conformance import random_corpus

    corpus = random_corpus(seed=5)
    plain = [Document(text=d["text"], id=d["id"], metadata=d["metadata"])
             for d in corpus["docs"]]
    docs = StoreConformance._as_chunks(plain, n_docs=10, per_doc=4) + plain[40:]
    vec, q = corpus["doc_vectors"], corpus["query_vectors"]
    index, full, qi, qf = vec.index[: len(docs)], vec.full[: len(docs)], q.index[:6], q.full[:6]
    stamp = Stamp(model=corpus["model"], full_dim=corpus["full_dim"], index_dim=128)
    store, oracle = _open(lite_uri, "grouped", stamp), ReferenceStore("milvus-grouped")
    oracle.open("grouped", stamp, recreate=True)
    try:
        for s in (store, oracle):
            s.upsert(docs, index, full)
        assert store.capabilities.grouping
        grouped: list[str] = []
        real = store.client.search
        monkeypatch.setattr(store.client, "search", lambda *a, **kw: grouped.append(
            kw.get("group_by_field")) or real(*a, **kw))

        def same(flt=None, **kw):
            got = store.search_batch(qi, k=5, filter=flt, group_by="document", **kw)
            want = oracle.search_batch(qi, k=5, filter=flt, group_by="document", **kw)
            for g, w in zip(got, want, strict=True):
                _same_groups(g, w)
            assert all(len(g) == 5 for g in got)

        for flt in (None, {"para": {"$lt": 30}}):
            same(flt, group_size=2)
        assert grouped and set(grouped) == {"document"}
        grouped.clear()
        # two-stage: the funnel's candidates grouped (generic path), as on every store
        same(group_size=2, full_vectors=qf, rescore_k=30)
        assert grouped and set(grouped) == {None}
        grouped.clear()
        # more chunks than Milvus returns per query: declined, grouped generically
        same(group_size=4000)
        assert grouped and set(grouped) == {None}
        # a collection created without the document field: the generic path
        store.close()
        old = MilvusStore(uri=lite_uri)
        old.open("grouped", stamp)
        assert old._grouped and old.capabilities.grouping
        old._grouped = False
        assert not old.capabilities.grouping
        real_old = old.client.search
        monkeypatch.setattr(old.client, "search", lambda *a, **kw: grouped.append(
            kw.get("group_by_field")) or real_old(*a, **kw))
        grouped.clear()
        assert [h.id for h in old.search(qi[0], k=5, group_by="document")] == [
            h.id for h in oracle.search(qi[0], k=5, group_by="document")]
        assert set(grouped) == {None}
        with pytest.raises(ValueError, match="doc_id metadata of more than 512"):
            old.upsert([Document(text="x", id="x", metadata={"doc_id": "d" * 600})],
                       index[:1], full[:1])
        old.drop()
        old.close()
    finally:
        oracle.drop()
