"""Tokens in training: the sequence length the data needs, prompts per column, and a
tokenization done once per text instead of once per batch."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["TokenCache", "cache_tokenization", "fit_seq_length", "training_prompts"]

logger = logging.getLogger("bertino_rag.training")


def fit_seq_length(tokenizer: Any, groups: Mapping[str, Sequence[str]], quantile: float,
                   cap: int, multiple: int = 8) -> tuple[int, dict[str, Any]]:
    """The sequence length that holds ``quantile`` of each group of texts whole (queries,
    documents, STS sentences: a group of many short texts must not decide for the long ones;
    special tokens and prompts counted, as the texts are given), rounded up to a
    ``multiple`` and at most ``cap``; with the statistics per group (``texts``, ``p50``,
    ``p99``, ``max``, ``cut``: the texts longer than the result) and the total ``cut``.

    Batches are padded to their longest text anyway, so the length only decides which rare
    long texts are cut (``quantile`` < 1) and what a GPU's mini-batch probe plans for.
    """
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"seq_length_quantile must be in (0, 1], got {quantile}")
    lengths = {name: np.array([len(ids) for ids in tokenizer(
        list(texts), add_special_tokens=True, truncation=False, verbose=False)["input_ids"]])
        for name, texts in groups.items() if texts}
    if not lengths:
        raise ValueError("no texts to measure")
    want = max(float(np.quantile(v, quantile, method="higher")) for v in lengths.values())
    length = min(int(cap), int(math.ceil(want / multiple) * multiple))
    stats: dict[str, Any] = {
        name: {"texts": int(v.size), "p50": int(np.quantile(v, 0.5, method="higher")),
               "p99": int(np.quantile(v, 0.99, method="higher")), "max": int(v.max()),
               "cut": int((v > length).sum())}
        for name, v in lengths.items()}
    stats["cut"] = sum(g["cut"] for g in stats.values())
    return length, stats


def training_prompts(model: Any, columns: Sequence[str], sts: bool) -> dict[str, Any] | None:
    """The trainer's ``prompts`` from the model's own: its ``query`` prompt for the anchor
    column, its ``document`` prompt for the others and for both STS sentences (as the library
    encodes documents and STS pairs at serving and evaluation time); ``None`` when the model
    has neither."""
    prompts = getattr(model, "prompts", None) or {}
    query, document = prompts.get("query") or "", prompts.get("document") or ""
    if not query and not document:
        return None
    out: dict[str, Any] = {"retrieval": {c: (query if i == 0 else document)
                                         for i, c in enumerate(columns)}}
    if sts:
        out["sts"] = {"sentence1": document, "sentence2": document}
    return out


class TokenCache:
    """A collator's tokenizing function that tokenizes each text once.

    The first time a (text, prompt) is seen it goes through the wrapped function (the model's
    own ``preprocess``/``tokenize``); its unpadded row is kept, and every later batch is padded
    from the kept rows. The result is the wrapped function's (same keys, right padding with
    the tokenizer's pad id, 0 elsewhere; values that are not one row per text, such as
    sentence-transformers' ``modality`` and ``prompt_length``, depend on the prompt only and
    are kept per prompt); left padding falls back to the wrapped function.
    """

    def __init__(self, tokenize: Callable[..., dict[str, Any]], pad_id: int) -> None:
        self.tokenize = tokenize
        self.pad_id = int(pad_id)
        self.rows: dict[tuple[Any, ...], dict[str, Any]] = {}
        self.extras: dict[Any, dict[str, Any]] = {}
        self.hits = 0
        self.misses = 0

    def __call__(self, texts: list[Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        import torch

        if not texts or not all(isinstance(t, str) for t in texts):
            return self.tokenize(texts, *args, **kwargs)
        extra = (repr(args), repr(sorted(kwargs.items())))
        missing = list(dict.fromkeys(t for t in texts if (t, extra) not in self.rows))
        if missing:
            batch = self.tokenize(missing, *args, **kwargs)
            rows = self._split(batch, len(missing))
            if rows is None:
                return self.tokenize(texts, *args, **kwargs)
            for text, row in zip(missing, rows, strict=True):
                self.rows[(text, extra)] = row
            self.extras[extra] = {k: v for k, v in batch.items()
                                  if not isinstance(v, torch.Tensor)}
        self.misses += len(missing)
        self.hits += len(texts) - len(missing)
        picked = [self.rows[(t, extra)] for t in texts]
        longest = max(int(r["attention_mask"].shape[0]) for r in picked)
        out: dict[str, Any] = {}
        for key in picked[0]:  # tensors only: one row per text
            fill = self.pad_id if key == "input_ids" else 0
            stacked = torch.full((len(picked), longest), fill, dtype=picked[0][key].dtype)
            for i, r in enumerate(picked):
                stacked[i, :r[key].shape[0]] = r[key]
            out[key] = stacked
        out.update(self.extras.get(extra, {}))
        return out

    @staticmethod
    def _split(batch: dict[str, Any], n: int) -> list[dict[str, Any]] | None:
        import torch

        mask = batch.get("attention_mask")
        if not isinstance(mask, torch.Tensor) or mask.ndim != 2 or mask.shape[0] != n:
            return None
        if n and bool((mask[:, 0] == 0).any()):
            return None  # left padding
        tensors = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
        if any(v.shape != mask.shape for v in tensors.values()):
            return None
        lengths = mask.sum(dim=1).tolist()
        return [{k: v[i, :int(n_tok)].clone() for k, v in tensors.items()}
                for i, n_tok in enumerate(lengths)]


def cache_tokenization(trainer: Any, model: Any) -> TokenCache | None:
    """Put a :class:`TokenCache` in front of the trainer's collator (``preprocess_fn`` in
    sentence-transformers 5.7+, ``tokenize_fn`` before); ``None`` when the collator has
    neither or the tokenizer has no pad id."""
    collator = trainer.data_collator
    tokenizer = getattr(model, "tokenizer", None)
    pad_id = getattr(tokenizer, "pad_token_id", None)
    if pad_id is None:
        return None
    for attr in ("preprocess_fn", "tokenize_fn"):
        fn = getattr(collator, attr, None)
        if callable(fn):
            cache = TokenCache(fn, pad_id)
            setattr(collator, attr, cache)
            return cache
    logger.warning("pretokenize: the trainer's collator has no tokenizing function to cache")
    return None
