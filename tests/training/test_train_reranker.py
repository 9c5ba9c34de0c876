"""``bertino-rag train --task rerank``: hybrid-mined negatives, a reranker that serves."""

from __future__ import annotations

import json

import pytest

from bertino_rag import Retriever
from bertino_rag.cli.main import main
from bertino_rag.errors import TrainingDataError
from bertino_rag.evaluation.rerank import BLEND_WEIGHTS
from bertino_rag.rerank.cross_encoder import WEIGHT_FILE, CrossEncoderReranker
from bertino_rag.training.config import TrainConfig
from bertino_rag.training.data import load_pairs
from bertino_rag.training.rerank import hybrid_retriever, mine_rerank_pairs


@pytest.fixture(scope="module")
def mined(encoder, small_beir):
    data = load_pairs(small_beir)
    cfg = TrainConfig(task="rerank", num_negatives=2, neg_range_min=1, neg_range_max=10,
                      neg_relative_margin=0.05)
    r = hybrid_retriever(encoder, data, "mine")
    return data, cfg, r, mine_rerank_pairs(r, data, cfg)


def test_negatives_come_from_the_hybrid_window_and_never_are_positives(mined):
    data, cfg, r, rows = mined
    by_text: dict[str, set[str]] = {}
    for d, t in data.corpus.items():
        by_text.setdefault(t, set()).add(d)
    queries = {q: t for q, t in data.queries.items()}
    qid_of = {t: q for q, t in queries.items()}
    seen_pos = 0
    for query, text, label in zip(rows["query"], rows["text"], rows["label"], strict=True):
        positives = data.relevant[qid_of[query]]
        if label == 1.0:
            seen_pos += 1
            assert by_text[text] & positives
            continue
        assert not by_text[text] & positives  # nor a duplicate of a positive
        hits = r.search(query, k=cfg.neg_range_max, mode="hybrid")
        ranks = [h.id for h in hits]
        # one of the documents with this text is in the window (duplicates share a text) ...
        (neg, *_) = [d for d in by_text[text] if d in ranks[cfg.neg_range_min:]]
        # ... below (1 - margin) times the positive's cosine
        vecs = r.store.fetch_full([*positives, neg])
        q = r.encoder.encode([query], kind="query").full[0]
        sims = vecs @ q
        assert sims[-1] < (1 - cfg.neg_relative_margin) * sims[:-1].min()
    assert seen_pos and sum(rows["label"]) == seen_pos
    assert len(rows["label"]) - seen_pos <= cfg.num_negatives * seen_pos


def test_a_window_nothing_passes_is_a_clear_error(mined):
    data, cfg, r, _ = mined
    tight = TrainConfig(task="rerank", num_negatives=1, neg_range_min=0, neg_range_max=3,
                        neg_relative_margin=0.99)
    with pytest.raises(TrainingDataError, match="kept none"):
        mine_rerank_pairs(r, data, tight)


def test_train_task_rerank_makes_a_reranker_that_serves(tmp_path, small_beir, tiny_bert,
                                                         minilm_path, encoder, capsys):
    out = tmp_path / "reranker"
    code = main(["train", "--task", "rerank", "--base-model", tiny_bert, "--mine-model",
                 minilm_path, "--train-data", str(small_beir), "--output-dir", str(out),
                 "--dev-fraction", "0.25", "--test-fraction", "0.25", "--max-steps", "4",
                 "--eval-steps", "2",
                 "--batch-size", "8", "--eval-batch-size", "16", "--max-seq-length", "96",
                 "--rerank-top", "10", "--eval-max-queries", "10", "--learning-rate", "1e-4",
                 "--neg-range-min", "0", "--attention-dropout", "0", "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| hybrid | none |" in printed and "| hybrid | top 10 (" in printed
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["task"] == "rerank" and metrics["training"]["steps"] == 4
    rows = metrics["after"]["rows"]
    assert [r["rerank_top"] for r in rows] == [None, 10]
    assert metrics["data"]["train_rows"] > metrics["data"]["train_positives"] > 0
    assert not (out / "checkpoints").exists()
    assert metrics["config"]["attention_dropout"] == 0.0  # trained without it, saved with its own
    saved = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert saved["attention_probs_dropout_prob"] == pytest.approx(0.1)
    # the blend weight that ranks the dev articles best is stored with the model and served
    blend = metrics["blend"]
    curve = {float(w): m["ndcg@10"] for w, m in blend["curve"].items()}
    assert set(curve) == set(BLEND_WEIGHTS) and curve[blend["weight"]] == max(curve.values())
    stored = json.loads((out / WEIGHT_FILE).read_text(encoding="utf-8"))
    assert stored["weight"] == blend["weight"]
    assert CrossEncoderReranker(str(out)).weight == blend["weight"]
    assert CrossEncoderReranker(str(out), weight=1.0).weight == 1.0  # an explicit one wins
    assert metrics["test"]["weight"] == blend["weight"]  # the test articles see it as it serves
    assert [r["rerank_top"] for r in metrics["test"]["rows"]] == [None, 10]
    # the folder is a cross-encoder that Retriever serves
    r = Retriever(dim=128, encoder=encoder, hybrid=True, reranker=str(out), rerank_top=10)
    docs = load_pairs(small_beir).corpus
    r.index([{"id": d, "text": t} for d, t in list(docs.items())[:20]])
    hits = r.search("Quale foresta copre il bacino amazzonico?", k=3)
    assert len(hits) == 3 and all(h.rerank_score is not None for h in hits)
    assert [h.rerank_score for h in hits] == sorted((h.rerank_score for h in hits),
                                                    reverse=True)
    # a trained reranker is a base to train on: its head is kept, so the second run's
    # "before" (the base as it is) is the first run's "after" on the same dev articles; both
    # in float32 as the folder serves (the first run's model object no longer carries the
    # training's bf16 autocast, which made them differ)
    again = tmp_path / "again"
    code = main(["train", "--task", "rerank", "--base-model", str(out), "--mine-model",
                 minilm_path, "--train-data", str(small_beir), "--output-dir", str(again),
                 "--dev-fraction", "0.25", "--test-fraction", "0.25", "--max-steps", "2",
                 "--eval-steps", "2", "--batch-size", "8", "--eval-batch-size", "16",
                 "--max-seq-length", "96", "--rerank-top", "10", "--eval-max-queries", "10",
                 "--learning-rate", "1e-4", "--neg-range-min", "0", "--neg-range-max", "5",
                 "--attention-dropout", "0", "--quiet"])
    assert code == 0
    second = json.loads((again / "metrics.json").read_text(encoding="utf-8"))
    before = {r["rerank_top"]: r["metrics"] for r in second["before"]["rows"]}
    after = {r["rerank_top"]: r["metrics"] for r in rows}
    assert before[10] == pytest.approx(after[10], abs=1e-9)
    assert second["config"]["neg_range_max"] == 5 and second["training"]["steps"] == 2
