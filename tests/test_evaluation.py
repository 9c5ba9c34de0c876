"""bertino_rag.evaluation on real MiniLM vectors of a squad-it-dev slice."""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest

from bertino_rag.data import BeirData, load_beir
from bertino_rag.evaluation import (
    IR_KEYS,
    encode_inputs,
    evaluate,
    from_json,
    ir_metrics,
    load_eval_set,
    load_sts_set,
    prepare_beir,
    to_json,
    to_markdown,
    write_plot,
)
from bertino_rag.stores import MemoryStore
from bertino_rag.types import Document, Stamp

from .conftest import SQUAD, STSB

DIMS = [384, 256, 128, 64]


@pytest.fixture(scope="module")
def evalset(squad):
    return prepare_beir(squad, max_queries=25, max_docs=36, seed=3, source="squad-it-dev")


@pytest.fixture(scope="module")
def encoded(encoder, evalset):
    return encode_inputs(encoder, evalset, show_progress_bar=False)


@pytest.fixture(scope="module")
def report(encoder, evalset, encoded):
    return evaluate(encoder, evalset, dims=DIMS, rescore_k=[10, 1000], funnel_dims=[128],
                    latency_queries=5, encoded=encoded, show_progress_bar=False)


# ------------------------------------------------------------------ slicing and bad input
def test_slice_keeps_every_relevant_document(squad, evalset):
    assert len(evalset.query_ids) == 25
    assert len(evalset.doc_ids) == 36
    kept = set(evalset.doc_ids)
    for q in evalset.query_ids:
        assert set(squad.qrels[q]) <= kept
    assert evalset.doc_texts == [squad.corpus[d]["text"] for d in evalset.doc_ids]
    titled = prepare_beir(squad, max_queries=25, max_docs=36, seed=3, with_title=True)
    assert titled.doc_texts[0] == f"{squad.corpus[titled.doc_ids[0]]['title']}\n" \
                                  f"{squad.corpus[titled.doc_ids[0]]['text']}"
    other = prepare_beir(squad, max_queries=25, max_docs=36, seed=4)
    assert other.query_ids != evalset.query_ids
    # articles are spread: a random slice is not the first article's questions only
    assert len({d.split("#")[0] for d in evalset.doc_ids}) > 3


def _write_beir(folder, docs, queries, qrels_rows):
    folder.mkdir()
    (folder / "qrels").mkdir()
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for d, text in docs.items():
            fh.write(json.dumps({"_id": d, "title": "t", "text": text}) + "\n")
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as fh:
        for q, text in queries.items():
            fh.write(json.dumps({"_id": q, "text": text}) + "\n")
    with open(folder / "qrels" / "test.tsv", "w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for row in qrels_rows:
            fh.write("\t".join(map(str, row)) + "\n")
    return folder


@pytest.fixture
def tiny(squad_slice):
    docs = {d["id"]: d["text"] for d in squad_slice["docs"][:6]}
    qids = [q for q in squad_slice["qids"] if set(squad_slice["qrels"][q]) <= set(docs)][:4]
    queries = {q: squad_slice["queries"][squad_slice["qids"].index(q)] for q in qids}
    rows = [(q, d, 1) for q in qids for d in squad_slice["qrels"][q]]
    return docs, queries, rows


def test_empty_qrels_file_is_a_clear_error(tmp_path, tiny):
    docs, queries, _ = tiny
    folder = _write_beir(tmp_path / "b", docs, queries, [])
    with pytest.raises(ValueError, match="no relevance judgements"):
        load_eval_set(folder)
    with pytest.raises(FileNotFoundError, match=r"dev\.tsv is missing.*splits found: test"):
        load_eval_set(folder, split="dev")


def test_unknown_ids_and_queries_without_relevant_documents(tmp_path, tiny):
    docs, queries, rows = tiny
    queries = {**queries, "lonely": "Una domanda senza risposta nel corpus?",
               "orphan": "Una domanda il cui paragrafo manca?"}
    rows = rows + [("ghost-query", next(iter(docs)), 1), ("orphan", "Nowhere#9", 1),
                   (rows[0][0], "Nowhere#1", 1)]
    data = load_eval_set(_write_beir(tmp_path / "b", docs, queries, rows))
    text = "\n".join(data.notes)
    assert "1 query ids not in queries.jsonl" in text and "'ghost-query'" in text
    assert "2 document ids not in corpus.jsonl" in text and "'Nowhere#1'" in text
    assert "1 queries have no relevant document left in the corpus" in text and "'orphan'" in text
    assert "1 queries have no relevant document in the qrels" in text and "'lonely'" in text
    assert set(data.query_ids) == {r[0] for r in tiny[2]}
    assert all("Nowhere#1" not in rel for rel in data.qrels.values())
    # and the evaluation runs on what is left
    assert data.notes


def test_nothing_left_to_evaluate(tmp_path, tiny):
    docs, queries, _ = tiny
    folder = _write_beir(tmp_path / "b", docs, queries, [(q, "Nowhere#1", 1) for q in queries])
    with pytest.raises(ValueError, match="no query has a relevant document in the corpus"):
        load_eval_set(folder)
    data = BeirData(corpus={d: {"title": "", "text": t} for d, t in docs.items()},
                    queries=queries, qrels={q: {d: 1 for d in docs} for q in queries})
    with pytest.raises(ValueError, match="max_docs=2 is smaller"):
        prepare_beir(data, max_docs=2)


def test_bad_dims_and_rerank_k(encoder, evalset, encoded):
    with pytest.raises(ValueError, match=r"500 is not a dimension .*1\.\.384"):
        evaluate(encoder, evalset, dims=[500], encoded=encoded, latency_queries=0)
    with pytest.raises(ValueError, match="rescore_k"):
        evaluate(encoder, evalset, dims=[64], rescore_k=[0], encoded=encoded, latency_queries=0)
    with pytest.raises(ValueError, match="nothing to evaluate"):
        evaluate(encoder, None, None)


# ------------------------------------------------------------------ metrics
def test_ir_metrics_definitions():
    qrels = {"a": {"d2": 1}, "b": {"d9": 1, "d1": 1}}
    rankings = [[("d1", 0.9), ("d2", 0.8)], [("d1", 0.9), ("d3", 0.5)]]
    m = ir_metrics(rankings, ["a", "b"], qrels)
    assert m["mrr@10"] == pytest.approx((1 / 2 + 1) / 2)
    assert m["accuracy@1"] == pytest.approx(0.5)
    assert m["accuracy@10"] == pytest.approx(1.0)
    assert m["recall@100"] == pytest.approx((1 + 0.5) / 2)
    ndcg_b = 1.0 / (1.0 + 1 / math.log2(3))
    assert m["ndcg@10"] == pytest.approx((1 / math.log2(3) + ndcg_b) / 2)
    assert m["map@100"] == pytest.approx((0.5 + 0.5) / 2)
    with pytest.raises(ValueError, match="no relevant document"):
        ir_metrics([[("d1", 1.0)]], ["c"], qrels)


def test_per_dim_figures_match_pytrec_eval(report, evalset, encoded):
    """Independent exact computation: numpy scores over every document, scored by trec_eval."""
    pytrec_eval = pytest.importorskip("pytrec_eval")
    qrels = {q: dict(rel) for q, rel in evalset.qrels.items()}
    measures = {"ndcg_cut.10", "map_cut.100", "recall.100", "success.1,10"}
    for dim in DIMS:
        q = encoded.queries[:, :dim] / np.linalg.norm(encoded.queries[:, :dim], axis=1)[:, None]
        d = encoded.docs[:, :dim] / np.linalg.norm(encoded.docs[:, :dim], axis=1)[:, None]
        scores = q.astype(np.float64) @ d.T.astype(np.float64)
        run = {qid: {doc: float(s) for doc, s in zip(evalset.doc_ids, row, strict=True)}
               for qid, row in zip(evalset.query_ids, scores, strict=True)}
        top10 = {qid: dict(sorted(r.items(), key=lambda p: -p[1])[:10]) for qid, r in run.items()}
        full = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
        mrr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)

        def mean(res, key):
            return float(np.mean([res[qid][key] for qid in evalset.query_ids]))

        expected = {
            "ndcg@10": mean(full, "ndcg_cut_10"), "map@100": mean(full, "map_cut_100"),
            "recall@100": mean(full, "recall_100"), "accuracy@1": mean(full, "success_1"),
            "accuracy@10": mean(full, "success_10"), "mrr@10": mean(mrr, "recip_rank"),
        }
        got = report.config(f"dim_{dim}").metrics
        for key in IR_KEYS:
            assert got[key] == pytest.approx(expected[key], abs=1e-3), (dim, key)
    small, big = report.config("dim_64").metrics, report.config("dim_384").metrics
    assert small["ndcg@10"] != big["ndcg@10"]


def test_funnel_runs_through_the_retriever(report):
    exact128 = report.config("dim_128").metrics
    exact384 = report.config("dim_384").metrics
    narrow = report.config("dim_128+rescore@10")
    wide = report.config("dim_128+rescore@1000")
    # rescoring 10 candidates reorders the same 10 documents: Accuracy@10 cannot change
    assert narrow.metrics["accuracy@10"] == pytest.approx(exact128["accuracy@10"])
    assert narrow.returned == 10
    # rescoring every document is full-dim search (full vectors kept as float16 by the store)
    assert wide.metrics["ndcg@10"] == pytest.approx(exact384["ndcg@10"], abs=0.01)
    assert wide.metrics["accuracy@1"] == pytest.approx(exact384["accuracy@1"], abs=1 / 25 + 1e-9)
    assert (wide.ram_bytes, wide.cold_bytes) == (4 * 128, 2 * 384)
    for c in report.configs:
        assert c.latency_ms is not None and 0 < c.latency_ms["p50"] <= c.latency_ms["p95"]
    assert report.query_encode_ms is not None


def test_user_collections_survive(encoder, evalset, encoded):
    store = MemoryStore()
    stamp = Stamp(model="x", full_dim=384, index_dim=4, normalized=True, full_vectors=False)
    store.open("mine", stamp)
    store.upsert([Document(text=f"doc {i}", id=str(i), metadata={}) for i in range(3)],
                 np.eye(3, 4, dtype=np.float32))
    evaluate(encoder, evalset, dims=[64], rescore_k=[10], store=store, latency_queries=2,
             encoded=encoded, show_progress_bar=False)
    assert not store.is_open  # the evaluation's collections were dropped
    store.open("mine", stamp)
    assert store.count() == 3


def test_funnel_through_qdrant_local_matches_memory(encoder, evalset, encoded, report):
    pytest.importorskip("qdrant_client")
    rep = evaluate(encoder, evalset, dims=[128], rescore_k=[10], store="qdrant",
                   latency_queries=2, encoded=encoded, show_progress_bar=False)
    got = rep.config("dim_128+rescore@10")
    ref = report.config("dim_128+rescore@10")
    for key in IR_KEYS:  # both stores rescore with the same float16-rounded full vectors
        assert got.metrics[key] == pytest.approx(ref.metrics[key], abs=1e-6), key
    assert got.cold_bytes == 4 * 384  # local mode holds them as float32


def test_sts_matches_sentence_transformers(encoder):
    if not (STSB / "dev.csv").exists():
        pytest.skip(f"stsb-it not found at {STSB}")
    from sentence_transformers.sentence_transformer.evaluation import (
        EmbeddingSimilarityEvaluator,
    )

    sts = load_sts_set(STSB / "dev.csv", max_pairs=30)
    rep = evaluate(encoder, None, sts, dims=[384, 64], show_progress_bar=False)
    for dim in (384, 64):
        ev = EmbeddingSimilarityEvaluator(sts.sentence1, sts.sentence2, sts.scores,
                                          similarity_fn_names=["cosine"], truncate_dim=dim,
                                          write_csv=False)
        ref = ev(encoder.model)
        got = rep.config(f"dim_{dim}").metrics
        assert got["spearman"] == pytest.approx(ref["spearman_cosine"], abs=1e-3)
        assert got["pearson"] == pytest.approx(ref["pearson_cosine"], abs=1e-3)
        assert got["ndcg@10"] is None


# ------------------------------------------------------------------ report and CLI
def test_report_json_markdown_plot(report, tmp_path):
    data = to_json(report)
    assert set(data["configurations"]) == {
        "dim_384", "dim_256", "dim_128", "dim_64", "dim_128+rescore@10", "dim_128+rescore@1000"}
    for cfg in data["configurations"].values():
        assert set(IR_KEYS) | {"spearman", "pearson"} <= set(cfg)
    assert data["document_text"] == "text"
    md = to_markdown(report)
    assert "text alone" in md and "| **NDCG@10** |" in md and "128 → 384 rescore@10" in md
    assert to_json(from_json(json.loads(json.dumps(data)))) == data
    write_plot(report, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_end_to_end(minilm_path, tmp_path, capsys):
    from bertino_rag.cli import main

    if not SQUAD.exists():
        pytest.skip(f"squad-it-dev not found at {SQUAD}")
    out, png = tmp_path / "out.json", tmp_path / "out.png"
    rc = main(["eval", str(SQUAD), "--model", minilm_path, "--dims", "384,128",
               "--rescore-k", "20", "--max-queries", "12", "--max-docs", "20",
               "--latency-queries", "3", "--json", str(out), "--plot", str(png), "--quiet"])
    assert rc == 0
    data = json.loads(out.read_text())
    assert set(data["configurations"]) == {"dim_384", "dim_128", "dim_128+rescore@20"}
    for cfg in data["configurations"].values():
        for key in ("ndcg@10", "map@100", "mrr@10", "accuracy@1", "accuracy@10", "recall@100",
                    "spearman", "pearson"):
            assert key in cfg
        assert 0.0 <= cfg["ndcg@10"] <= 1.0
    assert data["data"]["queries"] == 12 and data["data"]["documents"] == 20
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| **NDCG@10** |" in capsys.readouterr().out


@pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("openvino", "nncf", "optimum.intel")),
    reason="openvino, nncf or optimum-intel not installed (bertino-rag[openvino])",
)
def test_cli_measures_an_int8_encoder(minilm_path, tmp_path, backend_cache, monkeypatch, capsys):
    from bertino_rag.cli import main

    if not SQUAD.exists():
        pytest.skip(f"squad-it-dev not found at {SQUAD}")
    monkeypatch.setenv("BERTINO_RAG_CACHE", str(backend_cache))
    calibration = tmp_path / "calib.txt"
    calibration.write_text("Dove si trova Venezia?\n\nVenezia sorge su una laguna.\n",
                           encoding="utf-8")
    out = tmp_path / "out.json"
    args = ["eval", str(SQUAD), "--model", minilm_path, "--dims", "128", "--rescore-k", "none",
            "--max-queries", "8", "--max-docs", "16", "--latency-queries", "0", "--quiet"]
    assert main([*args, "--json", str(out)]) == 0
    torch_ndcg = json.loads(out.read_text())["configurations"]["dim_128"]["ndcg@10"]
    capsys.readouterr()
    assert main([*args, "--json", str(out), "--backend", "openvino", "--quantize", "int8",
                 "--calibration", str(calibration)]) == 0
    data = json.loads(out.read_text())
    assert data["encoder"] == "openvino+int8"
    assert "encoder: openvino+int8" in capsys.readouterr().out
    assert abs(data["configurations"]["dim_128"]["ndcg@10"] - torch_ndcg) < 0.2


def test_cli_errors_are_clear(tmp_path, tiny, capsys):
    from bertino_rag.cli import main

    docs, queries, _ = tiny
    folder = _write_beir(tmp_path / "b", docs, queries, [])
    assert main(["eval", str(folder)]) == 2
    assert "no relevance judgements" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["eval"]) == 2
    assert "nothing to evaluate" in capsys.readouterr().err


def test_full_beir_loader_roundtrip(squad):
    data = load_eval_set(SQUAD)
    assert len(data.doc_ids) == len(squad.corpus) and len(data.query_ids) == len(squad.qrels)
    assert load_beir(SQUAD).qrels.keys() == squad.qrels.keys()
