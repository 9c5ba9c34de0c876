"""Retriever.index with chunking: chunks that know their document, incremental re-index,
delete by document, on MemoryStore, Qdrant local mode and Milvus Lite."""

from __future__ import annotations

import itertools
import re
import warnings

import pytest

from bertino_rag import MemoryStore, Retriever, TruncationWarning
from bertino_rag.indexing.chunking import Chunker
from tests._texts import SENTENCES

ARTICLE = "\n\n".join(" ".join(SENTENCES[i:i + 2]) for i in range(0, len(SENTENCES), 2))
SMALL = {"max_tokens": 40}  # a few chunks per article, fast to encode


def make_store(kind: str, tmp_path):
    if kind == "memory":
        return MemoryStore()
    if kind == "qdrant":
        from bertino_rag.stores import QdrantStore

        return QdrantStore()
    from bertino_rag.stores import MilvusStore

    return MilvusStore(uri=str(tmp_path / "chunks.db"))


@pytest.fixture(params=["memory", "qdrant", "milvus"])
def retriever(request, encoder, tmp_path):
    r = Retriever(dim=128, encoder=encoder, store=make_store(request.param, tmp_path),
                  chunking=SMALL)
    yield r
    r.store.drop()
    r.close()


def chunk_ids(r: Retriever, doc_id: str) -> list[str]:
    return r.store.ids_where({"doc_id": doc_id})


def test_long_documents_are_chunked_short_ones_kept(retriever):
    short = {"id": "breve", "text": "Roma è la capitale d'Italia.", "metadata": {"k": 1}}
    ids = retriever.index([{"id": "art", "text": ARTICLE, "metadata": {"source": "a.txt"}},
                           short])
    assert ids == ["art", "breve"]
    report = retriever.last_index_report
    assert report.n_chunked == 1 and report.n_truncated == 0
    stored = retriever.get(chunk_ids(retriever, "art"))
    assert len(stored) == report.n_chunks - 1 >= 3
    stored.sort(key=lambda d: d.metadata["chunk"])
    for i, d in enumerate(stored):
        m = d.metadata
        assert m["chunk"] == i and m["doc_id"] == "art" and m["source"] == "a.txt"
        assert ARTICLE[m["char_start"]:m["char_end"]] == d.text
        assert d.id.startswith(f"art#{i}-")
    assert all(a.metadata["char_end"] < b.metadata["char_start"]
               for a, b in itertools.pairwise(stored))
    # every sentence is in some chunk
    assert all(any(s in d.text for d in stored) for s in SENTENCES)
    [kept] = retriever.get(["breve"])
    assert (kept.text, kept.metadata) == (short["text"], short["metadata"])
    assert retriever.count() == len(stored) + 1
    hit = retriever.search("Chi ha dipinto la Gioconda?", k=1)[0]
    assert "Gioconda" in hit.text and hit.metadata["doc_id"] == "art"


def test_reindexing_writes_nothing_new_and_replaces_edited_documents(retriever):
    docs = [{"id": "art", "text": ARTICLE}, {"id": "breve", "text": "Torino è in Piemonte."}]
    retriever.index(docs)
    before = set(chunk_ids(retriever, "art"))
    count = retriever.count()
    retriever.index(docs)
    report = retriever.last_index_report
    assert report.n_written == 0 and report.n_unchanged == count and report.n_deleted == 0
    assert set(chunk_ids(retriever, "art")) == before and retriever.count() == count

    edited = ARTICLE.replace("Napoli è famosa per la pizza margherita e per il Vesuvio.",
                             "Milano è il capoluogo della Lombardia.")
    retriever.index([{"id": "art", "text": edited}])
    report = retriever.last_index_report
    after = retriever.get(chunk_ids(retriever, "art"))
    assert 0 < report.n_written < len(after) + 1  # the unchanged chunks are not written again
    assert report.n_unchanged + report.n_written == len(after)
    assert report.n_deleted == len(before) - report.n_unchanged  # only the replaced ones
    assert not any("Napoli" in d.text for d in after)
    assert any("Milano" in d.text for d in after)
    assert retriever.count() == len(after) + 1
    assert "Napoli" not in retriever.search("pizza margherita Vesuvio", k=10)[0].text

    # a document that becomes short is stored whole, its old chunks deleted; and back
    retriever.index([{"id": "art", "text": "Ora è corto."}])
    assert chunk_ids(retriever, "art") == [] and retriever.get(["art"])[0].text == "Ora è corto."
    retriever.index([{"id": "art", "text": ARTICLE}])
    assert retriever.get(["art"]) == [] and set(chunk_ids(retriever, "art")) == before
    assert retriever.count() == count

    retriever.delete("art")
    assert chunk_ids(retriever, "art") == [] and retriever.count() == 1


def test_default_chunks_fill_what_the_model_reads_and_nothing_is_truncated(encoder):
    long_text = "La storia di Roma antica è lunga e complessa. " * 40
    r = Retriever(dim=128, encoder=encoder)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TruncationWarning)
        r.index([{"id": "roma", "text": long_text}])
    chunks = r.get(r.store.ids_where({"doc_id": "roma"}))
    lengths = encoder.token_lengths([c.text for c in chunks])
    per = Chunker.for_encoder(encoder).count_tokens(["La storia di Roma antica è lunga e "
                                                     "complessa."])[0]
    # as many whole sentences as fit: one more would not
    assert max(lengths) <= encoder.max_seq_length < max(lengths) + per
    assert sum(lengths) - 2 * len(chunks) == 40 * per
    # chunking off: today's behaviour, one vector from the beginning, with the warning
    off = Retriever(dim=128, encoder=encoder, collection="off")
    with pytest.warns(TruncationWarning, match="1 of 1 documents"):
        off.index([{"id": "roma", "text": long_text}], chunking=False)
    assert off.count() == 1 and off.get(["roma"])[0].text == long_text


def test_a_50000_character_line_is_indexed_whole(encoder):
    text = " ".join(f"parola{i}" for i in range(7000))
    assert len(text) > 50_000
    r = Retriever(dim=128, encoder=encoder, chunking={"max_tokens": 254, "overlap": 0})
    with warnings.catch_warnings():
        warnings.simplefilter("error", TruncationWarning)
        r.index([{"id": "riga", "text": text}])
    chunks = r.get(r.store.ids_where({"doc_id": "riga"}))
    assert encoder.count_truncated([c.text for c in chunks]) == 0
    assert sum(len(c.text) for c in chunks) + len(chunks) - 1 == len(text)


def test_pages_of_pdf_chunks(encoder):
    pages = ["Prima pagina. " + SENTENCES[0], SENTENCES[1] + " " + SENTENCES[2],
             " ".join(SENTENCES[3:])]
    text = "\n\n".join(pages)
    starts = [0, len(pages[0]) + 2, len(pages[0]) + len(pages[1]) + 4]
    r = Retriever(dim=128, encoder=encoder, chunking={"max_tokens": 24})
    r.index([{"id": "f.pdf", "text": text, "metadata": {"source": "f.pdf", "page_starts": starts}}])
    chunks = r.get(r.store.ids_where({"doc_id": "f.pdf"}))
    assert len(chunks) >= 3
    for c in chunks:
        assert "page_starts" not in c.metadata
        page = c.metadata["page"]
        assert starts[page - 1] <= c.metadata["char_start"]
        assert page == len(starts) or c.metadata["char_start"] < starts[page]
    assert {c.metadata["page"] for c in chunks} == {1, 2, 3}


def test_a_failed_write_keeps_the_old_chunks(encoder):
    class Failing(MemoryStore):
        fail = False

        def _write(self, batch):
            if self.fail:
                raise ConnectionError("store went away")
            super()._write(batch)

    store = Failing()
    r = Retriever(dim=128, encoder=encoder, store=store, chunking=SMALL)
    r.index([{"id": "art", "text": ARTICLE}])
    old = set(r.store.ids_where({"doc_id": "art"}))
    store.fail = True
    with pytest.raises(Exception, match="store went away"):
        r.index([{"id": "art", "text": ARTICLE.replace("Napoli", "Bari")}])
    assert set(r.store.ids_where({"doc_id": "art"})) == old  # nothing deleted


def test_bad_chunking_settings(encoder):
    with pytest.raises(ValueError, match="chunking must be True, False"):
        Retriever(dim=128, encoder=encoder, chunking="paragraphs")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="exceeds what the model reads"):
        Retriever(dim=128, encoder=encoder, chunking=1000)
    r = Retriever(dim=128, encoder=encoder)
    with pytest.raises(ValueError, match="chunking must be True, False"):
        r.index(["Roma."], chunking={"size": 10})
    custom = Chunker.for_encoder(encoder, max_tokens=16)
    r.index([{"id": "x", "text": ARTICLE}], chunking=custom)
    assert all(n <= 18 for n in encoder.token_lengths(
        [d.text for d in r.get(r.store.ids_where({"doc_id": "x"}))]))


def articles() -> list[dict]:
    """Three short 'articles' of four sentences each, chunked a sentence or two per chunk."""
    return [
        {"id": "colosseo", "text": "\n\n".join(SENTENCES[0:4])},
        {"id": "arte", "text": "\n\n".join(SENTENCES[4:6] + SENTENCES[0:1] + SENTENCES[6:7])},
        {"id": "luoghi", "text": "\n\n".join(SENTENCES[6:8] + SENTENCES[2:4])},
        {"id": "breve", "text": "Torino è la città della Mole Antonelliana."},
    ]


def test_group_by_document_and_expand(retriever):
    retriever.index(articles(), chunking={"max_tokens": 24})  # one sentence per chunk
    flat = retriever.search("Il Colosseo e gli spettatori", k=12)
    grouped = retriever.search("Il Colosseo e gli spettatori", k=3, group_by="document")
    assert len(grouped) == 3 and len({h.id for h in grouped}) == 3
    owners = [h.metadata.get("doc_id", h.id) for h in flat]
    assert [h.id for h in grouped] == list(dict.fromkeys(owners))[:3]
    for g in grouped:
        mine = [h for h in flat if h.metadata.get("doc_id", h.id) == g.id]
        assert g.score == pytest.approx(mine[0].score, abs=1e-5)
        assert [c.id for c in g.chunks] == [h.id for h in mine[:3]]
    everything = retriever.search("Torino", k=10, group_by="document", group_size=1)
    assert sorted(h.id for h in everything) == ["arte", "breve", "colosseo", "luoghi"]
    assert all(len(h.chunks) == 1 for h in everything)
    batch = retriever.search_batch(["Il Colosseo e gli spettatori"], k=3, group_by="document")
    assert [h.id for h in batch[0]] == [h.id for h in grouped]

    # expand: the chunk and its neighbours, in document order
    [hit] = retriever.search("Poteva ospitare decine di migliaia di spettatori.", k=1,
                             filter={"doc_id": "colosseo"})
    assert hit.metadata["chunk"] == 2
    [wide] = retriever.search("Poteva ospitare decine di migliaia di spettatori.", k=1,
                              filter={"doc_id": "colosseo"}, expand=1)
    assert wide.text == "\n\n".join(SENTENCES[1:4])
    assert wide.metadata["expanded"] == [1, 3] and wide.score == hit.score
    doc = articles()[0]["text"]
    assert doc[wide.metadata["char_start"]:wide.metadata["char_end"]] == wide.text
    [short] = retriever.search("la Mole Antonelliana", k=1, expand=2)
    assert short.id == "breve" and short.text == articles()[3]["text"]
    with pytest.raises(ValueError, match="expand must be a non-negative int"):
        retriever.search("Roma", expand=-1)


def test_expand_joins_overlapping_chunks(encoder):
    r = Retriever(dim=128, encoder=encoder, chunking={"max_tokens": 60, "overlap": 19})
    text = " ".join(SENTENCES)
    r.index([{"id": "t", "text": text}])
    chunks = sorted(r.get(r.store.ids_where({"doc_id": "t"})), key=lambda d: d.metadata["chunk"])
    assert len(chunks) >= 3
    assert chunks[1].metadata["char_start"] < chunks[0].metadata["char_end"]  # they overlap
    [wide] = r.search(chunks[1].text, k=1, expand=5)
    assert wide.text == text


def test_delete_documents_is_delete(encoder):
    r = Retriever(dim=128, encoder=encoder, chunking=SMALL)
    r.index([{"id": "art", "text": ARTICLE}, {"id": "altro", "text": "Bari è in Puglia."}])
    assert r.store.ids_where({"doc_id": "art"})
    r.delete_documents(["art"])
    assert r.store.ids_where({"doc_id": "art"}) == [] and r.count() == 1


def _long_italian(squad, at_least: int) -> str:
    """squad-it-dev paragraphs, in corpus order, joined until the text has ``at_least`` bytes."""
    parts: list[str] = []
    for doc in squad.corpus.values():
        parts.append(doc["text"])
        if len("\n\n".join(parts).encode("utf-8")) > at_least:
            return "\n\n".join(parts)
    raise AssertionError("corpus too small")


def test_the_store_text_limit_applies_to_the_chunks_it_stores(encoder, squad, tmp_path):
    from bertino_rag.stores import MilvusStore
    from bertino_rag.stores.milvus import TEXT_MAX_BYTES

    big = _long_italian(squad, TEXT_MAX_BYTES)
    r = Retriever(dim=128, encoder=encoder, store=MilvusStore(uri=str(tmp_path / "m.db")))
    try:
        r.index([{"id": "corto", "text": "Roma è la capitale d'Italia."}])
        # unchunked, the document itself is what Milvus would have to keep: refused, by name
        with pytest.raises(ValueError, match=r"document at position 1 \(id 'lungo'\) has \d+ "
                                             rf"bytes of text; this store keeps at most "
                                             rf"{TEXT_MAX_BYTES}"):
            r.index([{"id": "nuovo", "text": "Un testo breve."}, {"id": "lungo", "text": big}],
                    chunking=False)
        # one unknown token of 80,000 bytes: a chunk that cannot be cut smaller, refused
        # before anything of the call is written
        with pytest.raises(ValueError, match=r"document at position 1 \(id 'blob'\).*80000 "
                                             r"bytes of text.*without spaces"):
            r.index([{"id": "nuovo", "text": "Un testo breve."},
                     {"id": "blob", "text": "è" * 40_000}])
        assert r.count() == 1 and r.get(["nuovo"]) == []
        # chunked, every chunk fits: the document over the limit is stored
        with warnings.catch_warnings():
            warnings.simplefilter("error", TruncationWarning)
            r.index([{"id": "lungo", "text": big}])
        report = r.last_index_report
        assert report.n_chunked == 1 and report.n_written == report.n_chunks > 1
        chunks = r.get(chunk_ids(r, "lungo"))
        assert len(chunks) == report.n_chunks and r.count() == 1 + len(chunks)
        assert max(len(c.text.encode("utf-8")) for c in chunks) <= TEXT_MAX_BYTES
        assert r.get(["corto"])[0].text == "Roma è la capitale d'Italia."
    finally:
        r.store.drop()
        r.close()


def test_a_stream_names_a_bad_chunk_and_keeps_what_it_wrote(encoder):
    from bertino_rag.indexing.pipeline import StreamValidationError
    from bertino_rag.stores.base import StoreLimits

    class Small(MemoryStore):
        limits = StoreLimits(max_text_bytes=400)

    r = Retriever(dim=128, encoder=encoder, store=Small(), chunking=SMALL)

    def docs():
        yield {"id": "art", "text": ARTICLE}  # over 400 bytes, its chunks fit
        yield {"id": "blob", "text": "x" * 5_000}

    with pytest.raises(StreamValidationError, match=r"document at position 1 \(id 'blob'\)"
                                                    r".*5000 bytes") as err:
        r.index(docs(), window=1, batch_size=1)
    assert err.value.position == 1 and err.value.n_written == len(chunk_ids(r, "art")) > 1


def test_bad_files_are_named_and_nothing_indexed_is_lost(encoder, tmp_path):
    from bertino_rag.indexing.loaders import DocumentLoader, DocumentLoadError, SkippedFileWarning
    from tests.test_loaders import bad_files

    good = tmp_path / "buoni"
    good.mkdir()
    (good / "roma.txt").write_text("Roma è la capitale d'Italia.", encoding="utf-8")
    (good / "articolo.md").write_text(ARTICLE, encoding="utf-8")
    r = Retriever(dim=128, encoder=encoder, chunking=SMALL)
    r.index(DocumentLoader(good))
    before = {d.id: (d.text, d.metadata) for d in r.get(r.store.ids_where(
        {"source": {"$in": [str(good / "roma.txt"), str(good / "articolo.md")]}}))}
    assert len(before) == r.count() > 2  # the article is stored as chunks

    # every bad input of the issue beside one new good file, in the same folder
    expected = bad_files(good)
    (good / "nuovo.txt").write_text("Napoli è famosa per la pizza.", encoding="utf-8")
    loader = DocumentLoader(good)
    with pytest.warns(SkippedFileWarning) as caught:
        r.index(loader)
    named = {str(w.message).split(": ")[0] for w in caught}
    assert named == {f"skipped {good / name}" for name in expected}
    assert {s.path for s in loader.skipped} == {str(good / name) for name in expected}
    assert r.last_index_report.n_unchanged == len(before)
    assert r.count() == len(before) + 1
    after = {d.id: (d.text, d.metadata) for d in r.get(list(before))}
    assert after == before

    # fatal on the first bad file: named, and the index is as it was
    with pytest.raises(DocumentLoadError, match=re.escape(str(good))):
        r.index(DocumentLoader(good, on_error="raise"))
    assert r.count() == len(before) + 1
    assert {d.id: (d.text, d.metadata) for d in r.get(list(before))} == before
