"""bertino-rag: retrieval-augmented generation for Italian text with Matryoshka embeddings."""

from __future__ import annotations

from .encoder import (
    DEFAULT_MODEL,
    Encoded,
    Encoder,
    TextEncoder,
    TruncationWarning,
    make_encoder,
)
from .indexing.pipeline import IndexWriteError, StreamValidationError
from .retriever import IndexReport, Retriever
from .stores import (
    CollectionNotFoundError,
    MemoryStore,
    StoreConnectionError,
    StoreCorruptionError,
    StoreError,
    StoreWriteError,
    VectorStore,
    make_store,
)
from .stores.filters import FilterError
from .types import Document, Hit, Stamp, StampMismatchError

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "CollectionNotFoundError",
    "Document",
    "Encoded",
    "Encoder",
    "FilterError",
    "Hit",
    "IndexReport",
    "IndexWriteError",
    "MemoryStore",
    "Retriever",
    "Stamp",
    "StampMismatchError",
    "StoreConnectionError",
    "StoreCorruptionError",
    "StoreError",
    "StoreWriteError",
    "StreamValidationError",
    "TextEncoder",
    "TruncationWarning",
    "VectorStore",
    "__version__",
    "make_encoder",
    "make_store",
]
