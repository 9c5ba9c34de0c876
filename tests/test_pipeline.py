"""Pipelined indexing: order and ids, streaming input, validation and write failures."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from bertino_rag import MemoryStore, Retriever, TruncationWarning
from bertino_rag.indexing.pipeline import IndexWriteError, StreamValidationError, index_pipelined


@pytest.fixture(scope="module")
def paragraphs(squad_slice) -> list[dict]:
    """16 real documents, cut to their first sentence to keep the model fast here."""
    return [
        {**d, "text": d["text"].split(". ")[0][:200] + "."} for d in squad_slice["docs"][:16]
    ]


class FailingStore(MemoryStore):
    """A MemoryStore whose n-th write raises (a store outage in the middle of indexing)."""

    def __init__(self, fail_on: int) -> None:
        super().__init__()
        self.fail_on = fail_on
        self.calls = 0

    def _write(self, batch):
        self.calls += 1
        if self.calls == self.fail_on:
            raise ConnectionError("store went away")
        super()._write(batch)


def test_ids_in_input_order_and_vectors_follow_their_text(encoder, paragraphs):
    r = Retriever(dim=128, encoder=encoder)
    ids = r.index(paragraphs, batch_size=4, window=16)  # sorted by length inside the window
    assert ids == [d["id"] for d in paragraphs]
    assert r.count() == len(paragraphs)
    texts = [d["text"] for d in paragraphs]
    ref = encoder.encode(texts, warn_truncation=False)
    stored = r.store.fetch_full(ids)
    np.testing.assert_allclose(stored, ref.full, atol=2e-3)  # float16 in the memory store
    got = {d.id: d.text for d in r.get(ids)}
    assert [got[i] for i in ids] == texts
    report = r.last_index_report
    assert report.n_input == report.n_written == len(paragraphs)
    assert report.encode_seconds > 0 and report.write_seconds > 0


def test_generator_equals_list(encoder, paragraphs):
    as_list = Retriever(dim=128, encoder=encoder)
    as_gen = Retriever(dim=128, encoder=encoder)
    ids_list = as_list.index(paragraphs, batch_size=8)
    ids_gen = as_gen.index((d for d in paragraphs), batch_size=4, window=8)
    assert ids_gen == ids_list
    q = "Quando è stato costruito?"
    assert [h.id for h in as_gen.search(q, k=5)] == [h.id for h in as_list.search(q, k=5)]


def test_generator_is_read_lazily(encoder, paragraphs):
    """The input is consumed a window ahead of the writes at most: memory stays flat."""
    r = Retriever(dim=128, encoder=encoder)
    ahead = []

    def stream():
        for i, d in enumerate(paragraphs):
            ahead.append(i - r.store.count())
            yield d

    r.index(stream(), batch_size=4, window=8)
    assert r.count() == len(paragraphs)
    # a window read ahead, plus the batches queued (depth 2) or being encoded and written
    assert max(ahead) <= 8 + 4 * 4, max(ahead)


def test_bad_document_in_a_list_writes_nothing(encoder, paragraphs):
    r = Retriever(dim=128, encoder=encoder)
    bad = list(paragraphs[:10]) + [{"text": "  "}] + list(paragraphs[10:])
    with pytest.raises(ValueError, match="document at position 10 has empty text"):
        r.index(bad, batch_size=4, window=8)
    assert r.count() == 0


def test_bad_document_in_a_stream_names_position_and_written(encoder, paragraphs):
    r = Retriever(dim=128, encoder=encoder)
    bad = list(paragraphs[:10]) + [None]
    with pytest.raises(StreamValidationError) as info:
        r.index(iter(bad), batch_size=4, window=4)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.position == 10 and "position 10 is None" in str(err)
    # windows 0-3 and 4-7 were complete and written; the window holding the bad one was not
    assert err.n_written == 8 == r.count()
    assert "8 documents before it were already written" in str(err)
    assert {d.id for d in r.get([d["id"] for d in paragraphs[:10]])} == {
        d["id"] for d in paragraphs[:8]
    }


def test_writer_failure_names_ids_and_keeps_what_was_written(encoder, paragraphs):
    store = FailingStore(fail_on=3)
    r = Retriever(dim=128, encoder=encoder, store=store)
    with pytest.raises(IndexWriteError) as info:
        r.index(paragraphs, batch_size=4, window=16)
    err = info.value
    assert len(err.failed_ids) == 4
    assert err.n_written == 8 == r.count()
    all_ids = {d["id"] for d in paragraphs}
    stored = {d.id for d in r.get(list(all_ids))}
    assert len(stored) == 8
    assert set(err.unwritten_ids) == all_ids - stored  # every other document is named
    assert set(err.failed_ids) <= set(err.unwritten_ids)
    assert "store went away" in str(err) and "8 documents were written before it" in str(err)
    r.store.fail_on = 0  # the store is back: indexing again completes the job
    r.index(paragraphs, batch_size=8)
    assert r.count() == len(paragraphs)


def test_one_truncation_warning_for_a_stream(encoder):
    r = Retriever(dim=128, encoder=encoder, chunking=False)  # chunking on: nothing truncated
    long_text = "La storia di Roma antica è lunga e complessa. " * 40
    docs = [f"{long_text} Parte {i}." for i in range(3)] + ["Napoli è sul mare."]
    with pytest.warns(TruncationWarning) as caught:
        r.index(iter(docs), batch_size=2, window=2)
    assert len([w for w in caught if issubclass(w.category, TruncationWarning)]) == 1
    assert "3 of 4 documents" in str(caught[0].message)
    assert r.last_index_report.n_truncated == 3


def test_one_id_for_two_documents_is_refused_and_exact_repeats_are_counted(encoder):
    docs = [{"id": "a", "text": "Prima versione."}, {"id": "b", "text": "Altro testo."},
            {"id": "a", "text": "Seconda versione."}]
    r = Retriever(dim=128, encoder=encoder)
    with pytest.raises(ValueError, match="positions 0 and 2 have the same id 'a'"):
        r.index(docs)  # a list: nothing written
    assert r.count() == 0
    with pytest.raises(StreamValidationError, match="positions 0 and 2") as err:
        r.index(iter(docs), batch_size=1, window=1)
    assert err.value.n_written == 2 and r.get(["a"])[0].text == "Prima versione."
    repeated = [{"id": "c", "text": "Terzo."}, {"text": "Quarto."}, {"id": "c", "text": "Terzo."},
                {"text": "Quarto."}]
    ids = r.index(repeated)
    assert ids[0] == ids[2] == "c" and ids[1] == ids[3]
    assert r.count() == 4 and r.last_index_report.n_duplicates == 2


def test_aindex_takes_a_generator(encoder, paragraphs):
    r = Retriever(dim=128, encoder=encoder)
    ids = asyncio.run(r.aindex((d for d in paragraphs[:10]), batch_size=4))
    assert ids == [d["id"] for d in paragraphs[:10]] and r.count() == 10


def test_bad_batch_and_window(encoder):
    r = Retriever(dim=128, encoder=encoder)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        r.index(["Roma."], batch_size=0)
    with pytest.raises(ValueError, match="window must be a positive int"):
        r.index(["Roma."], window=-1)


def test_writes_overlap_encoding():
    """With encode and write each taking 0.15 s a batch, the run takes about n+1 steps, not 2n."""
    n = 6

    def encode(texts):
        time.sleep(0.15)
        return np.zeros((len(texts), 2), np.float32), None

    written: list[list[str]] = []

    def write(docs, vectors, full):
        time.sleep(0.15)
        written.append([d.id for d in docs])

    started = time.perf_counter()
    stats = index_pipelined(
        [{"id": str(i), "text": f"t{i}"} for i in range(n)], encode=encode, write=write,
        lengths=lambda texts: [1] * len(texts), max_length=10, batch_size=1, window=n,
    )
    elapsed = time.perf_counter() - started
    assert stats.n_written == n and sorted(sum(written, [])) == sorted(map(str, range(n)))
    assert elapsed < 0.15 * 2 * n * 0.8, elapsed  # sequential would be 1.8 s
    assert stats.write_seconds >= 0.15 * n * 0.9


@pytest.mark.parametrize("chunking", [False, 64])
def test_each_document_is_checked_once_on_the_index_path(encoder, paragraphs, monkeypatch,
                                                          chunking):
    """Indexing checks each stored item against the store's rules once (the document without
    chunking, its chunks with it): not again in the pipeline, the chunk planner and the
    store's write."""
    import bertino_rag.stores.base as base

    checked: list[str] = []
    real = base.check_documents

    def counting(documents, *args, **kwargs):
        checked.extend(d.id for d in documents)
        return real(documents, *args, **kwargs)

    monkeypatch.setattr(base, "check_documents", counting)
    r = Retriever(dim=128, encoder=encoder, chunking=chunking)
    docs = [*paragraphs[:6], {"id": "long", "text": " ".join(p["text"] for p in paragraphs)}]
    r.index(docs, batch_size=4)
    stored = [d.id for batch in r.store.export() for d in batch.documents]
    assert len(stored) > len(docs) if chunking else len(stored) == len(docs)
    assert sorted(checked) == sorted(stored)
