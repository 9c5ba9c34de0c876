"""Retriever over the embedded store, on real MiniLM vectors and a squad-it-dev slice."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from bertino_rag import MemoryStore, Retriever, StampMismatchError
from bertino_rag.encoder import matryoshka_slice


@pytest.fixture(scope="module")
def indexed(encoder, squad_slice):
    # one vector per paragraph, compared with whole-text vectors: chunking off
    r = Retriever(dim=128, encoder=encoder, rescore=True, rescore_k=30, chunking=False)
    r.index(squad_slice["docs"])
    return r


def test_top10_equals_exact_numpy_on_truncated_vectors(encoder, squad_slice, slice_vectors):
    r = Retriever(dim=128, encoder=encoder, rescore=False, chunking=False)
    r.index(squad_slice["docs"])
    ids = squad_slice["doc_ids"]
    docs = slice_vectors["docs"].index
    queries = squad_slice["queries"]
    results = r.search_batch(queries, k=10)
    q = slice_vectors["queries"].index
    scores = q @ docs.T
    for qi, hits in enumerate(results):
        order = np.argsort(-scores[qi], kind="stable")[:10]
        want = [ids[i] for i in order]
        got = [h.id for h in hits]
        if got != want:  # only near-ties may swap
            np.testing.assert_allclose([h.score for h in hits], scores[qi][order], atol=1e-5)
        np.testing.assert_allclose(hits[0].score, scores[qi][order[0]], atol=1e-5)


def test_rerank_rescored_with_full_vectors(indexed, squad_slice, slice_vectors):
    docs = slice_vectors["docs"]
    qv = slice_vectors["queries"]
    ids = squad_slice["doc_ids"]
    for qi in (0, 17, 42):
        cand = np.argsort(-(docs.index @ qv.index[qi]), kind="stable")[:30]
        full = docs.full[cand].astype(np.float16).astype(np.float32) @ qv.full[qi]
        want = [ids[cand[i]] for i in np.argsort(-full, kind="stable")[:5]]
        hits = indexed.search(squad_slice["queries"][qi], k=5)
        assert [h.id for h in hits] == want
        np.testing.assert_allclose([h.score for h in hits], np.sort(full)[::-1][:5], atol=1e-4)


def test_search_finds_the_paragraph(indexed, squad_slice):
    hits_at_10 = 0
    qids = squad_slice["qids"][:100]
    results = indexed.search_batch([squad_slice["queries"][i] for i in range(100)], k=10)
    for qid, hits in zip(qids, results, strict=True):
        hits_at_10 += bool(set(squad_slice["qrels"][qid]) & {h.id for h in hits})
    assert hits_at_10 >= 60  # MiniLM is an English model, yet far above chance (10 of 177)


def test_hit_fields(indexed, squad_slice):
    hit = indexed.search(squad_slice["queries"][0], k=1)[0]
    doc = next(d for d in squad_slice["docs"] if d["id"] == hit.id)
    assert hit.text == doc["text"] and hit.metadata == doc["metadata"]
    assert -1.0 <= hit.score <= 1.0001


def test_reindex_is_idempotent(encoder):
    r = Retriever(dim=64, encoder=encoder)
    texts = ["Il Po è il fiume più lungo d'Italia.", "L'Etna è un vulcano siciliano."]
    first = r.index(texts)
    second = r.index(texts + [texts[0]])
    assert second[:2] == first and second[2] == first[0]
    assert r.count() == 2


def test_bad_input_writes_nothing(encoder):
    r = Retriever(dim=64, encoder=encoder)
    r.index(["Firenze è in Toscana."])
    for bad in (["Bologna", ""], ["Bologna", None], ["Bologna", 3.5]):
        with pytest.raises(ValueError, match="position 1"):
            r.index(bad)
    assert r.count() == 1


def test_bad_queries(indexed):
    with pytest.raises(ValueError, match="the query has empty text"):
        indexed.search("")
    with pytest.raises(ValueError, match="k must be a positive int"):
        indexed.search("Roma", k=0)
    with pytest.raises(ValueError, match="list of queries"):
        indexed.search_batch("Roma")


def test_filter_and_delete(encoder):
    r = Retriever(dim=128, encoder=encoder)
    r.index([
        {"text": "Dante scrisse la Divina Commedia.", "id": "dante", "metadata": {"secolo": 14}},
        {"text": "Manzoni scrisse I promessi sposi.", "id": "manzoni", "metadata": {"secolo": 19}},
    ])
    hits = r.search("Chi scrisse un libro?", k=5, filter={"secolo": {"$gte": 15}})
    assert [h.id for h in hits] == ["manzoni"]
    r.delete(["manzoni"])
    assert r.search("Chi scrisse un libro?", k=5, filter={"secolo": {"$gte": 15}}) == []
    assert r.count() == 1 and r.get(["dante"])[0].metadata == {"secolo": 14}


def test_rerank_off_stores_no_full_vectors(encoder):
    r = Retriever(dim=128, encoder=encoder, rerank=False)
    r.index(["Venezia ha molti canali."])
    assert r.stamp.full_vectors is False
    with pytest.raises(ValueError, match="rescore=False"):
        r.search("canali", rerank=True)


def test_persisted_store_and_mismatch(encoder, tmp_path):
    path = tmp_path / "idx"
    with Retriever(dim=128, encoder=encoder, store=MemoryStore(path=path)) as r:
        r.index(["Il Monte Bianco è la vetta più alta delle Alpi."])
    with Retriever(dim=128, encoder=encoder, store=f"memory:{path}") as again:
        assert again.count() == 1
        assert "Monte Bianco" in again.search("montagna alta", k=1)[0].text
    with pytest.raises(StampMismatchError, match="index_dim: collection has 128, requested 64"):
        Retriever(dim=64, encoder=encoder, store=f"memory:{path}")
    with Retriever(dim=128, encoder=encoder, store=f"memory:{path}") as kept:
        assert kept.count() == 1
    with Retriever(dim=64, encoder=encoder, store=f"memory:{path}", recreate=True) as fresh:
        assert fresh.count() == 0


def test_recreate_replaces_only_when_the_first_index_succeeds(encoder, squad_slice, tmp_path,
                                                              monkeypatch):
    from bertino_rag.indexing.pipeline import IndexWriteError
    from bertino_rag.stores.memory import folder as memory_module

    docs = squad_slice["docs"][:6]
    store = f"memory:{tmp_path / 'idx'}"
    with Retriever(dim=128, encoder=encoder, store=store) as old:
        old.index(docs[:4], chunking=False)
    fresh = Retriever(dim=64, encoder=encoder, store=store, recreate=True, write_batch_size=2)
    real_save = np.save
    calls = {"n": 0}

    def full_disk_at_the_second_batch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:  # the first batch's index and full vectors are written
            raise OSError(28, "No space left on device")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(memory_module.np, "save", full_disk_at_the_second_batch)
    with pytest.raises(IndexWriteError, match="disk full"):
        fresh.index(docs, chunking=False)
    monkeypatch.undo()
    with Retriever(dim=128, encoder=encoder, store=store, create=False) as reader:
        assert reader.count() == 4  # the old collection is whole
        assert reader.search(docs[1]["text"], k=1)[0].text == docs[1]["text"]
    assert fresh.count() == 0  # what the failed call wrote is discarded
    fresh.index(docs, chunking=False)
    assert fresh.count() == 6 and not fresh.store.replacing
    fresh.close()
    with pytest.raises(StampMismatchError, match="index_dim"):
        Retriever(dim=128, encoder=encoder, store=store)
    with Retriever(dim=64, encoder=encoder, store=store) as reader:
        assert reader.count() == 6


def test_recreate_then_close_without_index_keeps_the_collection(encoder, tmp_path):
    store = f"memory:{tmp_path / 'idx'}"
    with Retriever(dim=128, encoder=encoder, store=store) as old:
        old.index(["Il Po attraversa la pianura padana."])
    with Retriever(dim=64, encoder=encoder, store=store, recreate=True) as fresh:
        assert fresh.count() == 0
        assert fresh.index([]) == [] and fresh.store.replacing  # nothing to write: kept
    with Retriever(dim=128, encoder=encoder, store=store) as again:
        assert again.count() == 1


def test_async_search_equals_sync(indexed, squad_slice):
    q = squad_slice["queries"][3]
    sync = indexed.search(q, k=5)
    got = asyncio.run(indexed.asearch(q, k=5))
    assert [h.id for h in got] == [h.id for h in sync]


def test_batch_equals_single(indexed, squad_slice):
    qs = squad_slice["queries"][:4]
    batch = indexed.search_batch(qs, k=5)
    for q, hits in zip(qs, batch, strict=True):
        assert [h.id for h in hits] == [h.id for h in indexed.search(q, k=5)]


def test_full_vectors_slice_consistently(slice_vectors):
    docs = slice_vectors["docs"]
    np.testing.assert_allclose(matryoshka_slice(docs.full, 128), docs.index, atol=1e-5)


def test_search_batch_shows_no_progress_bar(indexed, squad_slice, capfd):
    queries = squad_slice["queries"][:4 * indexed.encoder.batch_size + 8]
    results = indexed.search_batch(queries, k=1)
    assert len(results) == len(queries)
    assert "Batches" not in capfd.readouterr().err


def test_long_indexing_shows_one_progress_bar(encoder, squad_slice, capfd):
    r = Retriever(dim=64, encoder=encoder, write_batch_size=16)
    capfd.readouterr()
    r.index(squad_slice["queries"][:4 * encoder.batch_size + 8], show_progress_bar=True)
    err = capfd.readouterr().err
    assert "Indexing" in err and "Batches" not in err  # one bar: the encoder shows none
