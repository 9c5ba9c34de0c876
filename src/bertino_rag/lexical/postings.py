"""MemoryStore's lexical index: one block of postings per vector segment, exact BM25 on the fly.

Each segment keeps, beside its vectors, the postings of its rows: for each term id present,
the rows that contain it and how often. Scores are computed at query time from statistics of
the live documents (their number, their average length, each term's document frequency), so
deletes and replacements are exact at once, with nothing to rebuild: a dead row is masked by
the segment's ``alive`` flags exactly as for vectors, and merged away with them.

Why this layout (measured in ``docs/benchmarks.md``, "Hybrid retrieval"): bm25s precomputes
every score at index time and must re-index the whole corpus after any add or delete; SQLite
FTS5 scores with its own BM25 variant and tokenizer; postings aligned with the segments are
written and made live by the same transaction as the vectors, so lexical and dense can never
disagree about which documents exist, and they cost four small arrays per segment.

Arrays of one segment (files ``seg-N.<kind>.npy`` when persisted):

- ``lexterm`` (int32, sorted): the term ids present in the segment;
- ``lexptr`` (int64): postings of ``lexterm[j]`` are ``lexpost[lexptr[j]:lexptr[j + 1]]``;
- ``lexpost`` (int32, ``(nnz, 2)``): (row, term frequency);
- ``lexlength`` (int32): each row's length in terms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .bm25 import BM25

KINDS = ("lexterm", "lexptr", "lexpost", "lexlength")


@dataclass
class Postings:
    term: np.ndarray
    ptr: np.ndarray
    post: np.ndarray
    length: np.ndarray

    def arrays(self) -> dict[str, np.ndarray]:
        return {"lexterm": self.term, "lexptr": self.ptr, "lexpost": self.post,
                "lexlength": self.length}

    def lookup(self, tid: int) -> np.ndarray | None:
        """The (row, tf) postings of term ``tid`` here, or None."""
        j = int(np.searchsorted(self.term, tid))
        if j >= len(self.term) or int(self.term[j]) != tid:
            return None
        return np.asarray(self.post[int(self.ptr[j]) : int(self.ptr[j + 1])])


def from_coo(term: np.ndarray, row: np.ndarray, tf: np.ndarray, length: np.ndarray) -> Postings:
    """Postings from (term id, row, tf) triples and the rows' lengths."""
    order = np.lexsort((row, term))
    term, row, tf = term[order], row[order], tf[order]
    uniq, starts = np.unique(term, return_index=True)
    ptr = np.append(starts, len(term)).astype(np.int64)
    post = np.stack([row, tf], axis=1).astype(np.int32) if len(term) else np.zeros(
        (0, 2), dtype=np.int32)
    return Postings(uniq.astype(np.int32), ptr, post, np.asarray(length, dtype=np.int32))


def build(doc_terms: Sequence[dict[int, int]]) -> Postings:
    """Postings of new rows, ``doc_terms[row]`` mapping term id to count."""
    sizes = [len(d) for d in doc_terms]
    row = np.repeat(np.arange(len(doc_terms), dtype=np.int64), sizes)
    term = np.fromiter((t for d in doc_terms for t in d), dtype=np.int64, count=sum(sizes))
    tf = np.fromiter((c for d in doc_terms for c in d.values()), dtype=np.int64,
                     count=sum(sizes))
    length = np.asarray([sum(d.values()) for d in doc_terms], dtype=np.int32)
    return from_coo(term, row, tf, length)


def merge(parts: Sequence[Postings], keeps: Sequence[np.ndarray]) -> Postings:
    """The postings of the kept rows of ``parts``, renumbered in order (as vectors merge)."""
    terms, rows, tfs, lengths = [], [], [], []
    offset = 0
    for p, keep in zip(parts, keeps, strict=True):
        renumber = np.full(len(p.length), -1, dtype=np.int64)
        renumber[keep] = np.arange(len(keep)) + offset
        counts = np.diff(np.asarray(p.ptr))
        term = np.repeat(np.asarray(p.term, dtype=np.int64), counts)
        post = np.asarray(p.post)
        new_row = renumber[post[:, 0]] if len(post) else np.zeros(0, dtype=np.int64)
        live = new_row >= 0
        terms.append(term[live])
        rows.append(new_row[live])
        tfs.append(post[live, 1] if len(post) else np.zeros(0, dtype=np.int64))
        lengths.append(np.asarray(p.length)[keep])
        offset += len(keep)
    return from_coo(np.concatenate(terms), np.concatenate(rows), np.concatenate(tfs),
                    np.concatenate(lengths))


def score(
    segments: Sequence[tuple[Postings, np.ndarray, np.ndarray | None]],
    tids: Sequence[int],
    bm25: BM25,
    n_docs: int,
    avg_len: float,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """BM25 of every live row that contains a query term, per segment.

    ``segments`` holds (postings, alive flags, allowed rows or None); document frequencies
    count every live row, filtered or not (the statistics are the collection's). Returns, per
    segment, (rows, scores) of the rows with a positive score.
    """
    found: list[list[np.ndarray | None]] = []
    df = np.zeros(len(tids), dtype=np.float64)
    for post, alive, _ in segments:
        per_term: list[np.ndarray | None] = []
        for j, tid in enumerate(tids):
            hits = post.lookup(tid)
            if hits is not None:
                hits = hits[alive[hits[:, 0]]]
                df[j] += len(hits)
            per_term.append(hits)
        found.append(per_term)
    idf = BM25.idf(df, n_docs)
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for (post, _, allowed), per_term in zip(segments, found, strict=True):
        acc = np.zeros(len(post.length), dtype=np.float64)
        for j, hits in enumerate(per_term):
            if hits is None or len(hits) == 0:
                continue
            r = hits[:, 0]
            acc[r] += idf[j] * bm25.tf_part(hits[:, 1].astype(np.float64),
                                            np.asarray(post.length)[r], avg_len)
        if allowed is not None:
            mask = np.zeros(len(acc), dtype=bool)
            mask[allowed] = True
            acc[~mask] = 0.0
        rows = np.flatnonzero(acc > 0)
        out.append((rows, acc[rows]))
    return out
