"""The store contract, as tests: every store subclasses :class:`StoreConformance`.

Importable by a store that lives outside this repository (``pip install 'bertino-rag[dev]'``
for pytest)::

    import pytest
    from bertino_rag.testing import StoreConformance

    class TestMyStore(StoreConformance):
        persistent = True          # the data survives a new store object on the same place

        @pytest.fixture
        def make_store(self, tmp_path):
            return lambda: MyStore(tmp_path / "data")

``make_store`` returns a factory of new, unopened store objects pointing at the same place.
The suite needs no model and no data set: seeded random unit vectors with Matryoshka-style
truncation and short Italian texts (:mod:`.corpus`), checked against exact oracles (numpy for
vectors, bm25s for BM25, the filter language's reference evaluator). What a store can do
decides what runs: the lexical and hybrid tests run when it declares
``capabilities.lexical``, the replacement checks when it declares
``capabilities.atomic_replace``; the class flags of :class:`~.fixtures.Fixtures` say the rest
(``persistent``, ``full_tol``, ``full_vector_dtype``, ``engine_rescores``,
``concurrent_writers``). ``tests/stores/test_real_vectors.py`` runs the same suite on real
vectors of squad-it-dev by overriding the ``corpus`` fixture.
"""

from __future__ import annotations

from .corpus import SCORE_TOL, bm25_reference, exact_topk, random_corpus, same_ranking
from .dense import DenseTests
from .documents import DocumentTests
from .lexical import LexicalTests
from .lifecycle import LifecycleTests

__all__ = ["SCORE_TOL", "StoreConformance", "bm25_reference", "exact_topk", "random_corpus",
           "same_ranking"]


class StoreConformance(DenseTests, DocumentTests, LifecycleTests, LexicalTests):
    """Contract tests shared by every store (see the module docstring)."""
