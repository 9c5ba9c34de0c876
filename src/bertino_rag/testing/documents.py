"""Conformance, documents: chunks, listing by metadata, grouping by document."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from ..types import Document
from .corpus import SCORE_TOL, same_ranking
from .fixtures import Fixtures


class DocumentTests(Fixtures):
    """Documents stored as chunks, in every mode."""

    # ------------------------------------------------------------------ documents and chunks
    @staticmethod
    def _as_chunks(docs, n_docs: int = 3, per_doc: int = 4):
        """The first documents of the slice, relabelled as chunks of ``n_docs`` documents."""
        out = []
        for i, d in enumerate(docs[: n_docs * per_doc]):
            meta = {**d.metadata, "doc_id": f"doc-{i // per_doc}", "chunk": i % per_doc}
            out.append(Document(text=d.text, id=f"doc-{i // per_doc}#{i % per_doc}",
                                metadata=meta))
        return out

    def test_ids_where_lists_ids_by_metadata(self, filled, data):
        docs, _, _ = data
        title = docs[0].metadata["title"]
        want = sorted(d.id for d in docs if d.metadata["title"] == title)
        assert filled.ids_where({"title": title}) == want
        assert filled.ids_where({"title": {"$in": [title, "nessuno"]}, "para": {"$lt": 3}}) == (
            sorted(d.id for d in docs if d.metadata["title"] == title
                   and d.metadata["para"] < 3))
        assert filled.ids_where({"title": "nessuno"}) == []
        assert filled.ids_where({"title": {"$in": []}}) == []
        with pytest.raises(ValueError, match="non-empty filter dict"):
            filled.ids_where({})

    def test_ids_where_pages_through_many_ids(self, make_store, name, stamp, data):
        docs, vec, _ = data
        n = len(docs)
        reps = -(-2500 // n)  # more than one page of every backend's listing
        many = [Document(text=docs[i % n].text, id=f"d{j}-{i}", metadata={"doc_id": "big"})
                for j in range(reps) for i in range(n)]
        store = make_store()
        store.open(name, stamp)
        try:
            idx = np.tile(vec.index, (reps, 1))
            full = np.tile(vec.full, (reps, 1))
            store.upsert(many, idx, full)
            assert store.ids_where({"doc_id": "big"}) == sorted(d.id for d in many)
        finally:
            store.drop()
            store.close()

    def test_documents_past_the_filter_bound(self, make_store, name, stamp, data):
        # More documents in one call than a filter's $in takes (MAX_IN_VALUES): listing and
        # deleting their chunks must still work (Retriever.index asks for a whole window).
        from bertino_rag.search.filters import MAX_IN_VALUES

        docs, vec, _ = data
        n = len(docs)
        many = [Document(text=docs[i % n].text, id=f"doc{i}#0", metadata={"doc_id": f"doc{i}"})
                for i in range(MAX_IN_VALUES + 50)]
        reps = -(-len(many) // n)
        store = make_store()
        store.open(name, stamp)
        try:
            store.upsert(many, np.tile(vec.index, (reps, 1))[: len(many)],
                         np.tile(vec.full, (reps, 1))[: len(many)])
            doc_ids = [f"doc{i}" for i in range(len(many))] + ["no-such-doc"]
            assert store.ids_of_documents(doc_ids) == sorted(d.id for d in many)
            store.delete_documents(doc_ids[:-11])
            assert store.count() == 10
            assert store.ids_of_documents(doc_ids) == sorted(d.id for d in many[-10:])
        finally:
            store.drop()
            store.close()

    def test_values_are_compared_exactly_or_refused_alike(self, make_store, name, stamp, data):
        """One rule on every store: ids and metadata hold no NUL, integers stay within
        +-(2**53 - 1) (one error, before anything is written), and integers up to that bound
        compare exactly (Qdrant compares numbers as float64)."""
        docs, vec, _ = data
        big = 2**53 - 1
        store = make_store()
        store.open(name, stamp)
        try:
            store.upsert([Document(text=docs[i].text, id=f"n{i}", metadata={"v": big - i})
                          for i in range(3)], vec.index[:3], vec.full[:3])
            assert store.ids_where({"v": big}) == ["n0"]
            assert store.ids_where({"v": {"$lt": big}}) == ["n1", "n2"]
            assert store.ids_where({"v": {"$gte": big - 1, "$lte": big}}) == ["n0", "n1"]
            refused = r"NUL character|2\*\*53 - 1"
            for bad in (Document(text="x", id="a\x00b"),
                        Document(text="x", id="k", metadata={"s": "x\x00y"}),
                        Document(text="x", id="b", metadata={"v": big + 1})):
                with pytest.raises(ValueError, match=refused):
                    store.upsert([bad], vec.index[:1], vec.full[:1])
            for flt in ({"s": "x\x00"}, {"v": {"$lt": 2**63 - 1}}):
                with pytest.raises(ValueError, match=refused):
                    store.ids_where(flt)
            with pytest.raises(ValueError, match=refused):
                store.delete(["n0\x00"])
            assert store.count() == 3
        finally:
            store.drop()
            store.close()

    def test_delete_documents_removes_every_chunk(self, make_store, name, stamp, data):
        docs, vec, _ = data
        chunks = self._as_chunks(docs)
        rest = docs[len(chunks):]
        store = make_store()
        store.open(name, stamp)
        try:
            store.upsert(chunks + rest, vec.index[: len(docs)], vec.full[: len(docs)])
            assert store.ids_where({"doc_id": "doc-1"}) == [f"doc-1#{i}" for i in range(4)]
            store.delete_documents(["doc-1", rest[0].id, "no-such-doc"])
            assert store.count() == len(docs) - 5
            assert store.ids_where({"doc_id": "doc-1"}) == []
            assert store.get([rest[0].id]) == []
            left = {h.id for h in store.search(vec.index[4], k=len(docs))}
            assert not any(i.startswith("doc-1#") for i in left)
            assert {"doc-0#0", "doc-2#3", rest[1].id} <= left
            store.delete_documents([])
            assert store.count() == len(docs) - 5
        finally:
            store.drop()
            store.close()

    def test_group_by_document_equals_the_exact_oracle(self, make_store, name, stamp, data):
        docs, vec, queries = data
        chunks = self._as_chunks(docs, n_docs=6, per_doc=5)
        stored = chunks + docs[len(chunks):]
        owner = [d.metadata.get("doc_id", d.id) for d in stored]
        store = make_store()
        store.open(name, stamp)
        try:
            store.upsert(stored, vec.index[: len(stored)], vec.full[: len(stored)])
            for qi in range(0, 40, 8):
                q = queries.index[qi]
                scores = vec.index[: len(stored)] @ q
                best: dict[str, float] = {}
                for doc, sc in zip(owner, scores, strict=True):
                    best[doc] = max(best.get(doc, -2.0), float(sc))
                want = sorted(best, key=lambda d: (-best[d], d))[:7]
                hits = store.search(q, k=7, group_by="document", group_size=2)
                same_ranking([h.id for h in hits], [h.score for h in hits], want,
                             [best[d] for d in want])
                for h in hits:
                    assert 1 <= len(h.chunks) <= 2 and h.chunks[0].score == h.score
                    assert h.text == h.chunks[0].text
                    assert all(owner[[d.id for d in stored].index(c.id)] == h.id
                               for c in h.chunks)
                    assert [c.score for c in h.chunks] == sorted(
                        (c.score for c in h.chunks), reverse=True)
                    # the attached chunks are the document's best ones, on every store
                    mine = sorted((float(sc) for doc, sc in zip(owner, scores, strict=True)
                                   if doc == h.id), reverse=True)
                    np.testing.assert_allclose([c.score for c in h.chunks],
                                               mine[: len(h.chunks)], atol=SCORE_TOL)
                # two-stage: the same documents, scored on full vectors
                two = store.search(q, k=7, group_by="document", full_vector=queries.full[qi],
                                   rescore_k=20)
                full_scores = vec.full[: len(stored)] @ queries.full[qi]
                fbest: dict[str, float] = {}
                for doc, sc in zip(owner, full_scores, strict=True):
                    fbest[doc] = max(fbest.get(doc, -2.0), float(sc))
                for h in two:
                    assert abs(h.score - fbest[h.id]) <= self.full_tol or h.score < fbest[h.id]
                assert len({h.id for h in two}) == len(two) == 7
            # k counts documents, even when one document's chunks fill the first candidates
            many = store.search(queries.index[0], k=len(best), group_by="document")
            assert sorted(h.id for h in many) == sorted(best)
            flt = store.search(queries.index[0], k=3, group_by="document",
                               filter={"doc_id": {"$in": ["doc-0", "doc-1"]}})
            assert sorted(h.id for h in flt) == ["doc-0", "doc-1"]
            with pytest.raises(ValueError, match="group_by must be None or 'document'"):
                store.search(queries.index[0], k=3, group_by="title")
            with pytest.raises(ValueError, match="group_size must be a positive int"):
                store.search(queries.index[0], k=3, group_by="document", group_size=0)
            got = asyncio.run(store.asearch(queries.index[0], k=4, group_by="document"))
            assert [h.id for h in got] == [h.id for h in many[:4]]
        finally:
            store.drop()
            store.close()


    # ------------------------------------------------------------------ every mode
    @pytest.fixture
    def chunked(self, make_store, name, stamp, lex_stamp, data):
        """A store (hybrid when it can be) holding 6 documents of 4 chunks each (with their
        character offsets, paragraphs apart) and the other documents whole."""
        docs, vec, _ = data
        store = make_store()
        lexical = store.supports_lexical
        chunks = []
        for i, d in enumerate(self._as_chunks(docs, n_docs=6, per_doc=4)):
            texts = [docs[4 * (i // 4) + j].text for j in range(4)]
            start = sum(len(t) + 2 for t in texts[: i % 4])
            meta = {**d.metadata, "char_start": start, "char_end": start + len(d.text)}
            chunks.append(Document(text=d.text, id=d.id, metadata=meta))
        stored = chunks + docs[len(chunks):]
        store.open(name, lex_stamp if lexical else stamp)
        store.upsert(stored, vec.index[: len(stored)], vec.full[: len(stored)])
        yield store, stored
        try:
            if store.is_open:
                store.drop()
        finally:
            store.close()

    @staticmethod
    def _modes(store, vector, full, text, k, rescore_k=30, **kwargs):
        """The same search in every mode the store has: dense, two-stage, lexical, hybrid."""
        out = {"dense": store.search(vector, k, **kwargs),
               "two-stage": store.search(vector, k, full_vector=full, rescore_k=rescore_k,
                                         **kwargs)}
        if store.supports_lexical:
            out["lexical"] = store.lexical_search(text, k, **kwargs)
            out["hybrid"] = store.hybrid_search(vector, text, k, full_vector=full,
                                                rescore_k=rescore_k, **kwargs)
        return out

    def test_group_by_document_in_every_mode(self, chunked, data):
        """One hit per document in every mode: what grouping the mode's own ranking gives
        (with every document a candidate, so that the depth of the funnel is the same)."""
        from ..search.grouping import group_hits

        store, stored = chunked
        _, vec, queries = data
        n = len(stored)
        for qi in (0, 9, 21):
            text = " ".join(stored[qi].text.split()[:4])
            grouped = self._modes(store, vec.index[qi], vec.full[qi], text, 5, rescore_k=n,
                                  group_by="document", group_size=2)
            whole = self._modes(store, vec.index[qi], vec.full[qi], text, n, rescore_k=n)
            for mode, hits in grouped.items():
                want = group_hits(whole[mode], 5, 2)
                assert [h.id for h in hits] == [h.id for h in want], mode
                assert len({h.id for h in hits}) == len(hits)
                for h, w in zip(hits, want, strict=True):
                    # the document's best chunks among those the grouped search read
                    got = [c.id for c in h.chunks]
                    assert got and got == [c.id for c in w.chunks][: len(got)], mode
                    assert h.score == pytest.approx(w.score, abs=self.full_tol)

    def test_expand_in_every_mode(self, chunked, data):
        """``expand=1`` joins each chunk hit with its neighbours, in every mode."""
        store, stored = chunked
        _, vec, _ = data
        by_id = {d.id: d for d in stored}
        for qi in (1, 6, 13):
            text = " ".join(stored[qi].text.split()[:4])
            plain = self._modes(store, vec.index[qi], vec.full[qi], text, 4)
            wide = self._modes(store, vec.index[qi], vec.full[qi], text, 4, expand=1)
            for mode, hits in wide.items():
                assert [h.id for h in hits] == [h.id for h in plain[mode]], mode
                for h in hits:
                    meta = by_id[h.id].metadata
                    if "chunk" not in meta:
                        assert h.text == by_id[h.id].text
                        continue
                    doc, pos = meta["doc_id"], meta["chunk"]
                    near = [d for d in stored if d.metadata.get("doc_id") == doc
                            and abs(d.metadata["chunk"] - pos) <= 1]
                    near.sort(key=lambda d: d.metadata["chunk"])
                    assert h.text == "\n\n".join(d.text for d in near), mode
                    assert h.metadata["expanded"] == [near[0].metadata["chunk"],
                                                      near[-1].metadata["chunk"]]
                    assert h.metadata["char_start"] == near[0].metadata["char_start"]

    def test_search_beside_a_writer_never_raises(self, chunked, data):
        """A writer thread deletes, re-adds and edits documents while searches run in every
        mode: a candidate deleted between two reads of a search drops out, never raises."""
        if not self.concurrent_writers:
            pytest.skip("this store runs one thread at a time")
        store, stored = chunked
        _, vec, _ = data
        moving = list(range(24, 40))
        stop = threading.Event()
        failures: list[BaseException] = []

        def write() -> None:
            turn = 0
            try:
                while not stop.is_set():
                    part = moving[turn % 2::2]
                    store.delete([stored[i].id for i in part])
                    edited = [Document(text=f"{stored[i].text} ({turn})", id=stored[i].id,
                                       metadata=stored[i].metadata) for i in part]
                    store.upsert(edited, vec.index[part], vec.full[part])
                    turn += 1
            except BaseException as err:  # noqa: BLE001 - reported by the test
                failures.append(err)

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        known = {d.id for d in stored}
        try:
            deadline = time.monotonic() + 3.0
            rounds = 0
            while time.monotonic() < deadline or rounds < 3:
                for qi in moving[::3]:
                    text = " ".join(stored[qi].text.split()[:3])
                    for kwargs in ({}, {"group_by": "document"}, {"expand": 1}):
                        for mode, hits in self._modes(store, vec.index[qi], vec.full[qi],
                                                      text, 5, **kwargs).items():
                            assert {h.id for h in hits} <= known | {
                                d.metadata.get("doc_id") for d in stored}, mode
                rounds += 1
        finally:
            stop.set()
            writer.join(timeout=30)
        assert not failures, failures
