"""The Qdrant stores: :class:`QdrantStore` (qdrant-client: local mode in memory or in a
folder, or a server) and :class:`QdrantEdgeStore` (the Qdrant engine in process, Qdrant Edge).

One file per concern: ``common`` (point ids, filters, reads both stores make the same way),
``connection`` and ``client`` (QdrantStore), ``local`` (local-mode workarounds), ``edge_shard``
and ``edge`` (QdrantEdgeStore). Each store imports its client only when it is asked for, so a
missing extra fails there with the ``pip install`` to run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .common import point_id

if TYPE_CHECKING:
    from .client import QdrantStore
    from .edge import QdrantEdgeStore

__all__ = ["QdrantEdgeStore", "QdrantStore", "point_id"]


def __getattr__(name: str) -> Any:
    if name == "QdrantStore":
        from .client import QdrantStore

        return QdrantStore
    if name == "QdrantEdgeStore":
        from .edge import QdrantEdgeStore

        return QdrantEdgeStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
