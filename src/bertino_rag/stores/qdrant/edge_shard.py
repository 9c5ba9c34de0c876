"""Qdrant Edge's shard as QdrantEdgeStore keeps it: one open shard per collection folder and
process (with its cache of live document frequencies), the engine configuration of a stamp,
and ``stamp.json`` beside the shard (an Edge shard has no collection metadata).
"""

from __future__ import annotations

import json
import logging
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import qdrant_edge as qe

from ...errors import StoreCorruptionError, StoreError
from ...types import Stamp
from ..locations import replace_json
from .common import FULL, LEXICAL

logger = logging.getLogger("bertino_rag.stores.qdrant")

__all__ = ["CHECKSUMS", "DF_CACHE_TERMS", "REGISTRY", "Quantization", "Shard", "as_damage",
           "edge_config",
           "read_sidecar", "read_stamp", "verify_checksums", "write_checksums", "write_stamp"]

STAMP_FILE = "stamp.json"
SHARD_DIR = "shard"
#: the size and CRC-32 of each file of the shard at its last close (:func:`write_checksums`)
CHECKSUMS = "checksums.json"
_RESTORE = ("Restore the folder from a backup, or move it away and index the documents "
            "again; delete checksums.json to open it anyway, at your own risk")
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
        #: the checksums verified at open: a file unchanged since (size, mtime) is not read
        #: again at close
        self.sealed: dict[str, list[int]] = {}

    def close(self, seal: bool = True) -> None:
        """Close the engine's shard and (``seal``) record its files' checksums for the next
        open to verify (:func:`write_checksums`); not for a folder about to be deleted."""
        if self.shard is not None:
            self.shard.close()
            self.shard = None
            if seal:
                write_checksums(self.folder, self.sealed)
            self.sealed = {}
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
    exists = (shard_dir / "edge_config.json").exists()
    if exists:
        handle.sealed = verify_checksums(folder)
    try:
        if exists:
            return qe.EdgeShard.load(str(shard_dir), config)
        return qe.EdgeShard.create(str(shard_dir), config)
    except Exception as err:
        if "WouldBlock" in str(err) or "lock" in str(err).lower():
            raise StoreError(
                f"Qdrant Edge collection {folder} is open in another process (one process at "
                f"a time may open it): close it there, or serve it from a Qdrant server ({err})"
            ) from err
        raise StoreCorruptionError(
            shard_dir, f"cannot open the Qdrant Edge shard {shard_dir} ({err}): its files are "
            f"damaged. {_RESTORE}") from err


#: what the engine says when it reads a damaged file (its "Service runtime error")
_DAMAGE = ("not readable", "out of bounds", "no such file", "corrupt", "unexpected end")


def as_damage(err: Exception, handle: Shard | None) -> StoreCorruptionError | None:
    """``err`` (an engine call's failure) as :class:`StoreCorruptionError` naming the shard's
    folder when the engine failed on a damaged file; ``None`` otherwise."""
    text = str(err).lower()
    if handle is None or "service runtime error" not in text or not any(
            word in text for word in _DAMAGE):
        return None
    shard_dir = handle.folder / SHARD_DIR
    return StoreCorruptionError(shard_dir, f"{err}: the files of the Qdrant Edge shard "
                                f"{shard_dir} are damaged. {_RESTORE}")


def _crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            crc = zlib.crc32(block, crc)
    return crc


def _shard_files(folder: Path) -> dict[str, Path]:
    root = folder / SHARD_DIR
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}


def write_checksums(folder: Path, known: dict[str, list[int]]) -> None:
    """Record the size, CRC-32 and mtime of every file of the closed shard in
    ``checksums.json``, for :func:`verify_checksums` at the next open: the files changed since
    ``known`` (verified at open) are read (the cost: ``benchmarks/bench_edge_checksums.py``).
    A failure only leaves the folder unverified, and is logged."""
    try:
        files = {}
        for name, p in _shard_files(folder).items():
            st = p.stat()
            was = known.get(name)
            same = was is not None and was[0] == st.st_size and was[2] == st.st_mtime_ns
            files[name] = [st.st_size, was[1] if same and was else _crc32(p), st.st_mtime_ns]
        replace_json(folder / CHECKSUMS, {"version": 1, "files": files})
    except OSError as err:
        logger.warning("Qdrant Edge: recording the checksums of %s failed: %s", folder, err)


def verify_checksums(folder: Path) -> dict[str, list[int]]:
    """Check the shard's files against ``checksums.json`` (written at the last close), then
    remove it: a folder whose process died is opened without the check (its files changed
    with the writes after the last close). No record: nothing to check. Returns the record.

    Raises:
        StoreCorruptionError: a file missing, added, of another size or with other bytes,
            named, before the engine reads (and could delete) anything.
    """
    path = folder / CHECKSUMS
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))["files"]
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise StoreCorruptionError(path, f"{path} cannot be read ({err}). {_RESTORE}") from err
    found = _shard_files(folder)
    for name in sorted(set(recorded) | set(found)):
        file = folder / SHARD_DIR / name
        if name not in found:
            problem = "is missing"
        elif name not in recorded:
            problem = "was added after the last close"
        elif found[name].stat().st_size != recorded[name][0]:
            problem = (f"has {found[name].stat().st_size} bytes, {recorded[name][0]} at the "
                       "last close")
        elif _crc32(found[name]) != recorded[name][1]:
            problem = "changed since the last close (its checksum differs)"
        else:
            continue
        raise StoreCorruptionError(
            file, f"{file} {problem}: the Qdrant Edge collection {folder} is damaged, and is "
            f"not opened (the engine would answer from it, or delete segments). {_RESTORE}")
    path.unlink()
    return {name: list(entry) for name, entry in recorded.items()}


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
    entry: dict[str, Any] = {"stamp": stamp.to_dict(), "index_vector": f"dim{stamp.index_dim}",
                             "full_vector": FULL if stamp.full_vectors else None, "version": 1}
    if stamp.lexical is not None:
        entry["lexical_vector"] = LEXICAL
    if avgdl is not None:
        entry["avgdl"] = avgdl
    replace_json(path, entry)


#: the intent record of the chunked edits in flight (:mod:`bertino_rag.stores.intent`)
INTENT_FILE = "intent.json"


class EdgeIntent:
    """QdrantEdgeStore's intent record: ``intent.json`` beside ``stamp.json`` (the shard has no
    metadata of its own), replaced atomically as the stamp is
    (:func:`~..locations.replace_json`); clearing removes it. A mixin."""

    _handle: Shard | None

    def _intent_path(self) -> Path:
        assert self._handle is not None, "no collection is open"
        return self._handle.folder / INTENT_FILE

    def _read_intent(self) -> dict[str, Any] | None:
        path = self._intent_path()
        try:
            return dict(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as err:
            raise StoreCorruptionError(path, f"{path} cannot be read ({err}): delete it to "
                                       "open the collection without repairing the chunked "
                                       "edits it records") from err

    def _write_intent(self, record: dict[str, Any] | None) -> None:
        path = self._intent_path()
        if record is None:
            path.unlink(missing_ok=True)
            return
        replace_json(path, record, ensure_ascii=False)
