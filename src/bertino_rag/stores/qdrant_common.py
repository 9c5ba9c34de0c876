"""Rules shared by the two Qdrant stores (qdrant-client's and Qdrant Edge's): point ids and
the translation of dict filters into Qdrant conditions.

Both engines take the same filter model under different class names, so the translation is
written once here against a small :class:`FilterVocabulary` that each store fills with its
own classes. Neither client is imported here.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..types import Document, Hit
from .base import VectorStore, check_found, ranking_key
from ..search.filters import FilterError, Node, Or

__all__ = [
    "FULL", "ID_NAMESPACE", "PAYLOAD_TYPES", "FilterVocabulary", "PointRecordReads",
    "compile_conditions", "equal_condition", "hits_from_points", "parse_index_fields", "point_id",
]

#: the named vector that holds the full-dim vectors
FULL = "full"

#: payload index types, as Qdrant names them
PAYLOAD_TYPES = ("keyword", "integer", "float", "bool", "datetime", "text", "uuid")

#: namespace of the uuid5 point ids derived from document ids
ID_NAMESPACE = uuid.UUID("6f2d6c1e-8a55-5b8e-9c43-2f4e0b6a9d11")
_MAX_EXACT_FLOAT = 2**53
_RANGE_BOUNDS = {"$gt": "gt", "$gte": "gte", "$lt": "lt", "$lte": "lte"}


def point_id(doc_id: str) -> str:
    """The Qdrant point id of a document id (point ids must be unsigned ints or UUIDs).

    The same on every Qdrant location, so a collection moved between them keeps its ids.
    """
    return str(uuid.uuid5(ID_NAMESPACE, doc_id))


@dataclass(frozen=True)
class FilterVocabulary:
    """The filter classes of one Qdrant client.

    ``filter(must=..., should=..., must_not=...)``, ``field(key, match=..., range=...)``,
    ``match(value)``, ``match_any(values)`` (strings), ``range(gt=..., gte=..., lt=...,
    lte=...)`` and ``is_empty(key)`` (the field is missing, ``null`` or ``[]``).
    """

    filter: Callable[..., Any]
    field: Callable[..., Any]
    match: Callable[[Any], Any]
    match_any: Callable[[list[str]], Any]
    range: Callable[..., Any]
    is_empty: Callable[[str], Any]


def compile_conditions(conditions: Sequence[Node], v: FilterVocabulary) -> Any:
    """Parsed conditions as a Qdrant filter on ``metadata.<field>``.

    Returns the filter, ``None`` when nothing constrains (no condition, or only ones that
    always hold), or ``False`` when the filter matches nothing (an empty ``$in``: an empty
    ``should`` means "no constraint" in Qdrant). Semantics are those of
    :func:`bertino_rag.adapters.filters.matches`.

    Raises:
        FilterError: a range on a string (Qdrant ranges are numeric).
    """
    if not conditions:
        return None
    compiled = _conjunction(conditions, v)
    return None if compiled is True else compiled


def _conjunction(nodes: Sequence[Node], v: FilterVocabulary) -> Any:
    """Nodes that must all hold: a filter, ``True`` (no constraint) or ``False`` (nothing
    matches)."""
    must: list[Any] = []
    must_not: list[Any] = []
    for node in nodes:
        part = _node(node, v)
        if part is False:
            return False
        if part is True:
            continue
        negate, condition = part
        (must_not if negate else must).append(condition)
    if not must and not must_not:
        return True
    return v.filter(must=must or None, must_not=must_not or None)


def _node(c: Node, v: FilterVocabulary) -> tuple[bool, Any] | bool:
    """One node as (negated?, condition), or True/False when it is decided already."""
    if isinstance(c, Or):
        branches = [_conjunction(b, v) for b in c.branches]
        if any(b is True for b in branches):
            return True
        live = [b for b in branches if b is not False]
        if not live:
            return False
        return False, v.filter(should=live)
    key = f"metadata.{c.field}"
    if c.op in ("$eq", "$ne"):
        return c.op == "$ne", equal_condition(key, c.value, v)
    if c.op in ("$in", "$nin"):
        if not c.value:  # an empty should is "no constraint" in Qdrant
            return c.op == "$nin"
        return c.op == "$nin", _any_of(key, c.value, v)
    if c.op == "$exists":
        # is_empty: missing, null or [] -- the $exists semantics of filters.matches
        return bool(c.value), v.is_empty(key)
    if isinstance(c.value, str):
        raise FilterError(
            f"filter on {c.field!r}: Qdrant has no range on strings ({c.op} "
            f"{c.value!r}); use $eq/$in, or store the field as a number"
        )
    return False, v.field(key, range=v.range(**{_RANGE_BOUNDS[c.op]: c.value}))


def _any_of(key: str, values: Sequence[Any], v: FilterVocabulary) -> Any:
    """``$in``: one MatchAny for the strings (fast on long lists), equalities for the rest."""
    texts = list(dict.fromkeys(x for x in values if isinstance(x, str)))
    rest = list(dict.fromkeys((type(x), x) for x in values if not isinstance(x, str)))
    parts: list[Any] = []
    if texts:
        parts.append(v.field(key, match=v.match_any(texts)))
    parts += [equal_condition(key, x, v) for _, x in rest]
    return parts[0] if len(parts) == 1 else v.filter(should=parts)


def equal_condition(key: str, value: Any, v: FilterVocabulary) -> Any:
    """Equality with filters.matches semantics: bool is not 1, "1" is not 1, 2 == 2.0."""
    if isinstance(value, (bool, str)):
        return v.field(key, match=v.match(value))
    if isinstance(value, int) and abs(value) >= _MAX_EXACT_FLOAT:
        return v.field(key, match=v.match(value))
    # a range matches int and float payloads alike (a match on 2 would miss 2.0)
    return v.field(key, range=v.range(gte=value, lte=value))


def hits_from_points(points: Sequence[Any]) -> list[Hit]:
    """Scored points (payload ``doc_id``, ``text``, ``metadata``) as hits, best first, ties
    by id."""
    hits = []
    for p in points:
        payload = p.payload or {}
        hits.append(Hit(id=payload.get("doc_id", str(p.id)), text=payload.get("text", ""),
                        score=float(p.score), metadata=payload.get("metadata") or {}))
    hits.sort(key=lambda h: ranking_key(h.score, h.id))
    return hits


def parse_index_fields(fields: Mapping[str, str] | Sequence[str] | None) -> dict[str, str]:
    """``index_fields`` as field -> payload type; a list means keyword fields.

    Raises:
        ValueError: a type that is not one of :data:`PAYLOAD_TYPES`.
    """
    if fields is None:
        return {}
    if isinstance(fields, str):
        fields = [fields]
    pairs = fields.items() if isinstance(fields, Mapping) else ((f, "keyword") for f in fields)
    out = {}
    for field, kind in pairs:
        kind = str(getattr(kind, "value", kind)).lower()
        if kind not in PAYLOAD_TYPES:
            raise ValueError(f"index_fields[{field!r}]: type {kind!r} is not one of "
                             f"{PAYLOAD_TYPES}")
        out[str(field)] = kind
    return out


class PointRecordReads(VectorStore):
    """``_get``, ``_fetch_full`` and ``_with_payloads`` of the Qdrant stores (qdrant-client and
    Qdrant Edge), over their ``_records``: the stored points by document id, each with its
    ``payload`` (``text``, ``metadata``) and, when asked, its ``FULL`` vector."""

    def _records(self, ids: list[str], with_full: bool) -> dict[str, Any]:
        raise NotImplementedError

    def _get(self, ids: list[str]) -> list[Document]:
        found = self._records(ids, with_full=False)
        return [Document(text=found[i].payload["text"], id=i,
                         metadata=found[i].payload.get("metadata") or {})
                for i in ids if i in found]

    def _fetch_full(self, ids: list[str]) -> np.ndarray:
        found = self._records(ids, with_full=True)
        check_found(ids, found, self.collection)
        return np.asarray([found[i].vector[FULL] for i in ids], dtype=np.float32)

    def _with_payloads(self, results: list[list[Hit]]) -> list[list[Hit]]:
        """The final hits with their text and metadata, read once per distinct document."""
        wanted = list(dict.fromkeys(h.id for hits in results for h in hits))
        found = self._records(wanted, with_full=False)
        seen: set[str] = set()
        out = []
        for hits in results:
            row = []
            for h in hits:
                if h.id not in found:  # deleted since the candidates were taken
                    continue
                payload = found[h.id].payload or {}
                metadata = payload.get("metadata") or {}
                # each hit owns its metadata, as the hits of a plain search do
                row.append(Hit(id=h.id, text=payload.get("text", ""), score=h.score,
                               metadata=copy.deepcopy(metadata) if h.id in seen else metadata))
                seen.add(h.id)
            out.append(row)
        return out
