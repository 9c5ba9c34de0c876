"""The store contract, as tests. Every store subclasses :class:`StoreConformance`.

A subclass provides the ``make_store`` fixture: a factory that returns a new, unopened store
object pointing at the same place each time it is called (so that reopening can be tested).

The suite needs no model and no data set: :func:`random_corpus` builds seeded random unit
vectors (with Matryoshka-style truncation) and short Italian texts from a fixed vocabulary, so a
new store can be checked anywhere in seconds. The oracles are exact numpy search and bm25s.
``tests/adapters/test_real_vectors.py`` runs the same suite on real MiniLM vectors of a
squad-it-dev slice by overriding the ``corpus`` fixture.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Callable

import numpy as np
import pytest

from bertino_rag.encoder import Encoded
from bertino_rag.lexical import (
    BM25,
    Analyzer,
    EmptyQueryError,
    LexicalUnavailableError,
    lexical_spec,
)
from bertino_rag.search.fusion import Fusion
from bertino_rag.stores import StoreError, VectorStore
from bertino_rag.search.filters import FilterError, matches, parse_filter
from bertino_rag.types import Document, Stamp, StampMismatchError

SCORE_TOL = 1e-4

# Content words (no stopword among them) the random texts are made of; the suite's lexical
# tests search "foresta" and rely on "zanzibar" being absent.
VOCABULARY = (
    "foresta fiume pioggia albero animale specie clima bacino territorio governo regione "
    "confine popolazione villaggio tribù scienziato studio ricerca deforestazione incendio "
    "suolo nutriente carbonio ossigeno atmosfera temperatura stagione raccolto agricoltura "
    "allevamento rete televisione canale programma notizia trasmissione emittente pubblico "
    "spettatore pubblicità contratto azienda società dirigente presidente stazione segnale "
    "serie episodio telegiornale redazione giornalista ascolto palinsesto missione razzo "
    "navicella astronauta luna orbita lancio modulo equipaggio capsula motore carburante "
    "traiettoria comandante pilota atterraggio superficie campione roccia esperimento "
    "computer calcolo ingegnere progetto bilancio congresso agenzia spaziale satellite "
    "telescopio pianeta stella galassia energia potenza velocità distanza chilometro "
    "secolo decennio anno guerra pace trattato impero repubblica città capitale porto "
    "nave commercio mercato prezzo moneta banca lavoro fabbrica macchina strada ponte"
).split()
TITLES = {"Amazzonia": 21, "ABC (Stati Uniti d'America)": 98, "Programma Apollo": 58}


def _four_squares(n: int) -> list[int]:
    """Four non-negative integers whose squares sum to ``n`` (Lagrange: they always exist)."""
    for a in range(math.isqrt(n), -1, -1):
        ra = n - a * a
        for b in range(math.isqrt(ra), -1, -1):
            rb = ra - b * b
            for c in range(math.isqrt(rb), -1, -1):
                d = math.isqrt(rb - c * c)
                if c * c + d * d == rb:
                    return [a, b, c, d]
                if c < d:  # every later (c, d) repeats a pair already tried
                    break
    raise AssertionError(f"no four squares sum to {n}")


def _lattice(rng: np.random.Generator, real: np.ndarray, norm2: int) -> np.ndarray:
    """Integers along ``real`` whose squares sum to exactly ``norm2``."""
    head = real[:-4]
    ints = np.round(head * math.sqrt(0.97 * norm2) / np.linalg.norm(head)).astype(np.int64)
    tail = np.array(_four_squares(norm2 - int((ints**2).sum()))) * rng.choice([-1, 1], size=4)
    return np.concatenate([ints, tail])


def _vectors(rng: np.random.Generator, head: np.ndarray, rest: np.ndarray, bits: int = 10):
    """Unit vectors that make every engine compute the same scores.

    Components are integers over a power of two, with squares summing to exactly 1: the
    first ``len(head)`` components hold a quarter of the norm, so truncating to them and
    renormalizing (what a Matryoshka encoder does) doubles them, exactly. Every dot product is
    then exact in float32 whatever the summation order, a store that normalizes (cosine)
    changes nothing, and float16 storage loses nothing: identical vectors score identically
    everywhere, and the tie-break by id is what orders them.
    """
    a = np.array([_lattice(rng, h, 4**bits) for h in head])
    b = np.array([_lattice(rng, r, 3 * 4**bits) for r in rest])
    full = (np.concatenate([a, b], axis=1) / 2 ** (bits + 1)).astype(np.float32)
    return Encoded(full=full, index=(a / 2**bits).astype(np.float32))


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def random_corpus(seed: int = 0, full_dim: int = 384, index_dim: int = 128,
                  n_queries: int = 200) -> dict:
    """Seeded documents, queries and unit vectors: no model, no data set.

    Documents are grouped under three titles (``metadata`` ``title`` and ``para``), each title
    with its own topic words; a query is a handful of words of one document, and its vector
    lies near that document's (as a real question near its paragraph). ``index`` vectors are
    the first ``index_dim`` components renormalized, as a Matryoshka encoder truncates.
    """
    rng = np.random.default_rng(seed)
    vocab = np.array(VOCABULARY)
    topics = np.array_split(rng.permutation(len(vocab)), len(TITLES))
    docs, words_of = [], []
    for (title, n), topic in zip(TITLES.items(), topics, strict=True):
        for para in range(n):
            n_words = int(rng.integers(12, 40))
            own = rng.choice(vocab[topic], size=n_words * 2 // 3)
            other = rng.choice(vocab, size=n_words - len(own))
            words = [str(w) for w in rng.permutation(np.concatenate([own, other]))]
            words_of.append(words)
            docs.append({"id": f"{title}#{para}", "text": " ".join(words).capitalize() + ".",
                         "metadata": {"title": title, "para": para}})
    head = _unit_rows(rng.standard_normal((len(docs), index_dim)))
    rest = _unit_rows(rng.standard_normal((len(docs), full_dim - index_dim)))
    doc_vectors = _vectors(rng, head, rest)
    targets = rng.integers(0, len(docs), size=n_queries)
    queries = [" ".join(rng.choice(words_of[t], size=int(rng.integers(2, 6)))) + "?"
               for t in targets]
    noise = 0.8 * _unit_rows(rng.standard_normal((n_queries, full_dim)))
    query_vectors = _vectors(rng, head[targets] + noise[:, :index_dim],
                             rest[targets] + noise[:, index_dim:])
    return {"model": "random-unit-vectors", "full_dim": full_dim, "docs": docs,
            "queries": queries, "doc_vectors": doc_vectors, "query_vectors": query_vectors}


_RANDOM_CORPUS: dict = {}


def exact_topk(matrix: np.ndarray, query: np.ndarray, ids: list[str], k: int):
    scores = matrix.astype(np.float32) @ query.astype(np.float32)
    order = sorted(range(len(ids)), key=lambda i: (-scores[i], ids[i]))[:k]
    return [ids[i] for i in order], [float(scores[i]) for i in order]


def bm25_reference(docs: list[Document], query: str, k: int, analyzer: Analyzer | None = None,
                   avgdl: float | None = None):
    """Top ``k`` (ids, scores) by bm25s over ``docs``, on the library's analyzer: the oracle.

    With ``avgdl``, the length normalization uses that mean length instead of the corpus's
    (what a store with sparse values fixed at write time computes, ``store.lexical_avgdl``);
    bm25s has no such option, so that variant is Lucene's formula written out here.
    """
    import bm25s

    analyzer = analyzer or Analyzer()
    tokens = [analyzer.terms(d.text) for d in docs]
    terms = list(dict.fromkeys(analyzer.terms(query)))
    if avgdl is None:
        model = bm25s.BM25()
        model.index(tokens, show_progress=False)
        scores = model.get_scores(terms)
    else:
        k1, b, n = 1.5, 0.75, len(docs)
        scores = np.zeros(n)
        for t in terms:
            tf = np.array([toks.count(t) for toks in tokens], dtype=np.float64)
            df = np.count_nonzero(tf)
            dl = np.array([len(toks) for toks in tokens], dtype=np.float64)
            scores += np.log(1 + (n - df + 0.5) / (df + 0.5)) * tf / (
                tf + k1 * (1 - b + b * dl / avgdl))
    order = sorted(range(len(docs)), key=lambda i: (-scores[i], docs[i].id))
    order = [i for i in order if scores[i] > 0][:k]
    return [docs[i].id for i in order], [float(scores[i]) for i in order]


def same_ranking(got_ids, got_scores, want_ids, want_scores, tol=SCORE_TOL):
    """Equal ids and scores, allowing swaps among scores closer than ``tol``."""
    assert len(got_ids) == len(want_ids)
    np.testing.assert_allclose(got_scores, want_scores, atol=tol)
    for g, w, s in zip(got_ids, want_ids, want_scores, strict=True):
        if g != w:
            # only a near-tie may swap places
            near = [i for i, ws in zip(want_ids, want_scores, strict=True) if abs(ws - s) <= tol]
            assert g in near, f"{g} returned where {w} (score {s}) was expected"


class StoreConformance:
    """Contract tests shared by every backend."""

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

    @pytest.fixture
    def make_store(self, tmp_path) -> Callable[[], VectorStore]:  # pragma: no cover
        raise NotImplementedError

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
    def filled(self, make_store, name, stamp, data):
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

    # ------------------------------------------------------------------ basics
    def test_round_trip(self, filled, data):
        docs, _, _ = data
        assert filled.count() == len(docs)
        got = filled.get([docs[3].id, "no-such-id", docs[0].id])
        assert [d.id for d in got] == [docs[3].id, docs[0].id]
        assert got[0].text == docs[3].text
        assert got[0].metadata == docs[3].metadata

    def test_search_matches_exact_numpy(self, filled, data):
        docs, vec, queries = data
        ids = [d.id for d in docs]
        for qi in range(0, len(queries.index), 7):
            hits = filled.search(queries.index[qi], k=10)
            want_ids, want_scores = exact_topk(vec.index, queries.index[qi], ids, 10)
            same_ranking([h.id for h in hits], [h.score for h in hits], want_ids, want_scores)
            assert all(h.text == docs[ids.index(h.id)].text for h in hits)

    def test_search_batch_equals_single(self, filled, data):
        _, _, queries = data
        batch = filled.search_batch(queries.index[:5], k=4)
        for qi, hits in enumerate(batch):
            single = filled.search(queries.index[qi], k=4)
            assert [h.id for h in hits] == [h.id for h in single]

    def test_two_stage_matches_exact_rescore(self, filled, data):
        docs, vec, queries = data
        ids = [d.id for d in docs]
        for qi in range(0, len(queries.index), 11):
            cand, _ = exact_topk(vec.index, queries.index[qi], ids, 20)
            rows = [ids.index(c) for c in cand]
            full16 = vec.full[rows].astype(np.float16)
            want_ids, want_scores = exact_topk(full16, queries.full[qi], cand, 5)
            hits = filled.search(queries.index[qi], k=5, full_vector=queries.full[qi], rerank_k=20)
            same_ranking([h.id for h in hits], [h.score for h in hits], want_ids, want_scores,
                         tol=self.full_tol)

    @pytest.mark.parametrize("flt", [None, {"para": {"$lt": 12}}])
    def test_two_stage_batch_equals_rescoring_each_query(self, filled, data, flt):
        """A two-stage batch returns exactly what rescoring each query on its own gives: the
        first stage's hits (ids, texts, metadata), their full vectors, one float32 product
        per query in first-stage order and ties by id; also across candidate blocks and for
        queries the filter leaves fewer candidates than rerank_k."""
        _, _, queries = data
        rerank_k, k = 25, 6
        first = filled.search_batch(queries.index, rerank_k, flt)
        wanted = list(dict.fromkeys(h.id for hits in first for h in hits))
        full = dict(zip(wanted, filled.fetch_full(wanted), strict=True))
        want = []
        for hits, fq in zip(first, queries.full, strict=True):
            scores = np.stack([full[h.id] for h in hits]).astype(np.float32) @ fq
            order = sorted(range(len(hits)), key=lambda i: (-float(scores[i]), hits[i].id))
            want.append([(hits[i].id, float(scores[i]), hits[i].text, hits[i].metadata)
                         for i in order[:k]])
        filled.candidate_block = 3 * rerank_k  # 3 queries per block
        got = filled.search_batch(queries.index, k, flt, full_vectors=queries.full,
                                  rerank_k=rerank_k)
        one = filled.search(queries.index[4], k, flt, full_vector=queries.full[4],
                            rerank_k=rerank_k)
        if not self.engine_rescores:
            assert [[(h.id, h.score, h.text, h.metadata) for h in hits] for hits in got] == want
            assert [(h.id, h.score, h.text, h.metadata) for h in one] == want[4]
            return
        assert len(got) == len(want)
        for hits, wanted_hits in zip([*got, one], [*want, want[4]], strict=True):
            same_ranking([h.id for h in hits], [h.score for h in hits],
                         [w[0] for w in wanted_hits], [w[1] for w in wanted_hits],
                         tol=self.full_tol)
            by_id = {w[0]: w for w in wanted_hits}
            for h in hits:
                if h.id in by_id:  # a near-tie swap may bring in a candidate ranked k+1
                    assert (h.text, h.metadata) == by_id[h.id][2:]

    def test_full_vector_dtype_is_declared(self, filled, data):
        docs, _, _ = data
        dtype = filled.full_vector_dtype
        assert dtype in ("float16", "float32")
        if self.full_vector_dtype is not None:
            assert dtype == self.full_vector_dtype
        got = filled.fetch_full([d.id for d in docs[:5]])
        np.testing.assert_array_equal(got.astype(dtype).astype(np.float32), got)
        from bertino_rag.evaluation.cost import full_bytes_per_doc

        assert full_bytes_per_doc(filled, 384) == (np.dtype(dtype).itemsize * 384, dtype)

    def test_clear_empties_the_collection_and_keeps_it_open(self, filled, name, stamp, data):
        docs, vec, _ = data
        filled.clear()
        assert filled.is_open and filled.stamp == stamp
        assert filled.count() == 0
        assert filled.search(vec.index[0], k=3) == []
        assert filled.get([docs[0].id]) == []
        assert name in filled.collections()
        filled.upsert(docs[:3], vec.index[:3], vec.full[:3])
        assert filled.count() == 3
        assert [h.id for h in filled.search(vec.index[1], k=1)] == [docs[1].id]

    def test_fetch_full(self, filled, data):
        docs, vec, _ = data
        got = filled.fetch_full([docs[2].id, docs[0].id])
        np.testing.assert_allclose(got, vec.full[[2, 0]], atol=2e-3)
        with pytest.raises(KeyError, match="no-such-id"):
            filled.fetch_full(["no-such-id"])

    def test_empty_collection(self, make_store, name, stamp):
        store = make_store()
        store.open(name, stamp)
        try:
            assert store.count() == 0
            assert store.search(np.ones(128, dtype=np.float32) / np.sqrt(128), k=3) == []
        finally:
            store.drop()

    # ------------------------------------------------------------------ writes
    def test_upsert_is_idempotent(self, filled, data):
        docs, vec, _ = data
        filled.upsert(docs[:10], vec.index[:10], vec.full[:10])
        assert filled.count() == len(docs)

    def test_upsert_replaces_by_id(self, filled, data):
        docs, vec, _ = data
        changed = Document(text="Testo nuovo.", id=docs[0].id, metadata={"title": "X", "para": -1})
        filled.upsert([changed], vec.index[5:6], vec.full[5:6])
        assert filled.count() == len(docs)
        assert filled.get([docs[0].id])[0].text == "Testo nuovo."
        top = filled.search(vec.index[5], k=2)
        assert {h.id for h in top} == {docs[0].id, docs[5].id}

    def test_delete(self, filled, data):
        docs, vec, _ = data
        filled.delete([docs[0].id, docs[1].id, "no-such-id"])
        assert filled.count() == len(docs) - 2
        assert filled.get([docs[0].id]) == []
        hits = filled.search(vec.index[0], k=len(docs))
        assert docs[0].id not in {h.id for h in hits}
        assert len(hits) == len(docs) - 2

    # ------------------------------------------------------------------ documents and chunks
    @staticmethod
    def _as_chunks(docs, n_docs: int = 3, per_doc: int = 4):
        """The first documents of the slice, relabelled as chunks of ``n_docs`` documents."""
        out = []
        for i, d in enumerate(docs[: n_docs * per_doc]):
            meta = {**d.metadata, "doc_id": f"doc-{i // per_doc}", "chunk": i % per_doc}
            out.append(Document(text=d.text, id=f"doc-{i // per_doc}#{i % per_doc}",
                                metadata=meta))
        return out

    def test_ids_where_lists_ids_by_metadata(self, filled, data):
        docs, _, _ = data
        title = docs[0].metadata["title"]
        want = sorted(d.id for d in docs if d.metadata["title"] == title)
        assert filled.ids_where({"title": title}) == want
        assert filled.ids_where({"title": {"$in": [title, "nessuno"]}, "para": {"$lt": 3}}) == (
            sorted(d.id for d in docs if d.metadata["title"] == title
                   and d.metadata["para"] < 3))
        assert filled.ids_where({"title": "nessuno"}) == []
        assert filled.ids_where({"title": {"$in": []}}) == []
        with pytest.raises(ValueError, match="non-empty filter dict"):
            filled.ids_where({})

    def test_ids_where_pages_through_many_ids(self, make_store, name, stamp, data):
        docs, vec, _ = data
        n = len(docs)
        reps = -(-2500 // n)  # more than one page of every backend's listing
        many = [Document(text=docs[i % n].text, id=f"d{j}-{i}", metadata={"doc_id": "big"})
                for j in range(reps) for i in range(n)]
        store = make_store()
        store.open(name, stamp)
        try:
            idx = np.tile(vec.index, (reps, 1))
            full = np.tile(vec.full, (reps, 1))
            store.upsert(many, idx, full)
            assert store.ids_where({"doc_id": "big"}) == sorted(d.id for d in many)
        finally:
            store.drop()
            store.close()

    def test_documents_past_the_filter_bound(self, make_store, name, stamp, data):
        # More documents in one call than a filter's $in takes (MAX_IN_VALUES): listing and
        # deleting their chunks must still work (Retriever.index asks for a whole window).
        from bertino_rag.search.filters import MAX_IN_VALUES

        docs, vec, _ = data
        n = len(docs)
        many = [Document(text=docs[i % n].text, id=f"doc{i}#0", metadata={"doc_id": f"doc{i}"})
                for i in range(MAX_IN_VALUES + 50)]
        reps = -(-len(many) // n)
        store = make_store()
        store.open(name, stamp)
        try:
            store.upsert(many, np.tile(vec.index, (reps, 1))[: len(many)],
                         np.tile(vec.full, (reps, 1))[: len(many)])
            doc_ids = [f"doc{i}" for i in range(len(many))] + ["no-such-doc"]
            assert store.ids_of_documents(doc_ids) == sorted(d.id for d in many)
            store.delete_documents(doc_ids[:-11])
            assert store.count() == 10
            assert store.ids_of_documents(doc_ids) == sorted(d.id for d in many[-10:])
        finally:
            store.drop()
            store.close()

    def test_delete_documents_removes_every_chunk(self, make_store, name, stamp, data):
        docs, vec, _ = data
        chunks = self._as_chunks(docs)
        rest = docs[len(chunks):]
        store = make_store()
        store.open(name, stamp)
        try:
            store.upsert(chunks + rest, vec.index[: len(docs)], vec.full[: len(docs)])
            assert store.ids_where({"doc_id": "doc-1"}) == [f"doc-1#{i}" for i in range(4)]
            store.delete_documents(["doc-1", rest[0].id, "no-such-doc"])
            assert store.count() == len(docs) - 5
            assert store.ids_where({"doc_id": "doc-1"}) == []
            assert store.get([rest[0].id]) == []
            left = {h.id for h in store.search(vec.index[4], k=len(docs))}
            assert not any(i.startswith("doc-1#") for i in left)
            assert {"doc-0#0", "doc-2#3", rest[1].id} <= left
            store.delete_documents([])
            assert store.count() == len(docs) - 5
        finally:
            store.drop()
            store.close()

    def test_group_by_document_equals_the_exact_oracle(self, make_store, name, stamp, data):
        docs, vec, queries = data
        chunks = self._as_chunks(docs, n_docs=6, per_doc=5)
        stored = chunks + docs[len(chunks):]
        owner = [d.metadata.get("doc_id", d.id) for d in stored]
        store = make_store()
        store.open(name, stamp)
        try:
            store.upsert(stored, vec.index[: len(stored)], vec.full[: len(stored)])
            for qi in range(0, 40, 8):
                q = queries.index[qi]
                scores = vec.index[: len(stored)] @ q
                best: dict[str, float] = {}
                for doc, sc in zip(owner, scores, strict=True):
                    best[doc] = max(best.get(doc, -2.0), float(sc))
                want = sorted(best, key=lambda d: (-best[d], d))[:7]
                hits = store.search(q, k=7, group_by="document", group_size=2)
                same_ranking([h.id for h in hits], [h.score for h in hits], want,
                             [best[d] for d in want])
                for h in hits:
                    assert 1 <= len(h.chunks) <= 2 and h.chunks[0].score == h.score
                    assert h.text == h.chunks[0].text
                    assert all(owner[[d.id for d in stored].index(c.id)] == h.id
                               for c in h.chunks)
                    assert [c.score for c in h.chunks] == sorted(
                        (c.score for c in h.chunks), reverse=True)
                    # the attached chunks are the document's best ones, on every store
                    mine = sorted((float(sc) for doc, sc in zip(owner, scores, strict=True)
                                   if doc == h.id), reverse=True)
                    np.testing.assert_allclose([c.score for c in h.chunks],
                                               mine[: len(h.chunks)], atol=SCORE_TOL)
                # two-stage: the same documents, scored on full vectors
                two = store.search(q, k=7, group_by="document", full_vector=queries.full[qi],
                                   rerank_k=20)
                full_scores = vec.full[: len(stored)] @ queries.full[qi]
                fbest: dict[str, float] = {}
                for doc, sc in zip(owner, full_scores, strict=True):
                    fbest[doc] = max(fbest.get(doc, -2.0), float(sc))
                for h in two:
                    assert abs(h.score - fbest[h.id]) <= self.full_tol or h.score < fbest[h.id]
                assert len({h.id for h in two}) == len(two) == 7
            # k counts documents, even when one document's chunks fill the first candidates
            many = store.search(queries.index[0], k=len(best), group_by="document")
            assert sorted(h.id for h in many) == sorted(best)
            flt = store.search(queries.index[0], k=3, group_by="document",
                               filter={"doc_id": {"$in": ["doc-0", "doc-1"]}})
            assert sorted(h.id for h in flt) == ["doc-0", "doc-1"]
            with pytest.raises(ValueError, match="group_by must be None or 'document'"):
                store.search(queries.index[0], k=3, group_by="title")
            with pytest.raises(ValueError, match="group_size must be a positive int"):
                store.search(queries.index[0], k=3, group_by="document", group_size=0)
            got = asyncio.run(store.asearch(queries.index[0], k=4, group_by="document"))
            assert [h.id for h in got] == [h.id for h in many[:4]]
        finally:
            store.drop()
            store.close()

    def test_wrong_dimension_is_rejected_and_nothing_written(self, filled, data):
        docs, vec, _ = data
        new = [Document(text="nuovo", id="new-doc")]
        with pytest.raises(ValueError, match="128 dims"):
            filled.upsert(new, vec.full[:1], vec.full[:1])
        with pytest.raises(ValueError, match="full vectors"):
            filled.upsert(new, vec.index[:1], vec.index[:1])
        with pytest.raises(ValueError, match="128 dims"):
            filled.search(vec.full[0], k=3)
        assert filled.count() == len(docs)
        assert filled.get(["new-doc"]) == []

    def test_nan_vectors_are_rejected(self, filled, data):
        docs, vec, _ = data
        bad = vec.index[:1].copy()
        bad[0, 0] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            filled.upsert([Document(text="x", id="nan-doc")], bad, vec.full[:1])
        assert filled.count() == len(docs)

    def test_async_upsert_is_validated_like_upsert(self, filled, data):
        docs, vec, _ = data
        new = [Document(text="nuovo", id="new-async")]
        with pytest.raises(ValueError, match="128 dims"):
            asyncio.run(filled.aupsert(new, vec.full[:1], vec.full[:1]))
        with pytest.raises(ValueError, match="pass full_vectors"):
            asyncio.run(filled.aupsert(new, vec.index[:1]))
        with pytest.raises(ValueError, match="unique"):
            asyncio.run(filled.aupsert(new * 2, vec.index[:2], vec.full[:2]))
        assert filled.count() == len(docs)
        asyncio.run(filled.aupsert(new, vec.index[3:4], vec.full[3:4]))
        assert [d.text for d in filled.get(["new-async"])] == ["nuovo"]

    def test_ties_are_ordered_by_id(self, filled, data):
        docs, vec, _ = data
        twins = [Document(text=f"gemello {s}", id=f"{docs[7].id}-{s}") for s in ("b", "a")]
        filled.upsert(twins, vec.index[[7, 7]], vec.full[[7, 7]])
        want = sorted([docs[7].id] + [t.id for t in twins])
        hits = filled.search(vec.index[7], k=3)
        assert [h.id for h in hits] == want
        two = filled.search(vec.index[7], k=3, full_vector=vec.full[7], rerank_k=10)
        assert [h.id for h in two] == want

    def test_bad_k(self, filled, data):
        _, vec, _ = data
        for k in (0, -1, 2.5):
            with pytest.raises(ValueError, match="k must be a positive int"):
                filled.search(vec.index[0], k=k)

    # ------------------------------------------------------------------ filters
    @pytest.mark.parametrize(
        "flt",
        [
            {"title": "Amazzonia"},
            {"para": {"$gte": 3, "$lt": 6}},
            {"para": {"$gt": 40}},
            {"para": {"$lte": 1}},
            {"title": {"$in": ["Amazzonia", "no-such-title"]}, "para": {"$lt": 5}},
            {"title": {"$eq": "no-such-title"}},
            {"missing_field": "x"},
            {"missing_field": {"$gte": 0}},
            {"para": {"$ne": 3}, "title": {"$nin": ["Amazzonia"]}},
            {"$or": [{"title": "Amazzonia"}, {"para": {"$gte": 30}}]},
            {"missing_field": {"$exists": False}, "para": {"$exists": True, "$lt": 4}},
        ],
    )
    def test_filters_match_reference(self, filled, data, flt):
        docs, vec, _ = data
        conditions = parse_filter(flt)
        allowed = [i for i, d in enumerate(docs) if matches(d.metadata, conditions)]
        hits = filled.search(vec.index[0], k=len(docs), filter=flt)
        assert sorted(h.id for h in hits) == sorted(docs[i].id for i in allowed)
        if allowed:
            ids = [docs[i].id for i in allowed]
            want_ids, want_scores = exact_topk(vec.index[allowed], vec.index[0], ids, 3)
            top = filled.search(vec.index[0], k=3, filter=flt)
            same_ranking([h.id for h in top], [h.score for h in top], want_ids, want_scores)

    def test_filter_with_two_stage(self, filled, data):
        docs, vec, queries = data
        flt = {"para": {"$lt": 10}}
        hits = filled.search(queries.index[0], k=5, filter=flt, full_vector=queries.full[0],
                             rerank_k=30)
        assert hits and all(h.metadata["para"] < 10 for h in hits)

    def test_bad_filters(self, filled, data):
        _, vec, _ = data
        for flt, msg in [
            ({"title": {"$regex": "x"}}, "unknown operator"),
            ({"title": {"$in": "abc"}}, r"\$in takes a list"),
            ({'a" or 1==1': 1}, "not a valid name"),
            ({"title": [1, 2]}, "takes a str, int, float or bool"),
        ]:
            with pytest.raises(FilterError, match=msg):
                filled.search(vec.index[0], k=3, filter=flt)

    # ------------------------------------------------------------------ stamps
    def test_stamp_mismatch_is_refused_and_data_kept(self, make_store, filled, name, stamp, data):
        docs, _, _ = data
        for other in (
            Stamp(model=stamp.model, full_dim=stamp.full_dim, index_dim=64),
            Stamp(model="another/model", full_dim=stamp.full_dim, index_dim=128),
            Stamp(model=stamp.model, full_dim=stamp.full_dim, index_dim=128, full_vectors=False),
        ):
            second = make_store()
            with pytest.raises(StampMismatchError, match="recreate=True") as err:
                second.open(name, other)
            assert name in str(err.value)
            if second is not filled:
                second.close()
        assert filled.count() == len(docs)

    def test_ensure_open_on_a_shared_store(self, filled, name, stamp, data):
        docs, _, _ = data
        filled.ensure_open(name, stamp)  # already open: only the stamp is checked
        assert filled.count() == len(docs)
        other = Stamp(model="another/model", full_dim=stamp.full_dim, index_dim=128)
        with pytest.raises(StampMismatchError, match="model"):
            filled.ensure_open(name, other)
        assert filled.is_open and filled.stamp == stamp
        assert filled.count() == len(docs)

    def test_recreate_drops_the_old_collection(self, make_store, filled, name, stamp):
        other = Stamp(model=stamp.model, full_dim=stamp.full_dim, index_dim=64)
        second = make_store()
        second.open(name, other, recreate=True)
        try:
            assert second.count() == 0
            assert second.stamp == other
        finally:
            second.drop()

    def test_replacement_swaps_in_at_publish(self, make_store, filled, name, stamp, data):
        """``open_replacement`` + ``publish``: with an atomic swap, the old collection stays
        whole until publish and closing first keeps it; without, it is dropped at once."""
        docs, vec, queries = data
        other = Stamp(model=stamp.model, full_dim=stamp.full_dim, index_dim=64)
        index64 = vec.index[:, :64] / np.linalg.norm(vec.index[:, :64], axis=1, keepdims=True)
        new = make_store()
        new.open_replacement(name, other)
        try:
            assert new.replacing and new.count() == 0 and new.stamp == other
            assert name in new.collections() and len(new.collections()) == len(
                set(new.collections()))
            new.upsert(docs[:5], index64[:5], vec.full[:5])
            assert new.count() == 5
            if new.supports_atomic_replace and self.persistent:
                assert filled.count() == len(docs)  # others still read the old collection
                new.close()  # unpublished: discarded
                assert filled.count() == len(docs) and name in make_store().collections()
                new.open_replacement(name, other)
                new.upsert(docs[:5], index64[:5], vec.full[:5])
            new.publish()
            assert not new.replacing and new.count() == 5
            assert new.search(index64[2], k=1)[0].id == docs[2].id
            new.close()
            again = make_store()
            if self.persistent:
                again.open(name, other, create=False)
                assert again.count() == 5
                again.close()
        finally:
            new.close()
            filled.close()
            filled.open(name, other)  # the fixture drops it

    def test_rerank_off_layout(self, make_store, name, stamp, data):
        docs, vec, queries = data
        slim = Stamp(model=stamp.model, full_dim=stamp.full_dim, index_dim=128,
                     full_vectors=False)
        store = make_store()
        store.open(name, slim)
        try:
            store.upsert(docs[:10], vec.index[:10])
            assert len(store.search(queries.index[0], k=3)) == 3
            with pytest.raises(StoreError, match="no full vectors"):
                store.search(queries.index[0], k=3, full_vector=queries.full[0])
        finally:
            store.drop()

    def test_not_open(self, make_store):
        store = make_store()
        with pytest.raises(StoreError, match="open"):
            store.count()

    # ------------------------------------------------------------------ persistence
    def test_persistence_across_reopen(self, make_store, filled, name, stamp, data):
        if not self.persistent:
            pytest.skip(f"{type(filled).__name__} here is not persistent")
        docs, vec, _ = data
        before = filled.search(vec.index[4], k=5)
        filled.close()
        again = make_store()
        again.open(name, stamp)
        try:
            assert again.count() == len(docs)
            after = again.search(vec.index[4], k=5)
            assert [h.id for h in after] == [h.id for h in before]
        finally:
            again.close()
        filled.open(name, stamp)

    # ------------------------------------------------------------------ export
    def test_export_returns_every_point_with_its_vectors(self, filled, data):
        docs, vec, _ = data
        batches = list(filled.export(batch_size=7))
        assert batches and all(0 < len(b.documents) <= 7 for b in batches)
        got = [d for b in batches for d in b.documents]
        assert sorted(d.id for d in got) == sorted(d.id for d in docs)  # each exactly once
        row = {d.id: i for i, d in enumerate(docs)}
        for b in batches:
            rows = [row[d.id] for d in b.documents]
            assert [(d.text, d.metadata) for d in b.documents] == [
                (docs[r].text, docs[r].metadata) for r in rows]
            assert b.vectors.dtype == np.float32 and b.vectors.shape == (len(rows), 128)
            np.testing.assert_allclose(b.vectors, vec.index[rows], atol=1e-5)
            assert b.full_vectors is not None
            # full vectors come back as stored: float16 values
            np.testing.assert_allclose(b.full_vectors, vec.full[rows], atol=2e-3)

    def test_export_copies_into_another_store(self, filled, data, stamp):
        """What export() yields, upserted into an exact store, searches like the original."""
        from bertino_rag.stores import MemoryStore

        _, _, queries = data
        copy = MemoryStore()
        copy.open("copy", filled.stamp)
        for b in filled.export(batch_size=50):
            copy.upsert(b.documents, b.vectors, b.full_vectors)
        assert copy.count() == filled.count()
        want = filled.search(queries.index[3], k=5, full_vector=queries.full[3], rerank_k=30)
        got = copy.search(queries.index[3], k=5, full_vector=queries.full[3], rerank_k=30)
        same_ranking([h.id for h in got], [h.score for h in got], [h.id for h in want],
                     [h.score for h in want], tol=self.full_tol)

    def test_export_without_full_vectors_and_empty(self, make_store, name, stamp, data):
        docs, vec, _ = data
        slim = Stamp(model=stamp.model, full_dim=stamp.full_dim, index_dim=128,
                     full_vectors=False)
        store = make_store()
        store.open(name, slim)
        try:
            assert list(store.export()) == []
            store.upsert(docs[:5], vec.index[:5])
            (batch,) = list(store.export())
            assert batch.full_vectors is None and len(batch.documents) == 5
        finally:
            store.drop()

    def test_stored_stamp_and_open_existing(self, make_store, filled, name, stamp, data):
        docs, _, _ = data
        other = make_store()
        assert other.stored_stamp(name) == stamp
        assert other.stored_stamp(f"{name}_missing") is None
        with pytest.raises(StoreError, match="no collection"):
            other.open_existing(f"{name}_missing")
        if other is not filled:
            assert not other.is_open
            assert other.open_existing(name) == stamp
            assert other.count() == len(docs)
            other.close()
        assert filled.count() == len(docs)

    # ------------------------------------------------------------------ async
    def test_async_search_equals_sync(self, filled, data):
        _, _, queries = data
        sync = filled.search(queries.index[1], k=5, full_vector=queries.full[1], rerank_k=20)
        got = asyncio.run(
            filled.asearch(queries.index[1], k=5, full_vector=queries.full[1], rerank_k=20)
        )
        assert [h.id for h in got] == [h.id for h in sync]

    # ------------------------------------------------------------------ lexical and hybrid
    LEX_TOL = 1e-3  # BM25 scores: float32 in some stores

    @pytest.fixture
    def lex_stamp(self, stamp) -> Stamp:
        return Stamp(model=stamp.model, full_dim=stamp.full_dim, index_dim=stamp.index_dim,
                     lexical=lexical_spec(Analyzer(), BM25()))

    @pytest.fixture
    def lex_filled(self, make_store, name, lex_stamp, data):
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

    def test_lexical_stamp_refused_without_support(self, make_store, name, lex_stamp):
        store = make_store()
        if store.supports_lexical:
            pytest.skip("this store keeps a lexical index")
        with pytest.raises(ValueError, match="cannot keep a lexical index"):
            store.open(name, lex_stamp)
        assert not store.is_open

    def test_lexical_matches_bm25s(self, lex_filled, corpus, data):
        docs, _, _ = data
        for query in corpus["queries"][:40:4]:
            hits = lex_filled.lexical_search(query, k=10)
            want_ids, want_scores = bm25_reference(docs, query, 10,
                                                   avgdl=lex_filled.lexical_avgdl)
            same_ranking([h.id for h in hits], [h.score for h in hits], want_ids, want_scores,
                         tol=self.LEX_TOL)
            assert all(h.text == docs[[d.id for d in docs].index(h.id)].text for h in hits)

    def test_lexical_batch_equals_single(self, lex_filled, corpus):
        queries = corpus["queries"][:6]
        batch = lex_filled.lexical_search_batch(queries, k=5)
        assert [[h.id for h in hits] for hits in batch] == [
            [h.id for h in lex_filled.lexical_search(q, k=5)] for q in queries
        ]

    def test_lexical_delete_replace_and_idempotent_upsert(self, lex_filled, corpus, data):
        docs, vec, _ = data
        query = corpus["queries"][0]
        before = lex_filled.lexical_search(query, k=5)
        gone = [h.id for h in before[:2]]
        lex_filled.delete(gone)
        left = [d for d in docs if d.id not in gone]
        hits = lex_filled.lexical_search(query, k=10)
        assert not {h.id for h in hits} & set(gone)
        want_ids, want_scores = bm25_reference(left, query, 10, avgdl=lex_filled.lexical_avgdl)
        same_ranking([h.id for h in hits], [h.score for h in hits], want_ids, want_scores,
                     tol=self.LEX_TOL)
        # the same documents again: back to the first state, nothing counted twice
        rows = [i for i, d in enumerate(docs) if d.id in gone]
        for _ in range(2):
            lex_filled.upsert([docs[i] for i in rows], vec.index[rows], vec.full[rows])
        assert lex_filled.count() == len(docs)
        again = lex_filled.lexical_search(query, k=5)
        assert [h.id for h in again] == [h.id for h in before]
        np.testing.assert_allclose([h.score for h in again], [h.score for h in before],
                                   atol=self.LEX_TOL)
        # a replaced text is searched by its new words only
        new = Document(text="Zanzibar ospita la tartaruga gigante.", id=docs[3].id,
                       metadata=docs[3].metadata)
        lex_filled.upsert([new], vec.index[3:4], vec.full[3:4])
        assert [h.id for h in lex_filled.lexical_search("tartarughe di Zanzibar", k=3)] == [
            docs[3].id]
        assert lex_filled.count() == len(docs)

    def test_lexical_filter(self, lex_filled, corpus, data):
        docs, _, _ = data
        flt = {"para": {"$lt": 8}}
        allowed = [d for d in docs if d.metadata["para"] < 8]
        query = corpus["queries"][1]
        hits = lex_filled.lexical_search(query, k=5, filter=flt)
        assert hits and all(h.metadata["para"] < 8 for h in hits)
        # statistics are the collection's: the reference scores every document, then filters
        ids, scores = bm25_reference(docs, query, len(docs), avgdl=lex_filled.lexical_avgdl)
        keep = {d.id for d in allowed}
        want = [(i, s) for i, s in zip(ids, scores, strict=True) if i in keep][:5]
        same_ranking([h.id for h in hits], [h.score for h in hits], [i for i, _ in want],
                     [s for _, s in want], tol=self.LEX_TOL)

    def test_hybrid_matches_funnel_oracle(self, lex_filled, corpus, data):
        docs, vec, queries = data
        ids = [d.id for d in docs]
        fusion = Fusion("minmax", 0.8)
        for qi in range(0, 30, 6):
            text = corpus["queries"][qi]
            hits = lex_filled.hybrid_search(queries.index[qi], text, k=5,
                                            full_vector=queries.full[qi], rerank_k=20,
                                            fusion=fusion)
            dense_ids, _ = exact_topk(vec.index, queries.index[qi], ids, 20)
            lex_ids, lex_scores = bm25_reference(docs, text, 20, avgdl=lex_filled.lexical_avgdl)
            union = list(dict.fromkeys([*lex_ids, *dense_ids]))
            full16 = vec.full[[ids.index(i) for i in union]].astype(np.float16)
            dense_scores = full16.astype(np.float32) @ queries.full[qi]
            from bertino_rag.types import Hit

            want = fusion.fuse(
                [Hit(id=i, text="", score=float(s)) for i, s in zip(union, dense_scores,
                                                                    strict=True)],
                [Hit(id=i, text="", score=s) for i, s in zip(lex_ids, lex_scores, strict=True)],
                5,
            )
            assert [h.id for h in hits][:3] == [h.id for h in want][:3]
            np.testing.assert_allclose([h.score for h in hits], [h.score for h in want],
                                       atol=5e-3)

    def test_hybrid_rrf_and_rerank_off(self, lex_filled, corpus, data):
        _, _, queries = data
        text = corpus["queries"][2]
        rrf = lex_filled.hybrid_search(queries.index[2], text, k=5, fusion=Fusion("rrf", 0.5))
        assert len(rrf) == 5 and all(0 < h.score <= 1 / 61 + 1e-9 for h in rrf)
        lexical = lex_filled.lexical_search(text, k=1)[0].id
        only_lex = lex_filled.hybrid_search(queries.index[2], text, k=1,
                                            fusion=Fusion("minmax", 1.0))
        assert only_lex[0].id == lexical
        only_dense = lex_filled.hybrid_search(queries.index[2], text, k=3,
                                              fusion=Fusion("minmax", 0.0))
        assert [h.id for h in only_dense] == [h.id for h in lex_filled.search(
            queries.index[2], k=3)]

    def test_lexical_bad_input(self, lex_filled, make_store, name, stamp, data):
        _, vec, queries = data
        with pytest.raises(EmptyQueryError, match="no searchable term"):
            lex_filled.lexical_search("E di che? ...", k=3)
        # hybrid answers a stopword-only query with its dense side
        hybrid = lex_filled.hybrid_search(queries.index[0], "e di che?", k=3,
                                          fusion=Fusion("minmax", 0.8))
        assert [h.id for h in hybrid] == [h.id for h in lex_filled.search(queries.index[0], k=3)]
        with pytest.raises(ValueError, match="k must be a positive int"):
            lex_filled.lexical_search("foresta", k=0)
        with pytest.raises(ValueError, match="list of query texts"):
            lex_filled.lexical_search_batch("foresta", k=3)
        # a failed upsert writes neither side
        n = lex_filled.count()
        with pytest.raises(ValueError, match="128 dims"):
            lex_filled.upsert([Document(text="Zanzibar", id="zz")], vec.full[:1], vec.full[:1])
        assert lex_filled.count() == n
        assert lex_filled.lexical_search("Zanzibar", k=3) == []  # the term was never written
        assert lex_filled.lexical_search("Zanzibar foresta", k=3)

    def test_lexical_modes_on_a_dense_collection(self, filled, data):
        _, _, queries = data
        with pytest.raises(LexicalUnavailableError, match="hybrid=True"):
            filled.lexical_search("foresta", k=3)
        with pytest.raises(LexicalUnavailableError, match="built without one"):
            filled.hybrid_search(queries.index[0], "foresta", k=3)

    def test_other_analyzer_is_refused(self, make_store, lex_filled, name, lex_stamp, data):
        docs, _, _ = data
        for analyzer in (Analyzer(stemmer=False), Analyzer(stopwords=False)):
            other = Stamp(model=lex_stamp.model, full_dim=lex_stamp.full_dim,
                          index_dim=lex_stamp.index_dim,
                          lexical=lexical_spec(analyzer, BM25()))
            second = make_store()
            with pytest.raises(StampMismatchError, match="lexical"):
                second.open(name, other)
            if second is not lex_filled:
                second.close()
        dense_only = Stamp(model=lex_stamp.model, full_dim=lex_stamp.full_dim,
                           index_dim=lex_stamp.index_dim)
        second = make_store()
        with pytest.raises(StampMismatchError, match="lexical"):
            second.open(name, dense_only)
        if second is not lex_filled:
            second.close()
        assert lex_filled.count() == len(docs)

    def test_lexical_persistence_and_async(self, make_store, lex_filled, name, lex_stamp,
                                           corpus, data):
        _, _, queries = data
        query = corpus["queries"][5]
        before = lex_filled.lexical_search(query, k=5)
        got = asyncio.run(lex_filled.alexical_search(query, k=5))
        assert [h.id for h in got] == [h.id for h in before]
        sync = lex_filled.hybrid_search(queries.index[5], query, k=5,
                                        full_vector=queries.full[5])
        got = asyncio.run(lex_filled.ahybrid_search(queries.index[5], query, k=5,
                                                    full_vector=queries.full[5]))
        assert [h.id for h in got] == [h.id for h in sync]
        if not self.persistent:
            return
        lex_filled.close()
        again = make_store()
        again.open(name, lex_stamp)
        try:
            after = again.lexical_search(query, k=5)
            assert [h.id for h in after] == [h.id for h in before]
        finally:
            again.close()
        lex_filled.open(name, lex_stamp)
