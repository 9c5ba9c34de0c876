"""The store kinds, in one place: what ``store="..."`` specs name, for the retriever, the
command line, the service and the evaluation alike.

A spec is ``KIND`` or ``KIND:WHERE`` (a folder, a file or a URL). :func:`make_store` builds the
store it names; :func:`spec_help` is the one sentence every ``--store`` flag shows. Each kind
imports its client only when it is built, so a missing extra fails there with the
``pip install`` to run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import VectorStore

__all__ = ["STORE_KINDS", "StoreKind", "make_store", "spec_help"]


@dataclass(frozen=True)
class StoreKind:
    """A kind of store: its spec syntax, the extra it needs and how to build one."""

    name: str
    syntax: str
    extra: str | None
    summary: str
    build: Callable[[str], VectorStore]


def _memory(where: str) -> VectorStore:
    from .memory import MemoryStore

    return MemoryStore(path=where or None)


def _qdrant(where: str) -> VectorStore:
    from .qdrant.client import QdrantStore

    if where.startswith(("http://", "https://")):
        return QdrantStore(url=where)
    return QdrantStore(path=where) if where else QdrantStore()


def _edge(where: str) -> VectorStore:
    if not where:
        raise ValueError("store 'qdrant-edge' needs a folder: 'qdrant-edge:DIR'")
    from .qdrant.edge import QdrantEdgeStore

    return QdrantEdgeStore(where)


def _milvus(where: str) -> VectorStore:
    from .milvus import MilvusStore, check_uri

    uri = where or "./bertino_milvus.db"
    check_uri(uri)  # before the import cost of a client
    return MilvusStore(uri=uri)


STORE_KINDS: dict[str, StoreKind] = {k.name: k for k in (
    StoreKind("memory", "memory[:DIR]", None,
              "exact numpy search, in memory or persisted to DIR (the default)", _memory),
    StoreKind("qdrant", "qdrant[:DIR|:URL]", "qdrant",
              "Qdrant: local mode in memory or in DIR, or a server at URL", _qdrant),
    StoreKind("qdrant-edge", "qdrant-edge:DIR", "edge",
              "the Qdrant engine in process (Qdrant Edge), persisted to DIR", _edge),
    StoreKind("milvus", "milvus:FILE.db|URL", "milvus",
              "Milvus Lite in FILE.db, or a Milvus server at URL", _milvus),
)}


def spec_help() -> str:
    """The store specs, as every ``--store`` flag describes them."""
    specs = [f"'{k.syntax}'" for k in STORE_KINDS.values()]
    return ", ".join(specs[:-1]) + f" or {specs[-1]}"


def make_store(spec: str | VectorStore | None = None) -> VectorStore:
    """The store a spec names (a store passes through; ``None`` is an in-memory
    ``MemoryStore``).

    - ``"memory"``: in memory; ``"memory:DIR"``: persisted to DIR;
    - ``"qdrant"``: Qdrant local mode in memory; ``"qdrant:DIR"``: local mode persisted;
      ``"qdrant:http://host:6333"``: a Qdrant server (key from ``QDRANT_API_KEY``);
    - ``"qdrant-edge:DIR"``: the Qdrant engine in-process (Qdrant Edge), persisted to DIR;
    - ``"milvus:FILE.db"``: Milvus Lite; ``"milvus:http://host:19530"``: a Milvus server
      (token from ``MILVUS_TOKEN``).

    Raises:
        ValueError: an unknown kind (naming the ones there are) or a spec its kind refuses.
        TypeError: neither a spec nor a store.
    """
    from .base import VectorStore

    if spec is None:
        return _memory("")
    if isinstance(spec, VectorStore):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"store must be a VectorStore or a spec string, got {type(spec).__name__}")
    kind, _, where = spec.partition(":")
    found = STORE_KINDS.get(kind.strip().lower())
    if found is None:
        raise ValueError(f"unknown store {spec!r}: use {spec_help()}")
    return found.build(where.strip())
