"""Fine-tune a sentence-transformers model into a Matryoshka encoder (the model card's recipe).

:func:`train` runs in this order, so that bad input fails before anything long: the config,
the data files and the base model are checked, the pairs loaded and split by source document
(:class:`~bertino_rag.errors.TrainingDataError`), the model loaded, the training length and
the mini-batch settled and checked against memory
(:class:`~bertino_rag.errors.MiniBatchMemoryError`); only then do mining, the evaluation
before and the training run.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._deps import require
from ..data import StsPair, load_sts
from .base_model import check_base_model
from .config import TrainConfig, scale_dims
from .data import (
    RetrievalSet,
    load_pairs,
    mine_negatives,
    split_by_source,
    sts_dataset,
    subset_queries,
)
from .evaluate import dev_evaluator, evaluate_dims, format_table
from .hardware import (
    CPU_MINI_BATCH,
    attention_dropout_kwargs,
    check_mini_batch_fits,
    dataloader_settings,
    end_autocast,
    pick_mini_batch_size,
    resolve_precision,
    set_threads,
)
from .tokens import fit_seq_length
from .trainer import build_trainer

__all__ = ["CPU_MINI_BATCH", "dataloader_settings", "mine_datasets", "pick_mini_batch_size",
           "prepared_run", "resolve_device", "split_data", "train", "write_matryoshka_dims"]

logger = logging.getLogger("bertino_rag.training")


def _require_deps() -> None:
    require("datasets", "train")
    require("accelerate", "train")


def resolve_device(requested: str | None) -> str:
    import torch

    if requested:
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device={requested!r} but CUDA is not available")
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def write_matryoshka_dims(folder: str | Path, dims: list[int]) -> None:
    """Record the trained dims in ``config_sentence_transformers.json`` (read by Encoder)."""
    path = Path(folder) / "config_sentence_transformers.json"
    data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    data["matryoshka_dims"] = [int(d) for d in dims]
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def split_data(cfg: TrainConfig) -> tuple[RetrievalSet, RetrievalSet, RetrievalSet | None]:
    """(train, dev, test) by whole source documents, as :func:`train` splits ``train_data``.

    The test articles (``test_fraction`` of the pairs) are set apart first, then the dev
    articles (``dev_fraction`` of all pairs) from the rest; with ``test_fraction`` 0 the
    dev split is exactly ``split_by_source(pairs, dev_fraction)``.
    """
    assert cfg.train_data is not None
    pairs = load_pairs(cfg.train_data, qrels_split=cfg.qrels_split, with_title=cfg.with_title,
                       group_by=cfg.group_by)
    test = None
    if cfg.test_fraction > 0:
        pairs, test = split_by_source(pairs, cfg.test_fraction, seed=cfg.seed + 1)
    fraction = cfg.dev_fraction / (1.0 - cfg.test_fraction)
    train_set, dev = split_by_source(pairs, min(fraction, 0.95), seed=cfg.seed)
    return train_set, dev, test


def _training_texts(model: Any, train_set: RetrievalSet, sts: list[StsPair] | None
                    ) -> dict[str, list[str]]:
    """The texts training will read, by kind, with the prompts they will get (as the trainer's
    ``prompts`` do: query prompt on queries, document prompt on the rest)."""
    prompts = getattr(model, "prompts", None) or {}
    q, d = prompts.get("query") or "", prompts.get("document") or ""
    texts = {"queries": [q + t for t in dict.fromkeys(p.query for p in train_set.pairs)],
             "documents": [d + t for t in train_set.corpus.values()]}
    if sts:
        texts["sts"] = [d + t for t in dict.fromkeys(x for p in sts
                                                      for x in (p.sentence1, p.sentence2))]
    return texts


@dataclass
class Prepared:
    """A run checked and set up, before any long step: the model loaded, the data split, the
    lengths, precision and mini-batch settled."""

    cfg: TrainConfig
    model: Any
    device: str
    precision: str
    threads: int
    dims: list[int]
    weights: list[float]
    best_dim: int
    train_set: RetrievalSet
    dev: RetrievalSet
    test: RetrievalSet | None
    sts_train: list[StsPair] | None
    sts_dev: list[StsPair] | None
    train_length: int
    length_stats: dict[str, Any] | None
    mini: int


def prepared_run(config: TrainConfig) -> Prepared:
    """Every check and choice of a run that is quick: the config, the files, the base model
    (:func:`check_base_model`), the pairs and their split, the STS files; then the model is
    loaded, the training length fitted (``seq_length_quantile``), the mini-batch picked and
    checked against memory.

    Raises:
        ValueError: a bad config value; :class:`~bertino_rag.errors.BaseModelError`,
            :class:`~bertino_rag.errors.TrainingDataError`,
            :class:`~bertino_rag.errors.MiniBatchMemoryError` (all ``ValueError``).
        FileNotFoundError: a data file is missing.
    """
    _require_deps()
    import torch
    from sentence_transformers import SentenceTransformer

    cfg = config
    cfg.validate()
    if not cfg.train_data:
        raise ValueError("train_data is required (a BEIR folder, .jsonl or .csv)")
    for name in ("train_data", "sts_data", "sts_dev_data"):
        path = getattr(cfg, name)
        if path and not Path(path).exists():
            raise FileNotFoundError(f"{name} {path} does not exist")
    check_base_model(cfg.base_model)
    train_set, dev, test = split_data(cfg)
    sts_train = load_sts(cfg.sts_data) if cfg.sts_data else None
    sts_dev = load_sts(cfg.sts_dev_data) if cfg.sts_dev_data else None
    device = resolve_device(cfg.device)
    precision = resolve_precision(device, cfg.precision, cfg.fp16)
    threads = set_threads(cfg.threads)
    torch.manual_seed(cfg.seed)

    dropout_kwargs, settle_dropout = attention_dropout_kwargs(cfg.base_model,
                                                              cfg.attention_dropout, device)
    model = SentenceTransformer(cfg.base_model, device=device, config_kwargs=dropout_kwargs)
    hf_config = getattr(getattr(model[0], "auto_model", None), "config", None)
    if hf_config is not None:  # a transformer (not, e.g., static embeddings)
        settle_dropout(hf_config)
    if cfg.max_seq_length:
        model.max_seq_length = cfg.max_seq_length
    get_dim = (
        getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    )
    full_dim = int(get_dim())
    dims = scale_dims(cfg.matryoshka_dims, full_dim)
    if dims != sorted(cfg.matryoshka_dims, reverse=True):
        logger.info("matryoshka_dims %s scaled to %s for the %d-d output of %s",
                    cfg.matryoshka_dims, dims, full_dim, cfg.base_model)
    best_dim = cfg.best_dim if cfg.best_dim in dims else min(dims)
    if best_dim != cfg.best_dim:
        logger.info("best_dim %d is not trained; the best checkpoint is picked at %d dims",
                    cfg.best_dim, best_dim)
    train_length = int(model.max_seq_length)
    stats = None
    if cfg.seq_length_quantile is not None:
        train_length, stats = fit_seq_length(
            model.tokenizer, _training_texts(model, train_set, sts_train),
            cfg.seq_length_quantile, cap=train_length)
        logger.info("training length %d tokens (quantile %g of each kind of training text; "
                    "%s; %d texts cut)", train_length, cfg.seq_length_quantile, "; ".join(
                        f"{k}: {g['texts']} texts, median {g['p50']}, 99th percentile "
                        f"{g['p99']}, longest {g['max']}" for k, g in stats.items()
                        if isinstance(g, dict)), stats["cut"])
    columns = 2 + cfg.num_negatives  # anchor, positive, negatives
    mini = pick_mini_batch_size(model, cfg.mini_batch_size, cfg.batch_size, device,
                                train_length, precision=precision, columns=columns)
    if cfg.mini_batch_size is not None or not device.startswith("cuda"):
        check_mini_batch_fits(model, min(mini, cfg.batch_size * columns), train_length, device,
                              precision)
    return Prepared(cfg=cfg, model=model, device=device, precision=precision, threads=threads,
                    dims=dims, weights=list(cfg.matryoshka_weights), best_dim=best_dim,
                    train_set=train_set, dev=dev, test=test, sts_train=sts_train,
                    sts_dev=sts_dev, train_length=train_length, length_stats=stats, mini=mini)


def mine_datasets(run: Prepared) -> tuple[dict[str, Any], dict[str, Any]]:
    """The training sets: mined retrieval n-tuples and the resampled STS rows (the long step
    of data preparation); with what ``metrics.json`` records about the data."""
    cfg, train_set, dev, test = run.cfg, run.train_set, run.dev, run.test
    dev_sources = sorted({p.source for p in dev.pairs})
    logger.info("dev split by source: %d pairs from %d sources held out (%s); %d training pairs "
                "from %d sources", len(dev), len(dev_sources), ", ".join(dev_sources[:8])
                + (" ..." if len(dev_sources) > 8 else ""), len(train_set),
                len({p.source for p in train_set.pairs}))
    mined = mine_negatives(
        train_set, run.model, num_negatives=cfg.num_negatives, range_min=cfg.neg_range_min,
        range_max=cfg.neg_range_max, relative_margin=cfg.neg_relative_margin,
        sampling_strategy=cfg.neg_sampling, batch_size=cfg.eval_batch_size, seed=cfg.seed,
    )
    datasets = {"retrieval": mined}
    info: dict[str, Any] = {
        "train_pairs": len(train_set), "train_sources": len({p.source for p in train_set.pairs}),
        "train_corpus": len(train_set.corpus), "mined_tuples": len(mined),
        "dropped_by_miner": len(train_set) - len(mined),
        "dev_pairs": len(dev), "dev_queries": len(dev.queries), "dev_corpus": len(dev.corpus),
        "dev_sources": dev_sources,
    }
    if test is not None:
        info.update(test_pairs=len(test), test_queries=len(test.queries),
                    test_corpus=len(test.corpus),
                    test_sources=sorted({p.source for p in test.pairs}))
    if run.sts_train:
        size = cfg.sts_size or max(1, round(cfg.sts_ratio * len(mined)))
        datasets["sts"] = sts_dataset(run.sts_train, size, max_score=cfg.sts_max_score,
                                      seed=cfg.seed)
        logger.info("STS: %d pairs resampled to %d rows (scores / %g)", len(run.sts_train),
                    size, cfg.sts_max_score)
        info.update(sts_pairs=len(run.sts_train), sts_rows=size)
    return datasets, info


def train(config: TrainConfig) -> Path:
    """Fine-tune ``config.base_model``; returns the folder of the saved model.

    The folder holds a sentence-transformers model whose ``config_sentence_transformers.json``
    lists its ``matryoshka_dims``, and ``metrics.json`` (per-dim dev and STS metrics before and
    after training, what each task got, the config).

    Raises:
        ImportError: ``datasets``/``accelerate`` missing (names the ``train`` extra).
        ValueError: a bad config value or unusable input, before any long step
            (:func:`prepared_run`).
    """
    import torch

    started = time.perf_counter()
    run = prepared_run(config)
    cfg, model, device, dims = run.cfg, run.model, run.device, run.dims
    out = Path(cfg.output_dir)
    datasets, data_info = mine_datasets(run)
    eval_kw: dict[str, Any] = {"rescore_k": cfg.rescore_k, "funnel_dims": [run.best_dim],
                               "batch_size": cfg.eval_batch_size}
    before = (evaluate_dims(model, run.dev, run.sts_dev, dims, **eval_kw)
              if cfg.evaluate_before else None)
    if before:
        logger.info("before training:\n%s", format_table(before))
    test_before = (evaluate_dims(model, run.test, None, dims, **eval_kw)
                   if run.test is not None and cfg.evaluate_before else None)

    dev_during = subset_queries(run.dev, cfg.eval_max_queries, seed=cfg.seed)
    evaluator = dev_evaluator(dev_during, run.best_dim, rescore_k=cfg.rescore_k,
                              select_by=cfg.select_by, batch_size=cfg.eval_batch_size)
    built = build_trainer(cfg, model, datasets, out=out, device=device,
                          precision=run.precision, mini=run.mini, dims=dims,
                          weights=run.weights, evaluator=evaluator)
    trainer = built.trainer
    logger.info("training %s on %s (%s, %d threads): dims %s, weights %s, batch %d (mini-batch "
                "%d, %s), %d tokens, lr %g, %s%s", cfg.base_model, device, run.precision,
                run.threads, dims, run.weights, cfg.batch_size, run.mini,
                type(built.retrieval_loss).__name__, run.train_length, cfg.learning_rate,
                f"max_steps {cfg.max_steps}" if cfg.max_steps else f"{cfg.epochs:g} epochs",
                "" if built.prompts is None else "; prompts " + json.dumps(built.prompts))
    on_cuda = device.startswith("cuda")
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    full_length = model.max_seq_length
    model.max_seq_length = run.train_length  # the fitted length, while training only
    t0 = time.perf_counter()
    try:
        trainer.train()
    except torch.cuda.OutOfMemoryError as err:
        from ..errors import MiniBatchMemoryError

        raise MiniBatchMemoryError(
            f"training ran out of GPU memory with mini_batch_size={run.mini} at "
            f"{run.train_length} tokens ({err}); lower mini_batch_size or max_seq_length, or "
            "leave mini_batch_size unset", run.mini, None, None) from err
    finally:
        model.max_seq_length = full_length
        end_autocast(trainer)
    if on_cuda:
        torch.cuda.synchronize()
    train_seconds = time.perf_counter() - t0
    peak_gpu = int(torch.cuda.max_memory_allocated()) if on_cuda else None
    loop_seconds = max(train_seconds - evaluator.seconds, 1e-9)  # steps without dev evaluations
    state = trainer.state

    tasks = {}
    epochs_run = max(1e-9, float(state.epoch or 0))
    for name, counts in trainer.task_counts.items():
        rows = len(datasets[name])
        tasks[name] = {**counts, "rows": rows,
                       "rows_per_epoch_seen": round(counts["examples"] / epochs_run / rows, 3)}
        logger.info("task %s: %d batches, %d examples (smallest batch %d) over %.2f epochs of "
                    "%d rows", name, counts["batches"], counts["examples"],
                    counts["smallest_batch"], epochs_run, rows)

    out.mkdir(parents=True, exist_ok=True)
    model.save(str(out))
    write_matryoshka_dims(out, dims)
    after = evaluate_dims(model, run.dev, run.sts_dev, dims, **eval_kw)
    logger.info("after training:\n%s", format_table(after, before))
    test_after = (evaluate_dims(model, run.test, None, dims, **eval_kw)
                  if run.test is not None else None)
    wall_seconds = round(time.perf_counter() - started, 1)
    cache = built.token_cache
    metrics = {
        "base_model": cfg.base_model,
        "dims": dims,
        "weights": run.weights,
        "best_dim": run.best_dim,
        "before": before,
        "after": after,
        "test": {"before": test_before, "after": test_after} if run.test is not None else None,
        "training": {
            "device": device,
            "gpu": torch.cuda.get_device_name(device) if on_cuda else None,
            "precision": run.precision,
            "threads": run.threads,
            "mini_batch_size": run.mini,
            "retrieval_loss": type(built.retrieval_loss).__name__,
            "train_length": run.train_length,
            "length_stats": run.length_stats,
            "prompts": built.prompts,
            "pretokenized": None if cache is None else {"texts": len(cache.rows),
                                                        "hits": cache.hits},
            "eval_queries_during_training": len(dev_during.queries),
            "steps": state.global_step,
            "epochs": round(epochs_run, 3),
            "train_seconds": round(train_seconds, 1),
            "eval_seconds": round(evaluator.seconds, 1),
            "steps_per_second": round(state.global_step / loop_seconds, 4),
            "examples_per_second": round(sum(c["examples"] for c in tasks.values())
                                         / loop_seconds, 2),
            "peak_gpu_bytes": peak_gpu,
            "wall_seconds": wall_seconds,
            "best_checkpoint": state.best_model_checkpoint,
            "best_metric": state.best_metric,
            "tasks": tasks,
            "log": [e for e in state.log_history if "loss" in e or "eval_loss" in e
                    or any(k.startswith("eval_dev") for k in e)],
        },
        "data": data_info,
        "config": cfg.to_dict(),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n",
                                      encoding="utf-8")
    if not cfg.keep_checkpoints:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    logger.info("saved %s (matryoshka_dims %s) in %.0fs", out, dims, wall_seconds)
    return out
