"""Run an evaluation: encode once, score every dim exactly, run the funnels through a store."""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..encoder import Kind, TextEncoder, display_name, matryoshka_slice
from ..retriever import Retriever
from ..stores import VectorStore, make_store
from ..validation import positive_int, renamed
from .cost import full_bytes_per_doc, percentiles_ms, time_calls
from .dataset import EvalSet, StsSet
from .metrics import DEPTH, IR_KEYS, STS_KEYS, exact_search, ir_metrics, sts_correlations

__all__ = [
    "ConfigResult", "EncodedInputs", "EvalReport", "PrecomputedEncoder", "encode_inputs",
    "evaluate",
]

logger = logging.getLogger(__name__)

_SEARCH_CHUNK = 256  # queries per store call when computing funnel metrics
_ENCODE_LATENCY_MAX = 50  # queries timed through the real model


@dataclass
class EncodedInputs:
    """Raw full-dim vectors of every text, from one :meth:`Encoder.encode_full` pass each."""

    docs: np.ndarray | None = None
    queries: np.ndarray | None = None
    sts1: np.ndarray | None = None
    sts2: np.ndarray | None = None
    seconds: float = 0.0


@dataclass
class ConfigResult:
    """One evaluated configuration: exact search at ``dim``, or a funnel when ``rescore_k``."""

    name: str
    dim: int
    rescore_k: int | None
    metrics: dict[str, float | None]
    ram_bytes: int
    cold_bytes: int
    returned: int | None = None
    latency_ms: dict[str, float] | None = None

    @property
    def total_bytes(self) -> int:
        return self.ram_bytes + self.cold_bytes


@dataclass
class EvalReport:
    """Everything :func:`evaluate` measured; render with :mod:`bertino_rag.evaluation.report`."""

    model: str
    full_dim: int
    dims: list[int]
    document_text: str
    store: str
    backend: str
    full_dtype: str
    configs: list[ConfigResult]
    beir_source: str = ""
    sts_source: str = ""
    n_docs: int = 0
    n_queries: int = 0
    n_sts: int = 0
    encode_seconds: float = 0.0
    query_encode_ms: dict[str, float] | None = None
    notes: list[str] = field(default_factory=list)
    model_path: str = ""
    #: the encoder's runtime: "torch", "onnx", "openvino", with "+int8" when quantized
    encoder: str = "torch"

    def config(self, name: str) -> ConfigResult:
        for c in self.configs:
            if c.name == name:
                return c
        raise KeyError(name)


class PrecomputedEncoder(TextEncoder):
    """An encoder answering texts already encoded from a table (one pass for everything).

    It stands for ``base`` (same model id, dims, tokenizer and limits), so the Retriever runs
    its real code path (validation, slicing, store calls); only the forward pass of texts
    encoded before is skipped. Unknown texts go through ``base``.
    """

    @classmethod
    def for_inputs(
        cls, base: TextEncoder, evalset: EvalSet, encoded: EncodedInputs
    ) -> PrecomputedEncoder:
        """An encoder answering the documents and queries of ``evalset`` from ``encoded``."""
        assert encoded.docs is not None and encoded.queries is not None
        table: dict[tuple[str, str], np.ndarray] = {}
        for t, v in zip(evalset.doc_texts, encoded.docs, strict=True):
            table[("document", t)] = v
        for t, v in zip(evalset.query_texts, encoded.queries, strict=True):
            table[("query", t)] = v
        return cls(base, table)

    def __init__(self, base: TextEncoder, table: dict[tuple[str, str], np.ndarray]) -> None:
        self.base = base
        self.model_id = base.model_id
        self.full_dim = base.full_dim
        self.dim = base.dim
        self.batch_size = base.batch_size
        self._table = table

    @property
    def max_seq_length(self) -> int | None:
        return self.base.max_seq_length

    @property
    def tokenizer(self) -> Any | None:
        return self.base.tokenizer

    @property
    def truncates_at(self) -> int | None:
        return self.base.truncates_at

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
        try:
            rows = [self._table[(kind, t)] for t in texts]
        except KeyError:
            return self.base.encode_full(texts, kind=kind, show_progress_bar=show_progress_bar)
        if not rows:
            return np.zeros((0, self.full_dim), dtype=np.float32)
        return np.stack(rows).astype(np.float32, copy=False)

    def __repr__(self) -> str:
        return f"PrecomputedEncoder({self.base!r}, {len(self._table)} texts)"


def config_name(dim: int, rescore_k: int | None = None) -> str:
    """``dim_128`` for exact search, ``dim_128+rescore@100`` for a funnel."""
    return f"dim_{dim}" if rescore_k is None else f"dim_{dim}+rescore@{rescore_k}"


def encode_inputs(
    encoder: TextEncoder,
    evalset: EvalSet | None = None,
    sts: StsSet | None = None,
    *,
    show_progress_bar: bool | None = True,
) -> EncodedInputs:
    """Encode documents, queries and STS sentences once each, at full dim (raw vectors)."""
    started = time.perf_counter()
    out = EncodedInputs()
    if evalset is not None:
        out.docs = encoder.encode_full(evalset.doc_texts, kind="document",
                                       show_progress_bar=show_progress_bar)
        out.queries = encoder.encode_full(evalset.query_texts, kind="query",
                                          show_progress_bar=show_progress_bar)
    if sts is not None:
        unique = list(dict.fromkeys(sts.sentence1 + sts.sentence2))
        raw = encoder.encode_full(unique, kind="document", show_progress_bar=show_progress_bar)
        row = {t: i for i, t in enumerate(unique)}
        out.sts1 = raw[[row[t] for t in sts.sentence1]]
        out.sts2 = raw[[row[t] for t in sts.sentence2]]
    out.seconds = time.perf_counter() - started
    return out


def _check_dims(dims: Sequence[int] | None, encoder: TextEncoder, what: str) -> list[int]:
    if dims is None:  # the dims the model was trained for, else the usual ladder below full
        trained = getattr(encoder, "matryoshka_dims", None)
        ladder = trained or [encoder.full_dim, 512, 256, 128, 64]
        return sorted({int(d) for d in ladder if 0 < d <= encoder.full_dim}, reverse=True)
    out: list[int] = []
    for d in dims:
        valid = not isinstance(d, bool) and isinstance(d, (int, np.integer))
        if not valid or not 0 < d <= encoder.full_dim:
            raise ValueError(
                f"{what}: {d!r} is not a dimension of {encoder.model_id!r} "
                f"(1..{encoder.full_dim})"
            )
        if int(d) not in out:
            out.append(int(d))
    if not out:
        raise ValueError(f"{what}: no dimension given")
    return sorted(out, reverse=True)


@contextlib.contextmanager
def _collection(store: VectorStore, encoder: TextEncoder, dim: int, rescore: bool, evalset: EvalSet,
                tag: str) -> Iterator[Retriever]:
    """A fresh collection (unique name, dropped afterwards) indexed through ``Retriever``."""
    # chunking off: every corpus document is one vector, as the precomputed path embeds it
    retriever = Retriever(dim=dim, store=store, rescore=rescore, encoder=encoder,
                          collection=f"bertino_eval_{tag}_d{dim}", chunking=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # truncation is reported once, as a note
            retriever.index([{"id": i, "text": t} for i, t in
                             zip(evalset.doc_ids, evalset.doc_texts, strict=True)],
                            show_progress_bar=False)
        yield retriever
    finally:
        if store.is_open and store.collection == retriever.collection:
            store.drop()


def evaluate(
    encoder: TextEncoder,
    evalset: EvalSet | None = None,
    sts: StsSet | None = None,
    *,
    dims: Sequence[int] | None = None,
    rescore_k: Sequence[int] = (100,),
    funnel_dims: Sequence[int] | None = None,
    store: str | VectorStore | None = "memory",
    latency_queries: int = 100,
    encoded: EncodedInputs | None = None,
    show_progress_bar: bool | None = True,
    rerank_k: Sequence[int] | None = None,
) -> EvalReport:
    """Evaluate retrieval (and STS) at each dim, and the two-stage funnels, with their cost.

    Args:
        encoder: the model; every text is encoded once at full dim, then sliced per dim.
        evalset: a BEIR set from :func:`~bertino_rag.evaluation.load_eval_set`.
        sts: STS pairs from :func:`~bertino_rag.evaluation.load_sts_set`.
        dims: dims to evaluate exactly (default: ``encoder.matryoshka_dims``).
        rescore_k: candidates rescored by each funnel (empty: no funnel).
        funnel_dims: index dims of the funnels (default: every dim in ``dims`` below full).
        store: where funnels and latencies run: a spec for :func:`make_store` or a store.
            Collections get unique names and are dropped afterwards.
        latency_queries: queries timed one by one per configuration (0: no timing).
        encoded: vectors from :func:`encode_inputs` (encoded here when ``None``).
        rerank_k: deprecated name of ``rescore_k``.
    """
    if rerank_k is not None:
        rescore_k = renamed(None, rerank_k, "rescore_k", "rerank_k")[0]
    if evalset is None and sts is None:
        raise ValueError("nothing to evaluate: give a BEIR folder and/or an STS file")
    dims = _check_dims(dims, encoder, "dims")
    ks = []
    for k in rescore_k:
        ks.append(positive_int(k, "each rescore_k value"))
    ks = sorted(set(ks))
    fdims = [d for d in dims if d < encoder.full_dim] if funnel_dims is None else _check_dims(
        funnel_dims, encoder, "funnel dims")
    if any(d >= encoder.full_dim for d in fdims):
        raise ValueError(f"a funnel's index dim must be below the full dim ({encoder.full_dim})")
    if evalset is None or not ks:
        fdims = []
    if encoded is None:
        encoded = encode_inputs(encoder, evalset, sts, show_progress_bar=show_progress_bar)

    store_obj = make_store(store)
    name = str(getattr(encoder, "name", encoder.model_id))  # a hub id or folder, when it has one
    own_store = not isinstance(store, VectorStore)
    full_cold, full_dtype = full_bytes_per_doc(store_obj, encoder.full_dim)
    notes = list(evalset.notes if evalset else []) + list(sts.notes if sts else [])
    report = EvalReport(
        model=display_name(name), full_dim=encoder.full_dim, dims=dims,
        document_text=("title + newline + text" if evalset and evalset.with_title else "text"),
        store=store if isinstance(store, str) else type(store_obj).__name__,
        backend=store_obj.kind, full_dtype=full_dtype, configs=[],
        beir_source=evalset.source if evalset else "", sts_source=sts.source if sts else "",
        n_docs=len(evalset.doc_ids) if evalset else 0,
        n_queries=len(evalset.query_ids) if evalset else 0,
        n_sts=len(sts.scores) if sts else 0, encode_seconds=encoded.seconds, notes=notes,
        encoder=(str(getattr(encoder, "backend", type(encoder).__name__))
                 + ("+int8" if getattr(encoder, "quantize", None) else "")),
        model_path=name,
    )
    if evalset is not None:
        n_cut = encoder.count_truncated(evalset.doc_texts)
        if n_cut:
            notes.append(f"{n_cut} of {len(evalset.doc_texts)} documents exceed the model's "
                         f"max_seq_length ({encoder.max_seq_length} tokens): only their first "
                         f"{encoder.max_seq_length} tokens are embedded")

    for dim in dims:
        metrics: dict[str, float | None] = dict.fromkeys(IR_KEYS + STS_KEYS)
        if evalset is not None:
            assert encoded.docs is not None and encoded.queries is not None
            rankings = exact_search(matryoshka_slice(encoded.queries, dim),
                                    matryoshka_slice(encoded.docs, dim), evalset.doc_ids, DEPTH)
            metrics.update(ir_metrics(rankings, evalset.query_ids, evalset.qrels))
        if sts is not None:
            assert encoded.sts1 is not None and encoded.sts2 is not None
            metrics.update(sts_correlations(matryoshka_slice(encoded.sts1, dim),
                                            matryoshka_slice(encoded.sts2, dim), sts.scores))
        report.configs.append(ConfigResult(
            name=config_name(dim), dim=dim, rescore_k=None, metrics=metrics,
            ram_bytes=4 * dim, cold_bytes=0,
            returned=min(DEPTH, report.n_docs) if evalset is not None else None,
        ))

    if evalset is not None and (fdims or latency_queries > 0):
        try:
            _run_store(report, encoder, evalset, encoded, store_obj, dims, fdims, ks,
                       full_cold, latency_queries, show_progress_bar)
        finally:
            if own_store:
                store_obj.close()
    return report


def _search_latency(store: VectorStore, queries: np.ndarray, n: int, *,
                    full: np.ndarray | None = None, rescore_k: int | None = None) -> list[float]:
    """Seconds per top-10 store search of ``queries[i]`` (two-stage when ``full`` is given)."""
    if full is None:
        return time_calls(lambda i: store.search(queries[i], 10), n)
    return time_calls(
        lambda i: store.search(queries[i], 10, full_vector=full[i], rescore_k=rescore_k), n
    )


def _run_store(report: EvalReport, encoder: TextEncoder, evalset: EvalSet, encoded: EncodedInputs,
               store: VectorStore, dims: list[int], fdims: list[int], ks: list[int],
               full_cold: int, latency_queries: int, show_progress_bar: bool | None) -> None:
    assert encoded.docs is not None and encoded.queries is not None
    cached = PrecomputedEncoder.for_inputs(encoder, evalset, encoded)
    n_lat = min(max(0, latency_queries), len(evalset.query_ids))
    full_q = matryoshka_slice(encoded.queries, encoder.full_dim)
    tag = uuid.uuid4().hex[:8]

    for dim in sorted(set(dims) | set(fdims), reverse=True):
        funnel = dim in fdims
        if not funnel and n_lat == 0:
            continue
        with _collection(store, cached, dim, funnel, evalset, tag) as retriever:
            qd = matryoshka_slice(encoded.queries, dim)
            if dim in dims and n_lat:
                secs = _search_latency(retriever.store, qd, n_lat)
                report.config(config_name(dim)).latency_ms = percentiles_ms(secs)
            if not funnel:
                continue
            for k in ks:
                rankings = _funnel_rankings(retriever, evalset.query_texts, k, show_progress_bar)
                metrics: dict[str, float | None] = dict.fromkeys(IR_KEYS + STS_KEYS)
                metrics.update(ir_metrics(rankings, evalset.query_ids, evalset.qrels))
                result = ConfigResult(
                    name=config_name(dim, k), dim=dim, rescore_k=k, metrics=metrics,
                    ram_bytes=4 * dim, cold_bytes=full_cold,
                    returned=min(DEPTH, k, report.n_docs),
                )
                if n_lat:
                    secs = _search_latency(retriever.store, qd, n_lat, full=full_q, rescore_k=k)
                    result.latency_ms = percentiles_ms(secs)
                report.configs.append(result)
    if n_lat:
        n_enc = min(n_lat, _ENCODE_LATENCY_MAX)
        secs = time_calls(lambda i: encoder.encode_query(evalset.query_texts[i]), n_enc)
        report.query_encode_ms = percentiles_ms(secs)


def _funnel_rankings(retriever: Retriever, queries: list[str], k: int,
                     show_progress_bar: bool | None) -> list[list[tuple[str, float]]]:
    """The Retriever's two-stage hits for every query: ``min(100, k)`` per query."""
    depth = min(DEPTH, k)
    out: list[list[tuple[str, float]]] = []
    steps: Any = range(0, len(queries), _SEARCH_CHUNK)
    if show_progress_bar:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc=f"dim {retriever.dim} rescore@{k}", unit="batch")
    for start in steps:
        hits = retriever.search_batch(queries[start : start + _SEARCH_CHUNK], k=depth,
                                      rescore=True, rescore_k=k)
        out.extend([(h.id, h.score) for h in row] for row in hits)
    return out
