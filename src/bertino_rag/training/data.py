"""Training data: (query, positive) pairs, a dev split by source document, mined negatives, STS."""

from __future__ import annotations

import csv
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..data import StsPair, load_beir, read_jsonl
from ..errors import TrainingDataError

__all__ = [
    "Pair",
    "RetrievalSet",
    "load_pairs",
    "mine_negatives",
    "split_by_source",
    "sts_dataset",
    "subset_queries",
]

logger = logging.getLogger(__name__)

_QUERY_KEYS = ("query", "anchor", "question")
_POSITIVE_KEYS = ("positive", "pos", "passage", "text")


@dataclass(frozen=True)
class Pair:
    """One relevant (query, document) pair.

    Attributes:
        query_id: id of the query (equal ids mean the same query).
        query: the query text.
        doc_id: id of the relevant document.
        source: the source document (article) it belongs to; the dev split never cuts one.
    """

    query_id: str
    query: str
    doc_id: str
    source: str


@dataclass
class RetrievalSet:
    """Pairs plus the documents they point into.

    Attributes:
        pairs: the relevant (query, document) pairs.
        corpus: ``{doc_id: text}``: every document of these sources (also those no query hits).
        sources: ``{doc_id: source}``.
    """

    pairs: list[Pair]
    corpus: dict[str, str]
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def queries(self) -> dict[str, str]:
        return {p.query_id: p.query for p in self.pairs}

    @property
    def relevant(self) -> dict[str, set[str]]:
        rel: dict[str, set[str]] = {}
        for p in self.pairs:
            rel.setdefault(p.query_id, set()).add(p.doc_id)
        return rel

    def source_names(self) -> set[str]:
        return {p.source for p in self.pairs} | set(self.sources.values())

    def __len__(self) -> int:
        return len(self.pairs)


def _beir_source(doc_id: str, title: str, group_by: str) -> str:
    if group_by == "title":
        return title or doc_id
    if group_by == "id-prefix":
        return doc_id.split("#", 1)[0]
    if group_by == "positive":
        return doc_id
    if "#" in doc_id:
        return doc_id.split("#", 1)[0]
    return title or doc_id


def _load_beir_pairs(
    folder: Path, split: str | None, with_title: bool, group_by: str
) -> RetrievalSet:
    if split is None:
        qrels_dir = folder / "qrels"
        names = sorted(p.stem for p in qrels_dir.glob("*.tsv")) if qrels_dir.is_dir() else []
        if "train" in names:
            split = "train"
        elif len(names) == 1:
            split = names[0]
        else:
            raise ValueError(f"{folder}: cannot tell which qrels to train on ({names or 'none'}); "
                             "set qrels_split")
        logger.info("training on %s/qrels/%s.tsv", folder, split)
    data = load_beir(folder, split=split)
    if not data.qrels:
        raise TrainingDataError(f"{folder}: qrels/{split}.tsv is missing or holds no relevance "
                                "judgements (rows 'query-id<TAB>corpus-id<TAB>score', score > 0)")
    corpus = {d: data.document_text(d, with_title=with_title) for d in data.corpus}
    sources = {d: _beir_source(d, doc["title"], group_by) for d, doc in data.corpus.items()}
    pairs = []
    no_query = no_doc = 0
    for qid, rel in data.qrels.items():
        if qid not in data.queries:
            no_query += len(rel)
            continue
        for doc_id in rel:
            if doc_id in corpus:
                pairs.append(Pair(qid, data.queries[qid], doc_id, sources[doc_id]))
            else:
                no_doc += 1
    if not pairs:
        judged = sum(len(rel) for rel in data.qrels.values())
        raise TrainingDataError(
            f"{folder}: no usable (query, positive) pairs: of the {judged} judgements in "
            f"qrels/{split}.tsv, {no_query} name a query that is not in queries.jsonl and "
            f"{no_doc} a document that is not in corpus.jsonl; check that the three files "
            "belong together (ids must match)")
    return RetrievalSet(pairs=pairs, corpus=corpus, sources=sources)


def _rows(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".jsonl":
        return list(read_jsonl(path))
    if path.suffix == ".csv":
        with open(path, encoding="utf-8", newline="") as fh:
            return list(csv.DictReader(fh))
    raise ValueError(f"{path}: unsupported training data (use a BEIR folder, .jsonl or .csv)")


def _pick(row: dict[str, Any], keys: Sequence[str], path: Path, n: int) -> str:
    for key in keys:
        value = row.get(key)
        if isinstance(value, str) and value.strip():
            return value
    raise TrainingDataError(f"{path}: row {n} has none of the fields {list(keys)} (or it is "
                            "empty)")


def _load_table_pairs(path: Path, group_by: str) -> RetrievalSet:
    query_ids: dict[str, str] = {}
    doc_ids: dict[str, str] = {}
    pairs, corpus, sources = [], {}, {}
    for n, row in enumerate(_rows(path), 1):
        query = _pick(row, _QUERY_KEYS, path, n)
        positive = _pick(row, _POSITIVE_KEYS, path, n)
        qid = query_ids.setdefault(query, f"q{len(query_ids)}")
        doc_id = str(row.get("doc_id") or doc_ids.setdefault(positive, f"d{len(doc_ids)}"))
        source = str(row.get("source") or "") if group_by in ("auto", "title") else ""
        source = source or doc_id
        corpus[doc_id] = positive
        sources[doc_id] = source
        pairs.append(Pair(qid, query, doc_id, source))
    if not pairs:
        raise TrainingDataError(f"{path}: no (query, positive) pairs found (the file is empty)")
    return RetrievalSet(pairs=pairs, corpus=corpus, sources=sources)


def load_pairs(path: str | Path, *, qrels_split: str | None = None, with_title: bool = False,
               group_by: str = "auto") -> RetrievalSet:
    """Read (query, positive) pairs from a BEIR folder, a ``.jsonl`` or a ``.csv``.

    jsonl/csv rows need a query (``query``/``anchor``/``question``) and a positive
    (``positive``/``pos``/``passage``/``text``); an optional ``source`` names the document
    the positive comes from (else each distinct positive is its own source).

    Pairs whose query or positive text is blank are dropped (the log says how many).

    Raises:
        FileNotFoundError: the path does not exist.
        TrainingDataError: no usable pairs (the message says why), or a malformed row (named).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"training data {path} does not exist")
    if path.is_dir():
        data = _load_beir_pairs(path, qrels_split, with_title, group_by)
    else:
        data = _load_table_pairs(path, group_by)
    usable = [p for p in data.pairs if p.query.strip() and data.corpus[p.doc_id].strip()]
    if not usable:
        raise TrainingDataError(f"{path}: no usable (query, positive) pairs: all "
                                f"{len(data.pairs)} have a blank query or positive text")
    if len(usable) < len(data.pairs):
        logger.warning("%s: %d of %d pairs dropped (blank query or positive text)", path,
                       len(data.pairs) - len(usable), len(data.pairs))
        data = RetrievalSet(pairs=usable, corpus=data.corpus, sources=data.sources)
    return data


def split_by_source(data: RetrievalSet, dev_fraction: float, seed: int = 42
                    ) -> tuple[RetrievalSet, RetrievalSet]:
    """Hold out whole source documents (articles) until about ``dev_fraction`` of the pairs.

    A query whose relevant documents span both sides goes to the dev side only.

    Raises:
        TrainingDataError: fewer than two sources, so no split by source is possible.
    """
    by_source: dict[str, int] = {}
    for p in data.pairs:
        by_source[p.source] = by_source.get(p.source, 0) + 1
    names = sorted(by_source)
    if len(names) < 2:
        raise TrainingDataError(
            f"the training data has {len(names)} source document(s); a dev split by source "
            "needs at least two (add a 'source' field, or use group_by='positive')")
    random.Random(seed).shuffle(names)
    target = dev_fraction * len(data.pairs)
    dev_sources: set[str] = set()
    held = 0
    for name in names[:-1]:  # at least one source stays for training
        if held >= target:
            break
        dev_sources.add(name)
        held += by_source[name]
    dev_queries = {p.query_id for p in data.pairs if p.source in dev_sources}

    def subset(keep_source, pairs) -> RetrievalSet:
        docs = {d for d, s in data.sources.items() if keep_source(s)}
        docs |= {p.doc_id for p in pairs}
        return RetrievalSet(pairs=pairs, corpus={d: data.corpus[d] for d in docs},
                            sources={d: data.sources.get(d, d) for d in docs})

    dev_pairs = [p for p in data.pairs if p.source in dev_sources]
    train_pairs = [p for p in data.pairs
                   if p.source not in dev_sources and p.query_id not in dev_queries]
    train = subset(lambda s: s not in dev_sources, train_pairs)
    dev = subset(lambda s: s in dev_sources, dev_pairs)
    return train, dev


def subset_queries(data: RetrievalSet, n: int | None, seed: int = 42) -> RetrievalSet:
    """``data`` with ``n`` of its queries (drawn with ``seed``) and its whole corpus: a cheaper
    evaluation on the same documents. ``None`` or ``n`` >= the queries: ``data`` itself."""
    queries = sorted(data.queries)
    if n is None or n >= len(queries):
        return data
    keep = set(random.Random(seed).sample(queries, n))
    return RetrievalSet(pairs=[p for p in data.pairs if p.query_id in keep],
                        corpus=data.corpus, sources=data.sources)


def mine_negatives(data: RetrievalSet, model: Any, *, num_negatives: int = 2, range_min: int = 2,
                   range_max: int = 30, relative_margin: float | None = 0.05,
                   sampling_strategy: str = "random", batch_size: int = 64, seed: int = 42,
                   verbose: bool = True):
    """Add hard negatives mined by dense self-retrieval with ``model`` over ``data.corpus``.

    Uses :func:`sentence_transformers.util.mine_hard_negatives`: the positives of a query are
    never candidates, the ``range_min`` nearest other documents are skipped and a candidate must
    score ``relative_margin`` below the positive (both keep unlabeled relevant paragraphs out).
    Queries and documents are encoded with the model's ``query``/``document`` prompts when it
    has them, as the library serves them.

    Returns:
        a ``datasets.Dataset`` with columns ``anchor, positive, negative_1..negative_n``; pairs
        for which too few negatives passed the filters are dropped (the count is logged).
    """
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    if sampling_strategy not in ("random", "top"):
        raise ValueError(f"sampling_strategy must be 'random' or 'top', got {sampling_strategy!r}")
    strategy: Literal["random", "top"] = "top" if sampling_strategy == "top" else "random"
    pairs = Dataset.from_dict({
        "anchor": [p.query for p in data.pairs],
        "positive": [data.corpus[p.doc_id] for p in data.pairs],
    })
    random.seed(seed)
    np.random.seed(seed)
    import torch

    torch.manual_seed(seed)
    prompts = getattr(model, "prompts", None) or {}
    mined = mine_hard_negatives(
        pairs, model, corpus=list(data.corpus.values()), range_min=range_min,
        range_max=range_max, relative_margin=relative_margin, num_negatives=num_negatives,
        sampling_strategy=strategy, output_format="n-tuple", batch_size=batch_size,
        verbose=verbose,
        query_prompt_name="query" if "query" in prompts else None,
        corpus_prompt_name="document" if "document" in prompts else None,
    )
    if len(mined) == 0:
        raise TrainingDataError(
            f"hard-negative mining kept none of {len(pairs)} pairs: no candidate passed the "
            f"rank window [{range_min}, {range_max}) and relative margin {relative_margin}; "
            "widen the window, lower neg_relative_margin or num_negatives")
    dropped = len(pairs) - len(mined)
    if dropped:
        logger.warning("mining: %d of %d pairs dropped (fewer than %d negatives passed the "
                       "window/margin)", dropped, len(pairs), num_negatives)
    logger.info("mining: %d training tuples (query, positive, %d negatives)", len(mined),
                num_negatives)
    return mined


def sts_dataset(pairs: Sequence[StsPair], size: int | None = None, *, max_score: float = 5.0,
                seed: int = 42):
    """STS pairs as a ``datasets.Dataset`` (``sentence1, sentence2, score`` in [0, 1]).

    ``size`` resamples: fewer rows are drawn without replacement; more rows repeat every pair
    as evenly as possible (each at least ``size // len(pairs)`` times).

    Raises:
        ValueError: no pairs, a non-positive size, or a score outside ``[0, max_score]``.
    """
    from datasets import Dataset

    if not pairs:
        raise ValueError("no STS pairs")
    scores = np.array([p.score for p in pairs], dtype=np.float64)
    bad = np.flatnonzero((scores < 0) | (scores > max_score))
    if bad.size:
        raise ValueError(f"STS score {scores[bad[0]]} (pair {bad[0]}) is outside [0, {max_score}]; "
                         "set sts_max_score to the file's scale")
    n = len(pairs)
    rng = np.random.default_rng(seed)
    if size is None:
        idx = np.arange(n)
    elif size <= 0:
        raise ValueError(f"STS size must be positive, got {size}")
    elif size <= n:
        idx = np.sort(rng.choice(n, size=size, replace=False))
    else:
        full, rest = divmod(size, n)
        idx = np.concatenate([np.tile(np.arange(n), full), rng.choice(n, size=rest, replace=False)])
    return Dataset.from_dict({
        "sentence1": [pairs[i].sentence1 for i in idx.tolist()],
        "sentence2": [pairs[i].sentence2 for i in idx.tolist()],
        "score": (scores[idx] / max_score).tolist(),
    })
