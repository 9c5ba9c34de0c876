"""Milvus Lite returns what MemoryStore (the exact oracle) and QdrantStore return.

Same real MiniLM vectors of squad-it-dev in each store; top-10 ids and scores must agree
within 1e-4, single-stage and two-stage (full vectors are float16 in every store).
"""

from __future__ import annotations

import pytest

pytest.importorskip(
    "pymilvus", reason="pymilvus is not installed (pip install 'bertino-rag[milvus]')"
)
pytest.importorskip("milvus_lite", reason="milvus-lite is not installed")

from bertino_rag.stores import MemoryStore  # noqa: E402
from bertino_rag.stores.milvus import MilvusStore  # noqa: E402
from bertino_rag.testing.conformance import same_ranking  # noqa: E402
from bertino_rag.types import Document, Stamp  # noqa: E402

TOL = 1e-4


def _qdrant():
    try:
        from bertino_rag.stores.qdrant import QdrantStore
    except ImportError as err:  # module missing, or qdrant-client not installed
        pytest.skip(f"QdrantStore is not available: {err}")
    return QdrantStore()


def _assert_same(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        same_ranking([h.id for h in g], [h.score for h in g], [h.id for h in w],
                     [h.score for h in w], tol=TOL)


@pytest.fixture(scope="module")
def stores(tmp_path_factory, encoder, squad_slice, slice_vectors):
    docs = [Document(text=d["text"], id=d["id"], metadata=d["metadata"])
            for d in squad_slice["docs"]]
    vec = slice_vectors["docs"]
    stamp = Stamp(model=encoder.model_id, full_dim=encoder.full_dim, index_dim=128)
    uri = str(tmp_path_factory.mktemp("milvus_congruence") / "c.db")
    built = {
        "memory": MemoryStore(),
        "milvus_auto": MilvusStore(uri=uri),
        "milvus_flat": MilvusStore(uri=uri, index="FLAT"),
        "milvus_ivf": MilvusStore(uri=uri, index="IVF_FLAT", nlist=16, nprobe=16),
    }
    for name, store in built.items():
        store.open(name, stamp)
        store.upsert(docs, vec.index, vec.full)
    built["milvus_ivf"].flush()  # sealed: the IVF index is built and searched
    yield built
    for store in built.values():
        store.drop()
        store.close()


@pytest.mark.parametrize("name", ["milvus_auto", "milvus_flat", "milvus_ivf"])
def test_single_stage_equals_memory(stores, slice_vectors, name):
    q = slice_vectors["queries"]
    _assert_same(
        stores[name].search_batch(q.index, k=10), stores["memory"].search_batch(q.index, k=10)
    )


@pytest.mark.parametrize("rescore_k", [20, 50])
@pytest.mark.parametrize("name", ["milvus_auto", "milvus_flat"])
def test_two_stage_equals_memory(stores, slice_vectors, name, rescore_k):
    q = slice_vectors["queries"]
    kw = {"k": 10, "full_vectors": q.full, "rescore_k": rescore_k}
    _assert_same(stores[name].search_batch(q.index, **kw),
                 stores["memory"].search_batch(q.index, **kw))


def test_filtered_two_stage_equals_memory(stores, slice_vectors):
    q = slice_vectors["queries"]
    kw = {"k": 5, "full_vectors": q.full[:40], "rescore_k": 30,
          "filter": {"para": {"$gte": 2, "$lt": 30}, "title": {"$in": ["Amazzonia", "x"]}}}
    _assert_same(stores["milvus_auto"].search_batch(q.index[:40], **kw),
                 stores["memory"].search_batch(q.index[:40], **kw))


def test_milvus_equals_qdrant(stores, encoder, squad_slice, slice_vectors):
    qdrant = _qdrant()
    docs = [Document(text=d["text"], id=d["id"], metadata=d["metadata"])
            for d in squad_slice["docs"]]
    vec, q = slice_vectors["docs"], slice_vectors["queries"]
    qdrant.open("congruence", Stamp(model=encoder.model_id, full_dim=encoder.full_dim,
                                    index_dim=128))
    try:
        qdrant.upsert(docs, vec.index, vec.full)
        for kw in ({"k": 10}, {"k": 10, "full_vectors": q.full, "rescore_k": 50}):
            _assert_same(stores["milvus_auto"].search_batch(q.index, **kw),
                         qdrant.search_batch(q.index, **kw))
    finally:
        qdrant.drop()
        qdrant.close()


def _retriever_pair(tmp_path, encoder, collection):
    from bertino_rag import Retriever

    milvus = Retriever(dim=128, store=MilvusStore(uri=str(tmp_path / "r.db")), encoder=encoder,
                       rescore_k=50, collection=collection)
    qdrant = Retriever(dim=128, store=_qdrant(), encoder=encoder, rescore_k=50,
                       collection=collection)
    return milvus, qdrant


def _compare_retrievers(milvus, qdrant, questions):
    got = milvus.search_batch(questions, k=10)
    want = qdrant.search_batch(questions, k=10)
    _assert_same(got, want)
    assert any(hits for hits in got)


def test_retriever_milvus_equals_retriever_qdrant(tmp_path, encoder, squad_slice):
    milvus, qdrant = _retriever_pair(tmp_path, encoder, "retr")
    docs = squad_slice["docs"][:30]
    milvus.index(docs)
    qdrant.index(docs)
    _compare_retrievers(milvus, qdrant, squad_slice["queries"][:40])
    milvus.store.drop()
    milvus.store.close()


@pytest.mark.slow
def test_retriever_milvus_equals_retriever_qdrant_full_corpus(tmp_path, encoder, squad):
    milvus, qdrant = _retriever_pair(tmp_path, encoder, "retr_full")
    docs = [{"id": d, "text": c["text"], "metadata": {"title": c["title"]}}
            for d, c in squad.corpus.items()]
    milvus.index(docs)
    qdrant.index(docs)
    questions = [squad.queries[q] for q in list(squad.qrels)[:500] if q in squad.queries]
    _compare_retrievers(milvus, qdrant, questions)
    milvus.store.drop()
    milvus.store.close()
