"""Conformance, the collection's life: stamps, replacement, persistence, export."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest

from ..stores import StoreError
from ..types import Stamp, StampMismatchError
from .corpus import same_ranking
from .fixtures import Fixtures


class LifecycleTests(Fixtures):
    """Opening, replacing, reopening and copying collections."""

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

    def test_ensure_open_on_a_shared_store(self, filled, name, stamp, data):
        docs, _, _ = data
        filled.ensure_open(name, stamp)  # already open: only the stamp is checked
        assert filled.count() == len(docs)
        other = Stamp(model="another/model", full_dim=stamp.full_dim, index_dim=128)
        with pytest.raises(StampMismatchError, match="model"):
            filled.ensure_open(name, other)
        assert filled.is_open and filled.stamp == stamp
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

    def test_replacement_swaps_in_at_publish(self, make_store, filled, name, stamp, data):
        """``open_replacement`` + ``publish``: with an atomic swap, the old collection stays
        whole until publish and closing first keeps it; without, it is dropped at once."""
        docs, vec, queries = data
        other = Stamp(model=stamp.model, full_dim=stamp.full_dim, index_dim=64)
        index64 = vec.index[:, :64] / np.linalg.norm(vec.index[:, :64], axis=1, keepdims=True)
        new = make_store()
        new.open_replacement(name, other)
        try:
            assert new.replacing and new.count() == 0 and new.stamp == other
            assert name in new.collections() and len(new.collections()) == len(
                set(new.collections()))
            new.upsert(docs[:5], index64[:5], vec.full[:5])
            assert new.count() == 5
            if new.supports_atomic_replace and self.persistent:
                assert filled.count() == len(docs)  # others still read the old collection
                new.close()  # unpublished: discarded
                assert filled.count() == len(docs) and name in make_store().collections()
                new.open_replacement(name, other)
                new.upsert(docs[:5], index64[:5], vec.full[:5])
            new.publish()
            assert not new.replacing and new.count() == 5
            assert new.search(index64[2], k=1)[0].id == docs[2].id
            new.close()
            again = make_store()
            if self.persistent:
                again.open(name, other, create=False)
                assert again.count() == 5
                again.close()
        finally:
            new.close()
            filled.close()
            filled.open(name, other)  # the fixture drops it

    def test_rescore_off_layout(self, make_store, name, stamp, data):
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
        from bertino_rag.stores import MemoryStore

        _, _, queries = data
        copy = MemoryStore()
        copy.open("copy", filled.stamp)
        for b in filled.export(batch_size=50):
            copy.upsert(b.documents, b.vectors, b.full_vectors)
        assert copy.count() == filled.count()
        want = filled.search(queries.index[3], k=5, full_vector=queries.full[3], rescore_k=30)
        got = copy.search(queries.index[3], k=5, full_vector=queries.full[3], rescore_k=30)
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


    # ------------------------------------------------------------------ intent record
    def test_intent_record_is_kept_and_cleared(self, make_store, filled, name, stamp):
        """``_write_intent``/``_read_intent`` (``capabilities.intent``): a record comes back
        as written, also from a new store object; ``None`` clears it. The record names a
        process still running on this host (this one's parent), so opening leaves it alone."""
        if not filled.capabilities.intent:
            pytest.skip(f"{type(filled).__name__} keeps no intent record")
        assert filled._read_intent() is None
        record = {"owner": {"host": socket.gethostname(), "pid": os.getppid()},
                  "docs": {"d1": {"new": ["d1#0-a", "d1#1-b"], "stale": ["d1#0-z"]},
                           "è l'altro": {"new": [], "stale": ["è l'altro#3-c"]}}}
        filled._write_intent(record)
        assert filled._read_intent() == record
        if self.persistent:
            other = make_store()
            other.open(name, stamp)
            try:
                assert other._read_intent() == record
                other._write_intent(None)
                assert other._read_intent() is None
            finally:
                if other is not filled:
                    other.close()
            again = make_store()
            again.open(name, stamp)
            assert again._read_intent() is None
            if again is not filled:
                again.close()
        filled._write_intent(None)
        assert filled._read_intent() is None
        filled._write_intent(None)  # clearing nothing is no error
        assert filled._read_intent() is None

    def test_open_repairs_an_interrupted_edit(self, make_store, filled, name, stamp, data):
        """Opening repairs a record left by a killed call: a document whose new ids are all
        stored loses its stale ids (roll forward), one whose new version is not whole loses
        its new ids (roll back); the record is cleared."""
        if not filled.capabilities.intent:
            pytest.skip(f"{type(filled).__name__} keeps no intent record")
        docs, _, _ = data
        ids = [d.id for d in docs]
        filled._write_intent({"owner": {"host": "another host", "pid": 1}, "docs": {
            "forward": {"new": ids[0:2], "stale": [ids[2], "never stored"]},
            "back": {"new": [ids[3], "not written"], "stale": [ids[4]]}}})
        other = make_store()
        other.open(name, stamp)
        try:
            assert other._read_intent() is None
            kept = {d.id for d in other.get(ids[:5])}
            assert kept == {ids[0], ids[1], ids[4]}
            assert other.count() == len(docs) - 2
        finally:
            if other is not filled:
                other.close()
