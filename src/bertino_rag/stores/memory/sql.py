"""MemoryStore's SQLite side: the schema, and filters as SQL over the JSON metadata."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ...search.filters import _FIELD, Node, Or

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS segments (seg INTEGER PRIMARY KEY, nrows INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS garbage (seg INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS docs (
    id TEXT PRIMARY KEY, seg INTEGER NOT NULL, row INTEGER NOT NULL,
    text TEXT NOT NULL, metadata TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS docs_seg ON docs (seg, row);
CREATE TABLE IF NOT EXISTS terms (id INTEGER PRIMARY KEY, term TEXT NOT NULL UNIQUE);
"""
_SQL_CHUNK = 500  # ids per "IN (...)" query


def _json_path(field: str) -> str:
    """``json_extract`` of a metadata field, as a SQL expression.

    The path is written literally (not bound) so that SQLite can use an expression index built
    by ``index_fields``; field names are validated by ``parse_filter`` (letters, digits, ``_``
    and ``-``), so they cannot close the quotes. Values are always bound parameters.
    """
    if not _FIELD.match(field):
        raise ValueError(f"invalid metadata field name {field!r}")
    return f"json_extract(metadata, '$.\"{field}\"')"


def _condition_sql(c: Node) -> tuple[str, list[Any]]:
    """One filter node as SQL over the JSON metadata; values are bound parameters.

    A condition on a missing field is SQL NULL, which WHERE treats as false; negations wrap
    the positive condition in ``COALESCE(..., 0)`` so that a missing field matches them.
    """
    if isinstance(c, Or):
        parts = [_conjunction_sql(list(branch)) for branch in c.branches]
        return "(" + " OR ".join(p for p, _ in parts) + ")", [x for _, ps in parts for x in ps]
    value_of = _json_path(c.field)
    type_of = value_of.replace("json_extract", "json_type", 1)

    def eq(value: Any) -> tuple[str, list[Any]]:
        if isinstance(value, bool):
            return f"{type_of} = ?", ["true" if value else "false"]
        if isinstance(value, str):
            return f"({type_of} = 'text' AND {value_of} = ?)", [value]
        return f"({type_of} IN ('integer', 'real') AND {value_of} = ?)", [value]

    def isin(values: tuple[Any, ...]) -> tuple[str, list[Any]]:
        # One IN list per type (not an OR per value: SQLite caps expression depth at 1000).
        if not values:
            return "0", []
        parts: list[str] = []
        params: list[Any] = []
        bools = sorted({"true" if v else "false" for v in values if isinstance(v, bool)})
        texts = [v for v in values if isinstance(v, str)]
        numbers = [v for v in values if not isinstance(v, (bool, str))]
        if bools:
            parts.append(f"{type_of} IN ({','.join('?' * len(bools))})")
            params += bools
        if texts:
            parts.append(f"({type_of} = 'text' AND {value_of} IN ({','.join('?' * len(texts))}))")
            params += texts
        if numbers:
            parts.append(f"({type_of} IN ('integer', 'real') AND "
                         f"{value_of} IN ({','.join('?' * len(numbers))}))")
            params += numbers
        return "(" + " OR ".join(parts) + ")", params

    if c.op == "$eq":
        return eq(c.value)
    if c.op == "$ne":
        sql, params = eq(c.value)
        return f"NOT COALESCE({sql}, 0)", params
    if c.op == "$in":
        return isin(c.value)
    if c.op == "$nin":
        sql, params = isin(c.value)
        return f"NOT COALESCE({sql}, 0)", params
    if c.op == "$exists":
        present = (f"({type_of} IS NOT NULL AND {type_of} != 'null' AND NOT ({type_of} = "
                   f"'array' AND json_array_length(metadata, '$.\"{c.field}\"') = 0))")
        return (present if c.value else f"NOT {present}"), []
    sql_op = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}[c.op]
    kind = "= 'text'" if isinstance(c.value, str) else "IN ('integer', 'real')"
    return f"({type_of} {kind} AND {value_of} {sql_op} ?)", [c.value]


def _conjunction_sql(nodes: list[Node]) -> tuple[str, list[Any]]:
    parts = [_condition_sql(n) for n in nodes]
    return "(" + " AND ".join(p for p, _ in parts) + ")", [x for _, ps in parts for x in ps]


def _chunks(items: list[str], size: int = _SQL_CHUNK) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]

