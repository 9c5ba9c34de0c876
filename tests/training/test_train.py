"""End to end on CPU: a tiny BERT trains, its loss falls, the saved model serves truncated."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bertino_rag import Encoder, Retriever
from bertino_rag.training import TrainConfig, train
from bertino_rag.training.evaluate import evaluate_dims, format_table, ir_evaluator


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
        assert set(table) == {"32", "16", "8"}
        for row in table.values():
            assert {"MAP@100", "NDCG@10", "Accuracy@1", "Accuracy@10",
                    "STS Spearman cosine", "STS Pearson cosine"} <= set(row)
    tasks = metrics["training"]["tasks"]
    assert tasks["retrieval"]["batches"] == tasks["sts"]["batches"] == 6  # round robin
    assert tasks["retrieval"]["examples"] <= 6 * cfg.batch_size
    assert metrics["training"]["mini_batch_size"] == 4
    assert not (out / "checkpoints").exists()
    assert "NDCG@10" in format_table(metrics["after"], metrics["before"])


def test_saved_model_serves_truncated(trained):
    out, _ = trained
    assert Encoder(str(out), device="cpu").matryoshka_dims == [32, 16, 8]
    retriever = Retriever(model=str(out), dim=8, device="cpu")
    retriever.index([{"id": "a", "text": "Il Colosseo si trova a Roma."},
                     {"id": "b", "text": "La pizza nasce a Napoli."}])
    hits = retriever.search("Dove si trova il Colosseo?", k=2)
    assert {h.id for h in hits} == {"a", "b"} and retriever.encoder.dim == 8


def test_one_pass_evaluation_matches_the_plain_evaluator(trained, small_beir):
    """evaluate_dims embeds once and truncates; the evaluator's own truncation agrees."""
    from sentence_transformers import SentenceTransformer

    from bertino_rag.training.data import load_pairs, split_by_source

    out, cfg = trained
    model = SentenceTransformer(str(out), device="cpu")
    _, dev = split_by_source(load_pairs(small_beir), cfg.dev_fraction, seed=cfg.seed)
    fast = evaluate_dims(model, dev, None, [16])
    plain = ir_evaluator(dev, 16)(model)
    assert fast["16"]["NDCG@10"] == pytest.approx(plain["dev_16_cosine_ndcg@10"], abs=1e-4)
    assert fast["16"]["MAP@100"] == pytest.approx(plain["dev_16_cosine_map@100"], abs=1e-4)
