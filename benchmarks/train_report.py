"""Print a training run's metrics.json as markdown: before/after per dim, the 128-d gap, counts.

Usage: python benchmarks/train_report.py OUTPUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bertino_rag.training.evaluate import format_table


def main(folder: str) -> None:
    m = json.loads((Path(folder) / "metrics.json").read_text(encoding="utf-8"))
    before, after, dims = m["before"], m["after"], [str(d) for d in m["dims"]]
    print("Dev articles (retrieval) and STS dev, before → after:\n")
    print(format_table(after, before))
    full, small = dims[0], str(m["best_dim"])
    for label, key in (("NDCG@10", "ndcg@10"), ("MAP@100", "map@100"),
                       ("Accuracy@1", "accuracy@1")):
        gap_b = before[full][key] - before[small][key]
        gap_a = after[full][key] - after[small][key]
        print(f"\n{label}: {full}d − {small}d gap {gap_b:.4f} before, {gap_a:.4f} after")
    t, d = m["training"], m["data"]
    print(f"\nsteps {t['steps']} ({t['epochs']} epochs), training {t['train_seconds']} s, "
          f"whole run {t['wall_seconds']} s, device {t['device']}, mini-batch "
          f"{t['mini_batch_size']}, best checkpoint {t['best_checkpoint']} "
          f"({t['best_metric']})")
    for name, c in t["tasks"].items():
        print(f"task {name}: {c['batches']} batches, {c['examples']} examples, smallest batch "
              f"{c['smallest_batch']}, {c['rows']} rows in the set")
    print(f"data: {d['train_pairs']} training pairs from {d['train_sources']} articles, "
          f"{d['mined_tuples']} kept after mining ({d['dropped_by_miner']} dropped); dev "
          f"{d['dev_queries']} questions, {d['dev_corpus']} paragraphs of "
          f"{len(d['dev_sources'])} articles: {', '.join(d['dev_sources'])}")
    losses = [(e["step"], round(e["loss"], 3)) for e in t["log"] if "loss" in e]
    evals = [(e["step"], round(e[k], 4)) for e in t["log"] for k in e
             if k.startswith("eval_dev_") and k.endswith("_ndcg@10")]
    print(f"training loss (step, loss): {losses}")
    print(f"dev {small}d NDCG@10 during training (step, value): {evals}")


if __name__ == "__main__":
    main(sys.argv[1])
