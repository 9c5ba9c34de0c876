"""LangChain's standard suites (langchain-tests) on the service-backed classes, each against a
running ``bertino-rag serve`` app (real uvicorn, the real MiniLM): the vector store (a fresh,
empty service per test), the embeddings and the retriever (one service with squad-it-dev
paragraphs)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("langchain_tests")

from langchain_core.embeddings import DeterministicFakeEmbedding  # noqa: E402
from langchain_tests.integration_tests import (  # noqa: E402
    EmbeddingsIntegrationTests,
    RetrieversIntegrationTests,
    VectorStoreIntegrationTests,
)

from bertino_rag import MemoryStore, Retriever  # noqa: E402
from bertino_rag.serve.app import create_app  # noqa: E402
from bertino_rag.serve.client import ServiceError  # noqa: E402
from bertino_rag.serve.langchain import (  # noqa: E402
    BertinoServiceEmbeddings,
    BertinoServiceRetriever,
    BertinoServiceVectorStore,
)

from .conftest import serving  # noqa: E402

_SERVICE: dict[str, str] = {}


@pytest.fixture(scope="module", autouse=True)
def _service(encoder, squad_slice):
    """One service for the embeddings and retriever suites, on 24 Italian paragraphs."""
    retriever = Retriever(dim=128, encoder=encoder, store=MemoryStore())
    retriever.index(squad_slice["docs"][:24])  # long paragraphs are chunked
    with serving(create_app(retriever)) as url:
        _SERVICE["url"] = url
        yield url
    _SERVICE.clear()


class TestServiceVectorStore(VectorStoreIntegrationTests):
    """The suite's fake embeddings are not used: the service embeds with its own model."""

    @pytest.fixture
    def vectorstore(self, encoder):
        retriever = Retriever(dim=128, encoder=encoder, store=MemoryStore(), chunking=False)
        with serving(create_app(retriever)) as url:
            yield BertinoServiceVectorStore(url)


class TestServiceEmbeddings(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[BertinoServiceEmbeddings]:
        return BertinoServiceEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"url": _SERVICE["url"], "dim": 64}


class TestServiceRetriever(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> type[BertinoServiceRetriever]:
        return BertinoServiceRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"url": _SERVICE["url"], "k": 4}

    @property
    def retriever_query_example(self) -> str:
        return "Quanti chilometri quadrati di foresta pluviale sono coperti nel bacino?"


def test_service_embeddings_are_the_models(encoder):
    emb = BertinoServiceEmbeddings(_SERVICE["url"], dim=128, batch_size=2)
    texts = ["La pizza nasce a Napoli.", "Il Po sfocia nell'Adriatico.", "Leonardo dipinse."]
    np.testing.assert_allclose(np.asarray(emb.embed_documents(texts)),
                               encoder.encode(texts, dim=128).index, atol=1e-6)
    np.testing.assert_allclose(emb.embed_query("Dove nasce la pizza?"),
                               encoder.encode_query("Dove nasce la pizza?", dim=128).index[0],
                               atol=1e-6)
    with pytest.raises(ServiceError, match="dimensions=100 is not a Matryoshka dimension"):
        BertinoServiceEmbeddings(_SERVICE["url"], dim=100).embed_query("Ciao")


def test_service_vector_store_search_options_and_mistakes(squad_slice):
    vs = BertinoServiceVectorStore(_SERVICE["url"])
    question = squad_slice["queries"][0]
    scored = vs.similarity_search_with_score(question, k=3, filter={"para": {"$lte": 2}})
    assert len(scored) == 3 and all(d.metadata["para"] <= 2 for d, _ in scored)
    assert [s for _, s in scored] == sorted((s for _, s in scored), reverse=True)
    relevant = vs.similarity_search_with_relevance_scores(question, k=2)
    assert all(0 <= s <= 1 for _, s in relevant)
    got = vs.get_by_ids([scored[0][0].id, "not-there"])
    assert [d.id for d in got] == [scored[0][0].id]
    with pytest.raises(TypeError, match="unknown search arguments"):
        vs.similarity_search(question, k=2, rerank_k=10)
    with pytest.raises(ServiceError, match="unknown operator"):
        vs.similarity_search(question, filter={"para": {"$near": 1}})
    with pytest.raises(ValueError, match="needs the ids"):
        vs.delete()
    with pytest.raises(ServiceError, match="position 1 has empty text"):
        vs.add_texts(["Un testo.", "  "])
    with pytest.raises(ValueError, match="embeds with its own model"):
        BertinoServiceVectorStore.from_texts(["x"], DeterministicFakeEmbedding(size=4),
                                             url=_SERVICE["url"])
