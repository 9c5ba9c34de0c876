"""What the two Qdrant stores share (qdrant-client's :class:`~.client.QdrantStore` and Qdrant
Edge's :class:`~.edge.QdrantEdgeStore`): point ids, the translation of dict filters into Qdrant
conditions, and the reads of stored points.

Both engines keep one point per document (id ``uuid5(doc_id)``) with the same payload
(``doc_id``, ``text``, ``metadata``) and named vectors, and take the same filter model under
other class names. So the filter translation is written once against a small
:class:`FilterVocabulary` that each store fills with its own classes, and the reads (documents
and full vectors by id, ids by filter, export pages, the fixed ``avgdl`` of the sparse values)
once in :class:`PointStore` over each engine's ``_retrieve`` and ``_scroll``. Neither client is
imported here.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ...errors import FilterError
from ...lexical import document_vector, mean_length
from ...search.filters import Node, Or
from ...search.ranked import Fetched, Ranked, ranked
from ...types import Document
from ..base import VectorStore, lexical_config
from ..protocol import ExportBatch
from ..retry import Retry

__all__ = [
    "FULL", "ID_NAMESPACE", "LEXICAL", "PAYLOAD_TYPES", "FilterVocabulary", "PointStore",
    "compile_conditions", "doc_id_of", "equal_condition", "parse_index_fields", "point_id",
    "ranked_points", "remember",
]

#: the named vector that holds the full-dim vectors
FULL = "full"
#: the named sparse vector of a hybrid collection
LEXICAL = "lexical"
#: payload keys of a stored document (``doc_id`` is the id the point stands for)
DOCUMENT_KEYS = ["doc_id", "text", "metadata"]
#: points per scroll page when listing ids
SCROLL_PAGE = 1024

#: payload index types, as Qdrant names them
PAYLOAD_TYPES = ("keyword", "integer", "float", "bool", "datetime", "text", "uuid")

#: namespace of the uuid5 point ids derived from document ids
ID_NAMESPACE = uuid.UUID("6f2d6c1e-8a55-5b8e-9c43-2f4e0b6a9d11")
_RANGE_BOUNDS = {"$gt": "gt", "$gte": "gte", "$lt": "lt", "$lte": "lte"}


#: point ids of the documents the engine answered with lately, by document id: the next stage
#: of a search (the hybrid union scored by point id, full vectors or documents read by point
#: id) asks for the same points, and hashing each id again cost 15% of a hybrid query on Qdrant
#: Edge (profiled at 1,128 points); bounded, as the candidates of a funnel block
_KNOWN: dict[str, str] = {}
_KNOWN_MAX = 1 << 16


def point_id(doc_id: str) -> str:
    """The Qdrant point id of a document id (point ids must be unsigned ints or UUIDs).

    The same on every Qdrant location, so a collection moved between them keeps its ids.
    """
    found = _KNOWN.get(doc_id)
    return found if found is not None else str(uuid.uuid5(ID_NAMESPACE, doc_id))


def doc_id_of(point: Any) -> str:
    """The document id a point (scored or retrieved, with its ``doc_id`` payload) stands for."""
    found = (point.payload or {}).get("doc_id")  # point.id only when needed: Edge builds a UUID
    return str(point.id) if found is None else str(found)


def remember(ids: Sequence[str], points: Sequence[Any]) -> None:
    """Keep the point ids of ``points`` (the engine's answer; ``ids`` their document ids) for
    :func:`point_id`."""
    if len(_KNOWN) + len(ids) > _KNOWN_MAX:
        _KNOWN.clear()
    for i, p in zip(ids, points, strict=True):
        if "doc_id" in (p.payload or {}):  # a bertino-rag point: its id is uuid5(doc id)
            _KNOWN[i] = str(p.id)


#: point id -> document id, learned from the engine's answers (bounded): point ids are
#: ``uuid5`` of document ids, so what was learned stays true
_DOC_OF: dict[str, str] = {}


def doc_ids_of(answers: Sequence[Sequence[Any]],
               read: Callable[[list[str]], Sequence[Any]]) -> None:
    """Learn the document ids of points answered without payload (``read``: points by id with
    their ``doc_id`` payload, for the ones not seen before; one call for the batch)."""
    unknown = list(dict.fromkeys(str(p.id) for points in answers for p in points
                                 if str(p.id) not in _DOC_OF))
    if not unknown:
        return
    if len(_DOC_OF) + len(unknown) > _KNOWN_MAX:
        _DOC_OF.clear()
    for r in read(unknown):
        _DOC_OF[str(r.id)] = doc_id_of(r)


def ranked_bare(points: Sequence[Any]) -> Ranked:
    """Scored points answered without payload, by the document ids :func:`doc_ids_of` learned;
    a point it could not read (deleted meanwhile) drops out."""
    known = [(_DOC_OF[str(p.id)], p) for p in points if str(p.id) in _DOC_OF]
    return ranked([i for i, _ in known], [float(p.score) for _, p in known])


def ranked_points(points: Sequence[Any], k: int | None = None, *,
                  documents: bool = False) -> Ranked:
    """Scored points as a :class:`Ranked` of document ids, by the one ranking rule; with
    ``documents``, also their documents (points read with :data:`DOCUMENT_KEYS`)."""
    ids = [doc_id_of(p) for p in points]
    if not documents:  # these ids come back to _fetch or _score: keep their point ids
        remember(ids, points)
    return ranked(ids, [float(p.score) for p in points], k=k,
                  documents=[payload_document(i, p.payload)
                             for i, p in zip(ids, points, strict=True)]
                  if documents else None)


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
    :func:`bertino_rag.search.filters.matches`.

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
    # a range matches int and float payloads alike (a match on 2 would miss 2.0)
    return v.field(key, range=v.range(gte=value, lte=value))


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


def payload_document(doc_id: str, payload: Mapping[str, Any] | None) -> Document:
    payload = payload or {}
    return Document(text=payload.get("text", ""), id=doc_id,
                    metadata=payload.get("metadata") or {})


class PointStore(VectorStore):
    """The reads both Qdrant stores make the same way, over two engine calls each implements:
    ``_retrieve`` (points by id) and ``_scroll`` (a page of points), both through the store's
    one :class:`~bertino_rag.stores.retry.Retry`. Also the filter compilation (with the
    store's :class:`FilterVocabulary`) and the ``avgdl`` fixed by the first lexical write."""

    #: the store's filter classes, and its client's native filter type
    vocabulary: ClassVar[FilterVocabulary]
    filter_type: ClassVar[type]
    #: the native filter's name in messages
    filter_name: ClassVar[str]
    #: points per retrieve request
    batch_size: int
    retry: Retry
    #: the mean document length the sparse values are normalized by (hybrid collections)
    _avgdl: float | None = None

    # ------------------------------------------------------------------ engine calls
    def _retrieve(self, pids: list[str], documents: bool, full: bool) -> list[Any]:
        """The stored points among ``pids``, with their document payload and/or their full
        vector (``r.id``, ``r.payload``, ``r.vector[FULL]``); missing ones are left out."""
        raise NotImplementedError

    def _scroll(self, offset: Any, limit: int, flt: Any, payload: list[str] | bool,
                vectors: list[str] | bool) -> tuple[list[Any], Any]:
        """A page of up to ``limit`` points matching ``flt`` from ``offset``, and the next
        offset (``None`` after the last page)."""
        raise NotImplementedError

    def _stored_avgdl(self) -> float | None:
        """The ``avgdl`` kept with the stamp, if a write fixed it already."""
        raise NotImplementedError

    def _keep_avgdl(self, avgdl: float) -> None:
        """Keep ``avgdl`` with the stamp (before any sparse value normalized by it is
        written)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ filters
    @property
    def index_vector(self) -> str:
        """Name of the truncated vector, e.g. ``dim128``."""
        return f"dim{self.stamp.index_dim}"

    def _native_filter(self, filter: Any) -> Any:
        if isinstance(filter, self.filter_type):
            return filter
        raise TypeError(f"{type(self).__name__} takes filters as a dict or a "
                        f"{self.filter_name}, got {type(filter).__name__}")

    def _compile(self, conditions: Any) -> Any:
        """A native filter, ``None`` (no constraint) or ``False`` (matches nothing)."""
        if isinstance(conditions, self.filter_type):
            return conditions
        return compile_conditions(conditions, self.vocabulary)

    # ------------------------------------------------------------------ reads
    def _fetch(self, ids: list[str], rows: np.ndarray | None = None, *,
               documents: bool = False, full: bool = False) -> Fetched:
        pids = [point_id(i) for i in ids]
        by_pid: dict[str, Any] = {}
        for start in range(0, len(pids), self.batch_size):
            for r in self._retrieve(pids[start:start + self.batch_size], documents, full):
                by_pid[str(r.id)] = r
        records = [by_pid.get(p) for p in pids]
        found = np.fromiter((r is not None for r in records), dtype=bool, count=len(records))
        docs = None
        if documents:
            docs = [None if r is None else payload_document(i, r.payload)
                    for i, r in zip(ids, records, strict=True)]
        vectors = None
        if full:
            vectors = np.zeros((len(ids), self.stamp.full_dim), dtype=np.float32)
            at = np.flatnonzero(found)
            if len(at):
                vectors[at] = np.asarray([records[j].vector[FULL] for j in at.tolist()],
                                         dtype=np.float32)
        return Fetched(found, docs, vectors)

    def _ids_where(self, conditions: Any) -> list[str]:
        flt = self._compile(conditions)
        if flt is False:
            return []
        ids: list[str] = []
        offset: Any = None
        while True:
            page, offset = self._scroll(offset, SCROLL_PAGE, flt, ["doc_id"], False)
            ids.extend(doc_id_of(r) for r in page)
            if offset is None:
                return ids

    def _scan(self, batch_size: int) -> Iterator[ExportBatch]:
        full = self.stamp.full_vectors
        name = self.index_vector
        offset: Any = None
        while True:
            page, offset = self._scroll(offset, batch_size, None, DOCUMENT_KEYS,
                                        [name, FULL] if full else [name])
            if page:
                vectors = [r.vector or {} for r in page]
                yield ExportBatch(
                    [payload_document(doc_id_of(r), r.payload) for r in page],
                    np.asarray([v[name] for v in vectors], dtype=np.float32),
                    np.asarray([v[FULL] for v in vectors], dtype=np.float32) if full else None)
            if offset is None:
                return

    # ------------------------------------------------------------------ lexical
    @property
    def lexical_avgdl(self) -> float | None:
        self.stamp  # noqa: B018 - raises when not open
        return self._avgdl

    def _document_vectors(self, terms: Sequence[dict[str, int]]
                          ) -> list[tuple[list[int], list[float]]]:
        """The sparse vectors of a write's documents: BM25's term-frequency part, normalized
        by the collection's fixed ``avgdl`` (:meth:`_fix_avgdl`)."""
        avgdl = self._fix_avgdl(terms)
        bm25 = lexical_config(self.stamp.lexical or "")[1]
        return [document_vector(t, bm25, avgdl) for t in terms]

    def _fix_avgdl(self, terms: Sequence[dict[str, int]]) -> float:
        """The ``avgdl`` of the collection's sparse values: the one kept with the stamp, or, on
        the first write with any term, this batch's mean length, kept with the stamp first.

        A sparse value is written once, so its length normalization cannot follow the live
        mean as MemoryStore's does; as long as later documents are of the same kind the two
        agree (on squad-it-dev, 0.998 top-10 agreement against 0.89 with a fixed 256).
        """
        if self._avgdl is None:
            self._avgdl = self._stored_avgdl()  # another writer may have fixed it
        if self._avgdl is not None:
            return self._avgdl
        avgdl = mean_length(list(terms))
        if avgdl <= 0:  # only empty documents so far: their vectors are empty either way
            return 1.0
        self._keep_avgdl(avgdl)
        self._avgdl = avgdl
        return avgdl
