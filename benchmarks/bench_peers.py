"""bertino-rag against its peers on squad-it-dev, each system in its own process, interleaved.

Systems (same packaged MiniLM encoder, all-MiniLM-L6-v2, 384 dims, for every one):

- ``bertino-memory`` / ``bertino-qdrant`` / ``bertino-edge`` / ``bertino-milvus``:
  ``Retriever(dim=128, rerank_k=100)`` on MemoryStore, Qdrant local mode (in memory), Qdrant
  Edge (the Qdrant engine in-process, in a temporary folder), Milvus Lite;
- ``lc-qdrant-384`` / ``lc-qdrant-128``: langchain-qdrant ``QdrantVectorStore`` in memory;
- ``lc-milvus-384`` / ``lc-milvus-128``: langchain-milvus ``Milvus`` on Milvus Lite;
- ``numpy-384`` / ``numpy-128`` / ``numpy-2stage``: sentence-transformers vectors and exact
  numpy search, at 384 or 128 dims, or 128 dims then the top 100 rescored at 384 by hand.

Per system and round, in a fresh subprocess:

- ``index``: the first ``--index-docs`` paragraphs indexed through the system's own path with
  the real encoder, divided by the wall time of encoding those paragraphs alone (measured in
  the same process just before): what indexing costs beyond encoding;
- ``single``: ``--single`` questions one at a time through the system's text query path (real
  encoder, one query per call): p50/p95 ms;
- ``search``: the same questions one at a time from cached query vectors: the p50 of the
  search alone, without the forward pass;
- ``batch``: the whole collection built from cached vectors, then ``--queries`` questions
  (the 4,332 cycled when more) answered from cached query vectors through the system's batch
  path (a loop of single searches where the peer has none): questions per second of search
  alone, and NDCG@10 from the qrels (over the distinct questions);
- peak RSS of the process tree (sampled every 20 ms; Milvus Lite and Qdrant local run inside
  the process).

Every text is encoded once into ``--cache`` (the vectors every system's batch part uses), so a
round costs search time, not encoding time. Medians over rounds; ratios to bertino-rag on the
same store kind.

Peers come from PyPI: ``pip install 'bertino-rag[peers]'`` (langchain-qdrant,
langchain-milvus; they change nothing the other extras install).

Usage:
    python benchmarks/bench_peers.py [--rounds 3] [--queries 4332] [--single 100]
        [--index-docs 128] [--systems a,b,...] [--json out.json]
    python benchmarks/bench_peers.py --flat 1000,4000,16000 --systems bertino-milvus
        (peak RSS of the batch part at several numbers of questions)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _indexing_common import SQUAD, machine, minilm, squad_minilm_vectors  # noqa: E402

BERTINO = ["bertino-memory", "bertino-qdrant", "bertino-edge", "bertino-milvus"]
PEERS = ["lc-qdrant-384", "lc-qdrant-128", "lc-milvus-384", "lc-milvus-128",
         "numpy-384", "numpy-128", "numpy-2stage"]
BASELINE = {"lc-qdrant-384": "bertino-qdrant", "lc-qdrant-128": "bertino-qdrant",
            "lc-milvus-384": "bertino-milvus", "lc-milvus-128": "bertino-milvus",
            "numpy-384": "bertino-memory", "numpy-128": "bertino-memory",
            "numpy-2stage": "bertino-memory"}
K, RERANK_K, DIM = 10, 100, 128


# ---------------------------------------------------------------------- worker side
class PeakRSS:
    """Peak resident memory of this process and its children, sampled in a thread."""

    def __init__(self, every: float = 0.02) -> None:
        import psutil

        self._proc = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._every = every
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> int:
        total = self._proc.memory_info().rss
        for child in self._proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except Exception:  # noqa: BLE001 - a child that just exited
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            time.sleep(self._every)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._sample())
        return self.peak


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


class CachedEmbeddings:
    """LangChain ``Embeddings`` answering cached vectors by text, else the real model."""

    def __init__(self, model, table: dict[str, np.ndarray], dim: int) -> None:
        self.model, self.table, self.dim = model, table, dim

    def _vec(self, texts: list[str]) -> list[list[float]]:
        missing = [t for t in texts if t not in self.table]
        if missing:
            enc = self.model.encode(missing, normalize_embeddings=True, convert_to_numpy=True)
            for t, v in zip(missing, enc, strict=True):
                self.table[t] = v
        return unit(np.stack([self.table[t][: self.dim] for t in texts])).tolist()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self._vec(list(texts))

    def embed_query(self, text: str) -> list[float]:
        return self._vec([text])[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embed_documents(texts)

    async def aembed_query(self, text: str) -> list[float]:
        return self.embed_query(text)


def run_worker(args) -> dict:
    """One system, one round: the measurements of the module docstring, as a dict."""
    import warnings

    warnings.simplefilter("ignore")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    rss = PeakRSS()
    from sentence_transformers import SentenceTransformer

    name = args.worker
    beir, doc_ids, qids, doc_full, query_full = squad_minilm_vectors(Path(args.cache))
    texts = [beir.corpus[d]["text"] for d in doc_ids]
    qtexts = [beir.queries[q] for q in qids]
    n = args.queries
    order = [i % len(qids) for i in range(n)]
    workdir = Path(tempfile.mkdtemp(prefix=f"peers-{name}-"))
    out: dict = {"system": name}

    if name.startswith("bertino"):
        from bertino_rag import Encoder
        from bertino_rag.evaluation.runner import PrecomputedEncoder

        real = Encoder(minilm(), dim=DIM, device="cpu")
        model = real.model
        table = {("document", t): v for t, v in zip(texts, doc_full, strict=True)}
        table.update({("query", t): v for t, v in zip(qtexts, query_full, strict=True)})
        cached = PrecomputedEncoder(real, table)
    else:
        model = SentenceTransformer(minilm(), device="cpu")
        ctable = dict(zip(texts, doc_full, strict=True))  # documents only: queries are encoded

    sub = texts[: args.index_docs]
    # index ÷ encode, both with the real encoder, on the same paragraphs
    if args.index_docs and not args.skip_index:
        model.encode(sub[:8])  # warm-up
        t0 = time.perf_counter()
        if name.startswith("bertino"):
            real.encode(sub, kind="document", warn_truncation=False, show_progress_bar=False)
        else:
            model.encode(sub, normalize_embeddings=True, convert_to_numpy=True)
        out["encode_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        idx = build(name, workdir, "idx", sub, doc_ids[: len(sub)], model=model, encoder=None
                    if not name.startswith("bertino") else real, table=None)
        out["index_s"] = time.perf_counter() - t0
        close(idx)

    # the whole collection from cached vectors
    coll = build(name, workdir, "all", texts, doc_ids, model=model,
                 encoder=cached if name.startswith("bertino") else None,
                 table=None if name.startswith("bertino") else ctable,
                 vectors=doc_full)

    # one query at a time, real encoder
    lat = []
    singles = [qtexts[(7 * i) % len(qtexts)] for i in range(args.single)]
    if name.startswith("bertino"):
        coll.encoder = real  # single questions through the model, not the cache
    for q in singles[:3]:
        search_text(name, coll, q, model)
    for q in singles:
        t0 = time.perf_counter()
        search_text(name, coll, q, model)
        lat.append(time.perf_counter() - t0)
    if name.startswith("bertino"):
        coll.encoder = cached
    if lat:
        out["p50_ms"] = 1000 * float(np.percentile(lat, 50))
        out["p95_ms"] = 1000 * float(np.percentile(lat, 95))
    # the same questions one at a time from cached query vectors: the search alone (the
    # encoder's forward pass, the same model for every system, dominates the figure above)
    rows_single = [(7 * i) % len(qtexts) for i in range(args.single)]
    lat = []
    for i in rows_single[:3] + rows_single:
        t0 = time.perf_counter()
        search_batch(name, coll, [qtexts[i]], query_full[i : i + 1])
        lat.append(time.perf_counter() - t0)
    if lat[3:]:
        out["search_p50_ms"] = 1000 * float(np.percentile(lat[3:], 50))

    # batch from cached vectors
    t0 = time.perf_counter()
    hits = search_batch(name, coll, [qtexts[i] for i in order], query_full[order])
    out["batch_s"] = time.perf_counter() - t0
    out["batch_qps"] = n / out["batch_s"]
    from bertino_rag.evaluation import ir_metrics

    first = min(n, len(qids))
    out["ndcg10"] = ir_metrics(hits[:first], qids[:first], beir.qrels)["ndcg@10"]
    out["queries"] = n
    close(coll)
    out["peak_rss_mb"] = rss.stop() / 2**20
    return out


def build(name, workdir, collection, texts, ids, *, model, encoder, table, vectors=None):
    """The system's collection over ``texts``: through its own indexing path."""
    if name.startswith("bertino"):
        from bertino_rag import Retriever

        store = {"bertino-memory": "memory", "bertino-qdrant": "qdrant",
                 "bertino-edge": f"qdrant-edge:{workdir / ('edge-' + collection)}",
                 "bertino-milvus": f"milvus:{workdir / (collection + '.db')}"}[name]
        r = Retriever(dim=DIM, rerank_k=RERANK_K, encoder=encoder, store=store,
                      collection=collection, recreate=True)
        # chunking off: one vector per paragraph (the first 256 tokens), as the peers index
        # them and as the qrels name them
        r.index([{"id": i, "text": t} for i, t in zip(ids, texts, strict=True)],
                show_progress_bar=False, chunking=False)
        return r
    dim = 128 if name.endswith("128") else 384
    if name.startswith("numpy"):
        if vectors is None:  # the index part: encode and hold the vectors
            full = model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
        else:
            full = vectors
        return {"ids": np.asarray(ids), "full": unit(full), "d128": unit(full[:, :128])}
    emb = CachedEmbeddings(model, {} if table is None else table, dim)
    if name.startswith("lc-qdrant"):
        from langchain_qdrant import QdrantVectorStore

        return QdrantVectorStore.from_texts(list(texts), emb, ids=None, location=":memory:",
                                            collection_name=collection,
                                            metadatas=[{"doc_id": i} for i in ids])
    from langchain_milvus import Milvus

    store = Milvus(embedding_function=emb, collection_name=collection,
                   connection_args={"uri": str(workdir / f"lc-{collection}.db")},
                   auto_id=True, drop_old=True)
    for start in range(0, len(texts), 256):
        store.add_texts(list(texts[start : start + 256]),
                        metadatas=[{"doc_id": i} for i in ids[start : start + 256]])
    return store


def close(system) -> None:
    if hasattr(system, "close"):
        system.close()


def _numpy_search(name, coll, qfull: np.ndarray) -> list[list[tuple[str, float]]]:
    ids = coll["ids"]
    if name == "numpy-2stage":
        q128 = unit(qfull[:, :128])
        first = q128 @ coll["d128"].T
        cand = np.argpartition(-first, RERANK_K - 1, axis=1)[:, :RERANK_K]
        qf = unit(qfull)
        scores = np.einsum("qcd,qd->qc", coll["full"][cand], qf)
        top = np.argsort(-scores, axis=1)[:, :K]
        rows = np.take_along_axis(cand, top, 1)
        sc = np.take_along_axis(scores, top, 1)
    else:
        mat = coll["d128"] if name == "numpy-128" else coll["full"]
        q = unit(qfull[:, : mat.shape[1]])
        scores = q @ mat.T
        rows = np.argpartition(-scores, K - 1, axis=1)[:, :K]
        sc = np.take_along_axis(scores, rows, 1)
        o = np.argsort(-sc, axis=1)
        rows, sc = np.take_along_axis(rows, o, 1), np.take_along_axis(sc, o, 1)
    return [list(zip(ids[r].tolist(), s.tolist(), strict=True)) for r, s in zip(rows, sc,
                                                                              strict=True)]


def search_text(name, coll, query: str, model):
    if name.startswith("bertino"):
        return coll.search(query, k=K)
    if name.startswith("numpy"):
        q = model.encode([query], normalize_embeddings=True, convert_to_numpy=True)
        return _numpy_search(name, coll, q)
    return coll.similarity_search_with_score(query, k=K)


def search_batch(name, coll, queries: list[str], qfull: np.ndarray):
    """Rankings ``[(doc_id, score)]`` per query, from cached query vectors."""
    if name.startswith("bertino"):
        hits = coll.search_batch(queries, k=K)
        return [[(h.id, h.score) for h in row] for row in hits]
    if name.startswith("numpy"):
        out = []
        for start in range(0, len(queries), 1024):  # bounded score matrices
            out.extend(_numpy_search(name, coll, qfull[start : start + 1024]))
        return out
    dim = 128 if name.endswith("128") else 384
    vecs = unit(qfull[:, :dim]).tolist()
    out = []
    for v in vecs:
        docs = coll.similarity_search_with_score_by_vector(v, k=K)
        # The peers return hits best first, but their scores differ in direction:
        # langchain-qdrant gives cosine similarities, langchain-milvus L2 distances (its
        # default metric; smaller is better). The metrics sort by score, highest first, so
        # each peer's own order is passed as the score.
        out.append([(d.metadata["doc_id"], float(-rank)) for rank, (d, _) in enumerate(docs)])
    return out


# ---------------------------------------------------------------------- parent side
def run_system(name: str, args, queries: int, skip_index: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--worker", name, "--cache", args.cache,
           "--queries", str(queries), "--single", str(args.single),
           "--index-docs", str(args.index_docs)]
    if skip_index:
        cmd.append("--skip-index")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def med(rows: list[dict], key: str) -> float | None:
    xs = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(xs) if xs else None


def table(results: dict[str, list[dict]]) -> str:
    lines = ["| system | index ÷ encode | one query p50 / p95 ms | batch q/s (ratio to "
             "bertino-rag) | search alone p50 ms | NDCG@10 | peak RSS MB (ratio) |",
             "|---|---|---|---|---|---|---|"]
    for name, rows in results.items():
        base = results.get(BASELINE.get(name, name), rows)
        qps, rss = med(rows, "batch_qps"), med(rows, "peak_rss_mb")
        bq, br = med(base, "batch_qps"), med(base, "peak_rss_mb")
        ratio = med([{"r": r["index_s"] / r["encode_s"]} for r in rows if "index_s" in r], "r")
        lines.append(
            f"| {name} | {'-' if ratio is None else f'{ratio:.2f}'} | "
            f"{med(rows, 'p50_ms'):.1f} / {med(rows, 'p95_ms'):.1f} | "
            f"{qps:.0f} ({qps / bq:.2f}) | {med(rows, 'search_p50_ms') or 0:.2f} | "
            f"{med(rows, 'ndcg10'):.4f} | "
            f"{rss:.0f} ({rss / br:.2f}) |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--queries", type=int, default=4332)
    ap.add_argument("--single", type=int, default=100)
    ap.add_argument("--index-docs", type=int, default=128)
    ap.add_argument("--systems", default=",".join(BERTINO + PEERS))
    ap.add_argument("--flat", default="", help="numbers of questions for the RSS flatness run")
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "bertino-bench"
                                           / "squad_minilm.npz"))
    ap.add_argument("--json", default=None)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--skip-index", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(run_worker(args)), flush=True)
        return
    if not SQUAD.exists():
        sys.exit(f"squad-it-dev not found at {SQUAD} (set BERTINO_DATA)")
    squad_minilm_vectors(Path(args.cache))  # encode once, before any timing
    names = args.systems.split(",")
    info = {"machine": machine(), "args": {k: v for k, v in vars(args).items()
                                           if k not in ("worker", "skip_index")}}
    print(json.dumps(info), flush=True)
    report: dict = {**info}
    if args.flat:
        flat: dict[str, dict[int, float]] = {}
        for n in [int(x) for x in args.flat.split(",")]:
            for name in names:
                row = run_system(name, args, n, skip_index=True)
                flat.setdefault(name, {})[n] = row["peak_rss_mb"]
                print(json.dumps(row), flush=True)
        report["flat"] = flat
        for name, by_n in flat.items():
            print(f"| {name} | " + " | ".join(f"{v:.0f}" for v in by_n.values()) + " |")
    else:
        results: dict[str, list[dict]] = {n: [] for n in names}
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[: r % len(names)]:
                row = run_system(name, args, args.queries)
                row["round"] = r + 1
                results[name].append(row)
                print(json.dumps(row), flush=True)
        report["results"] = results
        print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
