"""The defaults study of docs/training.md: which settings of the recipe train better, judged on
the dev articles only.

Each variant changes one setting of its parent (``VARIANTS``; ``--on V`` puts every variant on
top of variant ``V`` instead of the card's recipe, for a second round) and trains with
``bertino_rag.training.train`` from ``--base-model`` (the exported multilingual-e5-small) with
the settings of ``--config`` (configs/train-e5.yaml: squad-it-dev + stsb-it, one epoch, 10% of
the pairs as dev articles and 10% as test articles, both split by the trainer itself). The dev
articles decide (128-d exact search, the 128 → full rescoring funnel, full dim); the test
articles are shown in their own column and never used to choose.

Usage:
    python benchmarks/train_defaults_study.py --base-model E5 --out OUT [--variants card lr1e-4]
        [--on lr1e-4] [--articles N --questions Q] [--set max_steps=2 batch_size=8 ...]
        [--reuse card=RUN_DIR]
    (results accumulate in OUT/study.json: a variant already there is not run again; --reuse
    takes a variant's entry from a finished run's metrics.json instead of training it, after
    checking that the run's config is the one the study would have used)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "train-e5.yaml"

#: variant: the settings it changes from its parent (the card's recipe, or ``--on``)
VARIANTS: dict[str, dict[str, Any]] = {
    "card": {},  # configs/train-e5.yaml as it is (learning rate 3e-5 since the first round)
    "lr1e-5": {"learning_rate": 1e-5},  # the card's rate (the config's before the first round)
    "lr1e-4": {"learning_rate": 1e-4},
    "guided": {"guided": True},
    "scale20": {"loss_scale": 20.0},  # the card's scale (the config sets e5's 100)
    "no-margin": {"neg_relative_margin": None},
    "negatives1": {"num_negatives": 1},
    "sts0.5": {"sts_ratio": 0.5},
    "select-funnel": {"select_by": "funnel_ndcg@10"},
    # MatryoshkaLoss's own default (every dim weighs as much as the full one) instead of the
    # card's [1, .4, .2, .2]: more of the loss on the small dims
    "mrl-equal": {"matryoshka_weights": [1.0, 1.0, 1.0, 1.0]},
}


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
    ap.add_argument("--base-model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--config", default=str(CONFIG))
    ap.add_argument("--data", default=os.environ.get("BERTINO_DATA", str(DATA)))
    ap.add_argument("--articles", type=int, default=0, help="0: all of squad-it-dev")
    ap.add_argument("--questions", type=int, default=1000, help="per article (with --articles)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--on", default="card", choices=list(VARIANTS),
                    help="the parent of every variant (default: the card's recipe)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="settings for every variant, e.g. max_steps=2 batch_size=8")
    ap.add_argument("--reuse", nargs="*", default=[], metavar="VARIANT=RUN_DIR",
                    help="take VARIANT's result from a finished training run's folder "
                         "(its metrics.json) instead of training it again")
    args = ap.parse_args()
    malformed = [kv for kv in args.reuse if "=" not in kv]
    if malformed:
        ap.error(f"--reuse {malformed}: write VARIANT=RUN_DIR, e.g. card=/tmp/e5-run/scale100")
    reuse = dict(kv.split("=", 1) for kv in args.reuse)
    unknown = sorted(set(reuse) - set(VARIANTS))
    if unknown:
        ap.error(f"--reuse {unknown}: not variants; choose from {list(VARIANTS)}")

    from bertino_rag.training import load_config, train

    logging.basicConfig(level=logging.WARNING)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(args.data)
    squad = data / "squad-it-dev"
    if args.articles:
        squad = reduced_beir(squad, out / "beir", args.articles, args.questions)
    common = dict(kv.split("=", 1) for kv in args.set)
    base = {"base_model": args.base_model, "train_data": str(squad),
            "sts_data": str(data / "stsb-it" / "train.csv"),
            "sts_dev_data": str(data / "stsb-it" / "dev.csv"), **common}
    results: dict[str, Any] = {}
    path = out / "study.json"
    if path.exists():
        results = json.loads(path.read_text(encoding="utf-8"))
    for name in args.variants:
        key = name if args.on == "card" or name == args.on else f"{args.on}+{name}"
        if key in results:
            continue
        t0 = time.perf_counter()
        change = {**VARIANTS[args.on], **VARIANTS[name]}
        cfg = replace(load_config(args.config, **base, output_dir=str(out / key),
                                  evaluate_before="before" not in results), **change)
        if name in reuse:
            m = _reused(Path(reuse[name]), cfg.to_dict())
        else:
            m = json.loads((train(cfg) / "metrics.json").read_text(encoding="utf-8"))
        if m["before"] is not None:
            results["before"] = {"dev": m["before"], "test": (m["test"] or {}).get("before")}
        results[key] = {
            "parent": None if key == "card" else (args.on if name != args.on else "card"),
            "change": VARIANTS[name] if name != args.on else change,
            "dev": m["after"], "test": (m["test"] or {}).get("after"),
            "best_dim": m["best_dim"], "full_dim": m["dims"][0],
            "evals": [e for e in m["training"]["log"] if any(k.startswith("eval_dev") for k in e)],
            "best_checkpoint": m["training"]["best_checkpoint"],
            "mined_tuples": m["data"]["mined_tuples"], "steps": m["training"]["steps"],
            "seconds": (round(m["training"]["wall_seconds"]) if name in reuse
                        else round(time.perf_counter() - t0)),
        }
        path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(table(results))


#: settings that may differ between a reused run and the study's own (where it writes, and
#: whether it evaluated the base first) without changing what was trained
_NOT_TRAINING = {"output_dir", "evaluate_before"}


def _reused(folder: Path, want: dict[str, Any]) -> dict[str, Any]:
    """A finished run's metrics.json, if its config is the study's for that variant."""
    path = folder / "metrics.json"
    if not path.is_file():
        raise SystemExit(f"--reuse {folder}: no metrics.json there (a finished training run's "
                         "folder holds one)")
    m = json.loads(path.read_text(encoding="utf-8"))
    have = m.get("config", {})
    diff = {k: (have.get(k), v) for k, v in want.items()
            if k not in _NOT_TRAINING and have.get(k) != v}
    if diff:
        raise SystemExit(f"--reuse {folder}: its run differs from the study's (setting: "
                         f"(run, study)): {diff}; train it with the study instead")
    return m


def table(results: dict[str, Any]) -> str:
    """The Markdown table of docs/training.md: the dev articles decide; test is shown, unused."""
    runs = {k: v for k, v in results.items() if k != "before"}
    if not runs:
        return "(no run)"
    any_run = next(iter(runs.values()))
    small, full = str(any_run["best_dim"]), str(any_run["full_dim"])
    funnel = next((k for k in any_run["dev"] if k.startswith(f"{small}+rescore@")), None)
    cols = [(f"dev {small}d NDCG@10", small, "ndcg@10"),
            (f"dev {small}d MAP@100", small, "map@100"),
            (f"dev {small}d Acc@1", small, "accuracy@1")]
    if funnel:
        cols.append((f"dev {small} → {full} rescoring NDCG@10", funnel, "ndcg@10"))
    cols += [(f"dev {full}d NDCG@10", full, "ndcg@10"),
             (f"dev STS Spearman {small}d", small, "spearman")]
    header = ["variant", "change (from its parent)", *(c[0] for c in cols),
              f"Δ {small}d NDCG@10 vs parent", "mined tuples", "steps",
              f"test {small}d NDCG@10 (not used)", "s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def cell(row: dict[str, Any] | None, key: str, metric: str) -> str:
        value = (row or {}).get(key, {}).get(metric)
        return "" if value is None else f"{value:.4f}"

    if "before" in results:
        b = results["before"]
        lines.append("| before training | | " + " | ".join(cell(b["dev"], k, m)
                                                         for _, k, m in cols)
                     + f" | | | | {cell(b.get('test'), small, 'ndcg@10')} | |")
    for name, r in runs.items():
        parent = runs.get(r["parent"]) if r["parent"] else None
        delta = ""
        if parent:
            delta = f"{r['dev'][small]['ndcg@10'] - parent['dev'][small]['ndcg@10']:+.4f}"
        change = ", ".join(f"{k}={v}" for k, v in r["change"].items()) or "(the config's recipe)"
        lines.append(f"| {name} | {change} | " + " | ".join(cell(r["dev"], k, m)
                                                         for _, k, m in cols)
                     + f" | {delta} | {r['mined_tuples']} | {r['steps']} | "
                     f"{cell(r.get('test'), small, 'ndcg@10')} | {r['seconds']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
