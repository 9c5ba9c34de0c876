"""Store kinds: ``VectorStore.kind``, and the deprecated ``backend`` alias still answering."""

from __future__ import annotations

import warnings

import pytest

from bertino_rag.stores import MemoryStore
from bertino_rag.stores.base import VectorStore


def test_each_store_names_its_kind():
    assert MemoryStore.kind == "memory"
    assert MemoryStore().kind == "memory"
    pytest.importorskip("qdrant_client")
    from bertino_rag.stores.qdrant import QdrantStore

    assert QdrantStore.kind == "qdrant"
    pytest.importorskip("pymilvus")
    from bertino_rag.stores.milvus import MilvusStore

    assert MilvusStore.kind == "milvus"


def test_backend_is_a_deprecated_alias_of_kind():
    store = MemoryStore()
    with pytest.warns(DeprecationWarning, match=r"use VectorStore\.kind"):
        assert store.backend == "memory"
    with pytest.warns(DeprecationWarning, match=r"use VectorStore\.kind"):
        assert MemoryStore.backend == "memory"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert store.kind == "memory"  # the new name never warns


def test_a_store_declaring_backend_keeps_working_with_a_warning():
    with pytest.warns(DeprecationWarning, match="write kind = 'legacy'"):
        class LegacyStore(MemoryStore):
            backend = "legacy"

    assert LegacyStore.kind == "legacy"
    assert LegacyStore().kind == "legacy"
    with pytest.warns(DeprecationWarning):
        assert LegacyStore().backend == "legacy"
    assert issubclass(LegacyStore, VectorStore)
