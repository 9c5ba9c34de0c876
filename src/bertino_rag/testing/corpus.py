"""Seeded data and exact oracles for the store conformance suite: no model, no data set.

:func:`random_corpus` builds seeded random unit vectors (with Matryoshka-style truncation) and
short Italian texts from a fixed vocabulary; :func:`exact_topk` and :func:`bm25_reference`
(bm25s on the library's analyzer) are the oracles; :func:`same_ranking` compares a ranking
with an oracle's, tolerating order swaps within a score tie.
"""

from __future__ import annotations

import math

import numpy as np

from ..encoder import Encoded
from ..lexical import Analyzer
from ..types import Document

__all__ = ["SCORE_TOL", "bm25_reference", "exact_topk", "random_corpus", "same_ranking"]

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

