"""How wide a sign code MemoryStore's binary first stage would need at a million points.

    python benchmarks/bench_binary_codes.py --held-apart --queries 200

On ``bench_1m.py``'s cached points and exact two-stage truth (run it first, with the same
``--n``, ``--windows``, ``--held-apart`` and ``--queries``), for sign codes of the first 128,
256 and 384 dims of each point (128: the store's code, the index vector's signs), per query:
the time of one Hamming pass over every code (:func:`~bertino_rag.stores.memory.binary.hamming`,
the store's own), and the share of the exact two-stage top 10 found among the ``C`` nearest
codes by Hamming distance, and among the ``C`` best by the float query against the signs after
the store's pre-ranking of ``8 C`` Hamming-nearest codes (what the store rescores). A point the
first stage does not keep cannot be in the result, so this bounds the recall@10 of the store's
funnel at ``binary_candidates=C``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import bench_1m  # noqa: E402

from bertino_rag.stores.memory.binary import (  # noqa: E402
    PRERANK,
    _lookup,
    _nearest,
    asymmetric,
    hamming,
    sign_codes,
)

BLOCK = 100_000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--windows", type=int, default=6000)
    ap.add_argument("--held-apart", action="store_true")
    ap.add_argument("--queries", type=int, default=1000,
                    help="the --queries of the bench_1m.py run whose truth is read")
    ap.add_argument("--measure", type=int, default=200, help="queries measured here")
    ap.add_argument("--widths", type=int, nargs="+", default=[128, 256, 384])
    ap.add_argument("--candidates", type=int, nargs="+", default=[2000, 8000, 32000])
    ap.add_argument("--cache", default="/tmp/bertino-bench/1m")
    ap.add_argument("--squad-cache", default="/tmp/bertino-bench/squad_minilm.npz")
    args = ap.parse_args()
    args.rescore_k, args.check = 100, False
    data = bench_1m.prepare(args)
    full, queries, truth = data["full"], data["queries"], data["truth"]
    m = min(args.measure, len(queries))
    rows = []
    for width in args.widths:
        words = np.concatenate([sign_codes(np.asarray(full[s:s + BLOCK, :width],
                                                      dtype=np.float32))
                                for s in range(0, len(full), BLOCK)], axis=1)
        q = queries[:, :width] / np.linalg.norm(queries[:, :width], axis=1, keepdims=True)
        codes = np.ascontiguousarray(sign_codes(q).T)
        bits = 64 * words.shape[0]
        secs: list[float] = []
        found = {c: [] for c in args.candidates}
        reranked = {c: [] for c in args.candidates}
        for i in range(m):
            t0 = time.perf_counter()
            dist = hamming(words, codes[i])
            secs.append(time.perf_counter() - t0)
            want = set(truth[i].tolist())
            for c in args.candidates:
                near = _nearest([dist], c, bits)[0]
                found[c].append(len(want & set(near.tolist())) / 10)
                pre = _nearest([dist], PRERANK * c, bits)[0]
                order = pre[np.argsort(-asymmetric(words, pre, _lookup(q[i], bits)),
                                       kind="stable")[:c]]
                reranked[c].append(len(want & set(order.tolist())) / 10)
        row = {"code_bits": width, "bytes_per_point": 8 * words.shape[0], "queries": m,
               "hamming_pass_p50_ms": round(float(np.median(secs)) * 1000, 2),
               **{f"found@{c}_hamming": round(float(np.mean(found[c])), 4)
                  for c in args.candidates},
               **{f"found@{c}_prerank": round(float(np.mean(reranked[c])), 4)
                  for c in args.candidates}}
        print(json.dumps(row), flush=True)
        rows.append(row)
        del words
    cols = " | ".join(f"top {c:,} Hamming / pre-ranked" for c in args.candidates)
    print(f"| code | B/point | Hamming pass p50 ms | {cols} |")
    print("|---|---:|---:|" + "---:|" * len(args.candidates))
    for r in rows:
        cells = " | ".join(f"{r[f'found@{c}_hamming']} / {r[f'found@{c}_prerank']}"
                           for c in args.candidates)
        print(f"| {r['code_bits']} bits | {r['bytes_per_point']} | "
              f"{r['hamming_pass_p50_ms']} | {cells} |")


if __name__ == "__main__":
    main()
