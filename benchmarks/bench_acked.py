"""Cost of ``meta.acked`` (MemoryStore's record of the last acknowledged write, which makes a
lost or garbled ``meta.sqlite-wal`` detectable): small writes with and without it.

Usage:
    python benchmarks/bench_acked.py [--rounds 5] [--calls 40] [--batch 10] [--dir DIR]

Each round times ``--calls`` upserts of ``--batch`` documents (random unit vectors, 128-d
index, 768-d full) and as many single-id deletes, once with the record and once with it
switched off (``MemoryStore._record_generation`` replaced by a no-op), in alternating order, on
a fresh collection in ``--dir`` (default: a temporary folder on the working disk). Reported:
the median over rounds of the mean time per call, and the ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bertino_rag.stores import MemoryStore
from bertino_rag.types import Document, Stamp

STAMP = Stamp(model="bench", full_dim=768, index_dim=128)


def one_round(root: Path, calls: int, batch: int, record: bool) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    original = MemoryStore._record_generation
    if not record:
        MemoryStore._record_generation = lambda self: None  # type: ignore[method-assign]
    try:
        store = MemoryStore(path=root)
        store.open("c", STAMP, recreate=True)
        full = rng.normal(size=(batch, 768)).astype(np.float32)
        full /= np.linalg.norm(full, axis=1, keepdims=True)
        index = full[:, :128] / np.linalg.norm(full[:, :128], axis=1, keepdims=True)
        began = time.perf_counter()
        for c in range(calls):
            store.upsert([Document(text=f"t {c} {i}", id=f"{c}-{i}") for i in range(batch)],
                         index, full)
        upsert = (time.perf_counter() - began) / calls
        began = time.perf_counter()
        for c in range(calls):
            store.delete([f"{c}-0"])
        delete = (time.perf_counter() - began) / calls
        store.drop()
        store.close()
    finally:
        MemoryStore._record_generation = original  # type: ignore[method-assign]
    return upsert, delete


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    times: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for r in range(args.rounds):
            for record in ((True, False) if r % 2 == 0 else (False, True)):
                times[record].append(one_round(Path(tmp) / f"r{r}{record}", args.calls,
                                               args.batch, record))
    out = {}
    for record in (False, True):
        out["with" if record else "without"] = {
            "upsert_ms": round(1e3 * statistics.median(u for u, _ in times[record]), 2),
            "delete_ms": round(1e3 * statistics.median(d for _, d in times[record]), 2),
        }
    out["upsert_ratio"] = round(out["with"]["upsert_ms"] / out["without"]["upsert_ms"], 3)
    out["delete_ratio"] = round(out["with"]["delete_ms"] / out["without"]["delete_ms"], 3)
    print(json.dumps({"args": vars(args), **out}))


if __name__ == "__main__":
    main()
