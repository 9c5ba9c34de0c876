"""QdrantStore: the conformance suite in memory, in a folder and (with QDRANT_URL) on a server;
congruence with MemoryStore; both two-stage strategies; filters, retries, async, errors."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid

import numpy as np
import pytest

pytest.importorskip("qdrant_client", reason="qdrant-client is not installed (extra 'qdrant')")

from qdrant_client import QdrantClient, models  # noqa: E402

from bertino_rag.adapters import MemoryStore, StoreError  # noqa: E402
from bertino_rag.adapters.filters import FilterError, matches, parse_filter  # noqa: E402
from bertino_rag.adapters.qdrant import QdrantStore, point_id  # noqa: E402
from bertino_rag.types import Document, Stamp, StampMismatchError  # noqa: E402

from .conformance import SCORE_TOL, StoreConformance, same_ranking  # noqa: E402

QDRANT_URL = os.environ.get("QDRANT_URL")


class TestQdrantInMemory(StoreConformance):
    full_tol = 1e-4  # same float16 values as the oracle: only the summation order differs

    @pytest.fixture
    def make_store(self):
        store = QdrantStore()
        return lambda: store  # ":memory:" data lives in the client: reopen = same object


class TestQdrantOnDisk(StoreConformance):
    persistent = True
    full_tol = 1e-4

    @pytest.fixture
    def make_store(self, tmp_path):
        return lambda: QdrantStore(path=tmp_path / "qdrant")


@pytest.mark.server
@pytest.mark.skipif(not QDRANT_URL, reason="QDRANT_URL is not set: no Qdrant server to test")
class TestQdrantServer(StoreConformance):
    persistent = True

    @pytest.fixture
    def make_store(self):
        return lambda: QdrantStore(url=QDRANT_URL)
