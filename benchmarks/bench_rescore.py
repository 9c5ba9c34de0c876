"""Two-stage batch search against plain search, per store, on cached squad-it-dev vectors.

Per store, in its own process: the 1,128 paragraphs (cached MiniLM vectors, 128-d index,
384-d full), then ``store.search_batch`` of ``--queries`` questions (the 4,332 cycled) with
k=10: plain (128-d only) and two-stage (100 candidates rescored at 384). CPU seconds of each
(``time.process_time``: the in-process Milvus Lite and Qdrant local engines included, and
steadier than wall time on a shared machine) and the process's peak RSS. ``--pickle`` writes
the two-stage results (ids, scores, texts, metadata) to compare two source trees exactly.

Usage:
    python benchmarks/bench_rescore.py [--stores memory,qdrant,milvus] [--queries 4332]
        [--src DIR] [--pickle PREFIX]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _indexing_common import SQUAD, machine  # noqa: E402

CACHE = Path(tempfile.gettempdir()) / "bertino-bench" / "squad_minilm.npz"


def worker(spec: str, n: int, out: str | None) -> dict:
    import warnings

    import numpy as np
    from _indexing_common import squad_minilm_vectors

    from bertino_rag.stores import make_store
    from bertino_rag.types import Document, Stamp

    warnings.simplefilter("ignore")
    beir, doc_ids, _, docs_full, queries_full = squad_minilm_vectors(CACHE)
    docs = [Document(text=beir.corpus[i]["text"], id=i,
                     metadata={"title": beir.corpus[i].get("title", "")}) for i in doc_ids]

    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    where = f"milvus:{tempfile.mkdtemp()}/rescore.db" if spec == "milvus" else spec
    store = make_store(where)
    store.open("rescore", Stamp(model="minilm", full_dim=384, index_dim=128), recreate=True)
    store.upsert(docs, unit(docs_full[:, :128]), docs_full)
    qi = np.resize(unit(queries_full[:, :128]), (n, 128))
    qf = np.resize(queries_full, (n, 384))
    store.search_batch(qi[:10], 10, full_vectors=qf[:10], rerank_k=100)  # warm-up
    t0 = time.process_time()
    store.search_batch(qi, 10)
    plain = time.process_time() - t0
    t0 = time.process_time()
    hits = store.search_batch(qi, 10, full_vectors=qf, rerank_k=100)
    two = time.process_time() - t0
    if out:
        with open(f"{out}_{spec}.pkl", "wb") as fh:
            pickle.dump([[(h.id, h.score, h.text, h.metadata) for h in r] for r in hits], fh)
    store.close()
    return {"bench": "rescore", "store": spec, "queries": n, "plain_cpu_s": round(plain, 2),
            "two_stage_cpu_s": round(two, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stores", default="memory,qdrant,milvus")
    ap.add_argument("--queries", type=int, default=4332)
    ap.add_argument("--src", default=None,
                    help="the bertino_rag source tree to measure (default: what PYTHONPATH, "
                         "else the installed package, gives)")
    ap.add_argument("--pickle", default=None)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.queries, args.pickle)), flush=True)
        return
    if not SQUAD.exists():
        sys.exit(f"squad-it-dev not found at {SQUAD} (set BERTINO_DATA)")
    print(json.dumps({"machine": machine(), "args": vars(args)}), flush=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if args.src:
        env["PYTHONPATH"] = args.src + os.pathsep + os.environ.get("PYTHONPATH", "")
    for spec in args.stores.split(","):
        cmd = [sys.executable, __file__, "--worker", spec, "--queries", str(args.queries)]
        if args.pickle:
            cmd += ["--pickle", args.pickle]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode:
            sys.exit(done.stderr[-3000:])
        print(done.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
