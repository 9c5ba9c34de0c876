"""Fine-tune a sentence-transformers model into a Matryoshka encoder (the model card's recipe)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from .._deps import require
from ..data import load_sts
from .config import TrainConfig, scale_dims
from .data import RetrievalSet, load_pairs, mine_negatives, split_by_source, sts_dataset
from .evaluate import evaluate_dims, format_table, ir_evaluator

__all__ = ["CPU_MINI_BATCH", "dataloader_settings", "pick_mini_batch_size", "train",
           "write_matryoshka_dims"]

logger = logging.getLogger("bertino_rag.training")

CPU_MINI_BATCH = 16  # the card's mini_batch_size; on CPU a bigger one only costs memory


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


def pick_mini_batch_size(model: Any, requested: int | None, batch_size: int, device: str,
                         max_seq_length: int | None = None) -> int:
    """The CachedMultipleNegativesRankingLoss mini-batch.

    The cached loss gives the same gradients for any mini-batch, so only memory and speed are
    at stake. Rule: an explicit value wins (capped at ``batch_size``); on CPU the card's 16;
    on a GPU the largest power of two up to ``batch_size`` whose forward + backward at the full
    sequence length peaks under 80% of the device memory left after the weights, their
    gradients and the two AdamW moments (probed once, before training).
    """
    if requested is not None:
        return max(1, min(int(requested), batch_size))
    if not str(device).startswith("cuda"):
        return min(CPU_MINI_BATCH, batch_size)
    return _probe_cuda(model, batch_size, max_seq_length or int(model.max_seq_length))


def _probe_cuda(model: Any, batch_size: int, seq_len: int) -> int:
    import torch

    total = torch.cuda.get_device_properties(model.device).total_memory
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    budget = 0.8 * (total - 3 * param_bytes)  # grads + AdamW exp_avg, exp_avg_sq
    candidate = batch_size
    text = " ".join(["parola"] * seq_len)
    was_training = model.training
    model.train()
    best = 1
    while candidate >= 1:
        try:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            features = model.tokenize([text] * candidate)
            features = {k: v.to(model.device) for k, v in features.items()}
            with torch.autocast("cuda", dtype=torch.float16):
                out = model(features)["sentence_embedding"]
            out.float().pow(2).sum().backward()
            peak = torch.cuda.max_memory_allocated()
            model.zero_grad(set_to_none=True)
            if peak <= budget:
                best = candidate
                break
        except torch.cuda.OutOfMemoryError:
            model.zero_grad(set_to_none=True)
        candidate //= 2
    torch.cuda.empty_cache()
    model.train(was_training)
    logger.info("mini-batch probe: %d sequences of %d tokens fit (batch %d)", best, seq_len,
                batch_size)
    return best


def dataloader_settings(device: str, workers: int | None) -> dict[str, Any]:
    """Data loading that keeps a GPU fed: worker processes and pinned memory on CUDA only."""
    on_gpu = str(device).startswith("cuda")
    if workers is None:
        workers = min(4, max(0, (os.cpu_count() or 1) - 1)) if on_gpu else 0
    return {
        "dataloader_num_workers": workers,
        "dataloader_pin_memory": on_gpu,
        "dataloader_persistent_workers": workers > 0,
        "dataloader_prefetch_factor": 2 if workers > 0 else None,
    }


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


def _prepare_data(cfg: TrainConfig, model: Any) -> tuple[dict[str, Any], RetrievalSet, dict]:
    assert cfg.train_data, "checked by train()"
    pairs = load_pairs(cfg.train_data, qrels_split=cfg.qrels_split, with_title=cfg.with_title,
                       group_by=cfg.group_by)
    train_set, dev = split_by_source(pairs, cfg.dev_fraction, seed=cfg.seed)
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
    if cfg.sts_data:
        sts_pairs = load_sts(cfg.sts_data)
        size = cfg.sts_size or len(mined)
        datasets["sts"] = sts_dataset(sts_pairs, size, max_score=cfg.sts_max_score, seed=cfg.seed)
        logger.info("STS: %d pairs resampled to %d rows (scores / %g)", len(sts_pairs), size,
                    cfg.sts_max_score)
        info.update(sts_pairs=len(sts_pairs), sts_rows=size)
    return datasets, dev, info


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

    from ._compat import losses as st_losses

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
    fp16 = cfg.fp16 if cfg.fp16 is not None else device.startswith("cuda")
    if fp16 and not device.startswith("cuda"):
        raise ValueError("fp16 needs a CUDA device")
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

    datasets, dev, data_info = _prepare_data(cfg, model)
    sts_dev = load_sts(cfg.sts_dev_data) if cfg.sts_dev_data else None
    eval_kw: dict[str, Any] = {"max_score": cfg.sts_max_score, "batch_size": cfg.eval_batch_size}
    before = evaluate_dims(model, dev, sts_dev, dims, **eval_kw) if cfg.evaluate_before else None
    if before:
        logger.info("before training:\n%s", format_table(before))

    mini = pick_mini_batch_size(model, cfg.mini_batch_size, cfg.batch_size, device,
                                cfg.max_seq_length)
    L = st_losses()
    loss = {"retrieval": L.MatryoshkaLoss(
        model, L.CachedMultipleNegativesRankingLoss(model, mini_batch_size=mini), dims, weights)}
    if "sts" in datasets:
        loss["sts"] = L.MatryoshkaLoss(model, L.CoSENTLoss(model), dims, weights)
    evaluator = ir_evaluator(dev, best_dim, name=f"dev_{best_dim}", batch_size=cfg.eval_batch_size)

    args = SentenceTransformerTrainingArguments(
        output_dir=str(out / "checkpoints"),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_ratio=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay,
        fp16=fp16,
        use_cpu=device == "cpu",
        batch_sampler=cfg.batch_sampler,
        multi_dataset_batch_sampler=cfg.multi_dataset_sampler,
        eval_strategy="steps",
        eval_steps=cfg.eval_steps,
        save_strategy="steps",
        save_steps=cfg.eval_steps,
        save_total_limit=cfg.save_total_limit,
        load_best_model_at_end=True,
        metric_for_best_model=f"eval_dev_{best_dim}_cosine_ndcg@10",
        greater_is_better=True,
        logging_steps=cfg.logging_steps,
        seed=cfg.seed,
        report_to="none",
        **dataloader_settings(device, cfg.dataloader_workers),
    )
    trainer = _trainer_class()(
        model=model, args=args, train_dataset=DatasetDict(datasets), loss=loss,
        evaluator=evaluator, callbacks=[_final_eval_callback()],
    )
    logger.info("training %s on %s: dims %s, weights %s, batch %d (mini-batch %d), lr %g, %s",
                cfg.base_model, device, dims, weights, cfg.batch_size, mini, cfg.learning_rate,
                f"max_steps {cfg.max_steps}" if cfg.max_steps else f"{cfg.epochs:g} epochs")
    t0 = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - t0
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
    wall_seconds = round(time.perf_counter() - started, 1)
    metrics = {
        "base_model": cfg.base_model,
        "dims": dims,
        "weights": weights,
        "best_dim": best_dim,
        "before": before,
        "after": after,
        "training": {
            "device": device,
            "fp16": fp16,
            "mini_batch_size": mini,
            "steps": state.global_step,
            "epochs": round(epochs_run, 3),
            "train_seconds": round(train_seconds, 1),
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
