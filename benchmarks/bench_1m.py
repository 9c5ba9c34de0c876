"""A million documents on one machine: MemoryStore exact, MemoryStore's binary first stage and
Qdrant Edge on realistic vectors (issue 30).

    python benchmarks/bench_1m.py --n 1000000 --queries 1000 --check

On an idle 2-core machine the first run takes about half an hour, most of it Edge's HNSW
build (about 10 minutes at 1M) and, once, the encoding of the sentence windows (6,000 at ~23/s);
a second run reuses everything built and only searches. ``--stores memory`` or ``--stores
edge`` runs one side; ``--ef 0 400 800`` adds Edge search beams, ``--candidates`` the
MemoryStore binary variants.

Vectors: ``_realistic.py`` (real MiniLM vectors of squad-it-dev sentence windows plus measured
local noise, the 1,128 paragraphs planted under their own ids, the questions as queries). Every
expensive step is cached under ``--cache`` and reused by the next run: the encoded windows, the
generated vectors (float16), the exact two-stage truth, and each store's built collection
(``memory-N/``, ``edge-N/``, with the build time recorded beside it); ``--rebuild`` starts the
stores again.

For each store, in its own process (its memory is its own): build time (upsert of every point
in batches of 10,000; for Edge also the HNSW build), then single queries, two-stage (128-d
first stage, ``--rescore-k`` rescored with the 384-d full vectors, top 10): p50/p95 ms, recall@10
against the exact two-stage result (numpy, float32), NDCG@10 of the questions with
squad-it-dev's relevance (with ``--held-apart``, the questions of half the articles among
points generated from the other half; the same questions over the planted paragraphs alone
give the NDCG@10 the generated points are measured against). The variants of a store
(MemoryStore exact and binary at each ``--candidates``; Edge's prefetch and numpy rescoring,
at each ``--ef``) search the same folder in one process, interleaved query by query, so they
share the machine's state; for Edge, each query also runs single-stage with ``k=10`` and
``k=rescore_k`` (the graph search of the prefetch alone, with the ids of its hits), to tell the
graph from the rescoring. Then each variant alone in a fresh process answers
``--rss-queries`` queries: its RSS above the process's baseline (memory-mapped pages touched
included). Disk per point: the collection folder's allocated blocks over the points
(MemoryStore: with and without the binary stage's sign files).

``--check`` also compares generated vectors with held-out real ones (nearest-neighbour
similarities, recall of a sign-code first stage). Prints one JSON line per result and a
markdown table; writes them to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import _realistic as R  # noqa: E402
from bench_edge import rss_mb  # noqa: E402

BATCH = 10_000


def du(path: Path, skip: str | None = None) -> int:
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*")
               if f.is_file() and (skip is None or skip not in f.name))


# ----------------------------------------------------------------------------- the data


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    """Generate (or reuse) the vectors, the queries and the exact two-stage truth."""
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    squad = R.squad_data(Path(args.squad_cache))
    planted = len(squad["doc_ids"])
    tag = f"{args.n}-w{args.windows}" + ("-apart" if args.held_apart else "")
    keep, asked = None, np.arange(len(squad["qids"]))
    if args.held_apart:  # seeds from half the articles, questions from the other half
        seed_titles, query_titles = R.held_apart(squad["doc_ids"])
        keep = {p for p, d in enumerate(squad["doc_ids"])
                if d.rsplit("#", 1)[0] in seed_titles}
        asked = np.asarray([i for i, q in enumerate(squad["qids"])
                            if all(d.rsplit("#", 1)[0] in query_titles
                                   for d in squad["qrels"][q])], dtype=np.int64)
    asked = asked[: args.queries]
    vec_path, meta_path = cache / f"vectors-{tag}.npy", cache / f"vectors-{tag}.json"
    if not meta_path.exists():
        t0 = time.perf_counter()
        windows = R.window_vectors(cache, args.windows, squad["texts"], keep)
        seeds = windows if len(windows) else squad["docs"]
        noise = R.calibrate(seeds)
        gen = R.Generator(seeds, noise)
        out = np.lib.format.open_memmap(vec_path, mode="w+", dtype=np.float16,
                                        shape=(args.n, squad["docs"].shape[1]))
        out[:planted] = squad["docs"]
        rng = np.random.default_rng(0)
        for s in range(planted, args.n, 100_000):
            stop = min(args.n, s + 100_000)
            out[s:stop] = gen.sample(stop - s, rng)
        out.flush()
        del out
        meta = {"n": args.n, "planted": planted, "seeds": len(seeds), "noise": noise,
                "generate_s": round(time.perf_counter() - t0, 1)}
        meta_path.write_text(json.dumps(meta))
        if args.check:
            print(json.dumps({"check": R.check(seeds, noise, squad["queries"][asked[:200]])}),
                  flush=True)
    meta = json.loads(meta_path.read_text())
    full = np.load(vec_path, mmap_mode="r")
    queries = squad["queries"][asked]
    qids = [squad["qids"][i] for i in asked]
    truth_path = cache / f"truth-{tag}-q{len(asked)}-r{args.rescore_k}.npy"
    if not truth_path.exists():
        t0 = time.perf_counter()
        truth = exact_two_stage(full, queries, args.rescore_k)
        np.save(truth_path, truth)
        meta["truth_s"] = round(time.perf_counter() - t0, 1)
    return {"meta": meta, "full": full, "queries": queries, "qids": qids,
            "truth": np.load(truth_path), "squad": squad, "vec_path": vec_path, "tag": tag}


def exact_two_stage(full: np.ndarray, queries: np.ndarray, rescore_k: int) -> np.ndarray:
    """Rows of the exact two-stage top 10 per query: the ``rescore_k`` best at the index dim
    (float32), rescored with the full vectors (float16 as stored, in float32)."""
    qi = R.index_of(queries)
    best_s = np.full((len(qi), 0), -np.inf, dtype=np.float32)
    best_r = np.zeros((len(qi), 0), dtype=np.int64)
    for s in range(0, len(full), 100_000):
        block = R.index_of(np.asarray(full[s:s + 100_000], dtype=np.float32))
        scores = qi @ block.T
        top = np.argpartition(-scores, rescore_k, axis=1)[:, :rescore_k]
        best_s = np.concatenate([best_s, np.take_along_axis(scores, top, axis=1)], axis=1)
        best_r = np.concatenate([best_r, top + s], axis=1)
        sel = np.argpartition(-best_s, rescore_k - 1, axis=1)[:, :rescore_k]
        best_s = np.take_along_axis(best_s, sel, axis=1)
        best_r = np.take_along_axis(best_r, sel, axis=1)
    out = np.zeros((len(qi), 10), dtype=np.int64)
    for q in range(len(qi)):
        rows = np.sort(best_r[q])
        scores = np.asarray(full[rows], dtype=np.float32) @ queries[q].astype(np.float32)
        out[q] = rows[np.argsort(-scores, kind="stable")[:10]]
    return out


def planted_only_ndcg(data: dict[str, Any], rescore_k: int) -> float:
    """NDCG@10 of the same questions over the planted paragraphs alone (exact two-stage): what
    the generated points cost. Computed once, by the parent process."""
    from bertino_rag.evaluation.metrics import ir_metrics

    planted = data["meta"]["planted"]
    alone = exact_two_stage(np.asarray(data["full"][:planted]), data["queries"], rescore_k)
    return round(ir_metrics([[(doc_id(int(r), data), -i) for i, r in enumerate(row)]
                             for row in alone], data["qids"], data["squad"]["qrels"])["ndcg@10"],
                 4)


def doc_id(row: int, data: dict[str, Any]) -> str:
    planted = data["meta"]["planted"]
    return data["squad"]["doc_ids"][row] if row < planted else f"g{row}"


# --------------------------------------------------------------------------- the stores


def open_store(kind: str, variant: str, folder: Path, args: argparse.Namespace) -> Any:
    if kind == "memory":
        from bertino_rag.stores import MemoryStore

        if variant == "exact":
            return MemoryStore(folder, first_stage="exact")
        return MemoryStore(folder, first_stage="binary",
                           binary_candidates=int(variant.split(":")[1]))
    from bertino_rag.stores.qdrant.edge import QdrantEdgeStore

    two_stage, _, ef = variant.partition(":")
    return QdrantEdgeStore(folder, two_stage=two_stage,  # type: ignore[arg-type]
                           hnsw_ef=int(ef) if ef else None, hnsw_m=args.edge_m,
                           hnsw_ef_construct=args.edge_ef_construct)


def variants(kind: str, args: argparse.Namespace) -> list[str]:
    if kind == "memory":
        return ["exact", *[f"binary:{c}" for c in args.candidates]]
    return [f"{t}:{ef}" if ef else t for t in ("prefetch", "rescore") for ef in args.ef]


def stamp() -> Any:
    from bertino_rag.types import Stamp

    return Stamp(model="minilm-realistic", full_dim=384, index_dim=R.DIM)


def build(kind: str, data: dict[str, Any], folder: Path, args: argparse.Namespace
          ) -> dict[str, Any]:
    """Write every point (and, for Edge, build the HNSW graph), or reuse the folder built
    before (its build times are in ``build.json``)."""
    record = folder.parent / f"{folder.name}.build.json"
    if record.exists() and folder.exists() and not args.rebuild:
        return {**json.loads(record.read_text()), "reused": True}
    shutil.rmtree(folder, ignore_errors=True)
    from bertino_rag.types import Document

    full = data["full"]
    n = len(full)
    texts = data["squad"]["texts"]
    planted = data["meta"]["planted"]
    store = open_store(kind, "binary:1" if kind == "memory" else "prefetch", folder, args)
    store.open("bench", stamp())
    t0 = time.perf_counter()
    for s in range(0, n, BATCH):
        stop = min(n, s + BATCH)
        docs = [Document(text=texts[r] if r < planted else f"documento generato {r}",
                         id=doc_id(r, data)) for r in range(s, stop)]
        f = np.asarray(full[s:stop], dtype=np.float32)
        store.upsert(docs, R.index_of(f), f)
    out: dict[str, Any] = {"upsert_s": round(time.perf_counter() - t0, 1)}
    if kind == "edge":
        t0 = time.perf_counter()
        store.build_index()
        out["hnsw_build_s"] = round(time.perf_counter() - t0, 1)
    out["build_s"] = round(sum(v for k, v in out.items() if k.endswith("_s")), 1)
    store.close()
    record.write_text(json.dumps(out))
    return out


def store_folder(kind: str, data: dict[str, Any], args: argparse.Namespace) -> Path:
    graph = f"-m{args.edge_m}-efc{args.edge_ef_construct}" if kind == "edge" else ""
    return Path(args.cache) / f"{kind}-{data['tag']}{graph}"


def search(store: Any, data: dict[str, Any], q: int, rescore_k: int) -> tuple[float, list]:
    query = data["queries"][q]
    index = R.index_of(query[None])[0]
    t0 = time.perf_counter()
    hits = store.search(index, k=10, full_vector=query, rescore_k=rescore_k)
    return time.perf_counter() - t0, hits


def run_store(kind: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Build or reuse the collection; every variant's queries interleaved."""
    from bertino_rag.evaluation.metrics import ir_metrics

    data = prepare(args)
    folder = store_folder(kind, data, args)
    built = build(kind, data, folder, args)
    names = variants(kind, args)
    stores = {v: open_store(kind, v, folder, args) for v in names}
    for s in stores.values():
        s.open("bench", stamp())
    for v in names:  # warm: each variant's files read once
        for q in range(min(5, len(data["queries"]))):
            search(stores[v], data, q, args.rescore_k)
    secs: dict[str, list[float]] = {v: [] for v in names}
    single: dict[tuple[str, int], list[float]] = {(v, k): [] for v in names
                                                  for k in (10, args.rescore_k)}
    hits: dict[str, list] = {v: [] for v in names}
    rng = np.random.default_rng(0)
    for q in range(len(data["queries"])):
        for v in rng.permutation(names).tolist():
            t, got = search(stores[v], data, q, args.rescore_k)
            secs[v].append(t)
            hits[v].append(got)
            if kind == "edge":  # where the two-stage time goes: the graph search alone
                for k in (10, args.rescore_k):
                    index = R.index_of(data["queries"][q][None])[0]
                    t0 = time.perf_counter()
                    stores[v].search(index, k=k)
                    single[(v, k)].append(time.perf_counter() - t0)
    truth = [{doc_id(int(r), data) for r in row} for row in data["truth"]]
    truth_ndcg = ir_metrics([[(doc_id(int(r), data), -i) for i, r in enumerate(row)]
                             for row in data["truth"]], data["qids"],
                            data["squad"]["qrels"])["ndcg@10"]
    rows = []
    for v in names:
        ms = np.asarray(secs[v]) * 1000
        ranking = [[(h.id, h.score) for h in got] for got in hits[v]]
        rows.append({
            "store": kind, "variant": v, "n": len(data["full"]), **built,
            "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p95_ms": round(float(np.percentile(ms, 95)), 2),
            "recall@10": round(float(np.mean([len({h.id for h in got} & want) / 10
                                               for got, want in zip(hits[v], truth,
                                                                    strict=True)])), 4),
            "ndcg@10": round(ir_metrics(ranking, data["qids"], data["squad"]["qrels"])
                             ["ndcg@10"], 4),
            "exact_two_stage_ndcg@10": round(truth_ndcg, 4),
            **{f"single_stage_k{k}_p50_ms": round(float(np.median(single[(v, k)])) * 1000, 2)
               for k in (10, args.rescore_k) if single.get((v, k))},
            "disk_bytes_per_point": round(du(folder) / len(data["full"]), 1),
            **({"disk_bytes_per_point_without_sign_codes":
                round(du(folder, ".sign.") / len(data["full"]), 1)} if kind == "memory" else {}),
        })
    for s in stores.values():
        s.close()
    return rows


def run_rss(kind: str, variant: str, args: argparse.Namespace) -> dict[str, Any]:
    """One variant alone: RSS above the baseline after ``--rss-queries`` queries."""
    data = prepare(args)
    folder = store_folder(kind, data, args)
    base = rss_mb()
    store = open_store(kind, variant, folder, args)
    store.open("bench", stamp())
    for q in range(min(args.rss_queries, len(data["queries"]))):
        search(store, data, q, args.rescore_k)
    out = {"store": kind, "variant": variant, "rss_mb": round(rss_mb() - base, 1)}
    store.close()
    return out


def child(args: argparse.Namespace, *extra: str) -> list[dict[str, Any]]:
    argv = [sys.executable, __file__, *sys.argv[1:], *extra]
    res = subprocess.run(argv, capture_output=True, text=True, env=os.environ)
    if res.returncode != 0:
        print(f"{' '.join(extra)}: failed\n{res.stderr[-3000:]}", file=sys.stderr, flush=True)
        return []
    return [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]


def table(rows: list[dict[str, Any]], rss: dict[tuple[str, str], float]) -> str:
    lines = ["| store | variant | build s | p50 / p95 ms | recall@10 vs exact two-stage | "
             "NDCG@10 (exact two-stage) | RSS MB | disk B/point |", "|---|" * 1 + "---|" * 7]
    for r in rows:
        disk = str(r["disk_bytes_per_point"])
        if "disk_bytes_per_point_without_sign_codes" in r:
            disk += f" ({r['disk_bytes_per_point_without_sign_codes']} without sign codes)"
        lines.append(
            f"| {r['store']} | {r['variant']} | {r['build_s']} | {r['p50_ms']} / {r['p95_ms']} | "
            f"{r['recall@10']} | {r['ndcg@10']} ({r['exact_two_stage_ndcg@10']}) | "
            f"{rss.get((r['store'], r['variant']), '')} | {disk} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=1000, help="squad-it-dev questions")
    ap.add_argument("--windows", type=int, default=6000,
                    help="sentence windows encoded as seeds (cached; ~23/s on first use)")
    ap.add_argument("--stores", nargs="+", default=["memory", "edge"],
                    choices=["memory", "edge"])
    ap.add_argument("--candidates", type=int, nargs="+", default=[2000, 8000, 32000],
                    help="binary_candidates of the MemoryStore binary variants")
    ap.add_argument("--ef", type=int, nargs="+", default=[0],
                    help="Edge HNSW search beams (0: the engine's default)")
    ap.add_argument("--edge-m", type=int, default=16, help="Edge HNSW edges per node")
    ap.add_argument("--edge-ef-construct", type=int, default=100, help="Edge HNSW build beam")
    ap.add_argument("--rescore-k", type=int, default=100)
    ap.add_argument("--rss-queries", type=int, default=200)
    ap.add_argument("--cache", default="/tmp/bertino-bench/1m")
    ap.add_argument("--squad-cache", default="/tmp/bertino-bench/squad_minilm.npz",
                    help="squad-it-dev MiniLM vectors (shared with bench_edge.py)")
    ap.add_argument("--out", default=None, help="JSON lines (default: CACHE/results-N.jsonl)")
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--held-apart", action="store_true",
                    help="generate from the windows of half the articles and ask the questions "
                    "of the other half (NDCG@10 among realistic points of other text)")
    ap.add_argument("--check", action="store_true",
                    help="compare generated with held-out real vectors (when generating)")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--rss", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one and args.rss:
        print(json.dumps(run_rss(args.one, args.rss, args)))
        return
    if args.one:
        for row in run_store(args.one, args):
            print(json.dumps(row))
        return
    print(json.dumps({"load_average": os.getloadavg(), "cpus": len(os.sched_getaffinity(0))}),
          flush=True)
    t0 = time.perf_counter()
    data = prepare(args)  # once, before the stores' processes
    data["meta"]["planted_only_ndcg@10"] = planted_only_ndcg(data, args.rescore_k)
    print(json.dumps({"data": data["meta"], "prepare_s": round(time.perf_counter() - t0, 1)}),
          flush=True)
    rows, rss = [], {}
    for kind in args.stores:
        got = child(args, "--one", kind)
        for row in got:
            print(json.dumps(row), flush=True)
        rows.extend(got)
        for v in variants(kind, args):
            for r in child(args, "--one", kind, "--rss", v):
                print(json.dumps(r), flush=True)
                rss[(kind, v)] = r["rss_mb"]
    out = Path(args.out or Path(args.cache) / f"results-{args.n}.jsonl")
    out.write_text("".join(json.dumps({**r, "rss_mb": rss.get((r["store"], r["variant"]))})
                           + "\n" for r in rows))
    print(table(rows, rss))
    print(f"total {time.perf_counter() - t0:.0f} s; results in {out}")


if __name__ == "__main__":
    main()
