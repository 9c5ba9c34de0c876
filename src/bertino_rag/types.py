"""Public value types: documents going in, hits coming out, and the collection stamp."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import StampMismatchError
from .validation import check_text

__all__ = ["Document", "Hit", "Stamp", "StampMismatchError", "dedupe", "doc_id_for", "to_documents"]


@dataclass(frozen=True)
class Document:
    """A text to index, with its id and metadata."""

    text: str
    id: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Hit:
    """One search result: the document's id, text, metadata and similarity score (cosine).

    A hit of ``search(..., group_by="document")`` stands for a whole document: ``id`` is the
    document's id, ``score``, ``text`` and ``metadata`` are its best chunk's, and ``chunks``
    holds its matching chunks, best first (the best one included).

    With a reranker (``Retriever(reranker=...)``), hits are ordered by ``rerank_score`` (the
    cross-encoder's score of the query and the hit's text, higher is better; with a reranker
    ``weight`` below 1, its blend with the retrieval score, in [0, 1]) and ``score`` stays the
    retrieval score (cosine, BM25 or fused); without one ``rerank_score`` is ``None``.
    """

    id: str
    text: str
    score: float
    metadata: dict[str, Any] = field(default_factory=dict)
    chunks: tuple[Hit, ...] = ()
    rerank_score: float | None = None


@dataclass(frozen=True)
class Stamp:
    """What a collection was built with; vectors of different stamps are never mixed.

    Attributes:
        model: model id (hub id, or the name of a local model folder).
        full_dim: output dimension of the model.
        index_dim: dimension of the (Matryoshka-truncated) vectors that are searched.
        normalized: whether stored vectors are L2-normalized (cosine == dot product).
        full_vectors: whether the full vectors are stored for rescoring.
        lexical: the analyzer and BM25 parameters of the lexical index beside the vectors
            (:func:`bertino_rag.lexical.lexical_spec`), or ``None`` for a dense-only collection.
    """

    model: str
    full_dim: int
    index_dim: int
    normalized: bool = True
    full_vectors: bool = True
    lexical: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": self.model,
            "full_dim": self.full_dim,
            "index_dim": self.index_dim,
            "normalized": self.normalized,
            "full_vectors": self.full_vectors,
        }
        if self.lexical is not None:  # dense-only stamps keep the layout they always had
            out["lexical"] = self.lexical
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Stamp:
        return cls(
            model=str(data["model"]),
            full_dim=int(data["full_dim"]),
            index_dim=int(data["index_dim"]),
            normalized=bool(data.get("normalized", True)),
            full_vectors=bool(data.get("full_vectors", True)),
            lexical=None if data.get("lexical") is None else str(data["lexical"]),
        )

    def check(self, found: Stamp, collection: str) -> None:
        """Raise :class:`StampMismatchError` when ``found`` (on disk) differs from ``self``."""
        diffs = [
            f"{name}: collection has {getattr(found, name)!r}, requested {getattr(self, name)!r}"
            for name in ("model", "full_dim", "index_dim", "normalized", "full_vectors", "lexical")
            if getattr(found, name) != getattr(self, name)
        ]
        if diffs:
            raise StampMismatchError(collection, diffs, found=found, requested=self)


def doc_id_for(text: str) -> str:
    """Deterministic id of a text: re-indexing the same text never duplicates it."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def _coerce(item: Any, position: int) -> Document:
    doc_id: Any = None
    metadata: Any = None
    if isinstance(item, str):
        text: Any = item
    elif isinstance(item, Document):
        return _validated(item.text, item.id, item.metadata, position)
    elif isinstance(item, Mapping):
        if "text" not in item:
            raise ValueError(f"document at position {position} is a dict without a 'text' key")
        text, doc_id, metadata = item["text"], item.get("id"), item.get("metadata")
    elif hasattr(item, "page_content"):
        text = item.page_content
        metadata = getattr(item, "metadata", None)
        doc_id = getattr(item, "id", None)
    elif item is None:
        raise ValueError(f"document at position {position} is None")
    else:
        raise ValueError(
            f"document at position {position} has unsupported type {type(item).__name__}: "
            "expected str, dict with 'text', or an object with 'page_content'"
        )
    return _validated(text, doc_id, metadata, position)


def _validated(text: Any, doc_id: Any, metadata: Any, position: int) -> Document:
    check_text(text, f"document at position {position}")
    if doc_id == "":
        raise ValueError(f"document at position {position} has an empty id: give it an id, "
                         "or leave the id out to derive one from the text")
    if doc_id is None:
        doc_id = doc_id_for(text)
    elif not isinstance(doc_id, (str, int)) or isinstance(doc_id, bool):
        raise ValueError(
            f"document at position {position} has id of type {type(doc_id).__name__}, "
            "expected str or int"
        )
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, Mapping):
        raise ValueError(
            f"document at position {position} has metadata of type {type(metadata).__name__}, "
            "expected a dict"
        )
    # Ids are strings: an int id becomes its decimal string, so 7 and "7" are the same id.
    return Document(text=text, id=str(doc_id), metadata=dict(metadata))


def to_documents(items: Iterable[Any]) -> list[Document]:
    """Validate and normalize inputs into :class:`Document` objects.

    Accepts ``str``, ``dict`` (``text``, optional ``id`` and ``metadata``), :class:`Document`,
    and any object with ``page_content``/``metadata`` (a LangChain ``Document``). Ids are
    strings: an ``int`` id becomes its decimal string (``7`` and ``"7"`` are one id); a missing
    id is derived from the text (:func:`doc_id_for`).

    Raises:
        ValueError: naming the position of the first invalid item, before anything is written.
    """
    if isinstance(items, (str, bytes)) or isinstance(items, Mapping):
        items = [items]
    return [_coerce(item, i) for i, item in enumerate(items)]


def dedupe(docs: Iterable[Document]) -> list[Document]:
    """Keep one document per id; the last occurrence wins, as an upsert would do."""
    unique: dict[str, Document] = {}
    for d in docs:
        unique.pop(d.id, None)
        unique[d.id] = d
    return list(unique.values())
