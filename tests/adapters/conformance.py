"""The store contract, as tests. Every store subclasses :class:`StoreConformance`.

A subclass provides the ``make_store`` fixture: a factory that returns a new, unopened store
object pointing at the same place each time it is called (so that reopening can be tested).
Vectors are real MiniLM embeddings of a squad-it-dev slice; the oracle is exact numpy search.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import numpy as np
import pytest

from bertino_rag.adapters import StoreError, VectorStore
from bertino_rag.adapters.filters import FilterError, matches, parse_filter
from bertino_rag.types import Document, Stamp, StampMismatchError

SCORE_TOL = 1e-4


def exact_topk(matrix: np.ndarray, query: np.ndarray, ids: list[str], k: int):
    scores = matrix.astype(np.float32) @ query.astype(np.float32)
    order = sorted(range(len(ids)), key=lambda i: (-scores[i], ids[i]))[:k]
    return [ids[i] for i in order], [float(scores[i]) for i in order]


def same_ranking(got_ids, got_scores, want_ids, want_scores, tol=SCORE_TOL):
    """Equal ids and scores, allowing swaps among scores closer than ``tol``."""
    assert len(got_ids) == len(want_ids)
    np.testing.assert_allclose(got_scores, want_scores, atol=tol)
    for g, w, s in zip(got_ids, want_ids, want_scores, strict=True):
        if g != w:
            # only a near-tie may swap places
            near = [i for i, ws in zip(want_ids, want_scores, strict=True) if abs(ws - s) <= tol]
            assert g in near, f"{g} returned where {w} (score {s}) was expected"


class StoreConformance:
    """Contract tests shared by every backend."""

    #: whether the store's data survives a new store object on the same location
    persistent: bool = False
    #: tolerance on full-vector (rescored) scores; full vectors may be stored as float16
    full_tol: float = 2e-3

    @pytest.fixture
    def make_store(self, tmp_path) -> Callable[[], VectorStore]:  # pragma: no cover
        raise NotImplementedError

    @pytest.fixture
    def name(self) -> str:
        return f"t_{uuid.uuid4().hex[:12]}"

    @pytest.fixture
    def stamp(self, encoder) -> Stamp:
        return Stamp(model=encoder.model_id, full_dim=encoder.full_dim, index_dim=128)

    @pytest.fixture
    def data(self, squad_slice, slice_vectors):
        docs = [Document(text=d["text"], id=d["id"], metadata=d["metadata"])
                for d in squad_slice["docs"]]
        return docs, slice_vectors["docs"], slice_vectors["queries"]

    @pytest.fixture
    def filled(self, make_store, name, stamp, data):
        docs, vec, _ = data
        store = make_store()
        store.open(name, stamp)
        store.upsert(docs, vec.index, vec.full)
        yield store
        try:
            if store.is_open:
                store.drop()
        finally:
            store.close()

    # ------------------------------------------------------------------ basics
    def test_round_trip(self, filled, data):
        docs, _, _ = data
        assert filled.count() == len(docs)
        got = filled.get([docs[3].id, "no-such-id", docs[0].id])
        assert [d.id for d in got] == [docs[3].id, docs[0].id]
        assert got[0].text == docs[3].text
        assert got[0].metadata == docs[3].metadata

    def test_search_matches_exact_numpy(self, filled, data):
        docs, vec, queries = data
        ids = [d.id for d in docs]
        for qi in range(0, len(queries.index), 7):
            hits = filled.search(queries.index[qi], k=10)
            want_ids, want_scores = exact_topk(vec.index, queries.index[qi], ids, 10)
            same_ranking([h.id for h in hits], [h.score for h in hits], want_ids, want_scores)
            assert all(h.text == docs[ids.index(h.id)].text for h in hits)

    def test_search_batch_equals_single(self, filled, data):
        _, _, queries = data
        batch = filled.search_batch(queries.index[:5], k=4)
        for qi, hits in enumerate(batch):
            single = filled.search(queries.index[qi], k=4)
            assert [h.id for h in hits] == [h.id for h in single]

    def test_two_stage_matches_exact_rescore(self, filled, data):
        docs, vec, queries = data
        ids = [d.id for d in docs]
        for qi in range(0, len(queries.index), 11):
            cand, _ = exact_topk(vec.index, queries.index[qi], ids, 20)
            rows = [ids.index(c) for c in cand]
            full16 = vec.full[rows].astype(np.float16)
            want_ids, want_scores = exact_topk(full16, queries.full[qi], cand, 5)
            hits = filled.search(queries.index[qi], k=5, full_vector=queries.full[qi], rerank_k=20)
            same_ranking([h.id for h in hits], [h.score for h in hits], want_ids, want_scores,
                         tol=self.full_tol)

    def test_fetch_full(self, filled, data):
        docs, vec, _ = data
        got = filled.fetch_full([docs[2].id, docs[0].id])
        np.testing.assert_allclose(got, vec.full[[2, 0]], atol=2e-3)
        with pytest.raises(KeyError, match="no-such-id"):
            filled.fetch_full(["no-such-id"])

    def test_empty_collection(self, make_store, name, stamp, encoder):
        store = make_store()
        store.open(name, stamp)
        try:
            assert store.count() == 0
            assert store.search(np.ones(128, dtype=np.float32) / np.sqrt(128), k=3) == []
        finally:
            store.drop()

    # ------------------------------------------------------------------ writes
    def test_upsert_is_idempotent(self, filled, data):
        docs, vec, _ = data
        filled.upsert(docs[:10], vec.index[:10], vec.full[:10])
        assert filled.count() == len(docs)

    def test_upsert_replaces_by_id(self, filled, data):
        docs, vec, _ = data
        changed = Document(text="Testo nuovo.", id=docs[0].id, metadata={"title": "X", "para": -1})
        filled.upsert([changed], vec.index[5:6], vec.full[5:6])
        assert filled.count() == len(docs)
        assert filled.get([docs[0].id])[0].text == "Testo nuovo."
        top = filled.search(vec.index[5], k=2)
        assert {h.id for h in top} == {docs[0].id, docs[5].id}

    def test_delete(self, filled, data):
        docs, vec, _ = data
        filled.delete([docs[0].id, docs[1].id, "no-such-id"])
        assert filled.count() == len(docs) - 2
        assert filled.get([docs[0].id]) == []
        hits = filled.search(vec.index[0], k=len(docs))
        assert docs[0].id not in {h.id for h in hits}
        assert len(hits) == len(docs) - 2

    def test_wrong_dimension_is_rejected_and_nothing_written(self, filled, data):
        docs, vec, _ = data
        new = [Document(text="nuovo", id="new-doc")]
        with pytest.raises(ValueError, match="128 dims"):
            filled.upsert(new, vec.full[:1], vec.full[:1])
        with pytest.raises(ValueError, match="full vectors"):
            filled.upsert(new, vec.index[:1], vec.index[:1])
        with pytest.raises(ValueError, match="128 dims"):
            filled.search(vec.full[0], k=3)
        assert filled.count() == len(docs)
        assert filled.get(["new-doc"]) == []

    def test_nan_vectors_are_rejected(self, filled, data):
        docs, vec, _ = data
        bad = vec.index[:1].copy()
        bad[0, 0] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            filled.upsert([Document(text="x", id="nan-doc")], bad, vec.full[:1])
        assert filled.count() == len(docs)

    def test_bad_k(self, filled, data):
        _, vec, _ = data
        for k in (0, -1, 2.5):
            with pytest.raises(ValueError, match="k must be a positive int"):
                filled.search(vec.index[0], k=k)

    # ------------------------------------------------------------------ filters
    @pytest.mark.parametrize(
        "flt",
        [
            {"title": "Amazzonia"},
            {"para": {"$gte": 3, "$lt": 6}},
            {"para": {"$gt": 40}},
            {"para": {"$lte": 1}},
            {"title": {"$in": ["Amazzonia", "no-such-title"]}, "para": {"$lt": 5}},
            {"title": {"$eq": "no-such-title"}},
            {"missing_field": "x"},
            {"missing_field": {"$gte": 0}},
        ],
    )
    def test_filters_match_reference(self, filled, data, flt):
        docs, vec, _ = data
        conditions = parse_filter(flt)
        allowed = [i for i, d in enumerate(docs) if matches(d.metadata, conditions)]
        hits = filled.search(vec.index[0], k=len(docs), filter=flt)
        assert sorted(h.id for h in hits) == sorted(docs[i].id for i in allowed)
        if allowed:
            ids = [docs[i].id for i in allowed]
            want_ids, want_scores = exact_topk(vec.index[allowed], vec.index[0], ids, 3)
            top = filled.search(vec.index[0], k=3, filter=flt)
            same_ranking([h.id for h in top], [h.score for h in top], want_ids, want_scores)

    def test_filter_with_two_stage(self, filled, data):
        docs, vec, queries = data
        flt = {"para": {"$lt": 10}}
        hits = filled.search(queries.index[0], k=5, filter=flt, full_vector=queries.full[0],
                             rerank_k=30)
        assert hits and all(h.metadata["para"] < 10 for h in hits)

    def test_bad_filters(self, filled, data):
        _, vec, _ = data
        for flt, msg in [
            ({"title": {"$regex": "x"}}, "unknown operator"),
            ({"title": {"$in": "abc"}}, r"\$in takes a list"),
            ({'a" or 1==1': 1}, "not a valid name"),
            ({"title": [1, 2]}, "takes a str, int, float or bool"),
        ]:
            with pytest.raises(FilterError, match=msg):
                filled.search(vec.index[0], k=3, filter=flt)

    # ------------------------------------------------------------------ stamps
    def test_stamp_mismatch_is_refused_and_data_kept(self, make_store, filled, name, stamp, data):
        docs, _, _ = data
        for other in (
            Stamp(model=stamp.model, full_dim=stamp.full_dim, index_dim=64),
            Stamp(model="another/model", full_dim=stamp.full_dim, index_dim=128),
            Stamp(model=stamp.model, full_dim=stamp.full_dim, index_dim=128, full_vectors=False),
        ):
            second = make_store()
            with pytest.raises(StampMismatchError, match="recreate=True") as err:
                second.open(name, other)
            assert name in str(err.value)
            if second is not filled:
                second.close()
        assert filled.count() == len(docs)

    def test_recreate_drops_the_old_collection(self, make_store, filled, name, stamp):
        other = Stamp(model=stamp.model, full_dim=stamp.full_dim, index_dim=64)
        second = make_store()
        second.open(name, other, recreate=True)
        try:
            assert second.count() == 0
            assert second.stamp == other
        finally:
            second.drop()

    def test_rerank_off_layout(self, make_store, name, stamp, data):
        docs, vec, queries = data
        slim = Stamp(model=stamp.model, full_dim=stamp.full_dim, index_dim=128,
                     full_vectors=False)
        store = make_store()
        store.open(name, slim)
        try:
            store.upsert(docs[:10], vec.index[:10])
            assert len(store.search(queries.index[0], k=3)) == 3
            with pytest.raises(StoreError, match="no full vectors"):
                store.search(queries.index[0], k=3, full_vector=queries.full[0])
        finally:
            store.drop()

    def test_not_open(self, make_store):
        store = make_store()
        with pytest.raises(StoreError, match="open"):
            store.count()

    # ------------------------------------------------------------------ persistence
    def test_persistence_across_reopen(self, make_store, filled, name, stamp, data):
        if not self.persistent:
            pytest.skip(f"{type(filled).__name__} here is not persistent")
        docs, vec, _ = data
        before = filled.search(vec.index[4], k=5)
        filled.close()
        again = make_store()
        again.open(name, stamp)
        try:
            assert again.count() == len(docs)
            after = again.search(vec.index[4], k=5)
            assert [h.id for h in after] == [h.id for h in before]
        finally:
            again.close()
        filled.open(name, stamp)

    # ------------------------------------------------------------------ export
    def test_export_returns_every_point_with_its_vectors(self, filled, data):
        docs, vec, _ = data
        batches = list(filled.export(batch_size=7))
        assert batches and all(0 < len(b.documents) <= 7 for b in batches)
        got = [d for b in batches for d in b.documents]
        assert sorted(d.id for d in got) == sorted(d.id for d in docs)  # each exactly once
        row = {d.id: i for i, d in enumerate(docs)}
        for b in batches:
            rows = [row[d.id] for d in b.documents]
            assert [(d.text, d.metadata) for d in b.documents] == [
                (docs[r].text, docs[r].metadata) for r in rows]
            assert b.vectors.dtype == np.float32 and b.vectors.shape == (len(rows), 128)
            np.testing.assert_allclose(b.vectors, vec.index[rows], atol=1e-5)
            assert b.full_vectors is not None
            # full vectors come back as stored: float16 values
            np.testing.assert_allclose(b.full_vectors, vec.full[rows], atol=2e-3)

    def test_export_copies_into_another_store(self, filled, data, stamp):
        """What export() yields, upserted into an exact store, searches like the original."""
        from bertino_rag.adapters import MemoryStore

        _, _, queries = data
        copy = MemoryStore()
        copy.open("copy", filled.stamp)
        for b in filled.export(batch_size=50):
            copy.upsert(b.documents, b.vectors, b.full_vectors)
        assert copy.count() == filled.count()
        want = filled.search(queries.index[3], k=5, full_vector=queries.full[3], rerank_k=30)
        got = copy.search(queries.index[3], k=5, full_vector=queries.full[3], rerank_k=30)
        same_ranking([h.id for h in got], [h.score for h in got], [h.id for h in want],
                     [h.score for h in want], tol=self.full_tol)

    def test_export_without_full_vectors_and_empty(self, make_store, name, stamp, data):
        docs, vec, _ = data
        slim = Stamp(model=stamp.model, full_dim=stamp.full_dim, index_dim=128,
                     full_vectors=False)
        store = make_store()
        store.open(name, slim)
        try:
            assert list(store.export()) == []
            store.upsert(docs[:5], vec.index[:5])
            (batch,) = list(store.export())
            assert batch.full_vectors is None and len(batch.documents) == 5
        finally:
            store.drop()

    def test_stored_stamp_and_open_existing(self, make_store, filled, name, stamp, data):
        docs, _, _ = data
        other = make_store()
        assert other.stored_stamp(name) == stamp
        assert other.stored_stamp(f"{name}_missing") is None
        with pytest.raises(StoreError, match="no collection"):
            other.open_existing(f"{name}_missing")
        if other is not filled:
            assert not other.is_open
            assert other.open_existing(name) == stamp
            assert other.count() == len(docs)
            other.close()
        assert filled.count() == len(docs)

    # ------------------------------------------------------------------ async
    def test_async_search_equals_sync(self, filled, data):
        _, _, queries = data
        sync = filled.search(queries.index[1], k=5, full_vector=queries.full[1], rerank_k=20)
        got = asyncio.run(
            filled.asearch(queries.index[1], k=5, full_vector=queries.full[1], rerank_k=20)
        )
        assert [h.id for h in got] == [h.id for h in sync]
