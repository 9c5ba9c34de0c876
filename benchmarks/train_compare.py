"""Compare two training runs' metrics.json (``bertino-rag train`` and the plain recipe):
speed on the same card and per-dim quality before/after, as Markdown (and JSON).

Usage: python benchmarks/train_compare.py BERTINO_RUN PLAIN_RUN [--json OUT.json]

Examples/s are steps x batch size / training-loop seconds for both runs (dev evaluations
excluded), so the ratio compares like with like. The targets of issue 26 are checked on the dev
articles (NDCG@10): 128-d after within 2 points of the base's full dim, full dim after not below
the base's, and 128-d at least 1.5 points above the plain recipe's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bertino_rag.training.evaluate import format_table


def _load(folder: str) -> dict[str, Any]:
    return json.loads((Path(folder) / "metrics.json").read_text(encoding="utf-8"))


def speed(m: dict[str, Any]) -> dict[str, Any]:
    t = m["training"]
    batch = m.get("config", {}).get("batch_size") or 128
    loop = max(t["train_seconds"] - t.get("eval_seconds", 0.0), 1e-9)
    return {
        "steps": t["steps"], "steps_per_second": round(t["steps"] / loop, 4),
        "examples_per_second": round(t["steps"] * batch / loop, 1),
        "loop_seconds": round(loop, 1), "train_seconds": t["train_seconds"],
        "wall_seconds": t["wall_seconds"],
        "peak_gpu_gib": (round(t["peak_gpu_bytes"] / 2**30, 2)
                         if t.get("peak_gpu_bytes") else None),
        "precision": t["precision"], "mini_batch_size": t["mini_batch_size"],
        "retrieval_loss": t["retrieval_loss"], "gpu": t.get("gpu"),
    }


def compare(ours: dict[str, Any], plain: dict[str, Any]) -> dict[str, Any]:
    a, b = speed(ours), speed(plain)
    return {
        "speed": {"bertino-rag train": a, "plain recipe": b,
                  "ratio_examples_per_second": round(a["examples_per_second"]
                                                     / max(b["examples_per_second"], 1e-9), 2)},
        "dev": {"bertino-rag train": {"before": ours["before"], "after": ours["after"]},
                "plain recipe": {"before": plain["before"], "after": plain["after"]}},
        "test": {"bertino-rag train": ours.get("test"), "plain recipe": plain.get("test")},
        "targets": targets(ours, plain),
    }


def targets(ours: dict[str, Any], plain: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 26's targets on the dev articles (NDCG@10), from both runs' metrics.json."""
    full, small = str(ours["dims"][0]), str(ours["best_dim"])
    before, after = ours.get("before") or plain.get("before"), ours["after"]
    if not before:
        return []
    base_full = before[full]["ndcg@10"]
    rows = [
        {"target": f"{small}d after within 2 points of the base's {full}d",
         "value": after[small]["ndcg@10"], "bound": round(base_full - 0.02, 4)},
        {"target": f"{full}d after not below the base's {full}d",
         "value": after[full]["ndcg@10"], "bound": base_full},
        {"target": f"{small}d at least 1.5 points above the plain recipe's {small}d",
         "value": after[small]["ndcg@10"],
         "bound": round(plain["after"][small]["ndcg@10"] + 0.015, 4)},
    ]
    for row in rows:
        row["met"] = row["value"] >= row["bound"]
    return rows


def to_markdown(c: dict[str, Any]) -> str:
    s = c["speed"]
    rows = [("GPU", "gpu"), ("precision", "precision"), ("mini-batch", "mini_batch_size"),
            ("retrieval loss", "retrieval_loss"), ("steps", "steps"),
            ("steps/s", "steps_per_second"), ("examples/s", "examples_per_second"),
            ("training loop s", "loop_seconds"), ("train() s (with dev evals)", "train_seconds"),
            ("whole run s", "wall_seconds"), ("peak GPU memory GiB", "peak_gpu_gib")]
    out = ["| | bertino-rag train | plain recipe |", "|---|---|---|"]
    for label, key in rows:
        out.append(f"| {label} | {s['bertino-rag train'][key]} | {s['plain recipe'][key]} |")
    out.append(f"\nexamples/s ratio (bertino-rag train / plain): "
               f"**{s['ratio_examples_per_second']}x**")
    if c.get("targets"):
        out.append("\n### targets (dev articles, NDCG@10)\n")
        out.append("| target | value | needed | met |\n|---|---|---|---|")
        for t in c["targets"]:
            out.append(f"| {t['target']} | {t['value']:.4f} | >= {t['bound']:.4f} | "
                       f"{'yes' if t['met'] else 'no'} |")
    for split in ("dev", "test"):
        for name, runs in c[split].items():
            if runs and runs.get("after"):
                out.append(f"\n### {name}: {split} articles, before → after\n")
                out.append(format_table(runs["after"], runs.get("before")))
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ours")
    ap.add_argument("plain")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    c = compare(_load(args.ours), _load(args.plain))
    if args.json:
        Path(args.json).write_text(json.dumps(c, indent=2) + "\n", encoding="utf-8")
    print(to_markdown(c))


if __name__ == "__main__":
    main()
