"""Fine-tune a sentence-transformers model into a Matryoshka encoder (the model card's recipe)."""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from .._deps import require
from ..data import load_sts
from .config import TrainConfig, scale_dims
from .data import RetrievalSet, load_pairs, mine_negatives, split_by_source, sts_dataset
from .evaluate import dev_evaluator, evaluate_dims, format_table
from .hardware import (
    CPU_MINI_BATCH,
    dataloader_settings,
    loop_settings,
    pick_mini_batch_size,
    resolve_precision,
    warmup_kwargs,
)

__all__ = ["CPU_MINI_BATCH", "dataloader_settings", "pick_mini_batch_size", "resolve_device",
           "train", "write_matryoshka_dims"]

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


def _trainer_class():
    from sentence_transformers import SentenceTransformerTrainer

    class CountingTrainer(SentenceTransformerTrainer):
        """Counts the batches and examples each task really gets (samplers may skip some)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.task_counts: dict[str, dict[str, int]] = defaultdict(
                lambda: {"batches": 0, "examples": 0, "smallest_batch": 1 << 30})

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if self.model.training and not return_outputs:
                name = inputs.get("dataset_name") or "train"
                size = next((len(v) for k, v in inputs.items() if k.endswith("input_ids")), 0)
                counts = self.task_counts[name]
                counts["batches"] += 1
                counts["examples"] += size
                counts["smallest_batch"] = min(counts["smallest_batch"], size)
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

    return CountingTrainer


def _final_eval_callback():
    from transformers import TrainerCallback

    class EvaluateAtEnd(TrainerCallback):
        """Evaluate and checkpoint at each epoch end and the last step, so the best-checkpoint
        choice also sees the final weights (batches skipped by the sampler can end an epoch
        before the nominal step count)."""

        def _flag(self, state, control):
            if state.global_step > 0 and state.global_step % max(1, state.eval_steps or 1):
                control.should_evaluate = True
                control.should_save = True
            return control

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= state.max_steps:
                return self._flag(state, control)
            return control

        def on_epoch_end(self, args, state, control, **kwargs):
            return self._flag(state, control)

    return EvaluateAtEnd()


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


def _prepare_data(cfg: TrainConfig, model: Any
                  ) -> tuple[dict[str, Any], RetrievalSet, RetrievalSet | None, dict]:
    train_set, dev, test = split_data(cfg)
    dev_sources = sorted({p.source for p in dev.pairs})
    logger.info("dev split by source: %d pairs from %d sources held out (%s); %d training pairs "
                "from %d sources", len(dev), len(dev_sources), ", ".join(dev_sources[:8])
                + (" ..." if len(dev_sources) > 8 else ""), len(train_set),
                len({p.source for p in train_set.pairs}))
    mined = mine_negatives(
        train_set, model, num_negatives=cfg.num_negatives, range_min=cfg.neg_range_min,
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
    if cfg.sts_data:
        sts_pairs = load_sts(cfg.sts_data)
        size = cfg.sts_size or max(1, round(cfg.sts_ratio * len(mined)))
        datasets["sts"] = sts_dataset(sts_pairs, size, max_score=cfg.sts_max_score, seed=cfg.seed)
        logger.info("STS: %d pairs resampled to %d rows (scores / %g)", len(sts_pairs), size,
                    cfg.sts_max_score)
        info.update(sts_pairs=len(sts_pairs), sts_rows=size)
    return datasets, dev, test, info


def _retrieval_loss(cfg: TrainConfig, model: Any, mini: int, columns: int, losses: Any) -> Any:
    """The card's CachedMultipleNegativesRankingLoss; its plain form when one pass holds every
    text of a batch (the same loss without the second forward); the GISTEmbed versions (a
    frozen copy of the base model as guide) with ``guided``."""
    one_pass = mini >= cfg.batch_size * columns
    if cfg.guided:
        from sentence_transformers import SentenceTransformer

        guide = SentenceTransformer(cfg.base_model, device=str(model.device))
        if cfg.max_seq_length:
            guide.max_seq_length = cfg.max_seq_length
        guide.requires_grad_(False)
        if one_pass:
            return losses.GISTEmbedLoss(model, guide)
        return losses.CachedGISTEmbedLoss(model, guide, mini_batch_size=mini)
    if one_pass:
        return losses.MultipleNegativesRankingLoss(model)
    return losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=mini)


def train(config: TrainConfig) -> Path:
    """Fine-tune ``config.base_model``; returns the folder of the saved model.

    The folder holds a sentence-transformers model whose ``config_sentence_transformers.json``
    lists its ``matryoshka_dims``, and ``metrics.json`` (per-dim dev and STS metrics before and
    after training, what each task got, the config).

    Raises:
        ImportError: ``datasets``/``accelerate`` missing (names the ``train`` extra).
        ValueError: a bad config value or unusable data.
    """
    _require_deps()
    import torch
    from datasets import DatasetDict
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainingArguments

    from .._deps import st_module

    cfg = config
    cfg.validate()
    if not cfg.train_data:
        raise ValueError("train_data is required (a BEIR folder, .jsonl or .csv)")
    for name in ("train_data", "sts_data", "sts_dev_data"):
        path = getattr(cfg, name)
        if path and not Path(path).exists():
            raise FileNotFoundError(f"{name} {path} does not exist")
    started = time.perf_counter()
    out = Path(cfg.output_dir)
    device = resolve_device(cfg.device)
    precision = resolve_precision(device, cfg.precision, cfg.fp16)
    torch.manual_seed(cfg.seed)

    model = SentenceTransformer(cfg.base_model, device=device)
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
    weights = list(cfg.matryoshka_weights)
    best_dim = cfg.best_dim if cfg.best_dim in dims else min(dims)
    if best_dim != cfg.best_dim:
        logger.info("best_dim %d is not trained; the best checkpoint is picked at %d dims",
                    cfg.best_dim, best_dim)

    datasets, dev, test, data_info = _prepare_data(cfg, model)
    sts_dev = load_sts(cfg.sts_dev_data) if cfg.sts_dev_data else None
    eval_kw: dict[str, Any] = {"rerank_k": cfg.rerank_k, "funnel_dims": [best_dim],
                               "batch_size": cfg.eval_batch_size}
    before = evaluate_dims(model, dev, sts_dev, dims, **eval_kw) if cfg.evaluate_before else None
    if before:
        logger.info("before training:\n%s", format_table(before))
    test_before = (evaluate_dims(model, test, None, dims, **eval_kw)
                   if test is not None and cfg.evaluate_before else None)

    columns = 2 + cfg.num_negatives  # anchor, positive, negatives
    mini = pick_mini_batch_size(model, cfg.mini_batch_size, cfg.batch_size, device,
                                cfg.max_seq_length, precision=precision, columns=columns)
    L = st_module("losses")
    retrieval_loss = _retrieval_loss(cfg, model, mini, columns, L)
    loss = {"retrieval": L.MatryoshkaLoss(model, retrieval_loss, dims, weights)}
    if "sts" in datasets:
        loss["sts"] = L.MatryoshkaLoss(model, L.CoSENTLoss(model), dims, weights)
    evaluator = dev_evaluator(dev, best_dim, rerank_k=cfg.rerank_k, select_by=cfg.select_by,
                              batch_size=cfg.eval_batch_size)
    best_metric = f"eval_dev_{evaluator.primary_metric}"

    args = SentenceTransformerTrainingArguments(
        output_dir=str(out / "checkpoints"),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        weight_decay=cfg.weight_decay,
        use_cpu=device == "cpu",
        batch_sampler=cfg.batch_sampler,
        multi_dataset_batch_sampler=cfg.multi_dataset_sampler,
        eval_strategy="steps",
        eval_steps=cfg.eval_steps,
        save_strategy="steps",
        save_steps=cfg.eval_steps,
        save_total_limit=cfg.save_total_limit,
        load_best_model_at_end=True,
        metric_for_best_model=best_metric,
        greater_is_better=True,
        logging_steps=cfg.logging_steps,
        seed=cfg.seed,
        report_to="none",
        **warmup_kwargs(cfg.warmup_ratio),
        **loop_settings(device, precision),
        **dataloader_settings(device, cfg.dataloader_workers),
    )
    trainer = _trainer_class()(
        model=model, args=args, train_dataset=DatasetDict(datasets), loss=loss,
        evaluator=evaluator, callbacks=[_final_eval_callback()],
    )
    logger.info("training %s on %s (%s): dims %s, weights %s, batch %d (mini-batch %d, %s), "
                "lr %g, %s", cfg.base_model, device, precision, dims, weights, cfg.batch_size,
                mini, type(retrieval_loss).__name__, cfg.learning_rate,
                f"max_steps {cfg.max_steps}" if cfg.max_steps else f"{cfg.epochs:g} epochs")
    on_cuda = device.startswith("cuda")
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    trainer.train()
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
    after = evaluate_dims(model, dev, sts_dev, dims, **eval_kw)
    logger.info("after training:\n%s", format_table(after, before))
    test_after = evaluate_dims(model, test, None, dims, **eval_kw) if test is not None else None
    wall_seconds = round(time.perf_counter() - started, 1)
    metrics = {
        "base_model": cfg.base_model,
        "dims": dims,
        "weights": weights,
        "best_dim": best_dim,
        "before": before,
        "after": after,
        "test": {"before": test_before, "after": test_after} if test is not None else None,
        "training": {
            "device": device,
            "gpu": torch.cuda.get_device_name(device) if on_cuda else None,
            "precision": precision,
            "mini_batch_size": mini,
            "retrieval_loss": type(retrieval_loss).__name__,
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
