"""Per-dim evaluation in the model card's layout, with sentence-transformers' evaluators."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..data import StsPair
from ._compat import evaluation
from .data import RetrievalSet

__all__ = ["CARD_METRICS", "build_evaluator", "evaluate_dims", "format_table", "ir_evaluator"]

# (row label, metric key suffix) in the card's order
CARD_METRICS = [
    ("MAP@100", "cosine_map@100"),
    ("NDCG@10", "cosine_ndcg@10"),
    ("Accuracy@1", "cosine_accuracy@1"),
    ("Accuracy@10", "cosine_accuracy@10"),
    ("STS Spearman cosine", "spearman_cosine"),
    ("STS Pearson cosine", "pearson_cosine"),
]


def ir_evaluator(dev: RetrievalSet, dim: int | None, *, name: str | None = None,
                 batch_size: int = 64):
    """An InformationRetrievalEvaluator over the dev queries and the dev sources' documents."""
    InformationRetrievalEvaluator = evaluation().InformationRetrievalEvaluator

    return InformationRetrievalEvaluator(
        queries=dev.queries, corpus=dev.corpus, relevant_docs=dev.relevant,
        name=name or f"dev_{dim}", truncate_dim=dim, batch_size=batch_size,
        mrr_at_k=[10], ndcg_at_k=[10], accuracy_at_k=[1, 10], precision_recall_at_k=[10],
        map_at_k=[100], write_csv=False, show_progress_bar=False,
    )


def sts_evaluator(pairs: Sequence[StsPair], dim: int | None, *, max_score: float = 5.0,
                  name: str | None = None, batch_size: int = 64):
    """An EmbeddingSimilarityEvaluator (cosine) over STS pairs, scores scaled to [0, 1]."""
    EmbeddingSimilarityEvaluator = evaluation().EmbeddingSimilarityEvaluator

    return EmbeddingSimilarityEvaluator(
        [p.sentence1 for p in pairs], [p.sentence2 for p in pairs],
        [p.score / max_score for p in pairs], main_similarity="cosine",
        similarity_fn_names=["cosine"], name=name or f"sts_{dim}", truncate_dim=dim,
        batch_size=batch_size, write_csv=False,
    )


def build_evaluator(dev: RetrievalSet | None, sts: Sequence[StsPair] | None, dims: Sequence[int],
                    *, max_score: float = 5.0, batch_size: int = 64):
    """A SequentialEvaluator: retrieval and STS at every dim."""
    SequentialEvaluator = evaluation().SequentialEvaluator

    evaluators: list[Any] = []
    for dim in dims:
        if dev is not None:
            evaluators.append(ir_evaluator(dev, dim, batch_size=batch_size))
        if sts:
            evaluators.append(sts_evaluator(sts, dim, max_score=max_score, batch_size=batch_size))
    if not evaluators:
        raise ValueError("nothing to evaluate: no dev split and no STS dev data")
    return SequentialEvaluator(evaluators)


class _SliceCache:
    """Wraps a SentenceTransformer so that evaluators at several dims share one forward pass.

    ``encode``/``encode_query``/``encode_document`` embed a list of texts once at full size and
    answer each ``truncate_dim`` with the leading components (as ``truncate_dim`` does).
    Everything else is the wrapped model's.
    """

    def __init__(self, model: Any) -> None:
        self._model = model
        self._cache: dict[tuple, Any] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def _encode(self, fn: str, sentences: Any, truncate_dim: int | None = None, **kwargs: Any):
        import numpy as np
        import torch

        texts = [sentences] if isinstance(sentences, str) else list(sentences)
        as_tensor = bool(kwargs.pop("convert_to_tensor", False))
        kwargs.pop("convert_to_numpy", None)
        kwargs.pop("show_progress_bar", None)
        key = (fn, tuple(texts), repr(sorted(kwargs.items())))
        if key not in self._cache:
            self._cache[key] = getattr(self._model, fn)(
                texts, convert_to_tensor=True, show_progress_bar=False, **kwargs)
        full = self._cache[key]
        out = full[..., :truncate_dim] if truncate_dim else full
        if isinstance(sentences, str):
            out = out[0]
        if as_tensor:
            return out
        return out.float().cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)

    def encode(self, sentences: Any, **kwargs: Any):
        return self._encode("encode", sentences, **kwargs)

    def encode_query(self, sentences: Any, **kwargs: Any):
        return self._encode("encode_query", sentences, **kwargs)

    def encode_document(self, sentences: Any, **kwargs: Any):
        return self._encode("encode_document", sentences, **kwargs)


def evaluate_dims(model: Any, dev: RetrievalSet | None, sts: Sequence[StsPair] | None,
                  dims: Sequence[int], *, max_score: float = 5.0, batch_size: int = 64
                  ) -> dict[str, dict[str, float]]:
    """Evaluate ``model`` at each dim (each text is embedded once, then truncated per dim).

    Returns:
        ``{str(dim): {"MAP@100": ..., "NDCG@10": ..., ..., "STS Spearman cosine": ...}}``.
    """
    evaluator = build_evaluator(dev, sts, dims, max_score=max_score, batch_size=batch_size)
    was_training = model.training
    model.eval()
    try:
        results = evaluator(_SliceCache(model))
    finally:
        model.train(was_training)
    table: dict[str, dict[str, float]] = {}
    for dim in dims:
        row: dict[str, float] = {}
        for label, key in CARD_METRICS:
            prefix = "sts" if key.endswith("_cosine") else "dev"
            value = results.get(f"{prefix}_{dim}_{key}")
            if value is not None:
                row[label] = round(float(value), 4)
        table[str(dim)] = row
    return table


def format_table(after: dict[str, dict[str, float]],
                 before: dict[str, dict[str, float]] | None = None) -> str:
    """A markdown table: metrics as rows, dims as columns (``before -> after`` when given)."""
    dims = list(after)
    labels = [label for label, _ in CARD_METRICS if any(label in after[d] for d in dims)]
    head = "| metric | " + " | ".join(f"{d}d" for d in dims) + " |"
    lines = [head, "|---|" + "---|" * len(dims)]
    for label in labels:
        cells = []
        for d in dims:
            value = after[d].get(label)
            old = (before or {}).get(d, {}).get(label)
            if value is None:
                cells.append("")
            elif old is None:
                cells.append(f"{value:.4f}")
            else:
                cells.append(f"{old:.4f} → {value:.4f} ({value - old:+.4f})")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
