"""MemoryStore's binary first stage: ``MemoryStore(first_stage="binary")``.

A three-step Matryoshka funnel with no graph to build:

1. every index vector (the truncated one) has a sign code, one bit per dimension
   (``seg-NNNNNN.sign.npy``: ``dim / 8`` bytes a point, padded to whole 64-bit words, stored
   word by word; written
   with the segment, its size and CRC-32 in ``meta.sqlite`` and checked at load like the
   vectors'); a query's code is compared with all of them by Hamming distance (XOR and
   popcount over 64-bit words, a few passes of numpy over the codes: 16 bytes a point at 128
   dims, where exact search reads 512);
2. the ``8 x candidates`` nearest codes (across all segments, ties at the cut taken in row
   order) are ordered by the query itself against their signs (the float query's dot product
   with the +1/-1 vector of each code, a table look-up per code byte: a finer order than the
   Hamming distance, RaBitQ-style), and the best ``candidates`` are scored exactly on their
   float32 index vectors, gathered by row; the best ``k`` are kept: from here on the store's
   exact path (:meth:`_Search._knn`, or the two-stage pushdown, whose full rescoring of the top
   ``rescore_k`` is the funnel's own) sees what it would have seen, minus the rows the codes
   ranked too far;
3. (two-stage) the full vectors of the top ``rescore_k`` rescore them.

What it gives up: a document whose code is farther from the query's than ``candidates`` others
is missed. Sign codes keep the angular order of real embeddings coarsely (HF's embedding
quantization study: ~96% of retrieval quality, recovered by rescoring a few times more
candidates than needed); recall against the exact result and speed are measured by
``benchmarks/bench_1m.py``. Why by hand: numpy's ``bitwise_count`` does the Hamming distance in
a few passes with no dependency, and no maintained library offers this funnel over memory-mapped
segments with filters by row (faiss's ``IndexBinaryFlat`` holds its own copy of the codes and
does not rescore).

The option is a search-time choice, not part of the collection's stamp: a collection written
without codes is searched with codes computed from its index vectors when a segment is first
searched (one pass over them), and one written with codes opens with ``first_stage="exact"``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

FirstStage = Literal["exact", "binary"]
FIRST_STAGES: tuple[str, ...] = ("exact", "binary")
#: candidates rescored at the index dim per query (and at least the ``k`` asked)
DEFAULT_CANDIDATES = 2000
#: Hamming-nearest codes per candidate, ordered by the asymmetric score before the cut (at
#: 100k realistic points, recall@10 at 2,000 candidates: 0.79 with 4, 0.82 with 8, 0.83 with 16)
PRERANK = 8
_ROW_BITS = 32


def code_words(dim: int) -> int:
    """64-bit words of one sign code: ``dim`` bits rounded up."""
    return -(-dim // 64)


def sign_codes(vectors: np.ndarray) -> np.ndarray:
    """The sign codes of ``vectors`` (``(n, dim)``) as ``(code_words(dim), n)`` uint64, one
    row per word so that each pass of the Hamming distance reads contiguous memory: bit ``i``
    of a code is set where dimension ``i`` is positive; the padding bits are zero."""
    vectors = np.asarray(vectors)
    n, dim = vectors.shape
    packed = np.zeros((n, 8 * code_words(dim)), dtype=np.uint8)
    packed[:, : -(-dim // 8)] = np.packbits(vectors > 0, axis=1)
    return np.ascontiguousarray(packed.view(np.uint64).T)


def hamming(words: np.ndarray, query: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Hamming distance of a query's code (``(w,)`` uint64) to every code of ``words``
    (``(w, n)``), or to ``rows`` only: uint8 up to 192 bits, else uint16."""
    n = words.shape[1] if rows is None else len(rows)
    wide = words.shape[0] > 3
    out = np.zeros(n, dtype=np.uint16 if wide else np.uint8)
    xor = np.empty(n, dtype=np.uint64)
    count = np.empty(n, dtype=np.uint8)
    for w in range(words.shape[0]):
        part = words[w] if rows is None else words[w][rows]
        np.bitwise_xor(part, query[w], out=xor)
        np.bitwise_count(xor, out=count)
        np.add(out, count, out=out)
    return out


def _nearest(dists: list[np.ndarray], count: int, bits: int) -> list[np.ndarray]:
    """Per array of ``dists``, the positions among the ``count`` smallest distances of all
    arrays together (ties at the cut in array order, then position order); a distance above
    ``bits`` marks a dead row, never taken."""
    hist = np.zeros(bits + 2, dtype=np.int64)
    for d in dists:
        hist += np.bincount(d, minlength=bits + 2)
    cum = np.cumsum(hist[: bits + 1])
    if cum[-1] <= count:
        return [np.flatnonzero(d <= bits) for d in dists]
    cut = int(np.searchsorted(cum, count))  # the distance at which ``count`` is reached
    need = count - (int(cum[cut - 1]) if cut else 0)  # taken at distance ``cut``
    out = []
    for d in dists:
        picked = np.flatnonzero(d <= cut)  # one pass; those at the cut trimmed after
        at = d[picked] == cut
        if int(at.sum()) > need:
            keep = ~at
            keep[np.flatnonzero(at)[:need]] = True
            picked = picked[keep]
        need -= int(min(need, int(at.sum())))
        out.append(picked)
    return out


#: bits of one byte, most significant first (``np.packbits``' order), as -1/+1
_BYTE_SIGNS = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).astype(
    np.float32) * 2 - 1


def _lookup(query: np.ndarray, bits: int) -> np.ndarray:
    """Per code byte, the query's dot product with each of the 256 sign patterns of its
    8 dimensions: ``(bits // 8, 256)``."""
    padded = np.zeros(bits, dtype=np.float32)
    padded[: len(query)] = query
    return padded.reshape(-1, 8) @ _BYTE_SIGNS.T


def asymmetric(words: np.ndarray, rows: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """The float query's dot product with the sign vectors (+1/-1) of codes ``rows``: a
    finer order than the Hamming distance of its own code (RaBitQ-style asymmetric
    distance), one table look-up per code byte."""
    codes = np.ascontiguousarray(words[:, rows].T).view(np.uint8).T  # (bytes, len(rows))
    out = np.take(lut[0], codes[0])
    for b in range(1, lut.shape[0]):
        out += np.take(lut[b], codes[b])
    return out


def binary_top_keys(segments: list, vectors: np.ndarray, k: int, candidates: int,
                    allowed: dict[int, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` index-dim scores per query among each query's ``candidates`` nearest
    sign codes, and their row handles: ``(m, <=k)`` each, in no order, ``-inf`` where a query
    has fewer than ``k`` live rows (the contract of ``_Search._top_keys``). ``segments`` are
    the live :class:`~.files._Segment` objects in segment order."""
    m = vectors.shape[0]
    dim = vectors.shape[1]
    bits = 64 * code_words(dim)
    count = max(candidates, k)
    parts = []
    for s in segments:
        if s.codes is None:  # written without codes (or by an exact store): computed once
            s.codes = sign_codes(s.index)
        if allowed is None:
            rows = None
        else:
            rows = allowed.get(s.seg)
            if rows is None or len(rows) == 0:
                continue
            rows = rows[s.alive[rows]]
        dead = None if rows is not None or s.alive.all() else ~s.alive
        parts.append((s, s.codes, rows, dead))
    queries = np.ascontiguousarray(sign_codes(vectors).T)
    scores = np.full((m, k), -np.inf, dtype=np.float32)
    keys = np.zeros((m, k), dtype=np.int64)
    for qi in range(m):
        dists = []
        for _, words, rows, dead in parts:
            d = hamming(words, queries[qi], rows)
            if dead is not None:
                d[dead] = bits + 1
            dists.append(d)
        picked = _nearest(dists, PRERANK * count, bits)
        lut = _lookup(vectors[qi], bits)
        which, locals_, approx = [], [], []
        for pi, ((_, words, rows, _), sel) in enumerate(zip(parts, picked, strict=True)):
            local = sel if rows is None else rows[sel]
            which.append(np.full(len(local), pi))
            locals_.append(local)
            approx.append(asymmetric(words, local, lut))
        if not locals_ or not sum(len(x) for x in locals_):
            continue
        part_of, local_of = np.concatenate(which), np.concatenate(locals_)
        if len(part_of) > count:  # the best ``count`` by the query against the signs
            best = np.argpartition(-np.concatenate(approx), count - 1)[:count]
            part_of, local_of = part_of[best], local_of[best]
        got_scores, got_keys = [], []
        for pi in np.unique(part_of).tolist():
            s = parts[pi][0]
            local = np.sort(local_of[part_of == pi])  # gathers in file order
            got_scores.append(np.asarray(s.index[local], dtype=np.float32) @ vectors[qi])
            got_keys.append((np.int64(s.seg) << _ROW_BITS) | local.astype(np.int64))
        row_scores = np.concatenate(got_scores)
        row_keys = np.concatenate(got_keys)
        take = min(k, len(row_scores))
        top = np.argpartition(-row_scores, take - 1)[:take]
        scores[qi, :take] = row_scores[top]
        keys[qi, :take] = row_keys[top]
    return scores, keys
