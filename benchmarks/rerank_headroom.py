"""What bounds a reranker on squad-it-dev: how many passages (and question-passage pairs) a
length holds whole, and where hybrid search puts the positive on bench_rerank.py's held-apart
questions (its split: 30% of the articles, seed 42; 250 questions, seed 42).

Usage (alone on the machine; about a minute on 2 cores)::

    python benchmarks/rerank_headroom.py --tokenizer /tmp/bench-rerank-e2/reranker \\
        --mine-model /tmp/e5-small
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
from _indexing_common import SQUAD  # noqa: E402

from bertino_rag.training.data import load_pairs, split_by_source, subset_queries  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokenizer", required=True, help="a model folder whose tokenizer counts")
    ap.add_argument("--mine-model", required=True, help="the hybrid retriever's bi-encoder")
    ap.add_argument("--lengths", type=int, nargs="+", default=[256, 320, 384])
    ap.add_argument("--pairs", type=int, default=2000, help="(question, positive) pairs counted")
    ap.add_argument("--eval-queries", type=int, default=250)
    args = ap.parse_args()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    data = load_pairs(str(SQUAD))
    paragraphs = np.array([len(ids) for ids in tok(list(data.corpus.values()))["input_ids"]])
    p = np.percentile(paragraphs, [50, 90, 95, 99])
    print(f"{paragraphs.size} paragraphs, tokens p50/p90/p95/p99: "
          + " / ".join(f"{v:.0f}" for v in p))
    pairs = data.pairs[:args.pairs]
    both = np.array([len(tok(x.query, data.corpus[x.doc_id])["input_ids"]) for x in pairs])
    for n in args.lengths:
        print(f"{n} tokens hold {100 * (paragraphs <= n).mean():.1f}% of the paragraphs and "
              f"{100 * (both <= n).mean():.1f}% of {both.size} question-positive pairs whole")

    from bertino_rag import make_encoder
    from bertino_rag.training.rerank import hybrid_retriever

    _, test = split_by_source(data, 0.3, seed=42)
    evaluated = subset_queries(test, args.eval_queries, seed=42)
    encoder = make_encoder(args.mine_model, device="cpu")
    retriever = hybrid_retriever(encoder, test, "held_apart")
    qids = list(evaluated.queries)
    hits = retriever.search_batch([evaluated.queries[q] for q in qids], k=50, mode="hybrid",
                                  reranker=False)
    for k in (1, 10, 20, 50):
        found = sum(any(h.id in evaluated.relevant[q] for h in row[:k])
                    for q, row in zip(qids, hits, strict=True))
        print(f"hybrid recall@{k}: {found}/{len(qids)} = {found / len(qids):.3f}")


if __name__ == "__main__":
    main()
