"""Differential filter fuzz: random filters from the documented language (README "Filters",
:mod:`bertino_rag.search.filters`) on every store, each compared with the reference evaluator
(:func:`~bertino_rag.search.filters.matches`) over the same documents.

Seeded (``BERTINO_FUZZ_SEED`` replays a failure; the seed and the filter are in every failure
message) and bounded: at most :data:`FILTERS` filters or :data:`SECONDS` seconds per store.
Documented differences are left out of the comparison: Qdrant matches a filter against each
element of a list value (its corpus has no lists) and refuses ranges on strings (the one
``FilterError`` allowed there). Random unit vectors (store-only tests).
"""

from __future__ import annotations

import importlib.util
import os
import random
import time
from typing import Any

import numpy as np
import pytest

from bertino_rag.search.filters import FilterError, matches, parse_filter
from bertino_rag.stores import MemoryStore, ReferenceStore
from bertino_rag.types import Document, Stamp

STAMP = Stamp(model="test-model", full_dim=16, index_dim=8)
SEED = int(os.environ.get("BERTINO_FUZZ_SEED", "20261206"))
FILTERS, SECONDS = 400, 2.5
BIG = 2**53 - 1
#: values metadata and filters draw from: the strict comparisons (bool vs 1, "1" vs 1, 2 vs
#: 2.0), the integer bound, Unicode, empty strings
SCALARS: list[Any] = [0, 1, 2, -1, 2.0, 2.5, -0.5, True, False, "1", "2", "a", "b", "B", "",
                      "città", "Città", "z" * 40, BIG, BIG - 1, -BIG, 1e15, 7, 7.0]
#: values only filters draw from: refused by the language (no stored value can hold them)
REFUSED: list[Any] = ["a\x00", 2**53, -(2**63), float("nan")]
FIELDS = ["a", "b", "c", "zz"]
KINDS = ["reference", "memory", "memory-dir", "qdrant", "qdrant-edge", "milvus"]


def _corpus(rng: random.Random, lists: bool) -> list[Document]:
    docs = []
    for i in range(80):
        meta: dict[str, Any] = {}
        for field in ("a", "b", "c"):
            roll = rng.random()
            if roll < 0.15:
                continue  # the field is missing
            if roll < 0.22:
                meta[field] = None
            elif lists and roll < 0.3:
                meta[field] = rng.sample(SCALARS, rng.randint(0, 2))
            else:
                meta[field] = rng.choice(SCALARS)
        docs.append(Document(text=f"t{i}", id=f"d{i:03d}", metadata=meta))
    return docs


def _condition(rng: random.Random) -> Any:
    op = rng.choice(["eq", "$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte", "range",
                     "$exists"])
    if rng.random() < 0.02:
        return {rng.choice(["$eq", "$gte", "$in"]): rng.choice(REFUSED)}
    if op == "eq":
        return rng.choice(SCALARS)
    if op in ("$in", "$nin"):
        return {op: rng.sample(SCALARS, rng.randint(0, 4))}
    if op == "$exists":
        return {op: rng.random() < 0.5}
    numbers = [v for v in SCALARS if not isinstance(v, bool)]
    if op == "range":
        low, high = sorted(rng.sample([v for v in numbers if not isinstance(v, str)], 2))
        return {rng.choice(["$gt", "$gte"]): low, rng.choice(["$lt", "$lte"]): high}
    return {op: rng.choice(numbers if op.startswith(("$g", "$l")) else SCALARS)}


def _filter(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for _ in range(rng.randint(1, 2)):
        roll = rng.random()
        if depth < 2 and roll < 0.2:
            out[rng.choice(["$or", "$and"])] = [_filter(rng, depth + 1)
                                                for _ in range(rng.randint(1, 3))]
        else:
            out[rng.choice(FIELDS)] = _condition(rng)
    return out


def _string_range(flt: Any) -> bool:
    if isinstance(flt, list):
        return any(_string_range(f) for f in flt)
    if not isinstance(flt, dict):
        return False
    return any(
        (k in ("$gt", "$gte", "$lt", "$lte") and isinstance(v, str)) or _string_range(v)
        for k, v in flt.items())


def _store(kind: str, tmp):
    if kind == "reference":
        return ReferenceStore(space=f"fuzz-{tmp.name}")
    if kind == "memory":
        return MemoryStore()
    if kind == "memory-dir":
        return MemoryStore(path=tmp)
    if kind == "qdrant":
        if importlib.util.find_spec("qdrant_client") is None:
            pytest.skip("qdrant-client is not installed")
        from bertino_rag.stores import QdrantStore

        return QdrantStore()
    if kind == "qdrant-edge":
        if importlib.util.find_spec("qdrant_edge") is None:
            pytest.skip("qdrant-edge-py is not installed")
        from bertino_rag.stores.qdrant.edge import QdrantEdgeStore

        return QdrantEdgeStore(tmp)
    if importlib.util.find_spec("milvus_lite") is None:
        pytest.skip("milvus-lite is not installed")
    from bertino_rag.stores import MilvusStore

    return MilvusStore(uri=str(tmp / "fuzz.db"))


@pytest.mark.parametrize("kind", KINDS)
def test_random_filters_mean_the_reference_meaning_on_every_store(kind, tmp_path):
    rng = random.Random(f"{SEED}-{kind}")
    qdrant = kind.startswith("qdrant")
    docs = _corpus(rng, lists=not qdrant)
    store = _store(kind, tmp_path)
    store.open("fuzz", STAMP)
    try:
        vectors = np.random.default_rng(SEED).normal(size=(len(docs), 16)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        index = vectors[:, :8] / np.linalg.norm(vectors[:, :8], axis=1, keepdims=True)
        store.upsert(docs, index, vectors)
        started, tried, compared = time.perf_counter(), 0, 0
        while tried < FILTERS and time.perf_counter() - started < SECONDS:
            flt = _filter(rng)
            tried += 1
            where = f"seed {SEED} (BERTINO_FUZZ_SEED), store {kind}, filter {flt!r}"
            try:
                conditions = parse_filter(flt)
            except FilterError:
                with pytest.raises(FilterError):  # refused by the store alike
                    store.ids_where(flt)
                continue
            want = sorted(d.id for d in docs if matches(d.metadata, conditions))
            try:
                got = sorted(store.ids_where(flt))
            except FilterError as err:
                # Qdrant's documented exception (a filter decided without the range answers)
                assert qdrant and _string_range(flt), f"{where}: {err}"
                assert "no range on strings" in str(err), where
                continue
            assert got == want, where
            if tried % 8 == 0:  # and the filter in a search (the store's search path)
                hits = store.search(index[tried % len(docs)], k=len(docs), filter=flt)
                assert sorted(h.id for h in hits) == want, where
            compared += 1
        assert compared >= min(40, tried // 2), f"only {compared} of {tried} filters compared"
    finally:
        store.drop()
        store.close()
