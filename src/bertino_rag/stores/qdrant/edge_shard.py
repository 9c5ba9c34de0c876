"""Qdrant Edge's shard as QdrantEdgeStore keeps it: one open shard per collection folder and
process (with its cache of live document frequencies), the engine configuration of a stamp,
and ``stamp.json`` beside the shard (an Edge shard has no collection metadata).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import qdrant_edge as qe

from ...errors import StoreError
from ...types import Stamp
from ..locations import create_new
from .common import FULL, LEXICAL

__all__ = ["DF_CACHE_TERMS", "REGISTRY", "Quantization", "Shard", "edge_config", "read_sidecar",
           "read_stamp", "write_stamp"]

STAMP_FILE = "stamp.json"
SHARD_DIR = "shard"
#: document frequencies kept per open shard before the cache starts again (about 8 MB)
DF_CACHE_TERMS = 100_000

# binary quantization is not offered: its recall at 128 dims has not been measured here yet
Quantization = Literal["int8", "turbo8", "turbo4", "turbo2"] | None
QUANTIZATIONS = ("int8", "turbo8", "turbo4", "turbo2")


class Shard:
    """One collection folder's open shard, shared by the stores of this process on it.

    It also caches the live document frequency of the lexical terms that queries asked for
    (each is an exact count on the ``lexical_terms`` index). Every write of this process goes
    through :meth:`written`, which forgets them, and no other process can write: the folder
    is open in one process at a time.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.lock = threading.RLock()
        self.shard: qe.EdgeShard | None = None
        self.refs = 0
        self._df: dict[int, int] = {}
        self._n: int | None = None
        self._writes = 0
        self._df_lock = threading.Lock()

    def close(self) -> None:
        if self.shard is not None:
            self.shard.close()
            self.shard = None
        self.written()

    def written(self) -> None:
        """Forget the cached frequencies: the shard was (or may have been) written."""
        with self._df_lock:
            self._writes += 1
            self._df.clear()
            self._n = None

    def frequencies(self, terms: list[int], count: Callable[[int], int],
                    total: Callable[[], int]) -> tuple[list[int], int]:
        """The live document frequency of each of ``terms`` and the number of points, from
        the cache or counted (``count(term)``, ``total()``) and then cached."""
        with self._df_lock:
            seen = self._writes
            have = {t: self._df[t] for t in terms if t in self._df}
            n = self._n
        counted = {t: count(t) for t in terms if t not in have}
        if n is None:
            n = total()
        with self._df_lock:
            if self._writes == seen:  # no write meanwhile: the counts are current
                if len(self._df) + len(counted) > DF_CACHE_TERMS:
                    self._df.clear()
                self._df.update(counted)
                self._n = n
        have.update(counted)
        return [have[t] for t in terms], n


class _Registry:
    """Per-process registry of open collection folders (Edge allows one open shard each)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[Path, Shard] = {}

    def acquire(self, folder: Path) -> Shard:
        with self._lock:
            handle = self._open.get(folder)
            if handle is None:
                handle = self._open[folder] = Shard(folder)
            handle.refs += 1
            return handle

    def release(self, handle: Shard) -> None:
        with self._lock:
            handle.refs -= 1
            if handle.refs > 0:
                return
            self._open.pop(handle.folder, None)
        with handle.lock:
            handle.close()


REGISTRY = _Registry()


def open_shard(handle: Shard, config: qe.EdgeConfig) -> qe.EdgeShard:
    """The shard of ``handle``'s folder, loaded or created with ``config``.

    Raises:
        StoreError: another process has it open, or it cannot be read.
    """
    folder = handle.folder
    shard_dir = folder / SHARD_DIR
    try:
        if (shard_dir / "edge_config.json").exists():
            return qe.EdgeShard.load(str(shard_dir), config)
        return qe.EdgeShard.create(str(shard_dir), config)
    except Exception as err:
        if "WouldBlock" in str(err) or "lock" in str(err).lower():
            raise StoreError(
                f"Qdrant Edge collection {folder} is open in another process (one process at "
                f"a time may open it): close it there, or serve it from a Qdrant server ({err})"
            ) from err
        raise StoreError(f"cannot open Qdrant Edge shard {shard_dir}: {err}") from err


def has_foreign_shard(folder: Path) -> bool:
    """Whether ``folder`` holds a shard but no stamp (not created by bertino-rag)."""
    return read_stamp(folder) is None and (folder / SHARD_DIR / "edge_config.json").exists()


def edge_config(stamp: Stamp, quantization: Quantization, index_threshold: int, hnsw_m: int,
                hnsw_ef_construct: int) -> qe.EdgeConfig:
    """The engine configuration of a collection: the truncated vector with HNSW (above
    ``index_threshold`` points a segment), the full vector in float16 on disk without a
    graph, the sparse vector of a hybrid collection."""
    threshold = _kb(index_threshold, stamp.index_dim)
    vectors = {
        f"dim{stamp.index_dim}": qe.EdgeVectorParams(
            size=stamp.index_dim, distance=qe.Distance.Cosine,
            hnsw_config=qe.HnswIndexConfig(m=hnsw_m, ef_construct=hnsw_ef_construct,
                                           full_scan_threshold=threshold),
            quantization_config=_quantization(quantization), memory=qe.Memory.Cached,
        )
    }
    if stamp.full_vectors:
        vectors[FULL] = qe.EdgeVectorParams(
            size=stamp.full_dim, distance=qe.Distance.Cosine,
            datatype=qe.VectorStorageDatatype.Float16, memory=qe.Memory.Cold,
            # m=0: no graph; the full vector is only read to rescore candidates
            hnsw_config=qe.HnswIndexConfig(m=0, ef_construct=hnsw_ef_construct,
                                           full_scan_threshold=threshold),
        )
    sparse = None
    if stamp.lexical is not None:
        sparse = {LEXICAL: qe.EdgeSparseVectorParams()}
    return qe.EdgeConfig(vectors=vectors, sparse_vectors=sparse,
                         optimizers=qe.EdgeOptimizersConfig(indexing_threshold=threshold))


def _kb(points: int, dim: int) -> int:
    """Size in KB of ``points`` float32 vectors of ``dim`` (Edge thresholds are in KB)."""
    return max(1, points * dim * 4 // 1024)


def _quantization(kind: Quantization) -> Any:
    if kind is None:
        return None
    if kind == "int8":
        return qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, quantile=0.99,
                                           memory=qe.Memory.Cached)
    bits = {"turbo8": qe.TurboQuantBitSize.Bits8, "turbo4": qe.TurboQuantBitSize.Bits4,
            "turbo2": qe.TurboQuantBitSize.Bits2}[kind]
    return qe.TurboQuantQuantizationConfig(bits=bits, memory=qe.Memory.Cached)


def read_sidecar(folder: Path) -> dict[str, Any]:
    """The content of ``stamp.json``; ``{}`` when there is none."""
    path = folder / STAMP_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        raise StoreError(f"cannot read the stamp {path}: {err}") from err
    if not isinstance(data, dict) or "stamp" not in data:
        raise StoreError(f"cannot read the stamp {path}: no 'stamp' entry")
    return data


def read_stamp(folder: Path) -> Stamp | None:
    data = read_sidecar(folder)
    return Stamp.from_dict(data["stamp"]) if data else None


def write_stamp(folder: Path, stamp: Stamp, avgdl: float | None = None) -> None:
    """Write ``stamp.json`` atomically: a temporary file, fsynced, renamed."""
    path = folder / STAMP_FILE
    tmp = path.with_name(path.name + ".tmp")
    entry: dict[str, Any] = {"stamp": stamp.to_dict(), "index_vector": f"dim{stamp.index_dim}",
                             "full_vector": FULL if stamp.full_vectors else None, "version": 1}
    if stamp.lexical is not None:
        entry["lexical_vector"] = LEXICAL
    if avgdl is not None:
        entry["avgdl"] = avgdl
    with create_new(tmp, "w") as fh:
        json.dump(entry, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
