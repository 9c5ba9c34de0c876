"""What Qdrant Edge's folder checksums cost: the time of ``close`` (recording the checksums)
and of the next ``open`` (verifying them) on a collection of ``--n`` random unit vectors,
against the same open and close with the checksums left out (nothing recorded at close, so
nothing verified at the open).

    python benchmarks/bench_edge_checksums.py --n 100000 --dim 128 --full-dim 384

Prints and writes (``--out``) a JSON line: the folder's size, and the median seconds of each.
Run it alone on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bertino_rag.stores import QdrantEdgeStore
from bertino_rag.stores.qdrant import edge_shard
from bertino_rag.types import Document, Stamp


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--full-dim", type=int, default=384)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    stamp = Stamp(model="bench", full_dim=args.full_dim, index_dim=args.dim)
    root = Path(tempfile.mkdtemp(prefix="bench-edge-sums-"))
    try:
        store = QdrantEdgeStore(path=root)
        store.open("c", stamp)
        rng = np.random.default_rng(0)
        for start in range(0, args.n, 10_000):
            m = min(10_000, args.n - start)
            full = rng.normal(size=(m, args.full_dim)).astype(np.float32)
            full /= np.linalg.norm(full, axis=1, keepdims=True)
            index = full[:, : args.dim] / np.linalg.norm(full[:, : args.dim], axis=1,
                                                         keepdims=True)
            store.upsert([Document(text=f"t{start + i}", id=f"d{start + i}")
                          for i in range(m)], index, full)
        store.build_index()
        timings: dict[str, list[float]] = {"close": [], "open": [], "close_plain": [],
                                           "open_plain": []}
        real = edge_shard.write_checksums
        for _ in range(args.repeats):
            for plain in (False, True):
                suffix = "_plain" if plain else ""
                if plain:
                    edge_shard.write_checksums = lambda folder, known: None
                began = time.perf_counter()
                store.close()
                timings["close" + suffix].append(time.perf_counter() - began)
                edge_shard.write_checksums = real  # plain: no record, so nothing verified
                store = QdrantEdgeStore(path=root)
                began = time.perf_counter()
                store.open("c", stamp, create=False)
                timings["open" + suffix].append(time.perf_counter() - began)
                # a write, so that close records the changed files again
                store.upsert([Document(text="x", id="extra")], np.eye(1, args.dim,
                             dtype=np.float32), np.eye(1, args.full_dim, dtype=np.float32))
        store.close()
        result = {"n": args.n, "dim": args.dim, "full_dim": args.full_dim,
                  "folder_mb": round(_size(root / "c") / 2**20, 1),
                  **{k: round(statistics.median(v), 4) for k, v in timings.items()}}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    line = json.dumps(result)
    print(line)
    if args.out:
        Path(args.out).write_text(line + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
