"""The reranker through the command line (search, eval), LangChain and the HTTP service."""

from __future__ import annotations

import json

import pytest

from bertino_rag import Retriever
from bertino_rag.cli import main
from bertino_rag.rerank import as_reranker


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, squad_slice, minilm_path):
    folder = tmp_path_factory.mktemp("cli")
    jsonl = folder / "docs.jsonl"
    jsonl.write_text("\n".join(json.dumps(d, ensure_ascii=False)
                               for d in squad_slice["docs"][:20]), encoding="utf-8")
    store = f"memory:{folder / 'idx'}"
    assert main(["index", str(jsonl), "--model", minilm_path, "--store", store, "--hybrid",
                 "--quiet"]) == 0
    return store


def test_search_with_a_reranker_prints_both_scores_in_its_order(indexed, minilm_path,
                                                                 cross_encoder_path, capsys):
    q = "Quale nome è usato anche per descrivere la foresta pluviale amazzonica in inglese?"
    code, out, err = run(capsys, "search", q, "--model", minilm_path, "--store", indexed,
                         "--hybrid", "-k", "3", "--reranker", cross_encoder_path,
                         "--rerank-top", "8", "--json")
    assert code == 0, err
    hits = json.loads(out)
    scores = [h["rerank_score"] for h in hits]
    assert len(hits) == 3 and scores == sorted(scores, reverse=True)
    r = Retriever(dim=128, model=minilm_path, store=indexed, hybrid=True, create=False)
    want = r.search(q, k=3, reranker=cross_encoder_path, rerank_top=8)
    assert [h["id"] for h in hits] == [h.id for h in want]
    code, out, _ = run(capsys, "search", q, "--model", minilm_path, "--store", indexed,
                       "--hybrid", "-k", "2", "--reranker", cross_encoder_path)
    assert code == 0 and "[rerank " in out and "retrieval " in out


@pytest.mark.parametrize("extra, message", [
    (["--rerank-top", "2"], "rerank_top=2 is below k=5"),
    (["--reranker-quantize", "int8"], "quantize='int8', backend='onnx'"),
    (["--reranker-weight", "1.5"], "weight must be a number in (0, 1]"),
])
def test_search_reranker_mistakes_are_one_line_errors(indexed, minilm_path, cross_encoder_path,
                                                      capsys, extra, message):
    code, _, err = run(capsys, "search", "Amazzonia", "--model", minilm_path, "--store",
                       indexed, "--hybrid", "-k", "5", "--reranker", cross_encoder_path, *extra)
    assert code == 2 and message in err


def test_an_embedding_model_or_a_lonely_rerank_top_is_refused(indexed, minilm_path, capsys):
    code, _, err = run(capsys, "search", "Amazzonia", "--model", minilm_path, "--store",
                       indexed, "--hybrid", "--reranker", minilm_path)
    assert code == 2 and "not a cross-encoder" in err
    code, _, err = run(capsys, "search", "Amazzonia", "--model", minilm_path, "--store",
                       indexed, "--hybrid", "--rerank-top", "30")
    assert code == 2 and "pass --reranker with it" in err
    code, _, err = run(capsys, "search", "Amazzonia", "--model", minilm_path, "--store",
                       indexed, "--hybrid", "--reranker-weight", "0.5")
    assert code == 2 and "pass --reranker with it" in err


def test_search_with_a_weighted_reranker_blends_the_two_scores(indexed, minilm_path,
                                                                cross_encoder_path, capsys):
    q = "Quale nome è usato anche per descrivere la foresta pluviale amazzonica in inglese?"
    code, out, err = run(capsys, "search", q, "--model", minilm_path, "--store", indexed,
                         "--hybrid", "-k", "4", "--reranker", cross_encoder_path,
                         "--rerank-top", "8", "--reranker-weight", "0.5", "--json")
    assert code == 0, err
    scores = [h["rerank_score"] for h in json.loads(out)]
    assert scores == sorted(scores, reverse=True) and 0.0 <= min(scores) <= max(scores) <= 1.0
    r = Retriever(dim=128, model=minilm_path, store=indexed, hybrid=True, create=False)
    want = r.search(q, k=4, reranker=as_reranker(cross_encoder_path, weight=0.5), rerank_top=8)
    assert [h["id"] for h in json.loads(out)] == [h.id for h in want]


def test_eval_adds_rows_with_and_without_the_reranker(tmp_path, squad, minilm_path,
                                                      cross_encoder_path, capsys):
    from tests.conftest import SQUAD

    code, out, err = run(capsys, "eval", SQUAD, "--model", minilm_path, "--dims", "384",
                         "--max-docs", "25", "--max-queries", "6", "--latency-queries", "0",
                         "--reranker", cross_encoder_path, "--rerank-top", "10", "--quiet")
    assert code == 0, err
    section = out.split("## Reranking at dim 384", 1)[1]
    for mode in ("dense", "lexical", "hybrid"):
        assert f"| {mode} | none |" in section and f"| {mode} | top 10 (" in section
    code, _, err = run(capsys, "eval", SQUAD, "--model", minilm_path, "--documents",
                       "--reranker", cross_encoder_path)
    assert code == 2 and "--reranker adds rows" in err


def test_langchain_retriever_carries_the_rerank_score(encoder, squad_slice, cross_encoder):
    pytest.importorskip("langchain_core")
    r = Retriever(dim=128, encoder=encoder, hybrid=True, collection="lc")
    r.index(squad_slice["docs"][:15])
    q = squad_slice["queries"][0]
    lc = r.as_langchain(k=3, reranker=cross_encoder, rerank_top=8)
    docs = lc.invoke(q)
    want = r.search(q, k=3, reranker=cross_encoder, rerank_top=8)
    assert [d.id for d in docs] == [h.id for h in want]
    assert [d.metadata["rerank_score"] for d in docs] == [h.rerank_score for h in want]
    plain = lc.invoke(q, reranker=False)
    assert all("rerank_score" not in d.metadata for d in plain)


def test_the_service_returns_reranked_hits(encoder, squad_slice, cross_encoder):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from bertino_rag.serve.app import create_app

    r = Retriever(dim=128, encoder=encoder, hybrid=True, collection="svc",
                  reranker=cross_encoder, rerank_top=8)
    r.index(squad_slice["docs"][:15])
    qs = squad_slice["queries"][:2]
    with TestClient(create_app(r, close_retriever=False)) as client:
        got = client.post("/search", json={"queries": qs, "k": 3}).json()["results"]
    want = r.search_batch(qs, k=3)
    assert [[h["id"] for h in row] for row in got] == [[h.id for h in row] for row in want]
    assert all(h["rerank_score"] is not None for row in got for h in row)


def test_langchain_vector_store_reranks_per_call(encoder, squad_slice, cross_encoder):
    pytest.importorskip("langchain_core")
    from bertino_rag.integrations.langchain import BertinoVectorStore

    r = Retriever(dim=128, encoder=encoder, hybrid=True, collection="lcvs")
    r.index(squad_slice["docs"][:15])
    vs = BertinoVectorStore.from_retriever(r)
    q = squad_slice["queries"][1]
    got = vs.similarity_search_with_score(q, k=3, reranker=cross_encoder, rerank_top=8)
    want = r.search(q, k=3, reranker=cross_encoder, rerank_top=8)
    assert [d.id for d, _ in got] == [h.id for h in want]
    assert [(d.metadata["rerank_score"], s) for d, s in got] == [
        (h.rerank_score, h.score) for h in want]
    vec = encoder.encode_query(q, dim=128).full[0]
    with pytest.raises(ValueError, match="use search"):
        vs.similarity_search_by_vector(vec.tolist(), k=2, reranker=cross_encoder)
