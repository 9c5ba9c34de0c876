"""The model card's recipe written with plain sentence-transformers: the baseline that
``bertino-rag train`` is compared with on the same card (``benchmarks/gpu_train_compare.sh``).

Data, as in issue 17: squad-it-dev (query, paragraph) pairs of the training articles with 2
dense-mined hard negatives (``mine_hard_negatives`` with its defaults: the 2 nearest
non-positive paragraphs) + STS-B-it train resampled to the same size; MatryoshkaLoss dims
[384, 256, 128, 64] weights [1, .4, .2, .2] around CachedMultipleNegativesRankingLoss
(mini-batch 16) and CoSENTLoss; batch 128, 4 epochs, lr 1e-5, cosine, 10% warmup, weight decay
0.01, fp16 on CUDA, no-duplicates batches, the proportional multi-dataset sampler.

The held-apart articles are chosen by ``bertino_rag.training``'s splitter, so both runs train
and evaluate on exactly the same articles; everything else is sentence-transformers' own. A base
with ``query``/``document`` prompts (multilingual-e5-small exported by ``bertino-rag export-e5``:
``query: `` and ``passage: ``) gets them the sentence-transformers way, as its model card asks:
``mine_hard_negatives(query_prompt_name=..., corpus_prompt_name=...)`` and the training
arguments' ``prompts`` (queries: the query prompt; paragraphs and STS sentences: the document
prompt, as the evaluation encodes them).
Before/after metrics come from ``bertino_rag.training.evaluate.evaluate_dims``, the function
``bertino-rag train`` reports with, so the figures compare. ``metrics.json`` has the layout of
``bertino-rag train``'s.

Usage:
    python benchmarks/train_plain_recipe.py --base-model E5_OR_MINILM --data DATA/squad-it-dev \\
        --sts-train DATA/stsb-it/train.csv --sts-dev DATA/stsb-it/dev.csv --output-dir OUT
    (--max-steps 2 --batch-size 16 --max-seq-length 64 for a smoke run on CPU)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def _losses():
    try:  # sentence-transformers >= 5.5 / 6.x
        from sentence_transformers.sentence_transformer import losses
    except ImportError:
        from sentence_transformers import losses
    return losses


def _evaluation():
    try:
        from sentence_transformers.sentence_transformer import evaluation
    except ImportError:
        from sentence_transformers import evaluation
    return evaluation


def _warmup(ratio: float) -> dict:
    import transformers

    if int(transformers.__version__.split(".")[0]) >= 5:
        return {"warmup_steps": ratio}  # transformers 5: a float below 1 is a share
    return {"warmup_ratio": ratio}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base-model", required=True)
    ap.add_argument("--data", required=True, help="the BEIR folder (squad-it-dev)")
    ap.add_argument("--sts-train", required=True)
    ap.add_argument("--sts-dev", default=None)
    ap.add_argument("--output-dir", required=True)
    ap.add_argument("--dev-fraction", type=float, default=0.2)
    ap.add_argument("--test-fraction", type=float, default=0.0)
    ap.add_argument("--dims", type=int, nargs="+", default=[384, 256, 128, 64])
    ap.add_argument("--weights", type=float, nargs="+", default=[1.0, 0.4, 0.2, 0.2])
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--mini-batch-size", type=int, default=16)
    ap.add_argument("--epochs", type=float, default=4.0)
    ap.add_argument("--max-steps", type=int, default=-1)
    ap.add_argument("--learning-rate", type=float, default=1e-5)
    ap.add_argument("--max-seq-length", type=int, default=None)
    ap.add_argument("--eval-steps", type=int, default=250)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--attention-dropout", type=float, default=None,
                    help="attention dropout while training (default: the model's own); 0 is "
                         "the CPU speed setting of bertino-rag train, to compare the recipes "
                         "at the same speed")
    ap.add_argument("--bf16", action="store_true",
                    help="bf16 autocast (sentence-transformers' own flag; also on CPU)")
    args = ap.parse_args()

    import torch
    from datasets import Dataset, DatasetDict
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.util import mine_hard_negatives

    from bertino_rag.data import load_sts
    from bertino_rag.training.config import TrainConfig
    from bertino_rag.training.evaluate import evaluate_dims, format_table
    from bertino_rag.training.train import split_data

    started = time.perf_counter()
    cuda = torch.cuda.is_available()
    out = Path(args.output_dir)
    torch.manual_seed(args.seed)
    from bertino_rag.training.hardware import attention_dropout_kwargs

    device = "cuda" if cuda else "cpu"
    dropout_kwargs, settle_dropout = attention_dropout_kwargs(args.base_model,
                                                              args.attention_dropout, device)
    model = SentenceTransformer(args.base_model, device=device, config_kwargs=dropout_kwargs)
    settle_dropout(model[0].auto_model.config)  # the saved config keeps the base's value
    if args.max_seq_length:
        model.max_seq_length = args.max_seq_length

    # the same held-apart articles as bertino-rag train with these fractions and seed
    train_set, dev, test = split_data(TrainConfig(
        train_data=args.data, dev_fraction=args.dev_fraction, test_fraction=args.test_fraction,
        seed=args.seed))
    pairs = Dataset.from_dict({"anchor": [p.query for p in train_set.pairs],
                               "positive": [train_set.corpus[p.doc_id] for p in train_set.pairs]})
    prompts = model.prompts or {}
    query_prompt, doc_prompt = prompts.get("query"), prompts.get("document")
    mined = mine_hard_negatives(pairs, model, corpus=list(train_set.corpus.values()),
                                num_negatives=2, output_format="n-tuple", batch_size=64,
                                query_prompt_name="query" if query_prompt else None,
                                corpus_prompt_name="document" if doc_prompt else None)
    column_prompts = None
    if query_prompt or doc_prompt:
        column_prompts = {
            "retrieval": {c: (query_prompt if c == "anchor" else doc_prompt) or ""
                          for c in mined.column_names},
            "sts": {"sentence1": doc_prompt or "", "sentence2": doc_prompt or ""}}
    sts = load_sts(args.sts_train)
    rng = np.random.default_rng(args.seed)
    idx = rng.choice(len(sts), size=len(mined), replace=len(mined) > len(sts))
    sts_rows = Dataset.from_dict({"sentence1": [sts[int(i)].sentence1 for i in idx],
                                  "sentence2": [sts[int(i)].sentence2 for i in idx],
                                  "score": [sts[int(i)].score / 5.0 for i in idx]})
    sts_dev = load_sts(args.sts_dev) if args.sts_dev else None

    before = evaluate_dims(model, dev, sts_dev, args.dims, rescore_k=100, funnel_dims=[128])
    test_before = evaluate_dims(model, test, None, args.dims, rescore_k=100,
                                funnel_dims=[128]) if test else None

    L = _losses()
    loss = {
        "retrieval": L.MatryoshkaLoss(model, L.CachedMultipleNegativesRankingLoss(
            model, mini_batch_size=args.mini_batch_size), args.dims, args.weights),
        "sts": L.MatryoshkaLoss(model, L.CoSENTLoss(model), args.dims, args.weights),
    }
    eval_seconds = [0.0]

    class TimedEvaluator(_evaluation().InformationRetrievalEvaluator):  # type: ignore[misc]
        """The plain evaluator, timing itself so that speed excludes the dev evaluations."""

        def __call__(self, *a, **kw):
            t = time.perf_counter()
            try:
                return super().__call__(*a, **kw)
            finally:
                eval_seconds[0] += time.perf_counter() - t

    evaluator = TimedEvaluator(
        queries=dev.queries, corpus=dev.corpus, relevant_docs=dev.relevant, name="dev_128",
        truncate_dim=128, ndcg_at_k=[10], map_at_k=[100], write_csv=False)
    targs = SentenceTransformerTrainingArguments(
        output_dir=str(out / "checkpoints"), num_train_epochs=args.epochs,
        max_steps=args.max_steps, per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate, lr_scheduler_type="cosine", weight_decay=0.01,
        fp16=cuda and not args.bf16, bf16=args.bf16, use_cpu=not cuda,
        batch_sampler="no_duplicates",
        multi_dataset_batch_sampler="proportional", eval_strategy="steps",
        eval_steps=args.eval_steps, save_strategy="steps", save_steps=args.eval_steps,
        save_total_limit=2, load_best_model_at_end=True,
        metric_for_best_model="eval_dev_128_cosine_ndcg@10", logging_steps=10, seed=args.seed,
        report_to="none", **({"prompts": column_prompts} if column_prompts else {}),
        **_warmup(0.1))
    trainer = SentenceTransformerTrainer(
        model=model, args=targs, train_dataset=DatasetDict({"retrieval": mined, "sts": sts_rows}),
        loss=loss, evaluator=evaluator)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    trainer.train()
    if cuda:
        torch.cuda.synchronize()
    train_seconds = time.perf_counter() - t0
    loop_seconds = max(train_seconds - eval_seconds[0], 1e-9)
    steps = trainer.state.global_step
    examples = steps * args.batch_size  # an upper bound: no-duplicates batches may be short
    after = evaluate_dims(model, dev, sts_dev, args.dims, rescore_k=100, funnel_dims=[128])
    test_after = evaluate_dims(model, test, None, args.dims, rescore_k=100,
                               funnel_dims=[128]) if test else None
    out.mkdir(parents=True, exist_ok=True)
    model.save(str(out))
    metrics = {
        "recipe": "plain sentence-transformers", "base_model": args.base_model,
        "dims": args.dims, "weights": args.weights, "best_dim": 128,
        "before": before, "after": after,
        "test": {"before": test_before, "after": test_after} if test else None,
        "training": {
            "device": "cuda" if cuda else "cpu",
            "gpu": torch.cuda.get_device_name() if cuda else None,
            "precision": "bf16" if args.bf16 else "fp16" if cuda else "fp32",
            "attention_dropout": args.attention_dropout,
            "mini_batch_size": args.mini_batch_size, "prompts": column_prompts,
            "retrieval_loss": "CachedMultipleNegativesRankingLoss", "steps": steps,
            "epochs": round(float(trainer.state.epoch or 0), 3),
            "train_seconds": round(train_seconds, 1), "eval_seconds": round(eval_seconds[0], 1),
            "steps_per_second": round(steps / loop_seconds, 4),
            "examples_per_second": round(examples / loop_seconds, 2),
            "examples_counted": "steps x batch size (upper bound)",
            "peak_gpu_bytes": int(torch.cuda.max_memory_allocated()) if cuda else None,
            "wall_seconds": round(time.perf_counter() - started, 1),
            "best_checkpoint": trainer.state.best_model_checkpoint,
            "best_metric": trainer.state.best_metric,
        },
        "data": {"train_pairs": len(train_set), "mined_tuples": len(mined),
                 "dev_queries": len(dev.queries), "dev_corpus": len(dev.corpus),
                 "dev_sources": sorted({p.source for p in dev.pairs})},
        "config": vars(args),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n",
                                      encoding="utf-8")
    print(format_table(after, before))
    print(f"saved {out}: {steps} steps, {metrics['training']['steps_per_second']} steps/s")


if __name__ == "__main__":
    main()
