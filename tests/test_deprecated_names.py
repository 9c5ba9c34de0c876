"""The Matryoshka second stage is a rescoring: ``rescore``/``rescore_k`` everywhere, with
``rerank``/``rerank_k`` answering for a release with a ``DeprecationWarning``."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from bertino_rag import MemoryStore, Retriever, Stamp
from bertino_rag.types import Document


@pytest.fixture
def store():
    rng = np.random.default_rng(0)
    full = rng.standard_normal((30, 32)).astype(np.float32)
    full /= np.linalg.norm(full, axis=1, keepdims=True)
    index = full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True)
    s = MemoryStore()
    s.open("names", Stamp(model="m", full_dim=32, index_dim=8))
    s.upsert([Document(text=f"t{i}", id=f"d{i}") for i in range(30)], index, full)
    return s, index, full


def test_store_rerank_k_warns_and_means_rescore_k(store):
    s, index, full = store
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = s.search(index[0], 5, full_vector=full[0], rescore_k=7)
    with pytest.warns(DeprecationWarning, match="rerank_k= is deprecated; use rescore_k="):
        old = s.search(index[0], 5, full_vector=full[0], rerank_k=7)
    assert old == new
    with pytest.raises(TypeError, match="pass rescore_k= only"):
        s.search(index[0], 5, full_vector=full[0], rescore_k=7, rerank_k=7)
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError,
                                                         match="rerank_k must be a positive"):
        s.search(index[0], 5, full_vector=full[0], rerank_k=0)


def test_retriever_rerank_names_warn_and_keep_working(encoder):
    with pytest.warns(DeprecationWarning, match="rerank= is deprecated; use rescore="):
        r = Retriever(dim=128, encoder=encoder, rerank=False)
    assert r.rescore is False and r.rerank is False and r.stamp.full_vectors is False
    with pytest.warns(DeprecationWarning, match="rerank_k= is deprecated"):
        r2 = Retriever(dim=128, encoder=encoder, rerank_k=20, collection="other")
    assert r2.rescore_k == 20
    r2.index(["Venezia ha molti canali.", "Roma ha molte fontane."])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = r2.search("canali", k=1, rescore_k=5)
    with pytest.warns(DeprecationWarning):
        old = r2.search("canali", k=1, rerank_k=5)
    assert old == new
