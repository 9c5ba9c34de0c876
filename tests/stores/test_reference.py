"""The reference store passes the whole conformance suite: the protocol is enough."""

from __future__ import annotations

import uuid

import pytest

from bertino_rag.stores import ReferenceStore
from bertino_rag.testing.conformance import StoreConformance


class TestReferenceStore(StoreConformance):
    persistent = True  # a new object on the same space sees the collections

    @pytest.fixture
    def make_store(self):
        space = uuid.uuid4().hex
        return lambda: ReferenceStore(space)
