"""End to end on CPU: a tiny BERT trains, its loss falls, the saved model serves truncated."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bertino_rag import Encoder, Retriever
from bertino_rag._deps import st_module
from bertino_rag.training import TrainConfig, train
from bertino_rag.training.evaluate import evaluate_dims, format_table


@pytest.fixture(scope="module")
def trained(tiny_bert, small_beir, small_sts, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "model"
    cfg = TrainConfig(
        base_model=tiny_bert, train_data=str(small_beir), sts_data=str(small_sts),
        sts_dev_data=str(small_sts), output_dir=str(out), dev_fraction=0.25,
        matryoshka_dims=[32, 16, 8], matryoshka_weights=[1.0, 0.5, 0.5], best_dim=16,
        batch_size=16, mini_batch_size=4, max_seq_length=32, learning_rate=2e-3,
        warmup_ratio=0.0, max_steps=12, eval_steps=6, logging_steps=1, num_negatives=1,
        neg_relative_margin=None, multi_dataset_sampler="round_robin", device="cpu",
        rescore_k=10, select_by="funnel_ndcg@10", precision="fp32",
    )
    return train(cfg), cfg


def test_loss_falls_and_metrics_are_written(trained):
    out, cfg = trained
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    losses = [e["loss"] for e in metrics["training"]["log"] if "loss" in e]
    assert len(losses) == 12
    assert np.mean(losses[-4:]) < np.mean(losses[:4])
    assert metrics["dims"] == [32, 16, 8] and metrics["training"]["steps"] == 12
    for table in (metrics["before"], metrics["after"]):
        assert set(table) == {"32", "16", "8", "16+rescore@10"}  # the funnel at best_dim
        for key, row in table.items():
            assert {"map@100", "ndcg@10", "accuracy@1", "accuracy@10"} <= set(row)
            if "+" not in key:
                assert {"spearman", "pearson"} <= set(row)
    tasks = metrics["training"]["tasks"]
    assert tasks["retrieval"]["batches"] == tasks["sts"]["batches"] == 6  # round robin
    assert tasks["retrieval"]["examples"] <= 6 * cfg.batch_size
    assert metrics["training"]["mini_batch_size"] == 4
    assert not (out / "checkpoints").exists()
    training = metrics["training"]
    assert training["precision"] == "fp32" and training["peak_gpu_bytes"] is None
    assert metrics["training"]["retrieval_loss"] == "CachedMultipleNegativesRankingLoss"
    assert metrics["training"]["steps_per_second"] > 0
    evals = [e for e in training["log"] if "eval_dev_16+rescore@10_ndcg@10" in e]
    assert [e["step"] for e in evals] == [6, 12]  # the funnel metric picked the checkpoint
    assert training["best_metric"] == max(e["eval_dev_16+rescore@10_ndcg@10"] for e in evals)
    table = format_table(metrics["after"], metrics["before"])
    assert "| NDCG@10 |" in table and "| STS Spearman cosine |" in table


def test_saved_model_serves_truncated(trained):
    out, _ = trained
    assert Encoder(str(out), device="cpu").matryoshka_dims == [32, 16, 8]
    retriever = Retriever(model=str(out), dim=8, device="cpu")
    retriever.index([{"id": "a", "text": "Il Colosseo si trova a Roma."},
                     {"id": "b", "text": "La pizza nasce a Napoli."}])
    hits = retriever.search("Dove si trova il Colosseo?", k=2)
    assert {h.id for h in hits} == {"a", "b"} and retriever.encoder.dim == 8


def test_one_pass_evaluation_matches_the_plain_evaluator(trained, small_beir):
    """evaluate_dims (the evaluation package: one pass, sliced per dim) agrees with
    sentence-transformers' own evaluator and its truncate_dim."""
    from sentence_transformers import SentenceTransformer

    from bertino_rag.training.data import load_pairs, split_by_source

    out, cfg = trained
    model = SentenceTransformer(str(out), device="cpu")
    _, dev = split_by_source(load_pairs(small_beir), cfg.dev_fraction, seed=cfg.seed)
    fast = evaluate_dims(model, dev, None, [16])
    plain = st_module("evaluation").InformationRetrievalEvaluator(
        queries=dev.queries, corpus=dev.corpus, relevant_docs=dev.relevant, name="dev_16",
        truncate_dim=16, ndcg_at_k=[10], map_at_k=[100], write_csv=False)(model)
    assert fast["16"]["ndcg@10"] == pytest.approx(plain["dev_16_cosine_ndcg@10"], abs=1e-4)
    assert fast["16"]["map@100"] == pytest.approx(plain["dev_16_cosine_map@100"], abs=1e-4)


def test_test_articles_are_apart_from_training_and_dev(small_beir):
    from bertino_rag.training.train import split_data

    cfg = TrainConfig(train_data=str(small_beir), dev_fraction=0.25, test_fraction=0.25)
    train_set, dev, test = split_data(cfg)
    assert test is not None
    sources = [{p.source for p in s.pairs} for s in (train_set, dev, test)]
    assert all(sources) and not (sources[0] & sources[1] or sources[0] & sources[2]
                                 or sources[1] & sources[2])
    assert not set(test.corpus) & (set(train_set.corpus) | set(dev.corpus))
    # without a test split the dev articles are the plain split's
    _, dev_only, none = split_data(TrainConfig(train_data=str(small_beir), dev_fraction=0.25))
    assert none is None and dev_only.pairs
