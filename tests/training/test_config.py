"""TrainConfig: the card's defaults, dim scaling, config files and command-line overrides."""

from __future__ import annotations

import pytest

from bertino_rag.cli.train import add_arguments, config_from_args
from bertino_rag.training import TrainConfig, load_config, pick_mini_batch_size, scale_dims
from bertino_rag.training.train import CPU_MINI_BATCH, dataloader_settings


def test_defaults_are_the_card_recipe():
    cfg = TrainConfig()
    assert cfg.matryoshka_dims == [768, 512, 256, 128]
    assert cfg.matryoshka_weights == [1.0, 0.4, 0.2, 0.2]
    assert (cfg.batch_size, cfg.learning_rate, cfg.lr_scheduler) == (128, 1e-5, "cosine")
    assert (cfg.warmup_ratio, cfg.weight_decay, cfg.epochs) == (0.1, 0.01, 4.0)
    assert cfg.batch_sampler == "no_duplicates" and cfg.best_dim == 128
    assert cfg.num_negatives == 2 and cfg.fp16 is None and cfg.mini_batch_size is None


def test_dims_scale_to_a_smaller_model():
    assert scale_dims([768, 512, 256, 128], 384) == [384, 256, 128, 64]
    assert scale_dims([768, 512, 256, 128], 768) == [768, 512, 256, 128]
    assert scale_dims([768, 512, 256, 128], 1024) == [768, 512, 256, 128]
    with pytest.raises(ValueError, match="collapse"):
        scale_dims([768, 767], 2)


@pytest.mark.parametrize("kwargs, match", [
    ({"matryoshka_weights": [1.0]}, "matryoshka_weights"),
    ({"batch_sampler": "nope"}, "batch_sampler"),
    ({"dev_fraction": 1.5}, "dev_fraction"),
    ({"neg_range_min": 5, "neg_range_max": 6, "num_negatives": 2}, "window"),
])
def test_bad_values_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def _parse(argv):
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return config_from_args(parser.parse_args(argv))


def test_toml_file_then_flags(tmp_path):
    (tmp_path / "pairs.jsonl").write_text('{"query": "q", "positive": "p"}\n', encoding="utf-8")
    cfg_file = tmp_path / "run.toml"
    cfg_file.write_text(
        'train_data = "pairs.jsonl"\nbatch_size = 64\nlearning_rate = 2e-5\n'
        'matryoshka_dims = [384, 128]\nmatryoshka_weights = [1.0, 0.5]\nwith_title = true\n',
        encoding="utf-8")
    cfg = _parse(["--config", str(cfg_file), "--batch-size", "8", "--max-steps", "3",
                  "--no-with-title", "--mini-batch-size", "none", "--fp16"])
    assert cfg.train_data == str(tmp_path / "pairs.jsonl")  # found next to the file
    assert (cfg.batch_size, cfg.max_steps, cfg.learning_rate) == (8, 3, 2e-5)
    assert cfg.matryoshka_dims == [384, 128] and cfg.with_title is False and cfg.fp16 is True
    assert cfg.mini_batch_size is None


def test_yaml_file_and_list_flags(tmp_path):
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("train:\n  epochs: 1\n  multi_dataset_sampler: round_robin\n",
                        encoding="utf-8")
    cfg = _parse(["--config", str(cfg_file), "--matryoshka-dims", "256", "64",
                  "--matryoshka-weights", "1", "0.3", "--neg-relative-margin", "none"])
    assert cfg.epochs == 1.0 and cfg.multi_dataset_sampler == "round_robin"
    assert cfg.matryoshka_dims == [256, 64] and cfg.matryoshka_weights == [1.0, 0.3]
    assert cfg.neg_relative_margin is None


def test_unknown_or_mistyped_options(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("batch_sise = 4\n", encoding="utf-8")
    with pytest.raises(ValueError, match="unknown training option 'batch_sise'"):
        load_config(bad)
    with pytest.raises(ValueError, match="batch_size='many'"):
        load_config(None, batch_size="many")
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.toml")


def test_bertino_rag_cli_has_train():
    from bertino_rag.cli import build_parser

    args = build_parser().parse_args(["train", "--train-data", "x", "--max-steps", "2"])
    assert args.command == "train" and args.max_steps == "2"
    assert config_from_args(args).max_steps == 2


def test_mini_batch_rule_on_cpu():
    assert pick_mini_batch_size(None, None, 128, "cpu") == CPU_MINI_BATCH == 16
    assert pick_mini_batch_size(None, None, 8, "cpu") == 8  # never above the batch
    assert pick_mini_batch_size(None, 64, 32, "cpu") == 32  # explicit, capped at the batch
    assert pick_mini_batch_size(None, 4, 32, "cpu") == 4


def test_data_loading_keeps_cpu_single_process():
    cpu = dataloader_settings("cpu", None)
    assert cpu["dataloader_num_workers"] == 0 and cpu["dataloader_pin_memory"] is False
    gpu = dataloader_settings("cuda", None)
    assert gpu["dataloader_pin_memory"] is True
    assert gpu["dataloader_persistent_workers"] == (gpu["dataloader_num_workers"] > 0)
    assert dataloader_settings("cuda", 3)["dataloader_num_workers"] == 3


def test_missing_train_extra_names_it(monkeypatch):
    import sys

    from bertino_rag.training import train

    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ImportError, match=r"pip install 'bertino-rag\[train\]'"):
        train(TrainConfig(train_data="anything"))


@pytest.mark.parametrize("kwargs, match", [
    ({"test_fraction": 0.5, "dev_fraction": 0.5}, "leave pairs for training"),
    ({"select_by": "funnel_ndcg@10", "rescore_k": None}, "needs rescore_k"),
    ({"select_by": "mrr"}, "select_by"),
    ({"precision": "int4"}, "precision"),
    ({"rescore_k": 0}, "rescore_k must be positive"),
    ({"sts_ratio": 0}, "sts_ratio must be positive"),
    ({"seq_length_quantile": 0.0}, "seq_length_quantile must be in"),
    ({"seq_length_quantile": 1.5}, "seq_length_quantile must be in"),
    ({"threads": 0}, "threads must be positive"),
    ({"eval_max_queries": -1}, "eval_max_queries must be positive"),
    ({"max_seq_length": 0}, "max_seq_length must be positive"),
    ({"loss_scale": 0}, "loss_scale must be positive"),
    ({"loss_scale": -20.0}, "loss_scale must be positive"),
])
def test_new_fields_are_validated(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


@pytest.mark.parametrize("guided", [False, True])
@pytest.mark.parametrize("mini", [4, 1024])  # the cached loss, and its one-pass form
def test_loss_scale_reaches_the_loss(tiny_bert, guided, mini):
    """``loss_scale`` is the similarity scale of every retrieval loss (GISTEmbed: the inverse
    of its temperature); unset, each loss keeps its own default."""
    from sentence_transformers import SentenceTransformer

    from bertino_rag._deps import st_module
    from bertino_rag.training.trainer import retrieval_loss

    losses = st_module("losses")
    model = SentenceTransformer(tiny_bert, device="cpu")
    for scale, want in ((None, 100.0 if guided else 20.0), (50.0, 50.0)):
        cfg = TrainConfig(base_model=tiny_bert, batch_size=8, guided=guided, loss_scale=scale)
        loss = retrieval_loss(cfg, model, mini, 2, losses)
        got = 1.0 / loss.temperature if guided else loss.scale
        assert got == pytest.approx(want)
        assert ("Cached" in type(loss).__name__) == (mini < 16)
    assert _parse(["--loss-scale", "50"]).loss_scale == 50.0
