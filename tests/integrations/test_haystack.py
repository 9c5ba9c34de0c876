"""The Haystack components in real Haystack pipelines (saved and loaded again), on the real
MiniLM and squad-it-dev paragraphs."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("haystack")

from haystack import Document, Pipeline  # noqa: E402
from haystack.components.retrievers.in_memory import InMemoryEmbeddingRetriever  # noqa: E402
from haystack.components.writers import DocumentWriter  # noqa: E402
from haystack.document_stores.in_memory import InMemoryDocumentStore  # noqa: E402

from bertino_rag import Retriever  # noqa: E402
from bertino_rag.errors import FilterError, TruncationWarning  # noqa: E402
from bertino_rag.integrations.haystack import (  # noqa: E402
    BertinoDocumentEmbedder,
    BertinoRetriever,
    BertinoTextEmbedder,
    filter_of,
)


def _view(docs):
    return [(d.id, round(d.score, 5)) for d in docs]


def _hits(hits):
    return [(h.id, round(h.score, 5)) for h in hits]


async def test_retriever_in_a_pipeline_saved_and_loaded(minilm_path, squad_slice, tmp_path):
    store = f"memory:{tmp_path / 'idx'}"
    question = squad_slice["queries"][0]
    with Retriever(dim=128, model=minilm_path, store=store, collection="wiki") as r:
        r.index(squad_slice["docs"][:8])
        expected = r.search(question, 3)
        filtered = r.search(question, 3, {"para": {"$lte": 2}})
        grouped = r.search(question, 2, group_by="document")

    pipe = Pipeline()
    pipe.add_component("retriever", BertinoRetriever(model=minilm_path, dim=128, store=store,
                                                     collection="wiki", top_k=3))
    docs = pipe.run({"retriever": {"query": question}})["retriever"]["documents"]
    assert _view(docs) == _hits(expected)
    assert docs[0].content == expected[0].text and docs[0].meta == expected[0].metadata

    haystack_filter = {"operator": "AND", "conditions": [
        {"field": "meta.para", "operator": "<=", "value": 2}]}
    out = pipe.run({"retriever": {"query": question, "filters": haystack_filter}})
    assert _view(out["retriever"]["documents"]) == _hits(filtered)
    out = pipe.run({"retriever": {"query": question, "top_k": 2, "group_by": "document"}})
    assert _view(out["retriever"]["documents"]) == _hits(grouped)

    loaded = Pipeline.loads(pipe.dumps(), allowed_modules=["bertino_rag.integrations.haystack"])
    again = loaded.run({"retriever": {"query": question}})["retriever"]["documents"]
    assert _view(again) == _hits(expected)
    component = loaded.get_component("retriever")
    assert (await component.run_async(query=question))["documents"] == again

    with pytest.raises(ValueError, match="cannot be serialized"):
        BertinoRetriever(retriever=component.retriever).to_dict()


def test_haystack_filters_are_translated():
    assert filter_of({"field": "meta.anno", "operator": ">=", "value": 2000}) == {
        "anno": {"$gte": 2000}}
    assert filter_of({"operator": "OR", "conditions": [
        {"field": "meta.lang", "operator": "in", "value": ["it", "en"]},
        {"field": "meta.fonte", "operator": "not in", "value": ("a",)},
    ]}) == {"$or": [{"lang": {"$in": ["it", "en"]}}, {"fonte": {"$nin": ["a"]}}]}
    assert filter_of({"lang": "it"}) == {"lang": "it"}  # bertino-rag's own syntax
    with pytest.raises(FilterError, match="'NOT' has no bertino-rag equivalent"):
        filter_of({"operator": "NOT", "conditions": []})
    with pytest.raises(FilterError, match="'content': bertino-rag filters metadata only"):
        filter_of({"field": "content", "operator": "==", "value": "x"})
    with pytest.raises(FilterError, match="'like'"):
        filter_of({"field": "meta.x", "operator": "like", "value": "x"})


def test_embedders_feed_a_haystack_document_store(encoder, squad_slice):
    texts = [d["text"] for d in squad_slice["docs"][:6]]
    doc_embedder = BertinoDocumentEmbedder(dim=128)
    text_embedder = BertinoTextEmbedder(dim=128)
    doc_embedder.encoder = text_embedder.encoder = encoder  # the session's MiniLM, loaded once

    document_store = InMemoryDocumentStore()
    indexing = Pipeline()
    indexing.add_component("embedder", doc_embedder)
    indexing.add_component("writer", DocumentWriter(document_store))
    indexing.connect("embedder.documents", "writer.documents")
    inputs = [Document(id=f"p{i}", content=t) for i, t in enumerate(texts)]
    with pytest.warns(TruncationWarning, match="4 of 6 document texts"):  # as the encoder does
        indexing.run({"embedder": {"documents": inputs}})
    stored = {d.id: d.embedding for d in document_store.filter_documents()}
    np.testing.assert_allclose(np.asarray([stored[f"p{i}"] for i in range(len(texts))]),
                               encoder.encode(texts, dim=128, warn_truncation=False).index,
                               atol=1e-6)
    assert inputs[0].embedding is None  # the inputs are left as they were

    query = Pipeline()
    query.add_component("embedder", text_embedder)
    query.add_component("retriever", InMemoryEmbeddingRetriever(document_store, top_k=1))
    query.connect("embedder.embedding", "retriever.query_embedding")
    question = squad_slice["queries"][3]
    best = query.run({"embedder": {"text": question}})["retriever"]["documents"][0]
    direct = encoder.encode_query(question, dim=128).index[0]
    scores = encoder.encode(texts, dim=128, warn_truncation=False).index @ direct
    assert best.id == f"p{int(np.argmax(scores))}"

    with pytest.raises(ValueError, match="position 1 .* has no text content"):
        doc_embedder.run([Document(content="Testo."), Document(content="  ")])


def test_embedders_round_trip_and_check_their_dim(minilm_path):
    embedder = BertinoTextEmbedder(minilm_path, dim=64, prefix="domanda: ")
    data = embedder.to_dict()
    assert data["init_parameters"]["dim"] == 64
    loaded = BertinoTextEmbedder.from_dict(data)
    vector = loaded.run("Dove nasce la pizza?")["embedding"]
    assert len(vector) == 64 and abs(np.linalg.norm(vector) - 1) < 1e-5
    with pytest.raises(ValueError, match="larger than the output"):
        BertinoDocumentEmbedder(minilm_path, dim=4096).warm_up()
