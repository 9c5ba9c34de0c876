"""Fixtures for the training tests: a tiny BERT (MiniLM's tokenizer) and small real data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.conftest import SQUAD, STSB, minilm

pytest.importorskip("datasets")
pytest.importorskip("accelerate")


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    """A 2-layer, 32-d BERT with random weights and MiniLM's Italian-capable WordPiece vocab."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(minilm())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def small_beir(tmp_path_factory, squad) -> Path:
    """A BEIR folder: the first 4 articles of squad-it-dev, all paragraphs, 40 questions each."""
    titles: list[str] = []
    for doc in squad.corpus.values():
        if doc["title"] not in titles:
            titles.append(doc["title"])
    keep = set(titles[:4])
    folder = tmp_path_factory.mktemp("beir")
    (folder / "qrels").mkdir()
    doc_ids = [d for d, doc in squad.corpus.items() if doc["title"] in keep]
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for d in doc_ids:
            fh.write(json.dumps({"_id": d, **squad.corpus[d]}, ensure_ascii=False) + "\n")
    wanted = set(doc_ids)
    per_article: dict[str, int] = {}
    qrels = {}
    for q, rel in squad.qrels.items():
        if not set(rel) <= wanted:
            continue
        title = squad.corpus[next(iter(rel))]["title"]
        if per_article.get(title, 0) < 40:  # 40 questions per article keep the tests quick
            per_article[title] = per_article.get(title, 0) + 1
            qrels[q] = rel
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as fh:
        for q in qrels:
            fh.write(json.dumps({"_id": q, "text": squad.queries[q]}, ensure_ascii=False) + "\n")
    with open(folder / "qrels" / "test.tsv", "w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for q, rel in qrels.items():
            for d, score in rel.items():
                fh.write(f"{q}\t{d}\t{score}\n")
    return folder


@pytest.fixture(scope="session")
def small_sts(tmp_path_factory) -> Path:
    """The first 120 pairs of stsb-it/train.csv."""
    if not STSB.exists():
        pytest.skip(f"stsb-it not found at {STSB} (set BERTINO_DATA)")
    path = tmp_path_factory.mktemp("sts") / "sts.csv"
    with open(STSB / "train.csv", encoding="utf-8", newline="") as src, \
            open(path, "w", encoding="utf-8", newline="") as dst:
        writer = csv.writer(dst)
        for n, row in enumerate(csv.reader(src)):
            if n == 120:
                break
            writer.writerow(row)
    return path


__all__ = ["SQUAD", "STSB"]
