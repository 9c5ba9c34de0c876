"""The LangChain integration beyond the standard suites: real MiniLM, squad-it-dev paragraphs."""

from __future__ import annotations

import asyncio
import importlib
import sys

import numpy as np
import pytest

pytest.importorskip("langchain_core")

from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import Embeddings  # noqa: E402
from langchain_core.indexing import InMemoryRecordManager, aindex, index  # noqa: E402
from langchain_core.prompts import ChatPromptTemplate  # noqa: E402
from langchain_core.runnables import RunnablePassthrough  # noqa: E402

from bertino_rag import Retriever, StampMismatchError  # noqa: E402
from bertino_rag.integrations.langchain import (  # noqa: E402
    BertinoEmbeddings,
    BertinoRetriever,
    BertinoVectorStore,
)
from bertino_rag.stores import MemoryStore  # noqa: E402

from .shared import italian_chunks, italian_paragraphs, italian_retriever, minilm_encoder  # noqa: E402

QUESTION = "Quale nome è usato anche per descrivere la foresta pluviale amazzonica in inglese?"

pytestmark = pytest.mark.filterwarnings("ignore::bertino_rag.TruncationWarning")


def lc_docs(paragraphs: list[dict]) -> list[Document]:
    return [Document(page_content=p["text"], metadata=p["metadata"]) for p in paragraphs]


@pytest.fixture
def embeddings() -> BertinoEmbeddings:
    return BertinoEmbeddings(encoder=minilm_encoder(), dim=128)


# ---------------------------------------------------------------------- optional extra
def test_missing_langchain_core_names_the_extra(monkeypatch):
    monkeypatch.delitem(sys.modules, "bertino_rag.integrations.langchain")
    monkeypatch.setitem(sys.modules, "langchain_core", None)
    with pytest.raises(ImportError, match=r"pip install 'bertino-rag\[langchain\]'"):
        importlib.import_module("bertino_rag.integrations.langchain")


# ---------------------------------------------------------------------- embeddings
def test_embeddings_are_renormalized_matryoshka_prefixes():
    enc = minilm_encoder()
    texts = [p["text"] for p in italian_chunks(2)]
    emb = BertinoEmbeddings(encoder=enc, dim=64)
    got = np.asarray(emb.embed_documents(texts))
    raw = enc.encode_full(texts)
    want = raw[:, :64] / np.linalg.norm(raw[:, :64], axis=1, keepdims=True)
    assert got.shape == (len(texts), 64)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(got, want, atol=1e-5)
    q = np.asarray(emb.embed_query(QUESTION))
    np.testing.assert_allclose(q, enc.encode_query(QUESTION, dim=64).index[0], atol=1e-6)
    assert len(BertinoEmbeddings(encoder=enc).embed_query(QUESTION)) == enc.dim


def test_embeddings_reject_bad_arguments():
    enc = minilm_encoder()
    with pytest.raises(ValueError, match="not both"):
        BertinoEmbeddings("some/model", encoder=enc)
    with pytest.raises(ValueError, match="larger than"):
        BertinoEmbeddings(encoder=enc, dim=4096)
    with pytest.raises(ValueError, match="empty"):
        BertinoEmbeddings(encoder=enc).embed_documents(["ciao", "  "])
    assert BertinoEmbeddings(encoder=enc).embed_documents([]) == []


async def test_async_embedding_does_not_block_the_event_loop():
    emb = BertinoEmbeddings(encoder=minilm_encoder())
    texts = [p["text"] for p in italian_chunks(4)] * 2
    ticks = 0
    done = False

    async def ticker():
        nonlocal ticks
        while not done:
            ticks += 1
            await asyncio.sleep(0.005)

    task = asyncio.create_task(ticker())
    vectors = await emb.aembed_documents(texts)
    done = True
    await task
    assert len(vectors) == len(texts)
    assert ticks >= 3, "the event loop was blocked while the model ran"


# ---------------------------------------------------------------------- retriever
def test_as_langchain_returns_the_retrievers_hits_with_id_and_score():
    r = italian_retriever()
    lc = r.as_langchain(k=3)
    assert isinstance(lc, BertinoRetriever) and lc.retriever is r and lc.k == 3
    docs = lc.invoke(QUESTION)
    hits = r.search(QUESTION, k=3)
    assert [d.id for d in docs] == [h.id for h in hits]
    assert [d.metadata["id"] for d in docs] == [h.id for h in hits]
    np.testing.assert_allclose([d.metadata["score"] for d in docs], [h.score for h in hits])
    assert docs[0].metadata["source"] == hits[0].metadata["source"]
    assert [d.page_content for d in docs] == [h.text for h in hits]


def test_retriever_fields_and_per_call_overrides():
    r = italian_retriever()
    lc = BertinoRetriever(retriever=r, k=5, filter={"source": "Cloroplasto"}, rescore=False,
                          score_key="cosine")
    docs = lc.invoke(QUESTION)
    assert len(docs) == 5 and {d.metadata["source"] for d in docs} == {"Cloroplasto"}
    want = r.search(QUESTION, 5, {"source": "Cloroplasto"}, rescore=False)
    np.testing.assert_allclose([d.metadata["cosine"] for d in docs], [h.score for h in want])
    assert len(lc.invoke(QUESTION, k=2, filter=None)) == 2
    with pytest.raises(TypeError, match="unknown search arguments"):
        lc.invoke(QUESTION, top_k=2)
    with pytest.raises(ValueError):
        BertinoRetriever(retriever=r, k=0)
    with pytest.raises(ValueError, match="top_k"):
        r.as_langchain(top_k=3)
    tagged = r.as_langchain(k=1, tags=["it"], metadata={"corpus": "squad-it"})
    assert tagged.tags == ["it"] and len(tagged.invoke(QUESTION)) == 1


async def test_ainvoke_awaits_retriever_asearch_off_the_event_loop(monkeypatch):
    """``ainvoke`` awaits ``Retriever.asearch``, which runs the search in a worker thread: the
    event loop's thread never encodes or searches."""
    import threading

    r = italian_retriever()
    calls, threads = [], []
    original_async, original_sync = r.asearch, r.search

    async def spy(*args, **kwargs):
        calls.append(args)
        return await original_async(*args, **kwargs)

    def sync_spy(*args, **kwargs):
        threads.append(threading.current_thread())
        return original_sync(*args, **kwargs)

    monkeypatch.setattr(r, "asearch", spy)
    monkeypatch.setattr(r, "search", sync_spy)
    docs = await r.as_langchain(k=2).ainvoke(QUESTION)
    assert calls and calls[0][:2] == (QUESTION, 2)
    assert threads and threading.main_thread() not in threads
    monkeypatch.undo()
    assert [d.id for d in docs] == [h.id for h in r.search(QUESTION, k=2)]


async def test_concurrent_ainvoke_shares_one_model():
    r = italian_retriever()
    lc = r.as_langchain(k=2)
    questions = [f"{QUESTION} ({i})" for i in range(8)]
    results = await asyncio.gather(*(lc.ainvoke(q) for q in questions))
    for q, docs in zip(questions, results, strict=True):
        assert [d.id for d in docs] == [h.id for h in r.search(q, k=2)]


def format_docs(docs: list[Document]) -> str:
    return "\n\n".join(d.page_content for d in docs)


def test_lcel_chain_invoke_batch_ainvoke():
    r = italian_retriever()
    prompt = ChatPromptTemplate.from_template("Contesto:\n{context}\n\nDomanda: {question}")
    chain = (
        {"context": r.as_langchain(k=2) | format_docs, "question": RunnablePassthrough()}
        | prompt
    )
    text = chain.invoke(QUESTION).to_string()
    for hit in r.search(QUESTION, k=2):
        assert hit.text in text
    assert QUESTION in text
    other = "In quale membrana si trovano i tilacoidi?"
    batch = chain.batch([QUESTION, other])
    assert batch[0].to_string() == text
    assert all(h.text in batch[1].to_string() for h in r.search(other, k=2))
    assert asyncio.run(chain.ainvoke(QUESTION)).to_string() == text


def test_batch_recall_on_squad_slice(squad):
    """The LangChain retriever returns exactly the core's hits, and they are relevant."""
    r = italian_retriever()
    stored = {p["id"] for p in italian_paragraphs()}
    qrels = {q: rel for q, rel in squad.qrels.items() if set(rel) <= stored}
    qids = sorted(qrels)[:40]
    docs = r.as_langchain(k=4).batch([squad.queries[q] for q in qids])
    hits = r.search_batch([squad.queries[q] for q in qids], k=4)
    assert [[d.id for d in ds] for ds in docs] == [[h.id for h in hs] for hs in hits]
    recall = np.mean(
        [bool(set(qrels[q]) & {d.id for d in ds}) for q, ds in zip(qids, docs, strict=True)]
    )
    assert recall >= 0.7, f"recall@4 {recall:.2f} on {len(qids)} questions"


# ---------------------------------------------------------------------- vector store
def test_vector_store_matches_the_core_retriever(embeddings):
    paragraphs = italian_chunks()
    core = Retriever(dim=128, encoder=minilm_encoder(), collection="core")
    core.index(paragraphs)
    vs = BertinoVectorStore(embeddings)
    ids = vs.add_documents(lc_docs(paragraphs), ids=[p["id"] for p in paragraphs])
    assert ids == [p["id"] for p in paragraphs]
    assert vs.stamp.index_dim == 128 and vs.stamp.full_dim == 384 and vs.stamp.full_vectors
    assert vs.stamp.model == minilm_encoder().model_id
    got = vs.similarity_search_with_score(QUESTION, k=5)
    want = core.search(QUESTION, k=5)
    assert [d.id for d, _ in got] == [h.id for h in want]
    np.testing.assert_allclose([s for _, s in got], [h.score for h in want], atol=1e-6)
    assert got[0][0].metadata == want[0].metadata
    # the same collection through from_retriever
    shared = BertinoVectorStore.from_retriever(core)
    assert [d.id for d in shared.similarity_search(QUESTION, k=5)] == [h.id for h in want]


class ForeignEmbeddings(Embeddings):
    """Another library's Embeddings: full, unnormalized MiniLM vectors, no Matryoshka."""

    model = "someone/minilm-wrapper"

    def embed_documents(self, texts):
        return (minilm_encoder().encode_full(texts) * 3.0).tolist()

    def embed_query(self, text):
        return (minilm_encoder().encode_full([text], kind="query")[0] * 3.0).tolist()


def test_any_embeddings_are_truncated_like_the_native_path(embeddings):
    paragraphs = italian_chunks()
    native = BertinoVectorStore(embeddings)
    foreign = BertinoVectorStore(ForeignEmbeddings(), dim=128)
    for vs in (native, foreign):
        vs.add_texts([p["text"] for p in paragraphs], [p["metadata"] for p in paragraphs],
                     ids=[p["id"] for p in paragraphs])
    assert foreign.stamp.model == "someone/minilm-wrapper"
    assert (foreign.stamp.index_dim, foreign.stamp.full_vectors) == (128, True)
    a = native.similarity_search_with_score(QUESTION, k=6)
    b = foreign.similarity_search_with_score(QUESTION, k=6)
    assert [d.id for d, _ in a] == [d.id for d, _ in b]
    np.testing.assert_allclose([s for _, s in a], [s for _, s in b], atol=1e-5)
    full = ForeignEmbeddings().embed_query(QUESTION)
    assert [d.id for d in foreign.similarity_search_by_vector(full, k=6)] == [d.id for d, _ in b]
    truncated = foreign.similarity_search_by_vector(full[:128], k=3)
    assert len(truncated) == 3
    with pytest.raises(ValueError, match="384 \\(full\\) or 128"):
        foreign.similarity_search_by_vector(full[:100], k=3)


def test_stamp_mismatch_on_reopen_keeps_the_data(tmp_path, embeddings):
    paragraphs = italian_chunks(2)
    vs = BertinoVectorStore(embeddings, MemoryStore(path=tmp_path))
    vs.add_documents(lc_docs(paragraphs))
    with pytest.raises(StampMismatchError, match="index_dim"):
        BertinoVectorStore(BertinoEmbeddings(encoder=minilm_encoder(), dim=64),
                           MemoryStore(path=tmp_path))
    other = BertinoVectorStore(ForeignEmbeddings(), MemoryStore(path=tmp_path), dim=128)
    with pytest.raises(StampMismatchError, match="model"):
        other.similarity_search(QUESTION)
    again = BertinoVectorStore(embeddings, MemoryStore(path=tmp_path))
    assert again.store.count() == len(paragraphs)


def test_search_kwargs_filter_threshold_and_mmr(embeddings):
    vs = BertinoVectorStore(embeddings)
    vs.add_documents(lc_docs(italian_chunks()))
    ranked = vs.similarity_search_with_score(QUESTION, k=8)
    only = vs.similarity_search(QUESTION, k=3, filter={"source": "Programma Apollo"})
    assert len(only) == 3 and {d.metadata["source"] for d in only} == {"Programma Apollo"}
    with pytest.raises(TypeError, match="unknown search arguments"):
        vs.similarity_search(QUESTION, k=3, where={"source": "x"})

    threshold = (ranked[2][1] + ranked[3][1]) / 2
    above = vs.as_retriever(search_type="similarity_score_threshold",
                            search_kwargs={"k": 8, "score_threshold": threshold}).invoke(QUESTION)
    assert [d.id for d in above] == [d.id for d, _ in ranked[:3]]

    mmr = vs.as_retriever(search_type="mmr", search_kwargs={"k": 4, "fetch_k": 8})
    diverse = mmr.invoke(QUESTION)
    assert len({d.id for d in diverse}) == 4 and diverse[0].id == ranked[0][0].id
    pure = vs.max_marginal_relevance_search(QUESTION, k=4, fetch_k=8, lambda_mult=1.0)
    assert [d.id for d in pure] == [d.id for d, _ in ranked[:4]]
    assert [d.id for d in asyncio.run(mmr.ainvoke(QUESTION))] == [d.id for d in diverse]


def test_mmr_without_stored_full_vectors(embeddings):
    vs = BertinoVectorStore(embeddings, rescore=False)
    vs.add_documents(lc_docs(italian_chunks()))
    assert not vs.stamp.full_vectors
    ranked = vs.similarity_search(QUESTION, k=4)
    pure = vs.max_marginal_relevance_search(QUESTION, k=4, fetch_k=8, lambda_mult=1.0)
    assert {d.id for d in pure} == {d.id for d in ranked}


def test_bad_input_writes_nothing(embeddings):
    vs = BertinoVectorStore(embeddings)
    vs.add_texts(["Il Po è il fiume più lungo d'Italia."], ids=["po"])
    with pytest.raises(ValueError, match="metadatas"):
        vs.add_texts(["a", "b"], [{"x": 1}])
    with pytest.raises(ValueError, match="position 1"):
        vs.add_texts(["Roma è la capitale.", ""], ids=["roma", "vuoto"])
    with pytest.raises(TypeError, match="unknown arguments"):
        vs.add_texts(["Roma è la capitale."], namespace="x")
    assert vs.store.count() == 1 and vs.get_by_ids(["roma", "vuoto"]) == []


def test_duplicate_ids_in_one_call_are_refused_naming_the_positions(embeddings):
    vs = BertinoVectorStore(embeddings)
    vs.add_texts(["Il Po è il fiume più lungo d'Italia."], ids=["po"])
    with pytest.raises(ValueError, match=r"positions 0 and 2 have the same id 'a'"):
        vs.add_texts(["Roma è la capitale.", "Napoli è sul mare.", "Torino è sul Po."],
                     ids=["a", "b", "a"])
    with pytest.raises(ValueError, match=r"positions 0 and 1 have the same id '7'"):
        vs.add_documents([Document(page_content="sette", id=7),  # type: ignore[arg-type]
                          Document(page_content="altro sette", id="7")])
    with pytest.raises(ValueError, match=r"positions 1 and 2 have the same id '7'"):
        vs.add_texts(["uno", "sette", "altro sette"], ids=["1", 7, "7"])  # type: ignore[list-item]
    assert vs.store.count() == 1  # nothing of a refused call is written
    # an exact repeat is one document, as in Retriever.index
    assert vs.add_texts(["Bari è in Puglia.", "Bari è in Puglia."], ids=["ba", "ba"]) == [
        "ba", "ba"]
    assert vs.store.count() == 2


async def test_async_add_and_search_match_sync(embeddings):
    paragraphs = italian_chunks(2)
    vs = BertinoVectorStore(embeddings)
    ids = await vs.aadd_documents(lc_docs(paragraphs))
    assert len(ids) == len(paragraphs)
    a = await vs.asimilarity_search_with_score(QUESTION, k=3)
    b = vs.similarity_search_with_score(QUESTION, k=3)
    assert [(d.id, round(s, 5)) for d, s in a] == [(d.id, round(s, 5)) for d, s in b]
    assert await vs.adelete([ids[0]]) is True
    assert await vs.aget_by_ids([ids[0]]) == []


def test_delete_all_then_reuse(embeddings):
    vs = BertinoVectorStore.from_texts(["Napoli è sul mare.", "Torino è in Piemonte."],
                                       embeddings, ids=["na", "to"])
    core = Retriever(dim=128, encoder=minilm_encoder(), store=vs.store, collection="langchain")
    assert core.count() == 2
    assert vs.delete() is True
    assert vs.similarity_search("Napoli", k=2) == [] and core.count() == 0
    vs.add_texts(["Bari è in Puglia."], ids=["ba"])
    assert [d.id for d in vs.similarity_search("Puglia", k=2)] == ["ba"]


# ---------------------------------------------------------------------- index() API
def test_index_api_skips_unchanged_and_full_cleanup_deletes_one_source(embeddings):
    paragraphs = italian_chunks(4)
    docs = lc_docs(paragraphs)
    vs = BertinoVectorStore(embeddings)
    rm = InMemoryRecordManager(namespace="bertino/squad")
    rm.create_schema()
    kw = {"cleanup": "full", "source_id_key": "source", "key_encoder": "sha256"}

    first = index(docs, rm, vs, **kw)
    assert first == {"num_added": len(docs), "num_updated": 0, "num_skipped": 0,
                     "num_deleted": 0}
    assert vs.store.count() == len(docs)

    again = index(docs, rm, vs, **kw)
    assert again == {"num_added": 0, "num_updated": 0, "num_skipped": len(docs),
                     "num_deleted": 0}

    removed = "Programma Apollo"
    kept = [d for d in docs if d.metadata["source"] != removed]
    before = {d.id: d.metadata["source"] for d in vs.get_by_ids(rm.list_keys())}
    gone_ids = [i for i, s in before.items() if s == removed]
    third = index(kept, rm, vs, **kw)
    assert third == {"num_added": 0, "num_updated": 0, "num_skipped": len(kept),
                     "num_deleted": len(docs) - len(kept)}
    assert vs.get_by_ids(gone_ids) == []
    left = vs.get_by_ids([i for i, s in before.items() if s != removed])
    assert len(left) == len(kept) == vs.store.count()
    assert removed not in {d.metadata["source"] for d in vs.similarity_search(QUESTION, k=10)}


def test_index_api_incremental_replaces_an_edited_chunk(embeddings):
    docs = lc_docs(italian_chunks(3))
    vs = BertinoVectorStore(embeddings)
    rm = InMemoryRecordManager(namespace="bertino/incremental")
    rm.create_schema()
    kw = {"cleanup": "incremental", "source_id_key": "source", "key_encoder": "sha256"}
    index(docs, rm, vs, **kw)
    edited = list(docs)
    edited[1] = Document(page_content=docs[1].page_content + " Testo aggiornato.",
                         metadata=docs[1].metadata)
    result = index(edited, rm, vs, **kw)
    assert result == {"num_added": 1, "num_updated": 0, "num_skipped": len(docs) - 1,
                      "num_deleted": 1}
    texts = {d.page_content for d in vs.get_by_ids(rm.list_keys())}
    assert edited[1].page_content in texts and docs[1].page_content not in texts
    assert vs.store.count() == len(docs)
    again = asyncio.run(aindex(edited, rm, vs, **kw))
    assert again == {"num_added": 0, "num_updated": 0, "num_skipped": len(docs),
                     "num_deleted": 0}

