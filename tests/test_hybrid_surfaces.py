"""Hybrid search through the CLI, LangChain and `bertino-rag eval --modes/--tune-fusion`."""

from __future__ import annotations

import asyncio
import json

import pytest

from bertino_rag import Retriever
from bertino_rag.cli import main
from bertino_rag.evaluation import prepare_beir
from bertino_rag.evaluation.modes import evaluate_modes, tune_fusion
from bertino_rag.search.fusion import Fusion

from .conftest import SQUAD


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_index_hybrid_and_search_modes(tmp_path, squad_slice, minilm_path, capsys):
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("\n".join(json.dumps(d, ensure_ascii=False)
                               for d in squad_slice["docs"][:20]), encoding="utf-8")
    store = f"memory:{tmp_path / 'idx'}"
    common = ("--model", minilm_path, "--store", store)
    assert run(capsys, "index", jsonl, *common, "--hybrid", "--quiet")[0] == 0
    got = {}
    for mode in ("dense", "lexical", "hybrid"):
        code, out, err = run(capsys, "search", "foresta pluviale amazzonica", *common,
                             "--hybrid", "--mode", mode, "-k", "3", "--json")
        assert code == 0, err
        got[mode] = json.loads(out)
        assert len(got[mode]) == 3
    r = Retriever(dim=128, model=minilm_path, store=store, hybrid=True)
    assert [h["id"] for h in got["lexical"]] == [
        h.id for h in r.search("foresta pluviale amazzonica", k=3, mode="lexical")]
    r.close()
    # --mode lexical implies the hybrid collection; a file from --tune-fusion is accepted
    fusion = tmp_path / "fusion.json"
    Fusion("rrf", 0.6, 30).save(fusion)
    code, out, _ = run(capsys, "search", "foresta", *common, "--mode", "hybrid", "--fusion",
                       fusion, "-k", "2", "--json")
    assert code == 0 and len(json.loads(out)) == 2
    code, _, err = run(capsys, "search", "e di che?", *common, "--mode", "lexical")
    assert code == 2 and "no searchable term" in err


def test_cli_hybrid_on_a_dense_collection_says_how_to_build(tmp_path, minilm_path, capsys):
    txt = tmp_path / "docs.txt"
    txt.write_text("Leonardo dipinse la Gioconda.\n\nLa pizza nasce a Napoli.\n",
                   encoding="utf-8")
    store = f"memory:{tmp_path / 'idx'}"
    assert run(capsys, "index", txt, "--model", minilm_path, "--store", store, "--quiet")[0] == 0
    code, _, err = run(capsys, "search", "pizza", "--model", minilm_path, "--store", store,
                       "--mode", "hybrid")
    assert code == 2 and "lexical" in err


def test_langchain_retriever_and_vector_store_modes(encoder, squad_slice):
    pytest.importorskip("langchain_core")
    from bertino_rag.integrations.langchain import BertinoVectorStore

    r = Retriever(dim=128, encoder=encoder, hybrid=True)
    r.index(squad_slice["docs"][:30], show_progress_bar=False)
    q = squad_slice["queries"][0]
    for mode in ("dense", "lexical", "hybrid"):
        docs = r.as_langchain(k=3, mode=mode).invoke(q)
        assert [d.id for d in docs] == [h.id for h in r.search(q, k=3, mode=mode)]
        adocs = asyncio.run(r.as_langchain(k=3).ainvoke(q, mode=mode))
        assert [d.id for d in adocs] == [d.id for d in docs]
    vs = BertinoVectorStore.from_retriever(r)
    for mode in ("dense", "lexical", "hybrid"):
        got = vs.similarity_search_with_score(q, k=3, mode=mode)
        want = r.search(q, k=3, mode=mode)
        assert [d.id for d, _ in got] == [h.id for h in want]
        agot = asyncio.run(vs.asimilarity_search_with_score(q, k=3, mode=mode))
        assert [d.id for d, _ in agot] == [h.id for h in want]
    assert [d.id for d in vs.similarity_search(q, k=3)] == [h.id for h in r.search(q, k=3)]
    with pytest.raises(ValueError, match="needs the query text"):
        vs.similarity_search_by_vector([0.0] * 384, k=3, mode="hybrid")
    with pytest.raises(ValueError, match="unknown search mode"):
        vs.similarity_search(q, k=3, mode="bm25")
    # grouping works in every mode: one Document per indexed document, as the Retriever gives
    want = [h.id for h in r.search(q, k=3, mode="lexical", group_by="document")]
    for search in (vs.similarity_search_with_score,
                   lambda *a, **kw: asyncio.run(vs.asimilarity_search_with_score(*a, **kw))):
        got = [d.metadata.get("doc_id", d.id) for d, _ in
               search(q, k=3, mode="lexical", group_by="document")]
        assert got == want and len(set(got)) == len(got)
    with pytest.raises(TypeError):
        r.as_langchain().invoke(q, sparse=True)


def test_eval_modes_and_tune_fusion(encoder, squad, tmp_path, capsys, minilm_path):
    evalset = prepare_beir(squad, max_queries=30, max_docs=60, seed=2, source="squad-it-dev")
    results = evaluate_modes(encoder, evalset, [128], modes=["dense", "lexical", "hybrid"])
    assert [(x.mode, x.dim) for x in results] == [("dense", 128), ("lexical", None),
                                                  ("hybrid", 128)]
    grid = [Fusion("minmax", 0.2), Fusion("minmax", 0.8), Fusion("rrf", 0.5, 60)]
    best, ndcg, tried = tune_fusion(encoder, evalset, 128, grid=grid)
    assert [f for f, _ in tried] == grid
    assert ndcg == max(s for _, s in tried) and (best, ndcg) in tried
    # the CLI prints the modes table and writes a file the Retriever loads
    if not SQUAD.exists():
        pytest.skip(f"squad-it-dev not found at {SQUAD}")
    out = tmp_path / "fusion.json"
    rc = main(["eval", str(SQUAD), "--model", minilm_path, "--dims", "128", "--rescore-k",
               "none", "--max-queries", "12", "--max-docs", "20", "--latency-queries", "0",
               "--modes", "dense,lexical,hybrid", "--tune-fusion", str(out), "--quiet"])
    printed = capsys.readouterr().out
    assert rc == 0 and "## Search modes" in printed and "| lexical (BM25) |" in printed
    saved = json.loads(out.read_text())
    assert saved["dim"] == 128 and 0 <= saved["ndcg@10"] <= 1
    assert Fusion.load(out).method in ("minmax", "rrf")


def test_eval_modes_encode_each_text_once(encoder, squad, monkeypatch):
    """The modes index each document whole from the vectors already computed: a document
    longer than the model's window is not chunked and encoded again at every dim."""
    evalset = prepare_beir(squad, max_queries=10, max_docs=30, seed=3, source="squad-it-dev")
    assert encoder.max_seq_length is not None
    assert max(encoder.token_lengths(evalset.doc_texts)) > encoder.max_seq_length
    seen: list[str] = []
    real = encoder.encode_full
    monkeypatch.setattr(encoder, "encode_full", lambda texts, **kw: (
        seen.extend(texts), real(texts, **kw))[1])
    results = evaluate_modes(encoder, evalset, [128, 384], modes=["dense", "hybrid"])
    assert len(results) == 4
    assert sorted(seen) == sorted(evalset.doc_texts + evalset.query_texts)
