"""Expansion: each chunk hit joined with its neighbouring chunks, for a prompt that needs the
context around a passage.

A chunk hit at position ``p`` of document ``d`` becomes the text of chunks ``p - n`` to
``p + n`` of ``d`` as stored now (overlapping chunks joined without repeating their overlap;
separate ones with the white space that stood between them: a paragraph break or a space),
with ``char_start``/``char_end`` spanning them and ``expanded`` naming the first and last
chunk. A document stored whole, or whose neighbours are gone, keeps its hit as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..indexing.documents import CHAR_END, CHAR_START, CHUNK, DOC_ID
from ..types import Document, Hit
from .filters import parse_filter

if TYPE_CHECKING:
    from ..stores.protocol import StoreProtocol

__all__ = ["expand_hits"]


def expand_hits(store: StoreProtocol, hits: Sequence[Hit], n: int) -> list[Hit]:
    """``hits`` with each chunk hit widened by ``n`` neighbouring chunks on each side."""
    if not n:
        return list(hits)
    out = []
    for h in hits:
        doc, pos = h.metadata.get(DOC_ID), h.metadata.get(CHUNK)
        if doc is None or not isinstance(pos, int) or isinstance(pos, bool):
            out.append(h)  # a document stored whole: nothing around it
            continue
        ids = store._ids_where(parse_filter({DOC_ID: doc, CHUNK: {"$gte": pos - n,
                                                                   "$lte": pos + n}}))
        fetched = store._fetch(sorted(ids), documents=True)
        near = sorted((d for d in fetched.documents or () if d is not None),
                      key=lambda d: d.metadata[CHUNK])
        out.append(_joined(h, near) if near else h)
    return out


def _joined(hit: Hit, near: list[Document]) -> Hit:
    text, end = near[0].text, near[0].metadata[CHAR_END]
    for d in near[1:]:
        start = d.metadata[CHAR_START]
        if start < end:  # overlapping chunks: append what is new
            text += d.text[end - start:]
        else:  # the white space between chunks is not stored: a paragraph break
            text += ("\n\n" if start - end >= 2 else " ") + d.text
        end = d.metadata[CHAR_END]
    meta = {**hit.metadata, CHAR_START: near[0].metadata[CHAR_START], CHAR_END: end,
            "expanded": [near[0].metadata[CHUNK], near[-1].metadata[CHUNK]]}
    return Hit(id=hit.id, text=text, score=hit.score, metadata=meta, chunks=hit.chunks,
               rerank_score=hit.rerank_score)
