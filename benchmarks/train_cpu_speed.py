"""Training speed on a CPU, one change at a time: the speed table of docs/training.md.

Every variant changes one setting of its parent (``VARIANTS``) and trains ``--warmup`` +
``--steps`` optimizer steps of the card's recipe (batch 128, 2 hard negatives, STS-B-it resampled
to the retrieval set's size) on squad-it-dev through the same trainer as ``bertino-rag train``
(``bertino_rag.training.trainer.build_trainer``; no evaluation or checkpoint in the loop). The
retrieval and STS tasks alternate (round robin), so each is timed on its own; the warm-up steps
(allocations, first use of each kernel) are left out. The epoch time is estimated from the
median step times and the number of batches of a full epoch of each task.

The hard negatives are mined once with the base model and kept in ``OUT/mined`` (mining is
not what is timed here); results accumulate in ``OUT/speed.json`` (a variant already there is not
run again unless ``--again``).

``--eval-cost`` also times the evaluations: the dev evaluation during training (dev articles at
128-d with the 128 → full rescoring funnel) on every dev query and on ``--eval-queries`` of them,
and the STS dev evaluation (1,500 pairs) of the before/after tables.

Usage (alone on the machine):
    python benchmarks/train_cpu_speed.py --base-model E5_FOLDER --out OUT \\
        [--data DATA] [--steps 4] [--warmup 2] [--variants baseline bf16 ...] [--eval-cost]
    (--batch-size 8 --steps 2 --warmup 2 --train-data SMALL_BEIR for a smoke run)
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

#: variant: (its parent, what it changes). The card's recipe in float32 with torch's and
#: sentence-transformers' defaults (mini-batches in the batch's order) is the baseline; each
#: variant changes one thing of its parent, so its effect is the ratio.
VARIANTS: dict[str, tuple[str | None, dict[str, Any]]] = {
    "baseline": (None, {}),
    "threads1": ("baseline", {"threads": 1}),
    "bf16": ("baseline", {"precision": "bf16"}),
    "attn0": ("baseline", {"attention_dropout": 0.0}),
    "bf16+attn0": ("bf16", {"attention_dropout": 0.0}),
    "bf16+attn0+mini8": ("bf16+attn0", {"mini_batch_size": 8}),
    "bf16+attn0+mini32": ("bf16+attn0", {"mini_batch_size": 32}),
    "bf16+attn0+mini64": ("bf16+attn0", {"mini_batch_size": 64}),
    "bf16+attn0+len99": ("bf16+attn0", {"seq_length_quantile": 0.99}),
    "bf16+attn0+len99+pretok": ("bf16+attn0+len99", {"pretokenize": True}),
    # the cached loss's mini-batches in order of length (TrainConfig.sort_by_length)
    "attn0+sorted": ("attn0", {"sort_by_length": True}),
    "bf16+attn0+sorted": ("bf16+attn0", {"sort_by_length": True}),
}


def settings(name: str) -> dict[str, Any]:
    parent, change = VARIANTS[name]
    return {**(settings(parent) if parent else {}), **change}


def mined_datasets(run: Any, folder: Path) -> dict[str, Any]:
    """The mined training sets, from ``folder`` or mined now (and saved there)."""
    from datasets import load_from_disk

    from bertino_rag.training.train import mine_datasets

    if (folder / "done").exists():
        return {name: load_from_disk(str(folder / name)) for name in ("retrieval", "sts")
                if (folder / name).exists()}
    datasets, info = mine_datasets(run)
    for name, ds in datasets.items():
        ds.save_to_disk(str(folder / name))
    (folder / "done").write_text(json.dumps(info) + "\n", encoding="utf-8")
    return datasets


def time_variant(cfg: Any, mined_dir: Path, out: Path, warmup: int) -> dict[str, Any]:
    from bertino_rag.training.train import prepared_run
    from bertino_rag.training.trainer import build_trainer, step_timer

    run = prepared_run(cfg)
    datasets = mined_datasets(run, mined_dir)
    timer = step_timer()
    built = build_trainer(cfg, run.model, datasets, out=out, device=run.device,
                          precision=run.precision, mini=run.mini, dims=run.dims,
                          weights=run.weights, callbacks=[timer])
    full_length = run.model.max_seq_length
    run.model.max_seq_length = run.train_length
    try:
        built.trainer.train()
    finally:
        run.model.max_seq_length = full_length
    tasks = built.trainer.task_order
    per_task: dict[str, list[float]] = {}
    for n, (task, seconds) in enumerate(zip(tasks, timer.seconds, strict=False)):
        if n >= warmup:
            per_task.setdefault(task, []).append(seconds)
    batch = cfg.batch_size
    batches = {name: math.ceil(len(ds) / batch) for name, ds in datasets.items()}
    median = {task: statistics.median(v) for task, v in per_task.items()}
    epoch = sum(batches[t] * median[t] for t in batches if t in median)
    return {
        "precision": run.precision, "threads": run.threads, "mini_batch_size": run.mini,
        "train_length": run.train_length, "length_stats": run.length_stats,
        "pretokenize": cfg.pretokenize, "step_seconds": per_task,
        "median_step_seconds": {t: round(v, 2) for t, v in median.items()},
        "steps_per_second": round(len(median) / sum(median.values()), 4) if median else None,
        "epoch_batches": batches, "epoch_minutes": round(epoch / 60, 1),
        "warmup_seconds": [round(s, 2) for s in timer.seconds[:warmup]],
    }


def eval_cost(cfg: Any, queries: int) -> dict[str, Any]:
    """Seconds of the dev evaluation during training (all dev queries and a subset) and of the
    STS dev evaluation of the before/after tables, on the base model."""
    from bertino_rag.training.data import subset_queries
    from bertino_rag.training.evaluate import evaluate_dims
    from bertino_rag.training.train import prepared_run

    run = prepared_run(cfg)
    out: dict[str, Any] = {"dev_queries": len(run.dev.queries), "dev_corpus": len(run.dev.corpus)}
    subset = subset_queries(run.dev, queries, seed=cfg.seed)
    for name, dev, sts in (("dev, every query", run.dev, None),
                           (f"dev, {len(subset.queries)} queries", subset, None),
                           ("STS dev", None, run.sts_dev)):
        t0 = time.perf_counter()
        evaluate_dims(run.model, dev, sts, [run.best_dim] if dev else run.dims,
                      rescore_k=cfg.rescore_k if dev else None, batch_size=cfg.eval_batch_size)
        out[name] = round(time.perf_counter() - t0, 1)
    if run.sts_dev:
        out["sts_pairs"] = len(run.sts_dev)
    return out


def _cpu_name() -> str:
    """The CPU's model name (Linux), or the platform's processor string."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base-model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--data", default=os.environ.get("BERTINO_DATA", str(DATA)))
    ap.add_argument("--train-data", default=None,
                    help="a BEIR folder instead of DATA/squad-it-dev (a smaller one to try)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=4, help="timed steps (half of each task)")
    ap.add_argument("--warmup", type=int, default=2, help="steps left out of the timing")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--again", action="store_true", help="run variants already in speed.json")
    ap.add_argument("--eval-cost", action="store_true")
    ap.add_argument("--eval-queries", type=int, default=200)
    args = ap.parse_args()

    import torch

    from bertino_rag.training import TrainConfig

    logging.basicConfig(level=logging.WARNING)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(args.data)
    base = TrainConfig(
        base_model=args.base_model, train_data=args.train_data or str(data / "squad-it-dev"),
        sts_data=str(data / "stsb-it" / "train.csv"),
        sts_dev_data=str(data / "stsb-it" / "dev.csv"), dev_fraction=0.1,
        output_dir=str(out / "run"), device="cpu", precision="fp32", mini_batch_size=16,
        batch_size=args.batch_size, multi_dataset_sampler="round_robin", sort_by_length=False,
        max_steps=args.warmup + args.steps, logging_steps=10_000, evaluate_before=False)
    default_threads = torch.get_num_threads()
    path = out / "speed.json"
    results: dict[str, Any] = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    from bertino_rag.training.hardware import cpu_bf16_supported

    results["machine"] = {"cpu": _cpu_name(), "bf16_instructions": cpu_bf16_supported(),
                          "cpus": os.cpu_count(), "torch_threads_default": default_threads,
                          "torch": torch.__version__,
                          "load_average_before": os.getloadavg()}
    for name in args.variants:
        if name in results and not args.again:
            continue
        torch.set_num_threads(default_threads)
        cfg = replace(base, **settings(name))
        t0 = time.perf_counter()
        results[name] = {"parent": VARIANTS[name][0], "change": VARIANTS[name][1],
                         **time_variant(cfg, out / "mined", out / "run", args.warmup),
                         "seconds": round(time.perf_counter() - t0),
                         "load_average_after": os.getloadavg()}
        path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(name, results[name]["median_step_seconds"], results[name]["epoch_minutes"],
              flush=True)
    torch.set_num_threads(default_threads)
    if args.eval_cost:
        results["eval_cost"] = eval_cost(base, args.eval_queries)
        path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(table(results))


def table(results: dict[str, Any]) -> str:
    """The Markdown table of docs/training.md."""
    lines = ["| variant | change (from its parent) | precision | threads | mini-batch | length "
             "| retrieval step s | STS step s | steps/s | epoch min (est.) | × baseline "
             "| × parent |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    base = results.get("baseline")
    for name, r in results.items():
        if name not in VARIANTS:
            continue
        parent = results.get(r["parent"]) if r["parent"] else None
        med = r["median_step_seconds"]
        change = ", ".join(f"{k}={v}" for k, v in r["change"].items()) or "(fp32, torch defaults)"

        def ratio(other: dict[str, Any] | None, r: dict[str, Any] = r) -> str:
            if not other or not other.get("epoch_minutes") or not r.get("epoch_minutes"):
                return ""
            return f"{other['epoch_minutes'] / r['epoch_minutes']:.2f}"

        lines.append(
            f"| {name} | {change} | {r['precision']} | {r['threads']} | {r['mini_batch_size']} "
            f"| {r['train_length']} | {med.get('retrieval', '')} | {med.get('sts', '')} "
            f"| {r['steps_per_second']} | {r['epoch_minutes']} | {ratio(base)} "
            f"| {ratio(parent)} |")
    cost = results.get("eval_cost")
    if cost:
        lines.append("\nEvaluation cost (s, base model, float32): " + ", ".join(
            f"{k} {v}" for k, v in cost.items()))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
