"""Training's dev evaluation, per dim, on the :mod:`bertino_rag.evaluation` stack.

Every text is encoded once at full dim through :class:`~bertino_rag.Encoder` (as served), then
:func:`bertino_rag.evaluation.evaluate` scores each dim by exact search and the two-stage
funnel (truncated search + full-dim rescore) through a :class:`MemoryStore`. Metric keys are
the evaluation package's (``ndcg@10``, ``map@100``, ..., ``spearman``, ``pearson``); the card's
row labels are only for display (:func:`format_table`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from .._deps import st_module
from ..data import StsPair
from ..encoder import Encoder
from ..evaluation import EvalSet, StsSet, evaluate
from .data import RetrievalSet

__all__ = ["CARD_METRICS", "dev_evaluator", "evaluate_dims", "format_table", "funnel_key",
           "to_eval_set", "to_sts_set"]

# (the model card's row label, the evaluation package's metric key), in the card's order
CARD_METRICS = [
    ("MAP@100", "map@100"),
    ("NDCG@10", "ndcg@10"),
    ("Accuracy@1", "accuracy@1"),
    ("Accuracy@10", "accuracy@10"),
    ("STS Spearman cosine", "spearman"),
    ("STS Pearson cosine", "pearson"),
]


def funnel_key(dim: int, rescore_k: int) -> str:
    """The table key of a funnel: ``"128+rescore@100"`` (128-d search, top 100 rescored)."""
    return f"{dim}+rescore@{rescore_k}"


def to_eval_set(dev: RetrievalSet, source: str = "dev articles") -> EvalSet:
    """A training :class:`RetrievalSet` as an evaluation :class:`EvalSet` (same documents)."""
    queries = dev.queries
    qrels = {q: dict.fromkeys(docs, 1) for q, docs in dev.relevant.items()}
    return EvalSet(doc_ids=list(dev.corpus), doc_texts=list(dev.corpus.values()),
                   query_ids=list(queries), query_texts=list(queries.values()), qrels=qrels,
                   source=source)


def to_sts_set(pairs: Sequence[StsPair], source: str = "sts dev") -> StsSet:
    """STS pairs as an evaluation :class:`StsSet` (correlations do not depend on the scale)."""
    return StsSet(sentence1=[p.sentence1 for p in pairs], sentence2=[p.sentence2 for p in pairs],
                  scores=[float(p.score) for p in pairs], source=source)


def _encoder(model: Any, batch_size: int) -> Encoder:
    # a fixed name: the weights change during training, and the store it stamps is temporary
    return Encoder("model-in-training", batch_size=batch_size, sentence_transformer=model,
                   show_progress_bar=False)


def evaluate_dims(model: Any, dev: RetrievalSet | None, sts: Sequence[StsPair] | None,
                  dims: Sequence[int], *, rescore_k: int | None = None,
                  funnel_dims: Sequence[int] | None = None, batch_size: int = 64,
                  ) -> dict[str, dict[str, float]]:
    """Evaluate a SentenceTransformer at each dim (each text embedded once, sliced per dim).

    Args:
        model: the model being trained (put in eval mode for the call, then restored).
        dev: the dev articles (retrieval); sts: STS pairs.
        dims: dims scored by exact search.
        rescore_k: also score the funnel ``dim`` search + full-dim rescore of the top
            ``rescore_k``, for each of ``funnel_dims`` (default: the dims below full).

    Returns:
        ``{"384": {"ndcg@10": ..., "map@100": ..., "spearman": ...}, "128+rescore@100": {...}}``:
        the evaluation package's metric keys, rounded to 4 decimals; absent metrics omitted.
    """
    if dev is None and not sts:
        raise ValueError("nothing to evaluate: no dev split and no STS dev data")
    encoder = _encoder(model, batch_size)
    evalset = to_eval_set(dev) if dev is not None else None
    sts_set = to_sts_set(sts) if sts else None
    fdims = [d for d in (funnel_dims if funnel_dims is not None else dims)
             if d < encoder.full_dim] if rescore_k and evalset is not None else []
    ks = [int(rescore_k)] if fdims and rescore_k else []
    was_training = model.training
    model.eval()
    try:
        report = evaluate(encoder, evalset, sts_set, dims=sorted(set(dims) | set(fdims)),
                          rescore_k=ks, funnel_dims=fdims or None, store="memory",
                          latency_queries=0, show_progress_bar=False)
    finally:
        model.train(was_training)
    table: dict[str, dict[str, float]] = {}
    for c in report.configs:
        if c.rescore_k is None and c.dim not in dims:
            continue
        key = str(c.dim) if c.rescore_k is None else funnel_key(c.dim, c.rescore_k)
        table[key] = {k: round(float(v), 4) for k, v in c.metrics.items() if v is not None}
    order = [str(d) for d in dims] + [funnel_key(d, k) for d in fdims for k in ks]
    return {k: table[k] for k in order if k in table}


def _base_evaluator() -> type:
    return st_module("evaluation").SentenceEvaluator


def dev_evaluator(dev: RetrievalSet, dim: int, *, rescore_k: int | None = None,
                   select_by: str = "ndcg@10", batch_size: int = 64, name: str = "dev") -> Any:
    """The trainer's evaluator: dev-article retrieval at ``dim`` through :func:`evaluate_dims`.

    It reports ``<name>_<dim>_ndcg@10`` (exact ``dim``-d search), and with ``rescore_k`` also
    ``<name>_<dim>+rescore@<k>_ndcg@10`` (the funnel the Retriever serves); ``select_by``
    (``"ndcg@10"`` or ``"funnel_ndcg@10"``) names the primary metric, which picks the best
    checkpoint.
    """
    if select_by not in ("ndcg@10", "funnel_ndcg@10"):
        raise ValueError(f"select_by={select_by!r}: expected 'ndcg@10' or 'funnel_ndcg@10'")
    if select_by == "funnel_ndcg@10" and not rescore_k:
        raise ValueError("select_by='funnel_ndcg@10' needs rescore_k")

    class _DevEvaluator(_base_evaluator()):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.name = name
            self.primary_metric = (f"{dim}_ndcg@10" if select_by == "ndcg@10"
                                   else f"{funnel_key(dim, rescore_k or 0)}_ndcg@10")
            self.seconds = 0.0  # time spent evaluating (kept out of the training speed)

        def __call__(self, model: Any, output_path: str | None = None, epoch: int = -1,
                     steps: int = -1) -> dict[str, float]:
            started = time.perf_counter()
            table = evaluate_dims(model, dev, None, [dim], rescore_k=rescore_k,
                                  batch_size=batch_size)
            flat = {f"{key}_{metric}": value for key, row in table.items()
                    for metric, value in row.items()}
            metrics = self.prefix_name_to_metrics(flat, self.name)
            self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
            self.seconds += time.perf_counter() - started
            return metrics

    return _DevEvaluator()


def _column(key: str) -> str:
    return f"{key}d" if key.isdigit() else key.replace("+", "d → full, ", 1)


def format_table(after: dict[str, dict[str, float]],
                 before: dict[str, dict[str, float]] | None = None) -> str:
    """A markdown table: the card's metrics as rows, dims (and funnels) as columns
    (``before → after (change)`` when ``before`` is given)."""
    cols = list(after)
    rows = [(label, key) for label, key in CARD_METRICS if any(key in after[c] for c in cols)]
    lines = ["| metric | " + " | ".join(_column(c) for c in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for label, key in rows:
        cells = []
        for c in cols:
            value = after[c].get(key)
            old = (before or {}).get(c, {}).get(key)
            if value is None:
                cells.append("")
            elif old is None:
                cells.append(f"{value:.4f}")
            else:
                cells.append(f"{old:.4f} → {value:.4f} ({value - old:+.4f})")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
