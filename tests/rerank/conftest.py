"""A small real cross-encoder: the packaged MiniLM with a one-label head, trained for a few
steps on squad-it-dev pairs (a question with its paragraph, and with a paragraph of another
article), so its scores are a trained model's, not a random head's."""

from __future__ import annotations

import random

import pytest


@pytest.fixture(scope="session")
def cross_encoder_path(tmp_path_factory, minilm_path, squad):
    pytest.importorskip("datasets")
    from datasets import Dataset
    from sentence_transformers.cross_encoder import (
        CrossEncoder,
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
    )
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    rng = random.Random(0)
    corpus = squad.corpus
    ids = list(corpus)
    rows: dict[str, list] = {"query": [], "text": [], "label": []}
    for qid, rel in list(squad.qrels.items())[:40]:
        pos = next(iter(rel))
        title = corpus[pos]["title"]
        neg = rng.choice([d for d in ids if corpus[d]["title"] != title])
        for doc, label in ((pos, 1.0), (neg, 0.0)):
            rows["query"].append(squad.queries[qid])
            rows["text"].append(corpus[doc]["text"])
            rows["label"].append(label)
    model = CrossEncoder(minilm_path, num_labels=1, max_length=128, device="cpu")
    out = tmp_path_factory.mktemp("reranker")
    args = CrossEncoderTrainingArguments(
        output_dir=str(out / "run"), num_train_epochs=1, per_device_train_batch_size=16,
        learning_rate=2e-4, save_strategy="no", report_to=[], logging_steps=1000,
        use_cpu=True, seed=0)
    CrossEncoderTrainer(model=model, args=args, train_dataset=Dataset.from_dict(rows),
                        loss=BinaryCrossEntropyLoss(model)).train()
    model.save_pretrained(str(out / "model"))
    return str(out / "model")


@pytest.fixture(scope="session")
def cross_encoder(cross_encoder_path):
    from bertino_rag.rerank.cross_encoder import CrossEncoderReranker

    return CrossEncoderReranker(cross_encoder_path, device="cpu")
