"""Training a cross-encoder reranker on the user's own pairs: ``bertino-rag train --task rerank``.

The recipe:

1. the pairs are split by whole source documents (articles) as the bi-encoder recipe splits
   them (:func:`~.train.split_data`): training, dev (checkpoint selection) and optional test;
2. hard negatives are mined from the training documents by the library's own hybrid retriever
   (BM25 + the ``mine_model`` bi-encoder, fused), the candidates the reranker will see when it
   serves: for each query, hits ranked ``neg_range_min`` to ``neg_range_max`` that are not its
   positives and whose cosine with the query is below ``(1 - neg_relative_margin)`` times the
   positive's (the rank window and the margin keep unlabeled relevant passages out, as in
   :func:`~.data.mine_negatives`);
3. a one-label cross-encoder on ``base_model`` is trained with sentence-transformers'
   ``CrossEncoderTrainer`` and ``BinaryCrossEntropyLoss`` (positives weighted by the number of
   negatives), the best checkpoint picked by ``CrossEncoderRerankingEvaluator``'s NDCG@10 on
   the dev articles' hybrid top ``rerank_top``;
4. the blend weight (:func:`~bertino_rag.search.rerank.blend`) that ranks the dev articles'
   hybrid top ``rerank_top`` best is stored in the model folder
   (:data:`~bertino_rag.rerank.cross_encoder.WEIGHT_FILE`), which ``CrossEncoderReranker``
   serves with by default;
5. the report (``metrics.json``, the card's layout: before, after, blend, test, training, data,
   config) holds hybrid alone and hybrid + reranker on the dev (and test) articles.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

from ..errors import TrainingDataError, TruncationWarning
from ..evaluation.rerank import best_weight, blend_curve, evaluate_reranking, rerank_markdown
from .base_model import check_base_model
from .config import TrainConfig
from .data import RetrievalSet, subset_queries
from .evaluate import to_eval_set
from .hardware import (
    attention_dropout_kwargs,
    end_autocast,
    loop_settings,
    resolve_precision,
    set_threads,
    warmup_kwargs,
)
from .train import _require_deps, resolve_device, split_data

__all__ = ["hybrid_retriever", "mine_rerank_pairs", "train_reranker"]

logger = logging.getLogger(__name__)


def hybrid_retriever(encoder: Any, data: RetrievalSet, name: str) -> Any:
    """A hybrid retriever over ``data``'s documents, stored whole (one hit per labelled
    document; a long one is embedded from its beginning, BM25 reads it whole)."""
    from ..retriever import Retriever

    r = Retriever(dim=encoder.full_dim, encoder=encoder, hybrid=True, chunking=False,
                  collection=name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        r.index([{"id": d, "text": t} for d, t in data.corpus.items()], show_progress_bar=False)
    return r


def mine_rerank_pairs(retriever: Any, data: RetrievalSet, cfg: TrainConfig) -> dict[str, list]:
    """(query, passage, label) rows: each training pair's positive (1.0) and up to
    ``num_negatives`` hard negatives (0.0) from ``retriever``'s hybrid ranking (see the module
    docstring).

    Raises:
        TrainingDataError: no query kept a negative (the window or margin let none through).
    """
    rng = random.Random(cfg.seed)
    relevant = data.relevant
    queries = data.queries
    qids = list(queries)
    texts = [queries[q] for q in qids]
    rows: dict[str, list] = {"query": [], "text": [], "label": []}
    qvecs = retriever.encoder.encode(texts, kind="query", warn_truncation=False,
                                     show_progress_bar=False).full
    kept = 0
    step = 64
    for start in range(0, len(qids), step):
        hits = retriever.search_batch(texts[start:start + step], k=cfg.neg_range_max,
                                      mode="hybrid", reranker=False)
        for j, found in enumerate(hits):
            qid = qids[start + j]
            positives = relevant[qid]
            same = {data.corpus[d] for d in positives}  # a positive's duplicate is no negative
            window = [h for h in found[cfg.neg_range_min:]
                      if h.id not in positives and h.text not in same]
            if window and cfg.neg_relative_margin is not None:
                vecs = retriever.store.fetch_full([*positives, *(h.id for h in window)])
                sims = vecs @ qvecs[start + j]
                ceiling = (1.0 - cfg.neg_relative_margin) * float(sims[:len(positives)].min())
                window = [h for h, s in zip(window, sims[len(positives):], strict=True)
                          if s < ceiling]
            if cfg.neg_sampling == "random":
                picked = rng.sample(window, min(cfg.num_negatives, len(window)))
            else:
                picked = window[:cfg.num_negatives]
            if not picked:
                continue
            kept += 1
            for doc in sorted(positives):
                rows["query"].append(queries[qid])
                rows["text"].append(data.corpus[doc])
                rows["label"].append(1.0)
            for h in picked:
                rows["query"].append(queries[qid])
                rows["text"].append(h.text)
                rows["label"].append(0.0)
    if not kept:
        raise TrainingDataError(
            f"hard-negative mining kept none of {len(qids)} queries: no hybrid hit passed the "
            f"rank window [{cfg.neg_range_min}, {cfg.neg_range_max}) and relative margin "
            f"{cfg.neg_relative_margin}; widen the window or lower neg_relative_margin")
    logger.info("mining: %d of %d queries kept, %d rows", kept, len(qids), len(rows["label"]))
    return rows


def _dev_samples(retriever: Any, dev: RetrievalSet, top: int) -> list[dict[str, Any]]:
    """CrossEncoderRerankingEvaluator samples: each dev query's hybrid top ``top`` (ranked
    documents, the positives only where retrieved: the realistic setting)."""
    queries = dev.queries
    qids = list(queries)
    hits = retriever.search_batch([queries[q] for q in qids], k=top, mode="hybrid",
                                  reranker=False)
    rel = dev.relevant
    return [{"query": queries[q], "positive": [dev.corpus[d] for d in sorted(rel[q])],
             "documents": [h.text for h in found]} for q, found in zip(qids, hits, strict=True)]


def _report(retriever: Any, data: RetrievalSet, reranker: Any, top: int) -> dict[str, Any]:
    rows = evaluate_reranking(retriever, to_eval_set(data), reranker, tops=(top,))
    return {"rows": [r.to_dict() for r in rows], "table": rerank_markdown(rows)}


def train_reranker(config: TrainConfig, *, callbacks: list[Any] | None = None) -> Path:
    """Train a cross-encoder reranker (see the module docstring); returns its folder, which
    ``Retriever(reranker=FOLDER)`` serves. ``callbacks``: more ``transformers``
    ``TrainerCallback``s (e.g. one that stops at a time budget).

    Raises:
        ImportError: ``datasets``/``accelerate`` missing (names the ``train`` extra).
        ValueError: a bad config value or unusable data, before any long step.
    """
    _require_deps()
    import torch
    from datasets import Dataset
    from sentence_transformers.cross_encoder import (
        CrossEncoder,
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
    )
    from sentence_transformers.cross_encoder.evaluation import CrossEncoderRerankingEvaluator
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    from ..encoder import make_encoder
    from ..rerank.cross_encoder import CrossEncoderReranker, store_weight

    started = time.perf_counter()
    cfg = config
    cfg.validate()
    if cfg.train_data is None:
        raise ValueError("train_data is required: a BEIR folder, .jsonl or .csv of pairs")
    check_base_model(cfg.base_model)
    device = resolve_device(cfg.device)
    dropout_kwargs, settle_dropout = attention_dropout_kwargs(cfg.base_model,
                                                              cfg.attention_dropout, device)
    precision = resolve_precision(device, cfg.precision, cfg.fp16)
    threads = set_threads(cfg.threads)
    train_set, dev, test = split_data(cfg)
    out = Path(cfg.output_dir)

    encoder = make_encoder(cfg.mine_model or cfg.base_model, device=device,
                           batch_size=cfg.eval_batch_size)
    t_mine = time.perf_counter()
    miner = hybrid_retriever(encoder, train_set, "rerank_train")
    rows = mine_rerank_pairs(miner, train_set, cfg)
    miner.close()
    dev_retriever = hybrid_retriever(encoder, dev, "rerank_dev")
    # a reranker reads rerank_top passages per query: the dev evaluations during training and
    # in the report use eval_max_queries of the dev queries (all of the dev documents)
    dev_eval = subset_queries(dev, cfg.eval_max_queries, cfg.seed)
    samples = _dev_samples(dev_retriever, dev_eval, cfg.rerank_top)
    mine_seconds = time.perf_counter() - t_mine

    model = CrossEncoder(cfg.base_model, num_labels=1, max_length=cfg.max_seq_length,
                         device=device, config_kwargs=dropout_kwargs)
    settle_dropout(model.model.config)
    base_is_reranker = any(a.endswith("ForSequenceClassification")
                           for a in (model.model.config.architectures or []))
    before = (_report(dev_retriever, dev_eval, CrossEncoderReranker(model), cfg.rerank_top)
              if cfg.evaluate_before and base_is_reranker else None)
    evaluator = CrossEncoderRerankingEvaluator(samples, at_k=10, always_rerank_positives=False,
                                               name="dev", batch_size=cfg.eval_batch_size,
                                               write_csv=False)
    loss = BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(float(cfg.num_negatives)))
    args = CrossEncoderTrainingArguments(
        output_dir=str(out / "checkpoints"), num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1, per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size, learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay, lr_scheduler_type=cfg.lr_scheduler,
        eval_strategy="steps", eval_steps=cfg.eval_steps, save_strategy="steps",
        save_steps=cfg.eval_steps, save_total_limit=cfg.save_total_limit,
        load_best_model_at_end=True, metric_for_best_model="eval_dev_ndcg@10",
        greater_is_better=True, logging_steps=cfg.logging_steps, seed=cfg.seed,
        use_cpu=device == "cpu", report_to=[], disable_tqdm=True,
        **warmup_kwargs(cfg.warmup_ratio), **loop_settings(device, precision))
    trainer = CrossEncoderTrainer(model=model, args=args,
                                  train_dataset=Dataset.from_dict(rows), loss=loss,
                                  evaluator=evaluator, callbacks=callbacks)
    logger.info("training reranker %s on %s (%s, %d threads): %d rows, batch %d, lr %g, %s",
                cfg.base_model, device, precision, threads, len(rows["label"]), cfg.batch_size,
                cfg.learning_rate,
                f"max_steps {cfg.max_steps}" if cfg.max_steps else f"{cfg.epochs:g} epochs")
    t0 = time.perf_counter()
    try:
        trainer.train()
    finally:
        end_autocast(trainer)
    train_seconds = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    reranker = CrossEncoderReranker(model)
    after = _report(dev_retriever, dev_eval, reranker, cfg.rerank_top)
    logger.info("after training, dev articles:\n%s", after["table"])
    # the share of the reranker's score (blended with hybrid's) that ranks the dev articles
    # best, stored with the model: CrossEncoderReranker(OUT) serves with it
    curve = blend_curve(dev_retriever, to_eval_set(dev_eval), reranker, cfg.rerank_top)
    weight = best_weight(curve)
    blend_report = {"weight": weight, "chosen_on": "dev articles, NDCG@10",
                    "rerank_top": cfg.rerank_top,
                    "curve": {str(w): m for w, m in curve.items()}}
    store_weight(out, blend_report)
    logger.info("reranker weight %.1f (NDCG@10 on the dev articles: %s)", weight,
                ", ".join(f"{w}: {m['ndcg@10']:.4f}" for w, m in curve.items()))
    dev_retriever.close()
    test_report = None
    if test is not None:
        test_retriever = hybrid_retriever(encoder, test, "rerank_test")
        # the test articles see the reranker as it serves: at the weight chosen on the dev ones
        test_report = _report(test_retriever, subset_queries(test, cfg.eval_max_queries,
                                                             cfg.seed),
                              CrossEncoderReranker(model, weight=weight), cfg.rerank_top)
        test_report["weight"] = weight
        test_retriever.close()
    state = trainer.state
    n_train = sum(1 for label in rows["label"] if label == 1.0)
    metrics = {
        "task": "rerank",
        "base_model": cfg.base_model,
        "mine_model": cfg.mine_model or cfg.base_model,
        "rerank_top": cfg.rerank_top,
        "before": before,
        "after": after,
        "blend": blend_report,
        "test": test_report,
        "training": {
            "device": device, "precision": precision, "threads": threads,
            "loss": type(loss).__name__, "steps": state.global_step,
            "epochs": round(float(state.epoch or 0), 3),
            "mine_seconds": round(mine_seconds, 1),
            "train_seconds": round(train_seconds, 1),
            "wall_seconds": round(time.perf_counter() - started, 1),
            "best_checkpoint": state.best_model_checkpoint,
            "best_metric": state.best_metric,
            "log": [e for e in state.log_history if "loss" in e or "eval_dev_ndcg@10" in e],
        },
        "data": {
            "train_pairs": len(train_set), "train_corpus": len(train_set.corpus),
            "train_rows": len(rows["label"]), "train_positives": n_train,
            "dev_pairs": len(dev), "dev_corpus": len(dev.corpus),
            "dev_sources": sorted({p.source for p in dev.pairs}),
            "dev_queries_during_training": len(samples),
            **({"test_pairs": len(test), "test_sources": sorted({p.source for p in test.pairs})}
               if test is not None else {}),
        },
        "config": cfg.to_dict(),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n",
                                      encoding="utf-8")
    if not cfg.keep_checkpoints:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return out
