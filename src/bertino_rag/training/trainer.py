"""The sentence-transformers trainer of a run: losses, arguments, callbacks, and the counting of
what each task really gets. :func:`build_trainer` is shared by :func:`~.train.train` and the
speed benchmark (``benchmarks/train_cpu_speed.py``), so both time the same loop."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import TrainConfig
from .hardware import dataloader_settings, loop_settings, warmup_kwargs
from .tokens import TokenCache, cache_tokenization, training_prompts

__all__ = ["Built", "build_trainer", "length_sorted", "retrieval_loss", "step_timer"]


def _trainer_class() -> type:
    from sentence_transformers import SentenceTransformerTrainer

    class CountingTrainer(SentenceTransformerTrainer):
        """Counts the batches and examples each task really gets (samplers may skip some), and
        the task of every step in order (``task_order``)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.task_counts: dict[str, dict[str, int]] = defaultdict(
                lambda: {"batches": 0, "examples": 0, "smallest_batch": 1 << 30})
            self.task_order: list[str] = []

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if self.model.training and not return_outputs:
                name = inputs.get("dataset_name") or "train"
                size = next((len(v) for k, v in inputs.items() if k.endswith("input_ids")), 0)
                counts = self.task_counts[name]
                counts["batches"] += 1
                counts["examples"] += size
                counts["smallest_batch"] = min(counts["smallest_batch"], size)
                self.task_order.append(name)
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

    return CountingTrainer


def _final_eval_callback() -> Any:
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


def step_timer() -> Any:
    """A trainer callback recording each optimizer step's wall time in ``.seconds`` (dev
    evaluations run outside the steps), for the speed table."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self._t0 = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self._t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds.append(time.perf_counter() - self._t0)

    return StepTimer()


def retrieval_loss(cfg: TrainConfig, model: Any, mini: int, columns: int, losses: Any) -> Any:
    """The card's CachedMultipleNegativesRankingLoss; its plain form when one pass holds every
    text of a batch (the same loss without the second forward); the GISTEmbed versions (a
    frozen copy of the base model as guide) with ``guided``. ``cfg.loss_scale`` sets the
    similarity scale (GISTEmbed's temperature is its inverse); unset, each loss keeps its own
    (20 for MultipleNegativesRankingLoss, temperature 0.01 for GISTEmbed)."""
    one_pass = mini >= cfg.batch_size * columns
    scale = {} if cfg.loss_scale is None else {"scale": cfg.loss_scale}
    temperature = {} if cfg.loss_scale is None else {"temperature": 1.0 / cfg.loss_scale}
    if cfg.guided:
        from sentence_transformers import SentenceTransformer

        guide = SentenceTransformer(cfg.base_model, device=str(model.device))
        if cfg.max_seq_length:
            guide.max_seq_length = cfg.max_seq_length
        guide.requires_grad_(False)
        if one_pass:
            return losses.GISTEmbedLoss(model, guide, **temperature)
        return losses.CachedGISTEmbedLoss(model, guide, mini_batch_size=mini, **temperature)
    if one_pass:
        return losses.MultipleNegativesRankingLoss(model, **scale)
    cached = (length_sorted(losses.CachedMultipleNegativesRankingLoss) if cfg.sort_by_length
              else losses.CachedMultipleNegativesRankingLoss)
    return cached(model, mini_batch_size=mini, **scale)


def length_sorted(cached_loss: type) -> type:
    """``cached_loss`` (sentence-transformers' CachedMultipleNegativesRankingLoss) embedding each
    column's mini-batches in order of length.

    The cached loss cuts each column of a batch into mini-batches in the batch's order and pads
    each mini-batch to its longest text. With paragraphs drawn at random that is 1.76 times the
    real tokens (squad-it-dev with e5's tokenizer, mini-batches of 16); sorted by length, 1.14
    times (benchmarks/padding_by_length.py). sentence-transformers does not sort (its
    ``mini_batch_num_tokens`` packs texts in the batch's order, for flattened attention), so
    this subclass sorts each column before the cached forward and puts the embeddings back in
    the batch's order before the loss. The loss and its gradients are the same up to rounding
    (the loss pairs rows by position and is a mean over them); only the work changes.
    """
    import torch

    class LengthSorted(cached_loss):
        _inverse: list[Any]

        def forward(self, sentence_features: Any, labels: Any) -> Any:
            ordered, self._inverse = [], []
            for feature in sentence_features:
                mask = feature.get("attention_mask")
                if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
                    ordered.append(feature)  # flattened inputs: nothing to pad
                    self._inverse.append(None)
                    continue
                n = mask.shape[0]
                order = torch.argsort(mask.sum(dim=1), stable=True)
                ordered.append({k: v[order] if isinstance(v, torch.Tensor) and v.dim() > 0
                                and v.shape[0] == n else v for k, v in feature.items()})
                self._inverse.append(torch.argsort(order))
            return super().forward(ordered, labels)

        def calculate_loss(self, reps: list[list[Any]], labels: Any = None, *,
                           with_backward: bool = False) -> Any:
            back = [torch.cat(r)[inv] if inv is not None else None
                    for r, inv in zip(reps, self._inverse, strict=True)]
            if not with_backward:
                return super().calculate_loss(
                    [[b] if b is not None else r for r, b in zip(reps, back, strict=True)],
                    labels)
            # the loss back-propagates chunk by chunk, and each chunk would pass through the
            # reordering again: it reads leaves instead, whose gradients are then carried back
            # through the reordering once (as MatryoshkaLoss does with its truncation)
            leaves = [b.detach().requires_grad_() if b is not None else None for b in back]
            loss = super().calculate_loss(
                [[leaf] if leaf is not None else r for r, leaf in zip(reps, leaves, strict=True)],
                labels, with_backward=True)
            for b, leaf in zip(back, leaves, strict=True):
                if b is not None and leaf is not None and leaf.grad is not None:
                    b.backward(leaf.grad)
            return loss

    # the same loss: the saved model card and the logs name it as sentence-transformers does
    LengthSorted.__name__ = LengthSorted.__qualname__ = cached_loss.__name__
    return LengthSorted


@dataclass
class Built:
    """A trainer ready to run, and what it was built with."""

    trainer: Any
    retrieval_loss: Any
    prompts: dict[str, Any] | None
    token_cache: TokenCache | None = None
    callbacks: list[Any] = field(default_factory=list)


def build_trainer(cfg: TrainConfig, model: Any, datasets: dict[str, Any], *, out: Path,
                  device: str, precision: str, mini: int, dims: list[int],
                  weights: list[float], evaluator: Any | None = None,
                  callbacks: list[Any] | None = None) -> Built:
    """The trainer of a run: both losses wrapped in MatryoshkaLoss, the model's prompts per
    column, the card's schedule; with ``evaluator`` it evaluates every ``eval_steps`` (and at
    the end) and keeps the best checkpoint by its primary metric, without it it neither
    evaluates nor saves (the speed benchmark's loop)."""
    from datasets import DatasetDict
    from sentence_transformers import SentenceTransformerTrainingArguments

    from .._deps import st_module

    losses = st_module("losses")
    columns = list(datasets["retrieval"].column_names)
    r_loss = retrieval_loss(cfg, model, mini, len(columns), losses)
    loss = {"retrieval": losses.MatryoshkaLoss(model, r_loss, dims, weights)}
    if "sts" in datasets:
        loss["sts"] = losses.MatryoshkaLoss(model, losses.CoSENTLoss(model), dims, weights)
    prompts = training_prompts(model, columns, "sts" in datasets)
    evaluating = evaluator is not None
    schedule: dict[str, Any] = {"eval_strategy": "no", "save_strategy": "no"}
    if evaluator is not None:
        schedule = {"eval_strategy": "steps", "eval_steps": cfg.eval_steps,
                    "save_strategy": "steps", "save_steps": cfg.eval_steps,
                    "save_total_limit": cfg.save_total_limit, "load_best_model_at_end": True,
                    "metric_for_best_model": f"eval_dev_{evaluator.primary_metric}",
                    "greater_is_better": True}
    if prompts:
        schedule["prompts"] = prompts
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
        logging_steps=cfg.logging_steps,
        seed=cfg.seed,
        report_to="none",
        **schedule,
        **warmup_kwargs(cfg.warmup_ratio),
        **loop_settings(device, precision),
        **dataloader_settings(device, cfg.dataloader_workers),
    )
    all_callbacks = list(callbacks or [])
    if evaluating:
        all_callbacks.append(_final_eval_callback())
    trainer = _trainer_class()(
        model=model, args=args, train_dataset=DatasetDict(datasets), loss=loss,
        evaluator=evaluator, callbacks=all_callbacks,
    )
    cache = cache_tokenization(trainer, model) if cfg.pretokenize else None
    return Built(trainer=trainer, retrieval_loss=r_loss, prompts=prompts, token_cache=cache,
                 callbacks=all_callbacks)
