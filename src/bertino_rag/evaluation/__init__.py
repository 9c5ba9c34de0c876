"""Evaluation: retrieval and STS quality per Matryoshka dim, the two-stage funnel, and cost.

Example:
    >>> from bertino_rag import Encoder
    >>> from bertino_rag.evaluation import evaluate, load_eval_set, to_markdown
    >>> data = load_eval_set("squad-it-dev", max_queries=200, max_docs=300)  # doctest: +SKIP
    >>> report = evaluate(Encoder("model"), data, rescore_k=[50, 100])  # doctest: +SKIP
    >>> print(to_markdown(report))  # doctest: +SKIP
"""

from __future__ import annotations

from .dataset import EvalSet, StsSet, load_eval_set, load_sts_set, prepare_beir
from .metrics import IR_KEYS, STS_KEYS, exact_search, ir_metrics, sts_correlations
from .report import from_json, to_json, to_markdown, write_json, write_plot
from .runner import (
    ConfigResult,
    EncodedInputs,
    EvalReport,
    PrecomputedEncoder,
    encode_inputs,
    evaluate,
)

__all__ = [
    "IR_KEYS",
    "STS_KEYS",
    "ConfigResult",
    "EncodedInputs",
    "EvalReport",
    "EvalSet",
    "PrecomputedEncoder",
    "StsSet",
    "encode_inputs",
    "evaluate",
    "from_json",
    "exact_search",
    "ir_metrics",
    "load_eval_set",
    "load_sts_set",
    "prepare_beir",
    "sts_correlations",
    "to_json",
    "to_markdown",
    "write_json",
    "write_plot",
]
