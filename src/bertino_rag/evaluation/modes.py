"""Search modes on a BEIR set: dense, lexical and hybrid per dim, and fusion tuning.

``bertino-rag eval --modes dense,lexical,hybrid`` and ``--tune-fusion FILE`` run these: every
text is encoded once, then ``Retriever(hybrid=True)`` indexes the documents (through
:class:`PrecomputedEncoder`) and answers every query in each mode. Tuning grids the fusion
(min-max weights, RRF ``k`` and weights) on the user's qrels and keeps the best NDCG@10; the
file it writes is what ``Retriever(fusion=FILE)`` and ``bertino-rag search --fusion FILE``
load.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..encoder import TextEncoder
from ..search.fusion import Fusion
from .dataset import EvalSet
from .metrics import ir_metrics
from .runner import PrecomputedEncoder, encode_inputs

__all__ = ["ModeResult", "evaluate_modes", "fusion_grid", "modes_markdown", "tune_fusion"]

MODES = ("dense", "lexical", "hybrid")


@dataclass(frozen=True)
class ModeResult:
    """NDCG@10 and Recall@100 of one mode at one dim (lexical: no dim)."""

    mode: str
    dim: int | None
    full_dim: int
    metrics: dict[str, float]
    fusion: Fusion | None = None

    @property
    def label(self) -> str:
        if self.mode == "lexical":
            return "lexical (BM25)"
        where = f"{self.dim}" if self.dim == self.full_dim else f"{self.dim}→{self.full_dim}"
        return f"{self.mode} {where}"


def fusion_grid() -> list[Fusion]:
    """The fusions ``--tune-fusion`` tries: min-max weights 0.1..0.9, RRF k and weights."""
    grid = [Fusion("minmax", w / 10) for w in range(1, 10)]
    grid += [Fusion("rrf", w, k) for k in (10, 30, 60, 100) for w in (0.3, 0.5, 0.7, 0.8, 0.9)]
    return grid


def _metrics(hits: Sequence[Sequence[Any]], evalset: EvalSet) -> dict[str, float]:
    m = ir_metrics([[(h.id, h.score) for h in row] for row in hits], evalset.query_ids,
                   evalset.qrels)
    return {"ndcg@10": m["ndcg@10"], "recall@100": m["recall@100"]}


def _retrievers(encoder: TextEncoder, evalset: EvalSet, dims: Sequence[int], store: str,
                show_progress_bar: bool) -> Any:
    from ..retriever import Retriever

    enc = encode_inputs(encoder, evalset, show_progress_bar=show_progress_bar)
    cached = PrecomputedEncoder.for_inputs(encoder, evalset, enc)
    docs = [{"id": d, "text": t} for d, t in zip(evalset.doc_ids, evalset.doc_texts,
                                                  strict=True)]
    for dim in dims:
        # each document whole, as the main evaluation encodes it (chunks would miss the
        # precomputed table and be encoded again, at every dim)
        r = Retriever(dim=dim, store=store, encoder=cached, rescore=dim < encoder.full_dim,
                      collection=f"bertino_eval_modes_{dim}", recreate=True, hybrid=True,
                      chunking=False)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # truncation: reported by the main eval
                r.index(docs, show_progress_bar=False)
            yield dim, r
        finally:
            r.store.drop()
            r.close()


def evaluate_modes(
    encoder: TextEncoder,
    evalset: EvalSet,
    dims: Sequence[int],
    *,
    modes: Sequence[str] = MODES,
    store: str = "memory",
    fusion: Fusion | None = None,
    show_progress_bar: bool = False,
) -> list[ModeResult]:
    """Each mode at each dim (dims below full use the funnel, rescoring with full vectors)."""
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f"unknown search modes {unknown}; choose from {list(MODES)}")
    fusion = fusion or Fusion.coerce(encoder.default_fusion)  # the model's own, if it has one
    out: list[ModeResult] = []
    queries = evalset.query_texts
    for dim, r in _retrievers(encoder, evalset, dims, store, show_progress_bar):
        for mode in modes:
            if mode == "lexical" and any(x.mode == "lexical" for x in out):
                continue
            hits = r.search_batch(queries, k=100, mode=mode, fusion=fusion)
            out.append(ModeResult(mode, None if mode == "lexical" else dim, encoder.full_dim,
                                  _metrics(hits, evalset),
                                  fusion if mode == "hybrid" else None))
    return out


def tune_fusion(
    encoder: TextEncoder,
    evalset: EvalSet,
    dim: int,
    *,
    store: str = "memory",
    grid: Sequence[Fusion] | None = None,
    show_progress_bar: bool = False,
) -> tuple[Fusion, float, list[tuple[Fusion, float]]]:
    """The fusion with the best NDCG@10 at ``dim``; ties go to the earlier grid entry.

    Returns the best fusion, its NDCG@10 and every (fusion, NDCG@10) tried.
    """
    grid = list(grid or fusion_grid())
    tried: list[tuple[Fusion, float]] = []
    for _, r in _retrievers(encoder, evalset, [dim], store, show_progress_bar):
        for f in grid:
            hits = r.search_batch(evalset.query_texts, k=100, mode="hybrid", fusion=f)
            tried.append((f, _metrics(hits, evalset)["ndcg@10"]))
    best, score = max(tried, key=lambda t: t[1])
    return best, score, tried


def _fusion_name(f: Fusion) -> str:
    if f.method == "minmax":
        return f"min-max, lexical weight {f.weight:g}"
    return f"RRF k={f.rrf_k}, lexical weight {f.weight:g}"


def modes_markdown(results: Sequence[ModeResult]) -> str:
    """A Markdown table of :func:`evaluate_modes`'s results."""
    lines = ["| Mode | NDCG@10 | Recall@100 | Fusion |", "|:--|--:|--:|:--|"]
    for r in results:
        fusion = _fusion_name(r.fusion) if r.fusion else ""
        lines.append(f"| {r.label} | {r.metrics['ndcg@10']:.4f} | "
                     f"{r.metrics['recall@100']:.4f} | {fusion} |")
    return "\n".join(lines)
