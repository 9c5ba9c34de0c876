"""One path from text to store: any TextEncoder under a Retriever, and BertinoVectorStore as a
thin translation onto one (real MiniLM, squad-it-dev paragraphs)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("langchain_core")

from langchain_core.embeddings import Embeddings  # noqa: E402

from bertino_rag import Encoder, Retriever  # noqa: E402
from bertino_rag.encoder import TextEncoder  # noqa: E402
from bertino_rag.evaluation import PrecomputedEncoder  # noqa: E402
from bertino_rag.integrations.langchain import (  # noqa: E402
    BertinoEmbeddings,
    BertinoVectorStore,
    EmbeddingsEncoder,
)
from bertino_rag.stores import MemoryStore  # noqa: E402

from .shared import italian_chunks, minilm_encoder  # noqa: E402

QUESTION = "Quale nome è usato anche per descrivere la foresta pluviale amazzonica in inglese?"

pytestmark = pytest.mark.filterwarnings("ignore::bertino_rag.TruncationWarning")


class ScaledMiniLM(Embeddings):
    """Another library's Embeddings: MiniLM's raw vectors times 3, counting its calls."""

    model = "someone/minilm-wrapper"

    def __init__(self) -> None:
        self.calls = 0

    def embed_documents(self, texts):
        self.calls += 1
        return (minilm_encoder().encode_full(texts) * 3.0).tolist()

    def embed_query(self, text):
        self.calls += 1
        return (minilm_encoder().encode_full([text], kind="query")[0] * 3.0).tolist()


class Broken(Embeddings):
    def __init__(self, vectors):
        self.vectors = vectors

    def embed_documents(self, texts):
        return [list(self.vectors) for _ in texts][: max(1, len(texts) - 1)]

    def embed_query(self, text):
        return list(self.vectors)


def test_every_encoder_is_one_text_encoder():
    import bertino_rag

    assert bertino_rag.TextEncoder is TextEncoder
    enc = minilm_encoder()
    wrapped = EmbeddingsEncoder(ScaledMiniLM())
    cached = PrecomputedEncoder(enc, {})
    assert all(isinstance(e, TextEncoder) for e in (enc, wrapped, cached))
    assert not isinstance(cached, Encoder)  # it stands for an encoder, it is not one
    assert (wrapped.model_id, wrapped.full_dim, wrapped.tokenizer) == (
        "someone/minilm-wrapper", 384, None)
    assert (cached.model_id, cached.full_dim, cached.max_seq_length) == (
        enc.model_id, enc.full_dim, enc.max_seq_length)


def test_a_retriever_over_langchain_embeddings_matches_the_native_one():
    paragraphs = italian_chunks()
    native = Retriever(dim=128, encoder=minilm_encoder(), chunking=False, collection="native")
    foreign = Retriever(dim=128, encoder=EmbeddingsEncoder(ScaledMiniLM()), collection="lc")
    assert foreign.chunking is False  # no tokenizer: documents are stored whole
    assert foreign.stamp.model == "someone/minilm-wrapper"
    assert (foreign.stamp.full_dim, foreign.stamp.index_dim) == (384, 128)
    for r in (native, foreign):
        r.index(paragraphs, show_progress_bar=False)
    a, b = native.search(QUESTION, k=6), foreign.search(QUESTION, k=6)
    assert [h.id for h in a] == [h.id for h in b]
    np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=1e-5)
    assert foreign.last_index_report.n_truncated == 0  # unknown limit: nothing counted


def test_an_embeddings_passed_as_encoder_is_named_with_the_wrapper():
    with pytest.raises(TypeError, match=r"got ScaledMiniLM \(a LangChain Embeddings: pass "
                                        r"EmbeddingsEncoder\(embeddings\)"):
        Retriever(dim=128, encoder=ScaledMiniLM())  # type: ignore[arg-type]


def test_chunking_needs_a_tokenizer():
    with pytest.raises(ValueError, match="needs the encoder's tokenizer.*chunking=False"):
        Retriever(dim=128, encoder=EmbeddingsEncoder(ScaledMiniLM()), chunking=True)


def test_bad_vectors_from_an_embeddings_are_named():
    short = EmbeddingsEncoder(Broken([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match=r"shape \(1, 3\) for 2 document texts; expected"):
        short.encode(["uno", "due"])
    nan = EmbeddingsEncoder(Broken([0.1, float("nan"), 0.3]))
    with pytest.raises(ValueError, match="NaN or infinite"):
        nan.encode_query("tre")
    ragged = EmbeddingsEncoder(Broken([0.1, 0.2, 0.3]), full_dim=3)
    ragged.embeddings.embed_documents = lambda texts: [[0.1, 0.2, 0.3], [0.1]]
    with pytest.raises(ValueError, match="not vectors of 3 numbers each"):
        ragged.encode(["uno", "due"])
    with pytest.raises(ValueError, match="full_dim must be a positive int"):
        EmbeddingsEncoder(Broken([0.1]), full_dim=0)


def test_search_by_vector_full_truncated_and_wrong_dims():
    r = Retriever(dim=128, encoder=minilm_encoder(), chunking=False)
    r.index(italian_chunks(), show_progress_bar=False)
    want = r.search(QUESTION, k=5)
    raw = minilm_encoder().encode_full([QUESTION], kind="query")[0] * 7.0  # normalized here
    got = r.search_by_vector(raw.tolist(), k=5)
    assert [h.id for h in got] == [h.id for h in want]
    np.testing.assert_allclose([h.score for h in got], [h.score for h in want], atol=1e-5)
    first_stage = r.search(QUESTION, k=5, rescore=False)
    assert [h.id for h in r.search_by_vector(raw[:128], k=5)] == [h.id for h in first_stage]
    with pytest.raises(ValueError, match=r"has 100 dims; collection 'bertino' takes 384 "
                                         r"\(full\) or 128 \(truncated\)"):
        r.search_by_vector(raw[:100], k=5)
    with pytest.raises(ValueError, match="NaN"):
        r.search_by_vector([float("nan")] * 384)


def test_clear_keeps_the_collection_for_everyone_sharing_it():
    r = Retriever(dim=128, encoder=minilm_encoder(), chunking=False)
    r.index(italian_chunks(1), show_progress_bar=False)
    other = Retriever(dim=128, encoder=minilm_encoder(), store=r.store, chunking=False)
    r.clear()
    assert r.count() == 0 and other.count() == 0
    other.index(["Il Po è il fiume più lungo d'Italia."])
    assert [h.text for h in r.search("fiume", k=1)] == ["Il Po è il fiume più lungo d'Italia."]


def test_the_vector_store_is_a_translation_onto_a_retriever():
    core = Retriever(dim=128, encoder=minilm_encoder(), chunking=False)
    vs = BertinoVectorStore.from_retriever(core)
    assert vs.retriever is core
    vs.add_texts(["Napoli è sul mare.", "Torino è in Piemonte."], ids=["na", "to"])
    assert core.count() == 2 and [d.id for d in core.get(["na"])] == ["na"]
    fresh = BertinoVectorStore(BertinoEmbeddings(encoder=minilm_encoder(), dim=64))
    assert isinstance(fresh.retriever, Retriever)
    assert (fresh.stamp.index_dim, fresh.stamp.full_vectors) == (64, True)
    with pytest.raises(ValueError, match="stamps its own model id"):
        BertinoVectorStore(BertinoEmbeddings(encoder=minilm_encoder()), model_id="altro")


def test_another_embeddings_is_not_called_until_first_use():
    emb = ScaledMiniLM()
    vs = BertinoVectorStore(emb, dim=128)
    assert emb.calls == 0 and vs.stamp is None
    vs.add_texts(["Bari è in Puglia."], ids=["ba"])
    assert vs.stamp.full_dim == 384 and emb.calls == 2  # one probe, one batch


def test_vector_store_recreate_replaces_on_the_first_write(tmp_path):
    emb = BertinoEmbeddings(encoder=minilm_encoder(), dim=128)
    BertinoVectorStore(emb, MemoryStore(path=tmp_path)).add_texts(
        ["Roma è la capitale.", "Milano è in Lombardia."], ids=["roma", "milano"])
    fresh = BertinoVectorStore(emb, MemoryStore(path=tmp_path), recreate=True)
    assert fresh.similarity_search("capitale", k=2) == []  # the replacement is empty
    reader = MemoryStore(path=tmp_path)  # another reader still sees the old collection
    reader.open("langchain", fresh.stamp, create=False)
    assert reader.count() == 2
    reader.close()
    fresh.add_texts(["Firenze è in Toscana."], ids=["firenze"])
    again = BertinoVectorStore(emb, MemoryStore(path=tmp_path))
    assert [d.id for d in again.similarity_search("Toscana", k=5)] == ["firenze"]
