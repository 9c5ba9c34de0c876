"""Stores: the protocol they implement, the base that checks what callers pass, and the
stores themselves (the embedded numpy store, Qdrant, Qdrant Edge, Milvus, and the reference
store).

``QdrantStore``, ``QdrantEdgeStore`` and ``MilvusStore`` import their clients lazily; a
missing extra raises an ImportError that names the ``pip install`` to run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import (
    CollectionNotFoundError,
    FilterError,
    StoreConnectionError,
    StoreCorruptionError,
    StoreError,
    StoreWriteError,
)
from ..search.rescore import rescore
from .base import VectorStore
from .memory import MemoryStore
from .protocol import Capabilities, ExportBatch, StoreProtocol, WriteBatch
from .reference import ReferenceStore
from .registry import STORE_KINDS, make_store, spec_help

if TYPE_CHECKING:
    from .milvus import MilvusStore
    from .qdrant.client import QdrantStore
    from .qdrant.edge import QdrantEdgeStore

__all__ = [
    "STORE_KINDS",
    "Capabilities",
    "CollectionNotFoundError",
    "ExportBatch",
    "FilterError",
    "MemoryStore",
    "MilvusStore",
    "QdrantEdgeStore",
    "QdrantStore",
    "ReferenceStore",
    "StoreConnectionError",
    "StoreCorruptionError",
    "StoreError",
    "StoreProtocol",
    "StoreWriteError",
    "VectorStore",
    "WriteBatch",
    "make_store",
    "rescore",
    "spec_help",
]


def __getattr__(name: str) -> Any:
    if name == "QdrantStore":
        from .qdrant.client import QdrantStore

        return QdrantStore
    if name == "QdrantEdgeStore":
        from .qdrant.edge import QdrantEdgeStore

        return QdrantEdgeStore
    if name == "MilvusStore":
        from .milvus import MilvusStore

        return MilvusStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
