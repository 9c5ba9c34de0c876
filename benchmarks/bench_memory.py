"""Resident memory while indexing a stream of synthetic documents: flat, not growing.

Usage:
    python benchmarks/bench_memory.py bertino [--n 100000] [--dir DIR]
    python benchmarks/bench_memory.py plain [--n 20000]

bertino: ``Retriever.index`` over a generator of ``--n`` short synthetic Italian sentences
(10-20 words, see ``_indexing_common.synthetic_docs``) into ``MemoryStore(path=DIR)`` (segments
on disk, memory-mapped); RSS is sampled as the generator passes each checkpoint.
plain: the plain way, ``texts = list(...)``, ``SentenceTransformer.encode(texts)``, then one
array in memory: its memory grows with the corpus.

Both use the ONNX int8 MiniLM (``--backend``/``--quantize`` to change). Reported: RSS (all
resident pages), RssAnon (private heap: what the process really holds; file-backed pages of the
memory-mapped segments are reclaimable page cache) and the peak RSS so far.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
import warnings

from _indexing_common import add_encoder_args, encoder_from, machine, synthetic_docs


def memory() -> dict:
    status = {}
    with open("/proc/self/status", encoding="utf-8") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                status[key] = int(value.split()[0]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"rss_mib": round(status["VmRSS"], 1), "anon_mib": round(status["RssAnon"], 1),
            "file_mib": round(status["RssFile"], 1), "peak_rss_mib": round(peak, 1)}


def checkpoints(n: int) -> list[int]:
    return sorted({max(1, n * k // 10) for k in (1, 2, 3, 5, 7, 10)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["bertino", "plain"])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dir", default=None, help="keep the index here (default: a temp dir)")
    add_encoder_args(ap)
    args = ap.parse_args()
    from bertino_rag import Retriever

    warnings.simplefilter("ignore")
    enc = encoder_from(args)
    enc.encode(["Riscaldamento del modello."])
    print(json.dumps({"machine": machine(), "args": vars(args), "after_load": memory()}),
          flush=True)
    marks = checkpoints(args.n)
    started = time.perf_counter()

    def report(i: int, **extra) -> None:
        print(json.dumps({"bench": "memory", "mode": args.mode, "docs": i,
                          "seconds": round(time.perf_counter() - started, 1), **memory(),
                          **extra}), flush=True)

    if args.mode == "plain":
        texts = [d["text"] for d in synthetic_docs(args.n)]
        vectors = enc.model.encode(texts, batch_size=enc.batch_size, convert_to_numpy=True)
        report(args.n, vectors_mib=round(vectors.nbytes / 2**20, 1))
        return

    where = args.dir or tempfile.mkdtemp(prefix="bench-memory-")
    try:
        r = Retriever(dim=128, encoder=enc, store=f"memory:{where}", collection="synthetic",
                      recreate=True)

        def stream():
            for i, doc in enumerate(synthetic_docs(args.n), start=1):
                yield doc
                if i in marks:
                    report(i, written=r.store.count())

        ids = r.index(stream(), show_progress_bar=False)
        report(len(ids), written=r.count(), note="after index() returned (ids list held)")
        rep = r.last_index_report
        print(json.dumps({"bench": "memory-index", "n": len(ids), "seconds": round(rep.seconds, 1),
                          "docs_per_s": round(len(ids) / rep.seconds, 1),
                          "encode_s": round(rep.encode_seconds, 1),
                          "write_s": round(rep.write_seconds, 1),
                          "unhidden_wait_s": round(rep.wait_seconds, 1)}), flush=True)
        r.close()
    finally:
        if args.dir is None:
            shutil.rmtree(where, ignore_errors=True)


if __name__ == "__main__":
    main()
