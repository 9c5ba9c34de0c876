"""Plain-dict filters compiled to Milvus boolean expressions, safely.

Milvus compares JSON values loosely (``true == 1`` holds on Milvus Lite), while the filter
semantics of :func:`~bertino_rag.search.filters.matches` are strict: a bool is not 1 and
``"1"`` is not 1. So each document also stores a typed copy of its top-level scalar metadata,
the ``filter_keys`` JSON field, with one key per value type::

    {"title": "Roma", "para": 3, "draft": False}
    -> {"s:title": "526f6d61", "n:para": 3, "b:draft": false,
        "e:title": true, "e:para": true, "e:draft": true}

Strings are stored as the hex of their UTF-8 bytes (hex preserves the byte order, which is the
code point order, so string ranges keep their meaning). A filter on ``title`` only reads
``"s:title"``, so values of another type, and missing fields, never match. ``"e:<field>"``
marks the fields that ``$exists`` (present, not null, not ``[]``); collections written before
it was added answer ``$exists`` as if no field existed: re-index them to use it.
Negations (``$ne``, ``$nin``) are written ``(not exists key or not (key == v))``: a
comparison with a missing key is null in Milvus, and ``not null`` would not match.

Values never enter the expression text. The compiler writes placeholders (``{p0}``) and returns
the values apart, for Milvus' filter templating (``filter_params``). Engines without templating
(Milvus Lite 3.2 ignores ``filter_params``) get :func:`render_inline`: every placeholder becomes
a literal over a closed alphabet (hex digits in quotes, the ``repr`` of a finite number,
``true``/``false``), which cannot change the structure of the expression whatever the user wrote.
Field names are validated by :func:`~bertino_rag.search.filters.parse_filter` (letters, digits,
``_`` and ``-``), so they are safe inside the quoted JSON key. Lookups by id are the one place
a value is written into an expression, on Milvus Lite only (:func:`ids_filter`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ...search.filters import Condition, FilterError, Node, Or

__all__ = [
    "FILTER_FIELD",
    "MilvusFilter",
    "compile_filter",
    "filter_keys",
    "filter_kwargs",
    "ids_filter",
    "render_inline",
]

FILTER_FIELD = "filter_keys"
_HEX = re.compile(r"^[0-9a-f]*$")
_PLACEHOLDER = re.compile(r"\{(p\d+)\}")
_RANGE = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_INT64 = (-(2**63), 2**63 - 1)
_ALL = 'id != ""'  # matches every document (ids are never empty)


@dataclass(frozen=True)
class MilvusFilter:
    """A compiled filter: an expression with placeholders, and the values for them."""

    expr: str
    params: dict[str, Any] = field(default_factory=dict)


def _hex(text: str) -> str:
    return text.encode("utf-8").hex()


def _number(value: int | float) -> int | float:
    if isinstance(value, int) and not _INT64[0] <= value <= _INT64[1]:
        return float(value)
    return value


def filter_keys(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The typed, filterable copy of a document's top-level scalar metadata."""
    keys: dict[str, Any] = {}
    for name, value in metadata.items():
        if not isinstance(name, str):
            continue
        if value is not None and not (isinstance(value, (list, tuple)) and len(value) == 0):
            keys[f"e:{name}"] = True
        if isinstance(value, bool):
            keys[f"b:{name}"] = value
        elif isinstance(value, str):
            keys[f"s:{name}"] = _hex(value)
        elif isinstance(value, (int, float)) and math.isfinite(value):
            keys[f"n:{name}"] = _number(value)
    return keys


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "b"
    if isinstance(value, str):
        return "s"
    return "n"


def _encode(value: Any, c: Condition) -> Any:
    if isinstance(value, str):
        return _hex(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise FilterError(
            f"filter on {c.field!r}: non-finite numbers ({value!r}) are not supported"
        )
    return value if isinstance(value, bool) else _number(value)


class _Builder:
    def __init__(self) -> None:
        self.params: dict[str, Any] = {}

    def param(self, value: Any) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return "{" + name + "}"

    def key(self, kind: str, c: Condition) -> str:
        return f'{FILTER_FIELD}["{kind}:{c.field}"]'

    def eq(self, c: Condition, value: Any) -> str:
        return f"{self.key(_kind(value), c)} == {self.param(_encode(value, c))}"

    def not_eq(self, c: Condition, value: Any) -> str:
        """Not equal, a missing key included (``not (missing == v)`` is null in Milvus)."""
        key = self.key(_kind(value), c)
        return f"(not exists {key} or not ({self.eq(c, value)}))"

    def exists(self, c: Condition) -> str:
        return f"exists {self.key('e', c)}"

    def node(self, c: Node) -> str | None:
        """One node as an expression; ``None`` when nothing can match it."""
        if isinstance(c, Or):
            parts = [self.conjunction(list(b)) for b in c.branches]
            live = [p for p in parts if p is not None]
            if not live:
                return None
            return "(" + " or ".join(f"({p})" for p in live) + ")"
        return self.condition(c)

    def conjunction(self, nodes: list[Node]) -> str | None:
        parts = []
        for n in nodes:
            part = self.node(n)
            if part is None:
                return None
            parts.append(f"({part})")
        return " and ".join(parts) if parts else _ALL

    def condition(self, c: Condition) -> str | None:
        """One condition as an expression; ``None`` when nothing can match it."""
        if c.op == "$eq":
            return self.eq(c, c.value)
        if c.op == "$ne":
            return self.not_eq(c, c.value)
        if c.op in ("$in", "$nin"):
            if not c.value:
                return None if c.op == "$in" else _ALL
            # Milvus Lite takes `in` only on plain fields, so $in is an OR of equalities.
            values = [v for _, v in dict.fromkeys((_kind(v), v) for v in c.value)]
            if c.op == "$in":
                return "(" + " or ".join(self.eq(c, v) for v in values) + ")"
            return "(" + " and ".join(self.not_eq(c, v) for v in values) + ")"
        if c.op == "$exists":
            return self.exists(c) if c.value else f"not {self.exists(c)}"
        op = _RANGE[c.op]
        kind = _kind(c.value)
        bound = self.param(_encode(c.value, c))
        return f"{self.key(kind, c)} {op} {bound}"


def compile_filter(conditions: list[Node]) -> MilvusFilter | None:
    """Compile parsed nodes (AND) into a templated expression.

    Returns:
        ``MilvusFilter("", {})`` for no conditions, ``None`` when no document can match
        (an empty ``$in``).
    """
    if not conditions:
        return MilvusFilter("", {})
    builder = _Builder()
    expr = builder.conjunction(conditions)
    if expr is None:
        return None
    return MilvusFilter("" if expr == _ALL else expr, builder.params)


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        if not _HEX.match(value):  # only hex strings are ever produced by the compiler
            raise FilterError("internal error: a non-hex string reached the expression")
        return f'"{value}"'
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    raise FilterError(f"internal error: cannot render {type(value).__name__} in an expression")


def render_inline(compiled: MilvusFilter) -> str:
    """The expression with each placeholder replaced by a closed-alphabet literal."""
    return _PLACEHOLDER.sub(lambda m: _literal(compiled.params[m.group(1)]), compiled.expr)


def filter_kwargs(compiled: MilvusFilter, templating: bool) -> dict[str, Any]:
    """The ``filter`` (and ``filter_params``) keyword arguments of a search or query for a
    compiled filter: templated where the engine reads ``filter_params``, else rendered with
    closed-alphabet literals (:func:`render_inline`)."""
    if not compiled.expr:
        return {}
    if templating:
        return {"filter": compiled.expr, "filter_params": compiled.params}
    return {"filter": render_inline(compiled)}


def _lite_literal(text: str) -> str:
    """``text`` as a double-quoted string of Milvus Lite's expression tokenizer, which gives
    four characters a meaning inside a string (the quote, the backslash, CR and LF: it reads
    ``\\"``, ``\\\\``, ``\\r`` and ``\\n`` as them) and takes every other one as
    itself; the literal therefore reads back as ``text`` exactly and ends where it should."""
    return '"' + (text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
                  .replace("\r", "\\r")) + '"'


def ids_filter(ids: list[str], templating: bool, lite: bool) -> dict[str, Any]:
    """The keyword arguments selecting documents by id.

    - templating (Milvus >= 2.5): ``id in {ids}``, the ids passed apart;
    - Milvus Lite: ``id in ["...", ...]`` with each id written by :func:`_lite_literal`. Lite
      answers exactly this form (a primary-key list) by key lookup, and scans every entity
      for any other (at 20k entities, 3 ms against 180 ms for a lookup of the ``id_hex``
      field), so it is what makes reading the final hits cheap;
    - any other engine: the hex of each id against the ``id_hex`` field (a closed alphabet).
    """
    if templating:
        return {"filter": "id in {ids}", "filter_params": {"ids": ids}}
    if lite:
        return {"filter": "id in [" + ", ".join(_lite_literal(i) for i in ids) + "]"}
    hexes = MilvusFilter("[" + ", ".join(f"{{p{i}}}" for i in range(len(ids))) + "]",
                         {f"p{i}": _hex(doc_id) for i, doc_id in enumerate(ids)})
    return {"filter": "id_hex in " + render_inline(hexes)}
