"""MemoryStore: the conformance suite in memory and on disk, plus crash and lock behaviour."""

from __future__ import annotations

import pytest

from bertino_rag.adapters import MemoryStore

from .conformance import StoreConformance


class TestMemoryInRam(StoreConformance):
    full_vector_dtype = "float16"

    @pytest.fixture
    def make_store(self):
        store = MemoryStore()
        return lambda: store  # in RAM the data lives in the object: reopen = same object


class TestMemoryOnDisk(StoreConformance):
    persistent = True
    full_vector_dtype = "float16"

    @pytest.fixture
    def make_store(self, tmp_path):
        return lambda: MemoryStore(path=tmp_path / "index")
