"""The Italian analyzer, the BM25 formula and fusion, on real Italian forms."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bertino_rag.lexical import (
    BM25,
    Analyzer,
    fold_broken_accents,
    lexical_spec,
    parse_lexical_spec,
)
from bertino_rag.search.fusion import Fusion
from bertino_rag.types import Hit


@pytest.fixture(scope="module")
def it() -> Analyzer:
    return Analyzer()


def test_inflections_share_a_stem(it):
    assert len(set(it.terms("gatto gatti gatta gatte"))) == 1
    assert it.terms("cucinare")[0] == it.terms("cucina")[0] == it.terms("cucinato")[0]
    assert it.terms("libro") == it.terms("libri") == ["libr"]
    assert it.terms("Università") == it.terms("università") == it.terms("università")
    assert it.terms("PERCHÉ È COSÌ") == it.terms("così") == ["cos"]


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("dell'acqua", "acqua"), ("l'Italia", "italia"), ("un'altra", "altra"),
        ("dell’acqua", "acqua"), ("l‘Italia", "italia"), ("dell' acqua", "acqua"),
        ("quest'anno", "anno"), ("d'oro", "oro"), ("c'è", None), ("L'ACQUA", "acqua"),
    ],
)
def test_elisions_are_split_and_particles_dropped(it, text, word):
    want = [] if word is None else it.terms(word)
    assert it.terms(text) == want


def test_stopwords_numbers_and_capitals(it):
    assert it.terms("il la lo di da e che è È perché perchè") == []
    assert it.terms("!!! ... ;-)") == []
    assert it.terms("Nel 2012, 7.000.000 km² e 1,1 × 10") == ["2012", "7000000", "km", "2",
                                                                "1,1", "10"]
    assert it.terms("ÈTNA Etna") == it.terms("ètna etna")
    assert it.terms("ﬁume ＦＩＵＭＥ") == it.terms("fiume fiume")  # NFKC


def test_broken_accents_from_squad_it_are_repaired(it):
    assert fold_broken_accents("Floresta Amazà´nica o Amazà³nica") == (
        "Floresta Amazônica o Amazónica")
    assert fold_broken_accents("cosà¬ àˆ Foràªt Mà¶llendorff Dà¼rer") == (
        "così È Forêt Möllendorff Dürer")
    assert fold_broken_accents("Ã© già» città\u00a0e") == "é già» città\u00a0e"
    assert it.terms("Amazà´nica") == it.terms("Amazônica")
    assert Analyzer(fold_accents=False).terms("Amazà´nica") != it.terms("Amazônica")


def test_options_and_spec(it):
    assert it.terms("i gatti") == ["gatt"]
    assert Analyzer(stemmer=False).terms("i gatti") == ["gatti"]
    assert Analyzer(stopwords=False).terms("i gatti") == ["i", "gatt"]
    assert Analyzer(language="english").terms("the cats") == ["cat"]
    for a in (it, Analyzer(stemmer=False), Analyzer(stopwords=False, fold_accents=False)):
        assert Analyzer.from_spec(a.spec) == a
    assert it.spec == "v1/italian/nfkc/fold/lower/stop/stem"
    assert parse_lexical_spec(lexical_spec(it, BM25(1.2, 0.5))) == (it, BM25(1.2, 0.5))
    with pytest.raises(ValueError, match="unsupported analyzer language 'klingon'"):
        Analyzer(language="klingon")
    with pytest.raises(ValueError, match="re-index the collection"):
        Analyzer.from_spec("v0/italian")
    with pytest.raises(ValueError, match="re-index the collection"):
        parse_lexical_spec("v1/italian/nfkc/fold/lower/stop/stem;tfidf")
    with pytest.raises(ValueError, match="k1 >= 0"):
        BM25(k1=-1)


def test_bm25_formula_equals_bm25s(it):
    import bm25s

    corpus = ["Il gatto dorme sul divano.", "I gatti e i cani giocano in giardino.",
              "Il cane abbaia al gatto del vicino, il gatto scappa.", "Piove su Roma."]
    tokens = [it.terms(t) for t in corpus]
    model = bm25s.BM25()
    model.index(tokens, show_progress=False)
    query = list(dict.fromkeys(it.terms("gatto e cane")))
    want = model.get_scores(query)
    bm25 = BM25()
    n, avg = len(corpus), np.mean([len(t) for t in tokens])
    got = np.zeros(n)
    for term in query:
        df = sum(term in t for t in tokens)
        tf = np.array([t.count(term) for t in tokens], dtype=float)
        got += np.where(tf > 0, bm25.idf(df, n) * bm25.tf_part(tf, np.array(
            [len(t) for t in tokens], dtype=float), avg), 0.0)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def _hits(pairs):
    return [Hit(id=i, text=i, score=s) for i, s in pairs]


def test_minmax_fusion():
    dense = _hits([("a", 0.9), ("b", 0.5), ("c", 0.1)])
    lexical = _hits([("c", 12.0), ("d", 6.0), ("a", 0.0)])
    got = Fusion("minmax", 0.8).fuse(dense, lexical, k=4)
    # a: 0.2*1 + 0.8*0 = 0.2; b: 0.2*0.5 = 0.1; c: 0 + 0.8*1 = 0.8; d: 0.8*0.5 = 0.4
    assert [h.id for h in got] == ["c", "d", "a", "b"]
    np.testing.assert_allclose([h.score for h in got], [0.8, 0.4, 0.2, 0.1])
    assert [h.id for h in Fusion("minmax", 0.0).fuse(dense, lexical, 2)] == ["a", "b"]
    assert Fusion("minmax").fuse([], [], 3) == []


def test_rrf_fusion_and_ties():
    dense = _hits([("a", 0.9), ("b", 0.5)])
    lexical = _hits([("b", 3.0), ("c", 2.0)])
    got = Fusion("rrf", 0.5, rrf_k=60).fuse(dense, lexical, k=3)
    assert [h.id for h in got] == ["b", "a", "c"]
    assert got[0].score == pytest.approx(0.5 / 62 + 0.5 / 61)
    # equal fused scores: by id
    tied = Fusion("rrf", 0.5).fuse(_hits([("z", 1.0)]), _hits([("y", 1.0)]), 2)
    assert [h.id for h in tied] == ["y", "z"]


def test_fusion_validation_and_files(tmp_path):
    for bad, msg in [({"method": "sum"}, "unknown fusion method"),
                     ({"weight": 1.5}, r"in \[0, 1\]"), ({"rrf_k": -1}, "rrf_k")]:
        with pytest.raises(ValueError, match=msg):
            Fusion(**bad)
    path = tmp_path / "fusion.json"
    Fusion("rrf", 0.7, 20).save(path, **{"ndcg@10": 0.9})
    assert Fusion.coerce(path) == Fusion("rrf", 0.7, 20)
    assert json.loads(path.read_text())["ndcg@10"] == 0.9
    assert Fusion.coerce("rrf") == Fusion("rrf", 0.5, 60)
    assert Fusion.coerce({"method": "minmax", "weight": 0.3}) == Fusion("minmax", 0.3)
    path.write_text("[1]")
    with pytest.raises(ValueError, match="not a fusion settings file"):
        Fusion.load(path)
    with pytest.raises(FileNotFoundError, match="not found"):
        Fusion.load(tmp_path / "none.json")
