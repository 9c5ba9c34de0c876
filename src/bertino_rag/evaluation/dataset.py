"""Evaluation inputs: a validated (and optionally sliced) BEIR set and STS pairs."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

from ..data import BeirData, StsPair, load_beir, load_sts

__all__ = ["EvalSet", "StsSet", "load_eval_set", "load_sts_set", "prepare_beir"]

logger = logging.getLogger(__name__)

_EXAMPLES = 3  # ids quoted in a message


def _quote(ids: list[str]) -> str:
    shown = ", ".join(repr(i) for i in ids[:_EXAMPLES])
    return shown + (", ..." if len(ids) > _EXAMPLES else "")


@dataclass
class EvalSet:
    """Documents, queries and relevance judgements ready to evaluate.

    Attributes:
        doc_ids / doc_texts: the corpus, in file order; ``doc_texts`` is exactly what is
            encoded (the text alone, or ``"title\\ntext"`` with ``with_title``).
        query_ids / query_texts: the evaluated queries (each has a relevant document).
        qrels: ``{query_id: {doc_id: relevance}}`` for the evaluated queries.
        notes: what was dropped or skipped, and why.
    """

    doc_ids: list[str]
    doc_texts: list[str]
    query_ids: list[str]
    query_texts: list[str]
    qrels: dict[str, dict[str, int]]
    with_title: bool = False
    source: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class StsSet:
    """STS pairs with gold scores (any scale: only correlations are computed)."""

    sentence1: list[str]
    sentence2: list[str]
    scores: list[float]
    source: str = ""
    notes: list[str] = field(default_factory=list)


def _note(notes: list[str], message: str) -> None:
    notes.append(message)
    logger.warning(message)


def prepare_beir(
    data: BeirData,
    *,
    with_title: bool = False,
    max_docs: int | None = None,
    max_queries: int | None = None,
    seed: int = 0,
    source: str = "",
) -> EvalSet:
    """Validate a BEIR set and cut it to size.

    Pairs naming unknown queries or documents are dropped (with a note); queries without a
    relevant document are not evaluated, as in sentence-transformers'
    ``InformationRetrievalEvaluator``. A slice keeps ``max_queries`` queries (drawn with
    ``seed``) and *every* relevant document of them, then fills up to ``max_docs`` with other
    documents (also drawn with ``seed``).

    Raises:
        ValueError: nothing is left to evaluate (the message says why).
    """
    for name, value in (("max_docs", max_docs), ("max_queries", max_queries)):
        if value is not None and (isinstance(value, bool) or value <= 0):
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    notes: list[str] = []
    corpus = {d: doc for d, doc in data.corpus.items()}
    empty = [d for d, doc in corpus.items() if not doc.get("text", "").strip()]
    if empty:
        _note(notes, f"{len(empty)} documents with empty text are left out ({_quote(empty)})")
        for d in empty:
            del corpus[d]
    if not corpus:
        raise ValueError(f"{source or 'the corpus'}: no documents with text to evaluate")
    if not data.qrels:
        raise ValueError(
            f"{source or 'the qrels'}: no relevance judgements (rows 'query-id corpus-id score' "
            "with score > 0), so there is nothing to evaluate"
        )
    unknown_q = [q for q in data.qrels if q not in data.queries]
    if unknown_q:
        _note(notes, f"qrels name {len(unknown_q)} query ids not in queries.jsonl; their "
                     f"judgements are ignored ({_quote(unknown_q)})")
    unknown_d = sorted({d for rel in data.qrels.values() for d in rel if d not in corpus})
    if unknown_d:
        _note(notes, f"qrels name {len(unknown_d)} document ids not in corpus.jsonl; those "
                     f"judgements are ignored ({_quote(unknown_d)})")
    qrels: dict[str, dict[str, int]] = {}
    emptied: list[str] = []
    for q, rel in data.qrels.items():
        if q not in data.queries:
            continue
        known = {d: r for d, r in rel.items() if d in corpus}
        if known:
            qrels[q] = known
        else:
            emptied.append(q)
    if emptied:
        _note(notes, f"{len(emptied)} queries have no relevant document left in the corpus and "
                     f"are not evaluated ({_quote(emptied)})")
    no_rel = [q for q in data.queries if q not in data.qrels]
    if no_rel:
        _note(notes, f"{len(no_rel)} queries have no relevant document in the qrels and are not "
                     f"evaluated ({_quote(no_rel)})")
    empty_q = [q for q in qrels if not data.queries[q].strip()]
    if empty_q:
        _note(notes, f"{len(empty_q)} queries with empty text are not evaluated "
                     f"({_quote(empty_q)})")
        for q in empty_q:
            del qrels[q]
    if not qrels:
        raise ValueError(
            f"{source or 'the data set'}: no query has a relevant document in the corpus "
            "(check that the qrels use the ids of queries.jsonl and corpus.jsonl)"
        )

    order = [q for q in data.queries if q in qrels]
    sliced = max_docs is not None or max_queries is not None
    if sliced:
        rng = random.Random(seed)
        rng.shuffle(order)
    kept: list[str] = []
    needed: set[str] = set()
    for q in order:
        if max_queries is not None and len(kept) >= max_queries:
            break
        wanted = needed | set(qrels[q])
        if max_docs is not None and len(wanted) > max_docs:
            continue
        kept.append(q)
        needed = wanted
    if not kept:
        raise ValueError(
            f"max_docs={max_docs} is smaller than the relevant documents of any single query"
        )
    doc_ids = list(corpus)
    if max_docs is not None:
        others = [d for d in corpus if d not in needed]
        rng.shuffle(others)
        chosen = needed | set(others[: max(0, max_docs - len(needed))])
        doc_ids = [d for d in corpus if d in chosen]
    position = {q: i for i, q in enumerate(data.queries)}
    kept.sort(key=position.__getitem__)
    if sliced:
        notes.append(f"slice: {len(kept)} of {len(order)} queries and {len(doc_ids)} of "
                     f"{len(corpus)} documents (seed {seed}; every relevant document kept)")
    data_view = BeirData(corpus=corpus, queries=data.queries, qrels=qrels)
    return EvalSet(
        doc_ids=doc_ids,
        doc_texts=[data_view.document_text(d, with_title=with_title) for d in doc_ids],
        query_ids=kept,
        query_texts=[data.queries[q] for q in kept],
        qrels={q: qrels[q] for q in kept},
        with_title=with_title,
        source=source,
        notes=notes,
    )


def load_eval_set(
    folder: str | Path,
    *,
    split: str = "test",
    with_title: bool = False,
    max_docs: int | None = None,
    max_queries: int | None = None,
    seed: int = 0,
) -> EvalSet:
    """Load a BEIR folder with :func:`bertino_rag.data.load_beir` and :func:`prepare_beir` it.

    Raises:
        FileNotFoundError: ``corpus.jsonl``, ``queries.jsonl`` or ``qrels/<split>.tsv`` missing.
        ValueError: malformed or empty files, or nothing left to evaluate.
    """
    folder = Path(folder)
    qrels_path = folder / "qrels" / f"{split}.tsv"
    for path in (folder / "corpus.jsonl", folder / "queries.jsonl", qrels_path):
        if not path.exists():
            hint = ""
            if path == qrels_path and (folder / "qrels").is_dir():
                splits = sorted(p.stem for p in (folder / "qrels").glob("*.tsv"))
                hint = f" (splits found: {', '.join(splits) or 'none'}; choose one with --split)"
            raise FileNotFoundError(
                f"{folder} is not a complete BEIR folder: {path} is missing{hint}")
    data = load_beir(folder, split=split)
    if not data.qrels:
        raise ValueError(
            f"{qrels_path} holds no relevance judgements (rows 'query-id<TAB>corpus-id<TAB>score' "
            "with score > 0): nothing to evaluate"
        )
    if not data.queries:
        raise ValueError(f"{folder / 'queries.jsonl'} holds no queries: nothing to evaluate")
    return prepare_beir(data, with_title=with_title, max_docs=max_docs,
                        max_queries=max_queries, seed=seed, source=str(folder))


def load_sts_set(path: str | Path, *, max_pairs: int | None = None) -> StsSet:
    """Read an STS csv (``sentence1,sentence2,score``) with :func:`bertino_rag.data.load_sts`."""
    pairs: list[StsPair] = load_sts(path)
    notes: list[str] = []
    good = [p for p in pairs if p.sentence1.strip() and p.sentence2.strip()]
    if len(good) < len(pairs):
        _note(notes, f"{len(pairs) - len(good)} STS pairs with an empty sentence are left out")
    if max_pairs is not None:
        if max_pairs <= 0:
            raise ValueError(f"max_pairs must be a positive int, got {max_pairs!r}")
        good = good[:max_pairs]
    if len(good) < 3:
        raise ValueError(f"{path}: {len(good)} usable STS pairs; correlations need at least 3")
    if len({p.score for p in good}) < 2:
        raise ValueError(f"{path}: every gold score is the same; correlations are undefined")
    return StsSet([p.sentence1 for p in good], [p.sentence2 for p in good],
                  [p.score for p in good], source=str(path), notes=notes)
