"""Vector stores behind one contract: the embedded numpy store, Qdrant (client and Edge) and
Milvus.

``QdrantStore``, ``QdrantEdgeStore`` and ``MilvusStore`` import their clients lazily; a
missing extra raises an ImportError that names the ``pip install`` to run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import (
    CollectionNotFoundError,
    ExportBatch,
    StoreConnectionError,
    StoreCorruptionError,
    StoreError,
    StoreWriteError,
    VectorStore,
    rescore,
)
from .filters import FilterError
from .memory import MemoryStore

if TYPE_CHECKING:
    from .milvus import MilvusStore
    from .qdrant import QdrantStore
    from .qdrant_edge import QdrantEdgeStore

__all__ = [
    "CollectionNotFoundError",
    "ExportBatch",
    "FilterError",
    "MemoryStore",
    "MilvusStore",
    "QdrantEdgeStore",
    "QdrantStore",
    "StoreConnectionError",
    "StoreCorruptionError",
    "StoreError",
    "StoreWriteError",
    "VectorStore",
    "make_store",
    "rescore",
]


def __getattr__(name: str) -> Any:
    if name == "QdrantStore":
        from .qdrant import QdrantStore

        return QdrantStore
    if name == "QdrantEdgeStore":
        from .qdrant_edge import QdrantEdgeStore

        return QdrantEdgeStore
    if name == "MilvusStore":
        from .milvus import MilvusStore

        return MilvusStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_store(spec: str | VectorStore | None = None) -> VectorStore:
    """Build a store from a short spec (used by the CLI and ``Retriever(store=...)``).

    - ``None`` or ``"memory"``: in-memory numpy store; ``"memory:DIR"``: persisted to DIR;
    - ``"qdrant"``: Qdrant local mode in memory; ``"qdrant:DIR"``: local mode persisted;
      ``"qdrant:http://host:6333"``: a Qdrant server (key from ``QDRANT_API_KEY``);
    - ``"qdrant-edge:DIR"``: the Qdrant engine in-process (Qdrant Edge), persisted to DIR;
    - ``"milvus:FILE.db"``: Milvus Lite; ``"milvus:http://host:19530"``: a Milvus server
      (token from ``MILVUS_TOKEN``).
    """
    if spec is None:
        return MemoryStore()
    if isinstance(spec, VectorStore):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"store must be a VectorStore or a spec string, got {type(spec).__name__}")
    kind, _, where = spec.partition(":")
    kind = kind.strip().lower()
    where = where.strip()
    if kind == "memory":
        return MemoryStore(path=where or None)
    if kind == "qdrant":
        from .qdrant import QdrantStore

        if where.startswith(("http://", "https://")):
            return QdrantStore(url=where)
        return QdrantStore(path=where) if where else QdrantStore()
    if kind == "qdrant-edge":
        if not where:
            raise ValueError("store 'qdrant-edge' needs a folder: 'qdrant-edge:DIR'")
        from .qdrant_edge import QdrantEdgeStore

        return QdrantEdgeStore(where)
    if kind == "milvus":
        from .milvus import MilvusStore, check_uri

        check_uri(where or "./bertino_milvus.db")  # before the import cost of a client
        return MilvusStore(uri=where or "./bertino_milvus.db")
    raise ValueError(
        f"unknown store {spec!r}: use 'memory[:DIR]', 'qdrant[:DIR|:URL]', 'qdrant-edge:DIR' or "
        "'milvus:FILE|URL'"
    )
