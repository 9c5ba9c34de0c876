"""Documents and their chunks: the metadata a chunk carries, its id, and what a re-index writes.

A document that fits in what the encoder reads is stored as it is (its id, text and metadata
unchanged). A longer one is stored as chunks (:mod:`bertino_rag.chunking`), each a document
of its own whose metadata is the document's, plus:

- ``doc_id``: the document's id (what :meth:`VectorStore.delete_documents` and
  ``search(..., group_by="document")`` go by);
- ``chunk``: its position in the document, from 0;
- ``char_start``, ``char_end``: its character offsets in the document's text;
- ``page``: for documents with ``page_starts`` metadata (PDFs from
  :mod:`bertino_rag.loaders`), the page where the chunk starts (from 1); ``page_starts`` itself
  is not copied into chunks.

A chunk's id is ``"<doc_id>#<chunk>-<digest>"``, the digest covering its text and metadata: the
same document gives the same ids, so :func:`plan_writes` can leave unchanged chunks alone and
name the stored chunks an edited document no longer has.
"""

from __future__ import annotations

import hashlib
import json
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import BadItem
from ..types import Document

__all__ = [
    "CHAR_END",
    "CHAR_START",
    "CHUNK",
    "DOC_ID",
    "PAGE",
    "PAGE_STARTS",
    "WritePlan",
    "check_chunks",
    "chunk_documents",
    "chunk_id",
    "document_of",
    "plan_writes",
    "split_document",
]

DOC_ID = "doc_id"
CHUNK = "chunk"
CHAR_START = "char_start"
CHAR_END = "char_end"
PAGE = "page"
PAGE_STARTS = "page_starts"


def chunk_id(doc_id: str, position: int, text: str, metadata: dict[str, Any]) -> str:
    """The id of a document's chunk: the document id, the position, a digest of the content."""
    payload = json.dumps([text, metadata], sort_keys=True, ensure_ascii=False, default=str)
    digest = hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]
    return f"{doc_id}#{position}-{digest}"


def document_of(hit_id: str, metadata: dict[str, Any]) -> str:
    """The document a stored item belongs to: its ``doc_id`` metadata, else its own id."""
    value = metadata.get(DOC_ID)
    return str(value) if value is not None else hit_id


def split_document(doc: Document, spans: Sequence[tuple[int, int, str]]) -> list[Document]:
    """The documents to store for ``doc`` given its chunk spans ``(start, end, text)``: the
    document itself when it is one chunk, else one document per chunk."""
    if len(spans) <= 1:
        if PAGE_STARTS not in doc.metadata:
            return [doc]
        meta = {k: v for k, v in doc.metadata.items() if k != PAGE_STARTS}
        return [Document(text=doc.text, id=doc.id, metadata={**meta, PAGE: 1})]
    base = {k: v for k, v in doc.metadata.items() if k != PAGE_STARTS}
    pages = doc.metadata.get(PAGE_STARTS)
    out = []
    for position, (start, end, text) in enumerate(spans):
        meta = {**base, DOC_ID: doc.id, CHUNK: position, CHAR_START: start, CHAR_END: end}
        if isinstance(pages, list) and pages:
            meta[PAGE] = max(1, bisect_right(pages, start))
        out.append(Document(text=text, id=chunk_id(doc.id, position, text, meta), metadata=meta))
    return out


def chunk_documents(
    docs: Sequence[Document], chunker: Any, token_counts: dict[str, int] | None = None,
) -> list[tuple[Document, list[Document]]]:
    """Each document with what to store for it (:func:`split_document` of the chunks that
    ``chunker``, a :class:`~bertino_rag.indexing.chunking.Chunker`, cuts).

    Args:
        token_counts: filled with the token count of each stored text (special tokens
            excluded), as the chunker measured it: no second tokenization to count them.
    """
    spans = chunker.split_many([d.text for d in docs])
    if token_counts is not None:
        for cs in spans:
            for c in cs:
                token_counts[c.text] = c.n_tokens
    return [(d, split_document(d, [(c.start, c.end, c.text) for c in cs]))
            for d, cs in zip(docs, spans, strict=True)]


def check_chunks(
    parts: Sequence[tuple[Document, list[Document]]],
    positions: Sequence[int],
    check: Callable[..., None],
) -> None:
    """Validate what is written for each document with a store's ``check_documents``
    (``check``), before any write: a chunk the store would not keep raises
    :class:`~bertino_rag.pipeline.BadItem`, naming the document's input position, its id and
    the chunk.

    The store's limits apply to what it stores: a document too long for its text limit is
    accepted when each of its chunks fits.
    """
    for (doc, stored), at in zip(parts, positions, strict=True):
        name = f"document at position {at} (id {doc.id!r})"

        def describe(i: int, name: str = name, n: int = len(stored)) -> str:
            return name if n == 1 else f"chunk {i} of the {n} chunks of the {name}"

        try:
            check(stored, describe=describe)
        except ValueError as err:
            if "bytes of text" in str(err):  # few tokens in many bytes: a run without spaces
                err = ValueError(
                    f"{err}. The model reads it in few tokens, so it cannot be cut smaller: it "
                    "is mostly one run of characters without spaces (an encoded blob?); clean "
                    "the text or leave the document out")
            raise BadItem(err, at) from err


@dataclass
class WritePlan:
    """What to write for a window of documents, and what to delete once it is written."""

    write: list[Document] = field(default_factory=list)
    unchanged: int = 0
    stale: list[str] = field(default_factory=list)
    #: ``stale`` by document id, and the ids ``write`` holds for each document: a document's
    #: stale items can go as soon as all of its items are written (its new version is whole)
    stale_of: dict[str, list[str]] = field(default_factory=dict)
    written_of: dict[str, list[str]] = field(default_factory=dict)


def plan_writes(
    parts: Sequence[tuple[Document, list[Document]]],
    get: Callable[[list[str]], list[Document]],
    chunks_of: Callable[[list[str]], list[str]],
) -> WritePlan:
    """Compare documents (each with what to store for it) with the store.

    Stored items equal to a new one (same id, text and metadata) are not written again; stored
    items of these documents that the new version no longer has (old chunks, or the whole
    document now stored as chunks) are ``stale``: the caller deletes them after the writes.
    ``get`` reads stored items by id, ``chunks_of`` lists the stored chunk ids of documents
    (:meth:`VectorStore.ids_of_documents`).
    """
    new_ids = {d.id for _, stored in parts for d in stored}
    doc_ids = [doc.id for doc, _ in parts]
    present = {d.id: d for d in get(list(dict.fromkeys([*new_ids, *doc_ids])))}
    chunked = chunks_of(doc_ids) if doc_ids else []
    plan = WritePlan()
    for doc, stored in parts:
        for d in stored:
            old = present.get(d.id)
            if old is not None and old.text == d.text and old.metadata == d.metadata:
                plan.unchanged += 1
            else:
                plan.write.append(d)
                plan.written_of.setdefault(doc.id, []).append(d.id)
    old_ids = set(chunked) | {i for i in doc_ids if i in present}
    plan.stale = sorted(old_ids - new_ids)
    # the document of each stale id: itself, or the doc_id its chunk id starts with
    owner = {i: i if i in doc_ids else i.rsplit("#", 1)[0] for i in plan.stale}
    for i in plan.stale:
        plan.stale_of.setdefault(owner[i], []).append(i)
    return plan
