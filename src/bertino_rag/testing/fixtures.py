"""The fixtures and capability flags of the store conformance suite (:mod:`.conformance`)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from ..lexical import BM25, Analyzer, lexical_spec
from ..stores.base import VectorStore
from ..types import Document, Stamp
from .corpus import random_corpus

_RANDOM_CORPUS: dict = {}


class Fixtures:
    """What every part of the suite reads: the store under test, its data, its flags.

    A subclass provides ``make_store``: a fixture returning a factory of new, unopened store
    objects that point at the same place each time (so that reopening can be tested).
    """

    #: whether the store's data survives a new store object on the same location
    persistent: bool = False
    #: tolerance on full-vector (rescored) scores; full vectors may be stored as float16
    full_tol: float = 2e-3
    #: the ``full_vector_dtype`` the store must declare (None: either)
    full_vector_dtype: str | None = None
    #: the engine computes the second stage itself (a Qdrant prefetch query, which scores a
    #: float16 copy of the query against float16 vectors): its scores equal the float32
    #: products of the stored full vectors within ``full_tol``, not bit for bit
    engine_rescores: bool = False
    #: whether a search running beside a writer thread is tested (a store that serializes
    #: writers and readers passes it too; turn it off only for a store that cannot run
    #: two threads at all)
    concurrent_writers: bool = True

    @pytest.fixture
    def make_store(self) -> Callable[[], VectorStore]:  # pragma: no cover
        raise NotImplementedError("a conformance subclass provides the make_store fixture")

    @pytest.fixture
    def name(self) -> str:
        return f"t_{uuid.uuid4().hex[:12]}"

    @pytest.fixture
    def corpus(self) -> dict:
        """Documents, query texts, their vectors and the model they stand for (override to run
        the suite on other data)."""
        if not _RANDOM_CORPUS:
            _RANDOM_CORPUS.update(random_corpus())
        return _RANDOM_CORPUS

    @pytest.fixture
    def stamp(self, corpus) -> Stamp:
        return Stamp(model=corpus["model"], full_dim=corpus["full_dim"], index_dim=128)

    @pytest.fixture
    def data(self, corpus):
        docs = [Document(text=d["text"], id=d["id"], metadata=d["metadata"])
                for d in corpus["docs"]]
        return docs, corpus["doc_vectors"], corpus["query_vectors"]

    @pytest.fixture
    def filled(self, make_store, name, stamp, data) -> Iterator[VectorStore]:
        docs, vec, _ = data
        store = make_store()
        store.open(name, stamp)
        store.upsert(docs, vec.index, vec.full)
        yield store
        try:
            if store.is_open:
                store.drop()
        finally:
            store.close()

    @pytest.fixture
    def lex_stamp(self, stamp) -> Stamp:
        return Stamp(model=stamp.model, full_dim=stamp.full_dim, index_dim=stamp.index_dim,
                     lexical=lexical_spec(Analyzer(), BM25()))

    @pytest.fixture
    def lex_filled(self, make_store, name, lex_stamp, data) -> Iterator[VectorStore]:
        store = make_store()
        if not store.supports_lexical:
            pytest.skip(f"{type(store).__name__} keeps no lexical index")
        docs, vec, _ = data
        store.open(name, lex_stamp)
        store.upsert(docs, vec.index, vec.full)
        yield store
        try:
            if store.is_open:
                store.drop()
        finally:
            store.close()
