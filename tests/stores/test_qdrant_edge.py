"""QdrantEdgeStore: the conformance suite, congruence with MemoryStore (exact search), HNSW,
quantization, payload indexes, filters and the one-process-per-folder lock."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid

import numpy as np
import pytest

pytest.importorskip("qdrant_edge", reason="qdrant-edge-py is not installed (extra 'edge')")

from bertino_rag.stores import MemoryStore, StoreError, make_store  # noqa: E402
from bertino_rag.stores.qdrant.edge import QdrantEdgeStore  # noqa: E402
from bertino_rag.testing.conformance import SCORE_TOL, StoreConformance, same_ranking  # noqa: E402
from bertino_rag.types import Document, Stamp  # noqa: E402

from . import equivalence  # noqa: E402


class TestQdrantEdge(StoreConformance):
    persistent = True
    full_vector_dtype = "float16"
    engine_rescores = True  # two-stage is one prefetch query: the engine scores the full vectors

    @pytest.fixture
    def make_store(self, tmp_path):
        return lambda: QdrantEdgeStore(tmp_path / "edge")


class TestQdrantEdgeExactInt8(StoreConformance):
    """Quantized, with exact search and numpy rescoring: the contract holds with quantization
    configured, and two-stage scores are those of rescoring each query, bit for bit."""

    persistent = True

    @pytest.fixture
    def make_store(self, tmp_path):
        return lambda: QdrantEdgeStore(tmp_path / "edge", quantization="int8", exact=True,
                                       two_stage="rescore")


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


# --------------------------------------------------------------------------- congruence
@pytest.fixture(scope="module")
def pair(tmp_path_factory, encoder, squad_slice, slice_vectors):
    """The slice in MemoryStore (the exact oracle) and in Edge with exact search."""
    docs = [Document(text=d["text"], id=d["id"], metadata=d["metadata"])
            for d in squad_slice["docs"]]
    vec = slice_vectors["docs"]
    stamp = Stamp(model=encoder.model_id, full_dim=encoder.full_dim, index_dim=128)
    memory = MemoryStore()
    edge = QdrantEdgeStore(tmp_path_factory.mktemp("edge_congruence"), exact=True)
    for store in (memory, edge):
        store.open("congruence", stamp)
        store.upsert(docs, vec.index, vec.full)
    yield memory, edge
    for store in (memory, edge):
        store.drop()
        store.close()


def _assert_same(got, want, tol=SCORE_TOL):
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        same_ranking([h.id for h in g], [h.score for h in g], [h.id for h in w],
                     [h.score for h in w], tol=tol)


def test_single_stage_equals_memory(pair, slice_vectors):
    memory, edge = pair
    q = slice_vectors["queries"].index
    _assert_same(edge.search_batch(q, k=10), memory.search_batch(q, k=10))


@pytest.mark.parametrize("rescore_k", [10, 40])
def test_two_stage_equals_memory(pair, slice_vectors, rescore_k):
    memory, edge = pair
    q = slice_vectors["queries"]
    got = edge.search_batch(q.index, k=10, full_vectors=q.full, rescore_k=rescore_k)
    want = memory.search_batch(q.index, k=10, full_vectors=q.full, rescore_k=rescore_k)
    # both keep full vectors as float16; Edge normalizes before rounding (cosine)
    _assert_same(got, want, tol=1e-3)


@pytest.mark.parametrize("flt", [{"para": {"$lt": 8}}, {"title": {"$in": ["Amazzonia"]}}])
def test_filtered_two_stage_equals_memory(pair, slice_vectors, flt):
    memory, edge = pair
    q = slice_vectors["queries"]
    got = edge.search_batch(q.index[:40], k=5, filter=flt, full_vectors=q.full[:40],
                            rescore_k=20)
    want = memory.search_batch(q.index[:40], k=5, filter=flt, full_vectors=q.full[:40],
                               rescore_k=20)
    _assert_same(got, want, tol=1e-3)


def test_exports_what_was_stored(pair, slice_vectors, squad_slice):
    _, edge = pair
    batches = list(edge.export(batch_size=7))
    assert all(len(b.documents) <= 7 for b in batches)
    ids = [d.id for b in batches for d in b.documents]
    assert sorted(ids) == sorted(d["id"] for d in squad_slice["docs"])
    row = {d["id"]: i for i, d in enumerate(squad_slice["docs"])}
    vec = slice_vectors["docs"]
    for b in batches:
        rows = [row[d.id] for d in b.documents]
        np.testing.assert_allclose(b.vectors, vec.index[rows], atol=1e-6)
        np.testing.assert_allclose(b.full_vectors, vec.full[rows], atol=2e-3)


# --------------------------------------------------------------------------- HNSW
def test_hnsw_built_on_request_and_searches_stay_correct(tmp_path, stamp, data):
    docs, vec, queries = data
    store = QdrantEdgeStore(tmp_path / "edge", index_threshold=50)
    oracle = QdrantEdgeStore(tmp_path / "exact", exact=True)
    for s in (store, oracle):
        s.open("c", stamp)
        s.upsert(docs, vec.index, vec.full)
    assert store.indexed_fraction() == 0.0  # before the build: brute force, exact
    _assert_same(store.search_batch(queries.index, k=10), oracle.search_batch(queries.index, k=10))
    assert store.build_index() is True
    assert store.indexed_fraction() == 1.0
    got = store.search_batch(queries.index, k=10)
    want = oracle.search_batch(queries.index, k=10)
    recall = np.mean([len({h.id for h in g} & {h.id for h in w}) / 10
                      for g, w in zip(got, want, strict=True)])
    assert recall >= 0.99
    # points written after the build are found at once (searched exactly until the next build)
    new = Document(text="Nuovo paragrafo.", id="after-build", metadata={"para": 999})
    store.upsert([new], vec.index[:1] * -1, vec.full[:1] * -1)
    assert store.search(vec.index[0] * -1, k=1)[0].id == "after-build"
    assert store.build_index() in (True, False)
    assert store.count() == len(docs) + 1
    for s in (store, oracle):
        s.drop()


@pytest.mark.parametrize("quantization", ["int8", "turbo4"])
def test_quantized_hnsw_recall(tmp_path, stamp, data, quantization):
    docs, vec, queries = data
    store = QdrantEdgeStore(tmp_path / "edge", quantization=quantization, index_threshold=50)
    store.open("c", stamp)
    store.upsert(docs, vec.index, vec.full)
    store.build_index()
    ids = [d.id for d in docs]
    exact = vec.index @ queries.index.T
    got = store.search_batch(queries.index, k=10)
    recall = np.mean([
        len({h.id for h in hits} & {ids[i] for i in np.argsort(-exact[:, qi])[:10]}) / 10
        for qi, hits in enumerate(got)
    ])
    assert recall >= 0.98, f"{quantization}: recall@10 {recall:.3f}"
    # rescored with the original vectors: scores are exact
    top = got[0][0]
    assert abs(top.score - float(vec.index[ids.index(top.id)] @ queries.index[0])) < 1e-4
    store.drop()


# --------------------------------------------------------------------------- filters
def test_bool_and_number_equality_keep_their_types(tmp_path, stamp, data):
    """True is not 1 and "1" is not 1 (qdrant-edge-py 0.9 alone reads True as 1)."""
    _, vec, _ = data
    docs = [Document(text="a", id="bool", metadata={"f": True}),
            Document(text="b", id="int", metadata={"f": 1}),
            Document(text="c", id="str", metadata={"f": "1"}),
            Document(text="d", id="float", metadata={"f": 1.0})]
    for fields in (None, {"f": "bool"}):
        store = QdrantEdgeStore(tmp_path / f"edge{fields is None}", index_fields=fields)
        store.open("c", stamp)
        store.upsert(docs, vec.index[:4], vec.full[:4])
        q = vec.index[0]
        assert {h.id for h in store.search(q, k=4, filter={"f": True})} == {"bool"}
        if fields is None:
            assert {h.id for h in store.search(q, k=4, filter={"f": 1})} == {"int", "float"}
            assert {h.id for h in store.search(q, k=4, filter={"f": "1"})} == {"str"}
            assert store.search(q, k=4, filter={"f": {"$in": []}}) == []
        store.drop()


def test_payload_indexes(tmp_path, stamp, data):
    docs, vec, _ = data
    store = QdrantEdgeStore(tmp_path / "edge", index_fields={"title": "keyword", "para": "integer"})
    store.open("c", stamp)
    store.upsert(docs, vec.index, vec.full)
    schema = store.shard.info().payload_schema
    assert set(schema) == {"metadata.title", "metadata.para"}
    want = sorted(d.id for d in docs if d.metadata["title"] == "Amazzonia"
                  and d.metadata["para"] < 5)
    hits = store.search(vec.index[0], k=len(docs),
                        filter={"title": "Amazzonia", "para": {"$lt": 5}})
    assert sorted(h.id for h in hits) == want
    store.drop()
    with pytest.raises(ValueError, match="not one of"):
        QdrantEdgeStore(tmp_path / "x", index_fields={"title": "nope"})


# --------------------------------------------------------------------------- locations
def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="quantization"):
        QdrantEdgeStore(tmp_path, quantization="int4")
    with pytest.raises(ValueError, match="index_threshold"):
        QdrantEdgeStore(tmp_path, index_threshold=0)
    with pytest.raises(ValueError, match="needs a folder"):
        make_store("qdrant-edge")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        QdrantEdgeStore(tmp_path / "file")


def test_spec_string(tmp_path, stamp, data):
    docs, vec, _ = data
    store = make_store(f"qdrant-edge:{tmp_path / 'edge'}")
    assert isinstance(store, QdrantEdgeStore)
    store.open("c", stamp)
    store.upsert(docs[:3], vec.index[:3], vec.full[:3])
    assert (tmp_path / "edge" / "c" / "stamp.json").exists()
    store.close()


def test_foreign_shard_is_refused(tmp_path, stamp):
    import qdrant_edge as qe

    qe.EdgeShard.create(str(tmp_path / "edge" / "c" / "shard"), qe.EdgeConfig(
        vectors={"v": qe.EdgeVectorParams(size=4, distance=qe.Distance.Dot)})).close()
    store = QdrantEdgeStore(tmp_path / "edge")
    with pytest.raises(StoreError, match="without a bertino-rag stamp"):
        store.open("c", stamp)
    store.open("c", stamp, recreate=True)
    assert store.count() == 0
    store.drop()


def test_second_process_gets_a_clear_error(tmp_path, stamp, data):
    docs, vec, _ = data
    store = QdrantEdgeStore(tmp_path / "edge")
    store.open("c", stamp)
    store.upsert(docs[:3], vec.index[:3], vec.full[:3])
    code = textwrap.dedent(f"""
        import sys, time
        from bertino_rag.stores import StoreError
        from bertino_rag.stores.qdrant.edge import QdrantEdgeStore
        from bertino_rag.types import Stamp
        t0 = time.monotonic()
        stamp = Stamp.from_dict({stamp.to_dict()!r})
        try:
            QdrantEdgeStore({str(tmp_path / "edge")!r}).open("c", stamp)
        except StoreError as err:
            print("ERR", round(time.monotonic() - t0, 1), err)
            sys.exit(0)
        sys.exit(1)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "open in another process" in out.stdout
    assert float(out.stdout.split()[1]) < 5
    assert store.count() == 3
    store.close()
    # once released, another process opens it
    code2 = code.replace("sys.exit(1)", "print('OPEN')")
    out = subprocess.run([sys.executable, "-c", code2], capture_output=True, text=True,
                         timeout=120)
    assert "OPEN" in out.stdout, out.stderr


# --------------------------------------------------------------------------- crash, CLI
def test_killed_build_leaves_a_usable_store(tmp_path, stamp):
    """kill -9 in the middle of build_index(): the store reopens with every point, searches
    exactly, and the next build completes."""
    folder = tmp_path / "edge"
    code = textwrap.dedent(f"""
        import numpy as np
        from bertino_rag.stores.qdrant.edge import QdrantEdgeStore
        from bertino_rag.types import Document, Stamp
        rng = np.random.default_rng(0)
        full = rng.standard_normal((6000, 384)).astype(np.float32)
        full /= np.linalg.norm(full, axis=1, keepdims=True)
        index = full[:, :128] / np.linalg.norm(full[:, :128], axis=1, keepdims=True)
        store = QdrantEdgeStore({str(folder)!r}, index_threshold=500)
        store.open("c", Stamp.from_dict({stamp.to_dict()!r}))
        store.upsert([Document(text=str(i), id=f"d{{i}}") for i in range(6000)], index, full)
        np.save({str(tmp_path / "index.npy")!r}, index)
        print("WRITTEN", flush=True)
        store.build_index()
        print("BUILT", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "WRITTEN"
    import time

    time.sleep(0.5)  # the build is under way (it takes several seconds)
    proc.kill()
    proc.wait(timeout=60)
    index = np.load(tmp_path / "index.npy")
    store = QdrantEdgeStore(folder, index_threshold=500)
    store.open("c", stamp)
    assert store.count() == 6000
    assert store.indexed_fraction() < 1.0  # the build was killed before it finished
    exact = QdrantEdgeStore(folder, exact=True)
    exact.open("c", stamp)
    hits = store.search(index[7], k=5)
    assert hits[0].id == "d7"
    assert [h.id for h in hits] == [h.id for h in exact.search(index[7], k=5)]
    exact.close()
    store.build_index()
    assert store.indexed_fraction() == 1.0
    assert store.search(index[42], k=1)[0].id == "d42"
    store.close()


def test_cli_index_and_search_on_edge(tmp_path, squad_slice, minilm_path, capsys):
    import json

    from bertino_rag.cli import main

    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("\n".join(json.dumps(d, ensure_ascii=False)
                               for d in squad_slice["docs"][:20]), encoding="utf-8")
    store = f"qdrant-edge:{tmp_path / 'edge'}"
    assert main(["index", str(jsonl), "--model", minilm_path, "--store", store, "--quiet"]) == 0
    capsys.readouterr()
    assert main(["search", "foresta", "--model", minilm_path, "--store", store, "--json",
                 "--filter", '{"para": {"$lt": 3}}', "-k", "10"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits and all(h["metadata"]["para"] < 3 for h in hits)


def test_retriever_on_edge_equals_retriever_on_memory(tmp_path, encoder, squad_slice):
    from bertino_rag import Retriever

    docs = squad_slice["docs"][:30]
    results, grouped = [], []
    for store in (MemoryStore(), QdrantEdgeStore(tmp_path / "edge", exact=True)):
        r = Retriever(dim=128, encoder=encoder, store=store, rescore_k=20)
        r.index(docs, show_progress_bar=False)  # chunked where a paragraph is too long
        assert r.last_index_report is not None and r.last_index_report.build_seconds >= 0
        results.append(r.search_batch(squad_slice["queries"][:20], k=5))
        grouped.append(r.search_batch(squad_slice["queries"][:20], k=5, group_by="document"))
        r.close()
    _assert_same(results[1], results[0], tol=1e-3)
    _assert_same(grouped[1], grouped[0], tol=1e-3)


@pytest.mark.slow
def test_hnsw_recall_on_the_whole_corpus(tmp_path, encoder, squad):
    """recall@10 of HNSW (m=16, ef_construct=100, default search beam) against exact search on
    real embeddings: all 1,128 squad-it-dev paragraphs, 1,000 of its questions."""
    ids = list(squad.corpus)
    vec = encoder.encode([squad.corpus[i]["text"] for i in ids], warn_truncation=False)
    qids = list(squad.queries)[:1000]
    q = encoder.encode([squad.queries[i] for i in qids], kind="query")
    stamp = Stamp(model=encoder.model_id, full_dim=encoder.full_dim, index_dim=128)
    store = QdrantEdgeStore(tmp_path / "edge", index_threshold=100)  # a graph for 1,128 points
    store.open("c", stamp)
    store.upsert([Document(text=squad.corpus[i]["text"], id=i) for i in ids], vec.index, vec.full)
    store.build_index()
    assert store.indexed_fraction() == 1.0
    got = store.search_batch(q.index, k=10)
    exact = vec.index @ q.index.T
    recall = np.mean([
        len({h.id for h in hits} & {ids[i] for i in np.argsort(-exact[:, qi])[:10]}) / 10
        for qi, hits in enumerate(got)
    ])
    print(f"recall@10 HNSW vs exact: {recall:.4f}")
    assert recall >= 0.99
    store.drop()


@pytest.mark.filterwarnings("ignore:.*max_seq_length")
def test_hybrid_retriever_on_edge_equals_memory(tmp_path, encoder, squad_slice):
    """Retriever(hybrid=True) on Edge gives MemoryStore's lexical and hybrid results (one
    write, so the fixed avgdl is the collection's mean), also after deleting documents: the
    document frequencies are the live ones."""
    from bertino_rag import Retriever

    docs = squad_slice["docs"][:40]
    queries = squad_slice["queries"][:12]
    retrievers = [Retriever(dim=128, encoder=encoder, store=store, rescore_k=20, hybrid=True,
                            chunking=False)
                  for store in (MemoryStore(), QdrantEdgeStore(tmp_path / "edge"))]
    try:
        for r in retrievers:
            r.index(docs, show_progress_bar=False)
        memory, edge = retrievers
        assert edge.store.lexical_avgdl is not None
        for mode in ("lexical", "hybrid"):
            _assert_same(edge.search_batch(queries, k=5, mode=mode),
                         memory.search_batch(queries, k=5, mode=mode), tol=1e-3)
        gone = [h.id for h in memory.search(queries[0], k=3, mode="lexical")]
        for r in retrievers:
            r.store.delete(gone)
        # MemoryStore's BM25 normalizes by the live mean length; Edge by the one fixed at the
        # first write: compare Edge with the reference at Edge's avgdl
        from bertino_rag.testing.conformance import bm25_reference

        kept = [Document(text=d["text"], id=d["id"]) for d in docs if d["id"] not in gone]
        got = edge.search(queries[0], k=8, mode="lexical")
        want_ids, want_scores = bm25_reference(kept, queries[0], 8,
                                               avgdl=edge.store.lexical_avgdl)
        same_ranking([h.id for h in got], [h.score for h in got], want_ids, want_scores,
                     tol=1e-3)
    finally:
        for r in retrievers:
            r.close()


def test_cached_document_frequencies_follow_every_write(tmp_path):
    """Lexical queries cache the live document frequencies per open shard; every write (also
    one through another store object of this process on the same folder) makes the next
    query count again, so scores stay BM25's over the documents stored now."""
    from bertino_rag.lexical import BM25, Analyzer, lexical_spec
    from bertino_rag.testing.conformance import bm25_reference

    stamp = Stamp(model="m", full_dim=8, index_dim=8, full_vectors=False,
                  lexical=lexical_spec(Analyzer(), BM25()))
    texts = ["Roma è la capitale d'Italia.", "Milano è la capitale della moda.",
             "Napoli guarda il Vesuvio.", "Roma ha il Colosseo e il Pantheon.",
             "La capitale del Piemonte è Torino."]
    docs = [Document(text=t, id=f"d{i}") for i, t in enumerate(texts)]
    rng = np.random.default_rng(0)
    vec = rng.standard_normal((len(docs), 8)).astype(np.float32)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    a, b = QdrantEdgeStore(tmp_path), QdrantEdgeStore(tmp_path)
    for s in (a, b):
        s.open("c", stamp)
    query = "Roma capitale"

    def check(kept):
        got = a.lexical_search(query, k=5)
        want_ids, want_scores = bm25_reference(kept, query, 5, avgdl=a.lexical_avgdl)
        same_ranking([h.id for h in got], [h.score for h in got], want_ids, want_scores,
                     tol=1e-4)

    try:
        a.upsert(docs[:3], vec[:3])
        check(docs[:3])
        check(docs[:3])  # answered from the cache
        b.upsert(docs[3:], vec[3:])
        check(docs)
        b.delete(["d0"])
        check(docs[1:])
        a.upsert([Document(text="Roma e Milano.", id="d2")], vec[:1])  # replaces d2
        check([d for d in docs[1:] if d.id != "d2"] + [Document(text="Roma e Milano.", id="d2")])
    finally:
        a.close()
        b.close()


# --------------------------------------------------------------------------- pushdowns
@pytest.fixture(scope="module")
def random_data():
    return equivalence.corpus()


@pytest.mark.parametrize("two_stage", ["prefetch", "rescore"])
@pytest.mark.parametrize("flt", [None, {"para": {"$lt": 40}}])
def test_pushdowns_equal_the_reference_store(tmp_path, two_stage, flt, random_data):
    """What the engine does itself returns the reference store's hits in every mode: both
    sides' candidates in one batch query (``joint_candidates``), lexical scores from live
    document frequencies, and with ``two_stage="prefetch"`` the one prefetch query
    (``rescore``) and the hybrid union scored on ``full`` by the engine (``score``)."""
    store = QdrantEdgeStore(tmp_path / "edge", two_stage=two_stage, exact=True)
    caps = store.capabilities
    engine = two_stage == "prefetch"
    assert caps.joint_candidates and caps.rescore == engine and caps.score == engine
    equivalence.fill(store, random_data)
    try:
        # the engine normalizes the full vectors before rounding them to float16
        equivalence.assert_same_as_reference(store, random_data, flt,
                                             tol=2e-3 if engine else 1e-4)
    finally:
        store.close()


@pytest.mark.parametrize("two_stage", ["prefetch", "rescore"])
def test_candidates_deleted_between_two_reads_drop_out(tmp_path, two_stage, random_data,
                                                       monkeypatch):
    """A search racing a delete never raises: candidates gone between the first stage and
    the engine's scoring of the union, or the reads of full vectors or documents, drop out."""
    store = QdrantEdgeStore(tmp_path / "edge", two_stage=two_stage)
    equivalence.fill(store, random_data)
    try:
        equivalence.assert_deleted_candidates_drop_out(store, random_data, monkeypatch)
    finally:
        store.close()
