"""Filters mean the same on every store: each filter, on every store, returns exactly the
documents that the reference semantics (``filters.matches``) allows. Also the bounds.

Stores: MemoryStore (RAM and folder), Qdrant local mode, Qdrant Edge, Milvus Lite; random unit
vectors.
"""

from __future__ import annotations

import importlib.util
import time

import numpy as np
import pytest

from bertino_rag.search.filters import MAX_IN_VALUES, matches, parse_filter
from bertino_rag.stores import FilterError, MemoryStore
from bertino_rag.types import Document, Stamp

STAMP = Stamp(model="test-model", full_dim=16, index_dim=8)
VALUES = [True, 1, "1", 2.0, 2, 0, False, "b", 3.5, None, [], [1], "MISSING", "città", -7,
          "a", 2**53 - 1, 2**53 - 2, -(2**53 - 1)]
DOCS = [Document(text=f"t{i}", id=f"d{i:02d}",
                 metadata={} if v == "MISSING" else {"v": v, "w": i, "s": "x" if i % 2 else "y"})
        for i, v in enumerate(VALUES)]

FILTERS = [
    {"v": 1}, {"v": True}, {"v": "1"}, {"v": 2}, {"v": {"$eq": 2.0}}, {"v": 2**53 - 1},
    {"v": {"$lt": 2**53 - 1}}, {"v": {"$gte": 2**53 - 2}}, {"v": {"$in": [2**53 - 2, 7]}},
    {"v": {"$lte": -(2**53 - 1)}}, {"v": {"$ne": 2**53 - 2}}, {"v": 9007199254740991.0},
    {"v": {"$ne": 1}}, {"v": {"$ne": "b"}}, {"v": {"$ne": False}}, {"zz": {"$ne": 1}},
    {"v": {"$in": [1, "b", True]}}, {"v": {"$in": []}}, {"v": {"$nin": [1, "b"]}},
    {"v": {"$nin": []}}, {"v": {"$nin": [True, 2, "città"]}},
    {"v": {"$exists": True}}, {"v": {"$exists": False}}, {"zz": {"$exists": False}},
    {"v": {"$gte": 1}}, {"v": {"$lt": 2.5}}, {"v": {"$gt": 0, "$lte": 3.5}},
    {"w": {"$gte": 3}, "s": "x"},
    {"$or": [{"v": 1}, {"w": {"$gte": 14}}]},
    {"$or": [{"v": {"$in": []}}, {"v": "b"}]},
    {"$and": [{"v": {"$ne": True}}, {"w": {"$lt": 5}}]},
    {"$or": [{"$and": [{"s": "x"}, {"w": {"$lt": 6}}]}, {"v": {"$exists": False}}]},
    {"s": "y", "$or": [{"v": {"$nin": [0, 2]}}, {"w": 16}]},
    {"$or": [{"zz": 1}, {"zz": {"$ne": 1}}]},
]
KINDS = ["memory", "memory-dir", "qdrant", "qdrant-edge", "milvus"]


def _holds_a_list(doc: Document) -> bool:
    # Qdrant matches a filter against each element of a list (documented in
    # docs/reliability.md); the other stores compare the list itself. See the test below.
    return any(isinstance(v, list) and v for v in doc.metadata.values())


@pytest.fixture(scope="module", params=KINDS)
def store(request, tmp_path_factory):
    kind = request.param
    tmp = tmp_path_factory.mktemp(kind)
    if kind == "memory":
        s = MemoryStore()
    elif kind == "memory-dir":
        s = MemoryStore(path=tmp)
    elif kind == "qdrant":
        if importlib.util.find_spec("qdrant_client") is None:
            pytest.skip("qdrant-client is not installed")
        from bertino_rag.stores import QdrantStore

        s = QdrantStore()
    elif kind == "qdrant-edge":
        if importlib.util.find_spec("qdrant_edge") is None:
            pytest.skip("qdrant-edge-py is not installed")
        from bertino_rag.stores.qdrant.edge import QdrantEdgeStore

        s = QdrantEdgeStore(tmp)
    else:
        if importlib.util.find_spec("milvus_lite") is None:
            pytest.skip("milvus-lite is not installed")
        from bertino_rag.stores import MilvusStore

        s = MilvusStore(uri=str(tmp / "f.db"))
    s.open("filters", STAMP)
    rng = np.random.default_rng(0)
    docs = [d for d in DOCS if not kind.startswith("qdrant") or not _holds_a_list(d)]
    full = rng.normal(size=(len(docs), STAMP.full_dim)).astype(np.float32)
    full /= np.linalg.norm(full, axis=1, keepdims=True)
    index = full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True)
    s.upsert(docs, index, full)
    yield s, index, docs
    s.drop()
    s.close()


@pytest.mark.parametrize("flt", FILTERS, ids=[str(f) for f in FILTERS])
def test_every_store_gives_a_filter_the_reference_meaning(store, flt):
    s, index, docs = store
    want = sorted(d.id for d in docs if matches(d.metadata, parse_filter(flt)))
    got = sorted(h.id for h in s.search(index[0], k=len(docs), filter=flt))
    assert got == want


def test_qdrant_matches_list_elements():
    if importlib.util.find_spec("qdrant_client") is None:
        pytest.skip("qdrant-client is not installed")
    from bertino_rag.stores import QdrantStore

    s = QdrantStore()
    s.open("lists", STAMP)
    vec = np.eye(2, 16, dtype=np.float32)
    s.upsert([Document(text="a", id="a", metadata={"v": [1, 2]}),
              Document(text="b", id="b", metadata={"v": 1})], vec[:, :8], vec)
    assert sorted(h.id for h in s.search(vec[0, :8], k=5, filter={"v": 2})) == ["a"]
    assert sorted(h.id for h in s.search(vec[0, :8], k=5, filter={"v": 1})) == ["a", "b"]


def test_in_up_to_the_bound_works_and_fast(store):
    s, index, docs = store
    values = [f"v{i}" for i in range(MAX_IN_VALUES - 2)] + ["b", 1]
    started = time.perf_counter()
    hits = s.search(index[0], k=len(docs), filter={"v": {"$in": values}})
    assert sorted(h.id for h in hits) == ["d01", "d07"]
    nin = s.search(index[0], k=len(docs), filter={"v": {"$nin": values}})
    assert len(nin) == len(docs) - 2
    assert time.perf_counter() - started < 20


@pytest.mark.parametrize("flt,message", [
    ({"v": {"$in": list(range(MAX_IN_VALUES + 1))}}, f"at most {MAX_IN_VALUES} values"),
    ({"v": 2**53}, r"beyond \+-\(2\*\*53 - 1\)"),
    ({"v": {"$lt": 2**63 - 1}}, r"beyond \+-\(2\*\*53 - 1\)"),
    ({"v": {"$in": [-(2**63) - 1]}}, r"beyond \+-\(2\*\*53 - 1\)"),
    ({"s": "x\x00y"}, r"equality value contains a NUL character"),
    ({"s": {"$in": ["y", "x\x00"]}}, "NUL"),
    ({"v": {"$gt": float("nan")}}, "finite numbers"),
    ({"v": {"$exists": 1}}, "takes true or false"),
    ({"$or": []}, "non-empty list of filters"),
    ({"$or": {"v": 1}}, "non-empty list of filters"),
    ({"$not": {"v": 1}}, "not a valid name"),
    ({"v": {"$nin": "ab"}}, r"\$nin takes a list"),
])
def test_bad_filters_are_refused_with_the_reason(store, flt, message):
    s, index, _ = store
    with pytest.raises(FilterError, match=message):
        s.search(index[0], k=3, filter=flt)


def test_deep_or_nesting_is_bounded():
    flt: dict = {"v": 1}
    for _ in range(9):
        flt = {"$or": [flt, {"w": 1}]}
    with pytest.raises(FilterError, match="levels deep"):
        parse_filter(flt)
