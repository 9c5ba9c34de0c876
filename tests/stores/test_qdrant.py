"""QdrantStore: the conformance suite in memory, in a folder and (with QDRANT_URL) on a server;
congruence with MemoryStore; both two-stage strategies; filters, retries, async, errors."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid

import numpy as np
import pytest

pytest.importorskip("qdrant_client", reason="qdrant-client is not installed (extra 'qdrant')")

from qdrant_client import QdrantClient, models  # noqa: E402

from bertino_rag.search.filters import FilterError, matches, parse_filter  # noqa: E402
from bertino_rag.stores import MemoryStore, StoreError, StoreWriteError  # noqa: E402
from bertino_rag.stores.qdrant import QdrantStore, point_id  # noqa: E402
from bertino_rag.testing.conformance import SCORE_TOL, StoreConformance, same_ranking  # noqa: E402
from bertino_rag.types import Document, Stamp, StampMismatchError  # noqa: E402

from . import equivalence  # noqa: E402

QDRANT_URL = os.environ.get("QDRANT_URL")
# the client checks a server's version in a background thread; unreachable test URLs warn
pytestmark = pytest.mark.filterwarnings("ignore:Failed to obtain server version:UserWarning")


class TestQdrantInMemory(StoreConformance):
    full_tol = 1e-4  # same float16 values as the oracle: only the summation order differs
    full_vector_dtype = "float32"  # local mode: float16-rounded values held as float32

    @pytest.fixture
    def make_store(self):
        store = QdrantStore()
        return lambda: store  # ":memory:" data lives in the client: reopen = same object


class TestQdrantOnDisk(StoreConformance):
    persistent = True
    full_tol = 1e-4
    full_vector_dtype = "float32"

    @pytest.fixture
    def make_store(self, fast_dir):
        return lambda: QdrantStore(path=fast_dir)


@pytest.mark.server
@pytest.mark.skipif(not QDRANT_URL, reason="QDRANT_URL is not set: no Qdrant server to test")
class TestQdrantServer(StoreConformance):
    persistent = True
    full_vector_dtype = "float16"
    engine_rescores = True  # a server's two-stage search is one prefetch query

    @pytest.fixture
    def make_store(self):
        return lambda: QdrantStore(url=QDRANT_URL)


# --------------------------------------------------------------------------- helpers
@pytest.fixture
def fast_dir(tmp_path_factory):
    """A folder for local-mode persistence tests, in RAM (/dev/shm) where there is one.

    Local mode commits every point to SQLite with an fsync: on this machine's disk that is
    ~30 ms a point, on tmpfs ~1 ms. The persistence semantics are the same.
    """
    import shutil
    import tempfile

    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        path = tempfile.mkdtemp(prefix="bertino-qdrant-", dir="/dev/shm")
        yield path
        shutil.rmtree(path, ignore_errors=True)
    else:
        yield str(tmp_path_factory.mktemp("qdrant"))


@pytest.fixture
def stamp(encoder):
    return Stamp(model=encoder.model_id, full_dim=encoder.full_dim, index_dim=128)


@pytest.fixture
def data(squad_slice, slice_vectors):
    docs = [Document(text=d["text"], id=d["id"], metadata=d["metadata"])
            for d in squad_slice["docs"]]
    return docs, slice_vectors["docs"], slice_vectors["queries"]


def _name() -> str:
    return f"t_{uuid.uuid4().hex[:10]}"


# --------------------------------------------------------------------------- locations
def test_one_location_only(tmp_path):
    with pytest.raises(ValueError, match="path and url"):
        QdrantStore(path=tmp_path, url="http://localhost:6333")
    with pytest.raises(ValueError, match="url and client"):
        QdrantStore(url="http://localhost:6333", client=QdrantClient(":memory:"))
    with pytest.raises(ValueError, match="api_key goes with url"):
        QdrantStore(path=tmp_path, api_key="k")
    with pytest.raises(TypeError, match="QdrantClient"):
        QdrantStore(client="http://localhost:6333")
    with pytest.raises(ValueError, match="quantization"):
        QdrantStore(quantization="int4")


def test_url_that_is_no_server_url_is_refused_by_the_constructor():
    with pytest.raises(ValueError, match="invalid host or port") as err:
        QdrantStore(url="http://admin:SECRET@qdrant.example:port")
    assert "SECRET" not in str(err.value) and "admin" not in str(err.value)
    with pytest.raises(ValueError, match=r"http:// or https://"):
        QdrantStore(url="ftp://qdrant.example:6333")
    QdrantStore(url="localhost:6333")  # qdrant-client reads this one as a host and port


def test_in_memory_and_folder_stores_build_their_client_at_first_use(tmp_path):
    memory = QdrantStore()
    assert memory.collections() == []  # built here
    memory.open("c", Stamp(model="m", full_dim=8, index_dim=4))
    assert memory.collections() == ["c"]
    folder = QdrantStore(path=tmp_path / "qd")
    assert not (tmp_path / "qd").exists()  # the constructor creates and locks nothing
    with pytest.raises(StoreError, match="call open"):
        folder.client  # noqa: B018 - a folder's client exists while a collection is open
    folder.open("c", Stamp(model="m", full_dim=8, index_dim=4))
    assert folder.collections() == ["c"] and (tmp_path / "qd").is_dir()
    folder.close()
    assert QdrantStore(path=tmp_path / "qd").collections() == ["c"]  # the folder was freed


def test_api_key_from_environment_is_never_shown(monkeypatch):
    monkeypatch.setenv("QDRANT_API_KEY", "s3cret-key-xyz")
    store = QdrantStore(url="https://127.0.0.1:9")  # nothing listens there: not contacted
    assert store.client.init_options["api_key"] == "s3cret-key-xyz"
    assert not store.local and store.two_stage == "prefetch"
    assert "s3cret" not in repr(store)


def test_missing_client_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "qdrant_client", None)  # import qdrant_client fails
    monkeypatch.delitem(sys.modules, "bertino_rag.stores.qdrant.client")
    import bertino_rag.stores.qdrant as package  # the package imports no client

    with pytest.raises(ImportError, match=r"pip install 'bertino-rag\[qdrant\]'"):
        package.QdrantStore  # noqa: B018 - imported when asked for


def test_client_argument_and_stamp_fallback(stamp, data):
    """Without collection metadata the stamp lives in a companion collection, and is checked."""
    docs, vec, _ = data
    client = QdrantClient(":memory:")
    store = QdrantStore(client=client)
    store._metadata_supported = False  # as with a server or client before 1.16
    name = _name()
    store.open(name, stamp)
    store.upsert(docs[:5], vec.index[:5], vec.full[:5])
    assert client.get_collection(name).config.metadata is None
    assert client.collection_exists(name + "__bertino_stamp")
    again = QdrantStore(client=client)
    again.open(name, stamp)
    assert again.count() == 5
    # the intent record of chunked edits is kept beside the stamp in the companion's point
    record = {"owner": {"host": "elsewhere", "pid": 1},
              "docs": {"a": {"new": [docs[0].id], "stale": [docs[1].id]}}}
    again._write_intent(record)
    assert again._read_intent() == record
    third = QdrantStore(client=client)
    third._metadata_supported = False
    third.open(name, stamp)  # repairs: a's new version is whole, its stale id goes
    assert third._read_intent() is None and again.count() == 4
    assert client.get_collection(name).config.metadata is None
    with pytest.raises(StampMismatchError, match="index_dim"):
        QdrantStore(client=client).open(name, Stamp(stamp.model, stamp.full_dim, 64))
    assert again.count() == 4
    again.drop()
    assert not client.collection_exists(name + "__bertino_stamp")


def test_foreign_collection_is_refused(stamp):
    client = QdrantClient(":memory:")
    client.create_collection("theirs", vectors_config=models.VectorParams(
        size=4, distance=models.Distance.COSINE))
    with pytest.raises(StoreError, match="no bertino-rag stamp"):
        QdrantStore(client=client).open("theirs", stamp)
    assert client.collection_exists("theirs")


# --------------------------------------------------------------------------- layout
def test_collection_layout(stamp):
    store = QdrantStore()
    store.open("full", stamp)
    config = store.client.get_collection("full").config
    vectors = config.params.vectors
    assert set(vectors) == {"dim128", "full"}
    assert vectors["dim128"].size == 128 and not vectors["dim128"].on_disk
    full = vectors["full"]
    assert (full.size, full.on_disk, full.hnsw_config.m) == (stamp.full_dim, True, 0)
    assert full.datatype == models.Datatype.FLOAT16
    assert {v.distance for v in vectors.values()} == {models.Distance.COSINE}
    assert Stamp.from_dict(config.metadata["bertino_rag"]["stamp"]) == stamp
    slim = Stamp(stamp.model, stamp.full_dim, 128, full_vectors=False)
    store.open("slim", slim)
    assert set(store.client.get_collection("slim").config.params.vectors) == {"dim128"}


@pytest.mark.parametrize("kind", ["int8", "binary"])
def test_quantization_is_configured_and_local_mode_says_it_ignores_it(kind, stamp, data):
    docs, vec, queries = data
    with pytest.warns(UserWarning, match="local mode ignores quantization"):
        store = QdrantStore(quantization=kind)
    store.open(_name(), stamp)
    quant = store.client.get_collection(store.collection).config.params.vectors[
        "dim128"].quantization_config
    assert store.client.get_collection(store.collection).config.params.vectors[
        "dim128"].on_disk  # originals on disk, codes in RAM
    assert isinstance(quant, models.ScalarQuantization if kind == "int8"
                      else models.BinaryQuantization)
    store.upsert(docs, vec.index, vec.full)
    assert store._params() is None  # no quantization search params sent to local mode
    assert len(store.search(queries.index[0], k=3)) == 3


# --------------------------------------------------------------------------- congruence
@pytest.fixture
def pair(stamp, data):
    """The same real vectors in a MemoryStore (the oracle) and a local-mode QdrantStore."""
    docs, vec, _ = data
    oracle, store = MemoryStore(), QdrantStore()
    for s in (oracle, store):
        s.open("congruence", stamp)
        s.upsert(docs, vec.index, vec.full)
    return oracle, store


def _max_diff(a, b):
    return max((abs(x.score - y.score) for ha, hb in zip(a, b, strict=True)
                for x, y in zip(ha, hb, strict=True)), default=0.0)


def test_congruence_with_memory_store(pair, data):
    oracle, store = pair
    _, _, queries = data
    q, qf = queries.index[::5], queries.full[::5]
    cases = [
        ("first stage", dict(), None),
        ("two stage", dict(full_vectors=qf, rescore_k=40), None),
        ("filtered", dict(full_vectors=qf, rescore_k=40), {"para": {"$lt": 12}}),
    ]
    for label, kw, flt in cases:
        want = oracle.search_batch(q, 10, flt, **kw)
        got = store.search_batch(q, 10, flt, **kw)
        for g, w in zip(got, want, strict=True):
            same_ranking([h.id for h in g], [h.score for h in g],
                         [h.id for h in w], [h.score for h in w], tol=SCORE_TOL)
        print(f"{label}: max |score - MemoryStore score| = {_max_diff(got, want):.2e}")


def test_prefetch_and_rescore_strategies_agree(pair, data, monkeypatch):
    """The server strategy (one prefetch query: the ``rescore`` pushdown) run in local mode
    equals the local one (a truncated query, then the funnel's numpy rescoring)."""
    _, store = pair
    _, _, queries = data
    prefetch = QdrantStore(client=store.client, two_stage="prefetch")
    prefetch.open(store.collection, store.stamp)
    assert store.two_stage == "rescore" and not store.capabilities.rescore
    assert prefetch.capabilities.rescore
    calls = []
    real = prefetch._knn_rescored
    monkeypatch.setattr(prefetch, "_knn_rescored",
                        lambda *a, **kw: calls.append(1) or real(*a, **kw))
    q, qf = queries.index[::4], queries.full[::4]
    for flt in (None, {"title": {"$in": ["Amazzonia"]}}):
        rescored = store.search_batch(q, 8, flt, full_vectors=qf, rescore_k=30)
        prefetched = prefetch.search_batch(q, 8, flt, full_vectors=qf, rescore_k=30)
        for a, b in zip(rescored, prefetched, strict=True):
            assert [h.id for h in a] == [h.id for h in b]
            np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=1e-6)
            assert [(h.text, h.metadata) for h in a] == [(h.text, h.metadata) for h in b]
    assert calls == [1, 1]


# --------------------------------------------------------------------------- filters
def test_filter_types_follow_reference_semantics(stamp, data):
    docs, vec, queries = data
    values = [True, 1, "1", 2.0, 2, 0, False, "b", 3.5, None]
    typed = [Document(text=d.text, id=d.id,
                      metadata={} if v is None else {"v": v, "title": d.metadata["title"]})
             for d, v in zip(docs, values, strict=False)]
    store = QdrantStore()
    store.open(_name(), stamp)
    store.upsert(typed, vec.index[: len(typed)], vec.full[: len(typed)])
    for flt in [{"v": True}, {"v": 1}, {"v": "1"}, {"v": 2}, {"v": 2.0}, {"v": False},
                {"v": 0}, {"v": {"$in": [1, "b"]}}, {"v": {"$in": [True, 2]}},
                {"v": {"$in": []}}, {"v": {"$gte": 1}}, {"v": {"$lt": 2.5}},
                {"v": {"$gt": 0, "$lte": 3.5}}, {"v": {"$eq": 3.5}}, {"w": 1}]:
        want = sorted(d.id for d in typed if matches(d.metadata, parse_filter(flt)))
        got = sorted(h.id for h in store.search(queries.index[0], k=50, filter=flt))
        assert got == want, flt


def test_string_range_and_native_filter(pair, data):
    _, store = pair
    _, vec, _ = data
    with pytest.raises(FilterError, match="no range on strings"):
        store.search(vec.index[0], k=3, filter={"title": {"$gt": "A"}})
    native = models.Filter(must=[models.FieldCondition(
        key="metadata.title", match=models.MatchValue(value="Amazzonia"))])
    a = store.search(vec.index[0], k=5, filter=native)
    b = store.search(vec.index[0], k=5, filter={"title": "Amazzonia"})
    assert [h.id for h in a] == [h.id for h in b] and a
    with pytest.raises(TypeError, match="models.Filter"):
        store.search(vec.index[0], k=3, filter=[("title", "Amazzonia")])


# --------------------------------------------------------------------------- bulk writes
def _timeout():
    import httpx
    from qdrant_client.http.exceptions import ResponseHandlingException

    return ResponseHandlingException(httpx.ReadTimeout("timed out"))


def test_transient_errors_are_retried(stamp, data, monkeypatch):
    docs, vec, _ = data
    store = QdrantStore(batch_size=16)
    store.retry.base_delay = 0.001
    store.open(_name(), stamp)
    real, calls = store.client.upsert, []

    def flaky(*args, **kwargs):
        calls.append(kwargs.get("wait"))
        if len(calls) in (2, 3):
            raise _timeout()
        return real(*args, **kwargs)

    monkeypatch.setattr(store.client, "upsert", flaky)
    store.upsert(docs, vec.index, vec.full)
    assert store.count() == len(docs)
    assert len(calls) == -(-len(docs) // 16) + 2 and calls[-1] is True


def test_failed_batch_names_its_ids_and_a_rerun_completes(stamp, data, monkeypatch):
    from qdrant_client.http.exceptions import UnexpectedResponse

    docs, vec, _ = data
    store = QdrantStore(batch_size=10, max_retries=2)
    store.retry.base_delay = 0.001
    store.open(_name(), stamp)
    real = store.client.upsert
    doomed = {point_id(d.id) for d in docs[10:20]}

    def broken(name, points, wait):
        if doomed & set(points.ids):
            raise UnexpectedResponse(503, "Service Unavailable", b"", None)
        return real(name, points=points, wait=wait)

    monkeypatch.setattr(store.client, "upsert", broken)
    with pytest.raises(StoreWriteError, match="upsert of 10 documents failed") as err:
        store.upsert(docs, vec.index, vec.full)
    assert err.value.failed_ids == [d.id for d in docs[10:20]]
    assert docs[10].id in str(err.value)
    assert store.count() == len(docs) - 10  # the other batches were written
    monkeypatch.setattr(store.client, "upsert", real)
    store.upsert(docs, vec.index, vec.full)  # the same call again
    assert store.count() == len(docs)


def test_client_errors_are_not_retried(stamp, data, monkeypatch):
    from qdrant_client.http.exceptions import UnexpectedResponse

    docs, vec, _ = data
    store = QdrantStore()
    store.open(_name(), stamp)
    calls = []

    def bad_request(*args, **kwargs):
        calls.append(1)
        raise UnexpectedResponse(400, "Bad Request", b"wrong vector", None)

    monkeypatch.setattr(store.client, "upsert", bad_request)
    with pytest.raises(StoreError, match=docs[0].id):
        store.upsert(docs[:3], vec.index[:3], vec.full[:3])
    assert calls == [1]


@pytest.mark.filterwarnings("ignore::bertino_rag.encoder.TruncationWarning")
def test_retriever_index_rerun_after_a_crash(encoder, squad_slice, monkeypatch):
    from bertino_rag import Retriever

    texts = [d["text"] for d in squad_slice["docs"][:12]]
    store = QdrantStore()
    r = Retriever(dim=128, encoder=encoder, store=store, write_batch_size=4, chunking=False)
    real, calls = store.client.upsert, []

    def crash_on_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("process killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(store.client, "upsert", crash_on_third)
    with pytest.raises(StoreError):
        r.index(texts)
    assert r.count() == 8
    r.index(texts)
    assert r.count() == len(texts)
    hits = r.search(texts[5], k=len(texts))
    assert len({h.id for h in hits}) == len(texts)  # no duplicates
    assert hits[0].text == texts[5]


# --------------------------------------------------------------------------- async
async def test_async_on_a_local_folder(fast_dir, stamp, data):
    """Local mode runs the sync client in a worker thread: one engine, one set of data."""
    docs, vec, queries = data
    store = QdrantStore(path=fast_dir)
    store.open(_name(), stamp)
    try:
        await store.aupsert(docs[:30], vec.index[:30], vec.full[:30])
        assert store.count() == 30
        got = await asyncio.gather(*(
            store.asearch(queries.index[i], k=5, full_vector=queries.full[i], rescore_k=20)
            for i in range(4)))
        for i, hits in enumerate(got):
            sync = store.search(queries.index[i], k=5, full_vector=queries.full[i], rescore_k=20)
            assert [h.id for h in hits] == [h.id for h in sync]
    finally:
        store.drop()
        store.close()


# --------------------------------------------------------------------------- slow
@pytest.mark.slow
def test_squad_two_stage_keeps_99_percent_of_full_dim_ndcg(encoder, squad):
    """All of squad-it-dev (1,128 paragraphs, 4,332 questions): rescore_k=100 on 128-d vs
    exact full-dim. (On the first 1,000 questions alone the ratio is 98.7%: use them all.)"""
    pytrec_eval = pytest.importorskip("pytrec_eval")
    doc_ids = list(squad.corpus)
    qids = [q for q in squad.qrels if q in squad.queries]
    docs = [Document(text=squad.corpus[d]["text"], id=d) for d in doc_ids]
    dv = encoder.encode([d.text for d in docs], warn_truncation=False)
    qv = encoder.encode([squad.queries[q] for q in qids], kind="query")
    exact = MemoryStore()
    exact.open("exact", Stamp("m", encoder.full_dim, encoder.full_dim, full_vectors=False))
    exact.upsert(docs, dv.full)
    store = QdrantStore()
    store.open("squad", Stamp("m", encoder.full_dim, 128))
    store.upsert(docs, dv.index, dv.full)

    def ndcg(hits):
        run = {q: {h.id: h.score for h in hs} for q, hs in zip(qids, hits, strict=True)}
        ev = pytrec_eval.RelevanceEvaluator({q: squad.qrels[q] for q in qids}, {"ndcg_cut.10"})
        return float(np.mean([v["ndcg_cut_10"] for v in ev.evaluate(run).values()]))

    base = ndcg(exact.search_batch(qv.full, 10))
    two = ndcg(store.search_batch(qv.index, 10, full_vectors=qv.full, rescore_k=100))
    assert two >= 0.99 * base, (two, base)


@pytest.mark.slow
def test_example_runs_on_local_mode(minilm_path, squad_slice, tmp_path):
    import subprocess

    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(2):
        texts = [d["text"] for d in squad_slice["docs"][i * 3:(i + 1) * 3]]
        (folder / f"doc{i}.txt").write_text("\n\n".join(texts), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "QDRANT_URL"}
    example = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "qdrant_server.py")
    out = subprocess.run(
        [sys.executable, example, str(folder), "--model", minilm_path, "--path",
         str(tmp_path / "q"), "-q", squad_slice["docs"][4]["text"][:200]],
        capture_output=True, text=True, env=env, timeout=600, check=True)
    assert "local mode" in out.stderr
    assert "6 paragraphs" in out.stdout and "doc1.txt#1" in out.stdout


# --------------------------------------------------------------------------- lexical
def _lex_stamp(stamp):
    from bertino_rag.lexical import BM25, Analyzer, lexical_spec

    return Stamp(model=stamp.model, full_dim=stamp.full_dim, index_dim=stamp.index_dim,
                 lexical=lexical_spec(Analyzer(), BM25()))


def test_sparse_layout_and_avgdl_kept_with_the_stamp(stamp, data, fast_dir):
    """The ``lexical`` sparse vector has the IDF modifier; the avgdl of the first write is
    kept with the stamp and used by later writes and by a reopened store."""
    from bertino_rag.lexical import Analyzer, mean_length

    docs, vec, _ = data
    name, lex = _name(), _lex_stamp(stamp)
    store = QdrantStore(path=fast_dir)
    store.open(name, lex)
    assert store.lexical_avgdl is None  # nothing written yet
    store.upsert(docs[:40], vec.index[:40], vec.full[:40])
    first = mean_length(Analyzer().counts_batch(d.text for d in docs[:40]))
    assert store.lexical_avgdl == pytest.approx(first)
    store.upsert(docs[40:], vec.index[40:], vec.full[40:])
    assert store.lexical_avgdl == pytest.approx(first)  # fixed: values are written once
    info = store.client.get_collection(name)
    assert info.config.params.sparse_vectors["lexical"].modifier == models.Modifier.IDF
    point = store.client.retrieve(name, [point_id(docs[0].id)], with_vectors=["lexical"])[0]
    assert len(point.vector["lexical"].indices) == len(set(Analyzer().terms(docs[0].text)))
    store.close()
    again = QdrantStore(path=fast_dir)
    again.open(name, lex)
    try:
        assert again.lexical_avgdl == pytest.approx(first)
    finally:
        again.drop()
        again.close()


def test_local_lexical_index_equals_the_engine_and_follows_writes(stamp, data, squad_slice,
                                                                   fast_dir):
    """Local mode scores unfiltered lexical queries in numpy (the engine loops in Python):
    the same ids and scores as the engine's own sparse search (reached here through a native
    filter), and stale after a write by another store on the same folder."""
    docs, vec, _ = data
    name, lex = _name(), _lex_stamp(stamp)
    store, other = QdrantStore(path=fast_dir), QdrantStore(path=fast_dir)
    store.open(name, lex)
    other.open(name, lex)
    try:
        store.upsert(docs, vec.index, vec.full)
        for query in squad_slice["queries"][:30:3]:
            ours = store.lexical_search(query, k=10)
            engine = store.lexical_search(query, k=10, filter=models.Filter())
            same_ranking([h.id for h in ours], [h.score for h in ours],
                         [h.id for h in engine], [h.score for h in engine], tol=1e-4)
            assert [h.text for h in ours] == [h.text for h in engine]
        query = "tartarughe giganti di Zanzibar"
        assert store.lexical_search(query, k=3) == []
        other.upsert([Document(text="Zanzibar ospita la tartaruga gigante.", id="zz")],
                     vec.index[:1], vec.full[:1])
        assert [h.id for h in store.lexical_search(query, k=3)] == ["zz"]
        other.delete(["zz"])
        assert store.lexical_search(query, k=3) == []
    finally:
        store.drop()
        store.close()
        other.close()


def _chunked(n_docs: int = 12, per_doc: int = 4, dim: int = 32, full_dim: int = 64):
    """Chunks of ``n_docs`` documents plus as many whole documents, on random unit vectors."""
    rng = np.random.default_rng(7)
    docs = [Document(text=f"d{d} c{c}", id=f"d{d}#{c}",
                     metadata={"doc_id": f"d{d}", "chunk": c, "tema": d % 3})
            for d in range(n_docs) for c in range(per_doc)]
    docs += [Document(text=f"intero {i}", id=f"w{i}", metadata={"tema": i % 3})
             for i in range(n_docs)]
    full = rng.normal(size=(len(docs), full_dim)).astype(np.float32)
    full /= np.linalg.norm(full, axis=1, keepdims=True)
    index = full[:, :dim] / np.linalg.norm(full[:, :dim], axis=1, keepdims=True)
    queries = rng.normal(size=(6, full_dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    qindex = queries[:, :dim] / np.linalg.norm(queries[:, :dim], axis=1, keepdims=True)
    return docs, index, full, qindex, queries, Stamp("m", full_dim, dim)


def _same_groups(got, want):
    assert [h.id for h in got] == [h.id for h in want]
    np.testing.assert_allclose([h.score for h in got], [h.score for h in want], atol=2e-3)
    for g, w in zip(got, want, strict=True):
        assert g.text == g.chunks[0].text and g.metadata == g.chunks[0].metadata
        # the native group holds the document's best chunks: what the generic one holds, or more
        n = min(len(g.chunks), len(w.chunks))
        assert [c.id for c in g.chunks[:n]] == [c.id for c in w.chunks[:n]]


@pytest.mark.parametrize("two_stage", ["rescore", "prefetch"])
def test_group_by_document_uses_the_group_api_and_agrees_with_memory(two_stage, monkeypatch):
    docs, index, full, qi, qf, stamp = _chunked()
    store, memory = QdrantStore(two_stage=two_stage), MemoryStore()
    for s in (store, memory):
        s.open("g", stamp)
        s.upsert(docs, index, full)
    calls = []
    real = store.client.query_points_groups
    monkeypatch.setattr(store.client, "query_points_groups",
                        lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    for flt in (None, {"tema": 1}):
        got = store.search_batch(qi, k=5, filter=flt, group_by="document", group_size=2)
        want = memory.search_batch(qi, k=5, filter=flt, group_by="document", group_size=2)
        for g, w in zip(got, want, strict=True):
            _same_groups(g, w)
    assert len(calls) == 2 * len(qi) and all(kw["limit"] == 5 for kw in calls)
    calls.clear()
    got = store.search_batch(qi, k=5, group_by="document", full_vectors=qf, rescore_k=30)
    want = memory.search_batch(qi, k=5, group_by="document", full_vectors=qf, rescore_k=30)
    for g, w in zip(got, want, strict=True):
        _same_groups(g, w)
    # two-stage grouping is the funnel's, on every store: the generic path
    assert calls == []


def test_collections_of_layout_1_are_grouped_by_the_generic_path(monkeypatch):
    docs, index, full, qi, _, stamp = _chunked()
    store = QdrantStore()
    store.open("old", stamp)
    store.upsert(docs, index, full)
    want = store.search_batch(qi, k=4, group_by="document")
    store._version = 1  # as read from a collection created before the group key
    monkeypatch.setattr(store.client, "query_points_groups",
                        lambda *a, **kw: pytest.fail("group API on a layout-1 collection"))
    got = store.search_batch(qi, k=4, group_by="document")
    for g, w in zip(got, want, strict=True):
        assert [h.id for h in g] == [h.id for h in w]


# --------------------------------------------------------------------------- pushdowns
@pytest.fixture(scope="module")
def random_data():
    return equivalence.corpus()


@pytest.mark.parametrize("two_stage", ["rescore", "prefetch"])
@pytest.mark.parametrize("flt", [None, {"para": {"$lt": 40}}])
def test_pushdowns_equal_the_reference_store(two_stage, flt, random_data):
    """What the store does itself returns the reference store's hits in every mode: local
    mode's numpy lexical index (no filter) or the engine's sparse search in the same call as
    the dense one (joint candidates, with a filter); numpy rescoring or the one prefetch query
    (``rescore``); the group API (``grouping``)."""
    store = QdrantStore(two_stage=two_stage)
    caps = store.capabilities
    assert caps.joint_candidates and caps.grouping and caps.rescore == (two_stage == "prefetch")
    equivalence.fill(store, random_data)
    equivalence.assert_same_as_reference(store, random_data, flt)


@pytest.mark.parametrize("two_stage", ["rescore", "prefetch"])
def test_candidates_deleted_between_two_reads_drop_out(two_stage, random_data, monkeypatch):
    """A search racing a delete never raises: candidates gone between ``_knn`` (or
    ``_bm25``) and the reads of full vectors or documents drop out, in every mode."""
    store = QdrantStore(two_stage=two_stage)
    equivalence.fill(store, random_data)
    equivalence.assert_deleted_candidates_drop_out(store, random_data, monkeypatch)


def test_local_lexical_index_is_the_open_collection_s(random_data):
    """The numpy lexical index belongs to one collection: a store that opens another one
    (after as many writes, so the same write count) searches the other one's documents."""
    store = QdrantStore()
    equivalence.fill(store, random_data, name="first")
    query = random_data["queries"][0]
    first = store.lexical_search(query, k=3)
    other = {**random_data, "docs": [{**d, "id": "other-" + d["id"]}
                                     for d in random_data["docs"]]}
    equivalence.fill(store, other, name="second")
    second = store.lexical_search(query, k=3)
    assert [h.id for h in second] == ["other-" + h.id for h in first]
