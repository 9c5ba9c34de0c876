"""LangChain's standard test suites (langchain-tests) on the bertino-rag integration.

Embeddings and retriever run the real MiniLM on squad-it-dev paragraphs. The vector-store suite
uses the suite's own fake embeddings (6-d) on five stores: in memory, on disk, with
Matryoshka truncation to 4 dims plus full-vector rescoring (the two-stage path), and the same
two-stage layout on Qdrant (local mode) and Milvus Lite.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("langchain_tests")

from langchain_tests.integration_tests import (  # noqa: E402
    EmbeddingsIntegrationTests,
    RetrieversIntegrationTests,
    VectorStoreIntegrationTests,
)
from langchain_tests.unit_tests import EmbeddingsUnitTests  # noqa: E402

from bertino_rag.integrations.langchain import (  # noqa: E402
    BertinoEmbeddings,
    BertinoRetriever,
    BertinoVectorStore,
)
from bertino_rag.stores import MemoryStore, make_store  # noqa: E402

from ..conftest import minilm  # noqa: E402
from .shared import italian_retriever, minilm_encoder  # noqa: E402


class TestBertinoEmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[BertinoEmbeddings]:
        return BertinoEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"encoder": minilm_encoder()}

    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        path = minilm()
        return {"BERTINO_RAG_MODEL": path}, {"device": "cpu"}, {"model_name": path, "dim": 384}


class TestBertinoEmbeddingsIntegration(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[BertinoEmbeddings]:
        return BertinoEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"encoder": minilm_encoder(), "dim": 64}


class TestBertinoRetrieverIntegration(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> type[BertinoRetriever]:
        return BertinoRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"retriever": italian_retriever(), "k": 4}

    @property
    def retriever_query_example(self) -> str:
        return "Quanti chilometri quadrati di foresta pluviale sono coperti nel bacino?"


class TestBertinoVectorStoreInMemory(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self) -> BertinoVectorStore:
        return BertinoVectorStore(self.get_embeddings(), MemoryStore())


class TestBertinoVectorStoreOnDisk(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self, tmp_path) -> BertinoVectorStore:
        return BertinoVectorStore(self.get_embeddings(), MemoryStore(path=tmp_path / "idx"))


class TestBertinoVectorStoreTwoStage(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self) -> BertinoVectorStore:
        return BertinoVectorStore(self.get_embeddings(), dim=4, rescore=True)


class TestBertinoVectorStoreQdrantLocal(VectorStoreIntegrationTests):
    """The same suite over Qdrant's local mode (in memory), two-stage."""

    @pytest.fixture
    def vectorstore(self) -> BertinoVectorStore:
        pytest.importorskip("qdrant_client")
        return BertinoVectorStore(self.get_embeddings(), make_store("qdrant"), dim=4, rescore=True)


@pytest.mark.slow
class TestBertinoVectorStoreMilvusLite(VectorStoreIntegrationTests):
    """The same suite over Milvus Lite (a local file), two-stage (slow: a server per test)."""

    @pytest.fixture
    def vectorstore(self, tmp_path) -> BertinoVectorStore:
        pytest.importorskip("pymilvus")
        pytest.importorskip("milvus_lite")
        store = make_store(f"milvus:{tmp_path / 'lc.db'}")
        vs = BertinoVectorStore(self.get_embeddings(), store, dim=4, rescore=True)
        yield vs
        store.close()
