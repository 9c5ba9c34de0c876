"""Plain-dict metadata filters, parsed once and compiled by each store.

A filter is a dict of metadata field -> condition, all of which must hold (AND):

- ``{"lang": "it"}``: equality; ``{"lang": {"$eq": "it"}}`` says the same;
- ``{"lang": {"$ne": "en"}}``: inequality;
- ``{"year": {"$gte": 2000, "$lt": 2010}}``: ranges (``$gt``, ``$gte``, ``$lt``, ``$lte``);
- ``{"source": {"$in": ["a", "b"]}}`` and ``{"source": {"$nin": ["c"]}}``: membership;
- ``{"author": {"$exists": True}}``: the field is present with a value other than ``null``
  or ``[]`` (``False``: it is not);
- ``{"$or": [{...}, {...}]}`` and ``{"$and": [{...}, {...}]}``: any / all of several filters,
  nested as deep as needed (up to :data:`MAX_DEPTH` levels).

Values are str (without NUL), int (within +-(2**53 - 1), what every store compares
exactly), finite float or bool, and compare strictly on every
store: ``True`` is not ``1``, ``"1"`` is not ``1``, ``2`` is ``2.0``. A document without the
field never matches ``$eq``, ``$in`` or a range, and always matches ``$ne`` and ``$nin`` (they
are the negations of ``$eq`` and ``$in``). ``$in``/``$nin`` take at most
:data:`MAX_IN_VALUES` values, and a filter at most :data:`MAX_CONDITIONS` conditions.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import FilterError
from ..validation import EXACT_INT, check_no_nul

__all__ = [
    "MAX_CONDITIONS",
    "MAX_DEPTH",
    "MAX_IN_VALUES",
    "Condition",
    "FilterError",
    "Node",
    "Or",
    "matches",
    "parse_filter",
]

Op = Literal["$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte", "$exists"]
OPERATORS: tuple[str, ...] = ("$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte",
                              "$exists")
RANGES: tuple[str, ...] = ("$gt", "$gte", "$lt", "$lte")
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,127}$")
Scalar = str | int | float | bool
#: values of one ``$in``/``$nin`` (more would be slow on some stores: filter on a coarser field)
MAX_IN_VALUES = 1_000
#: conditions in one filter, ``$in`` values included
MAX_CONDITIONS = 2_000
#: nesting of ``$or``/``$and``
MAX_DEPTH = 8


@dataclass(frozen=True)
class Condition:
    field: str
    op: str
    value: Any  # a scalar, a tuple of scalars for $in/$nin, a bool for $exists


@dataclass(frozen=True)
class Or:
    """Any of several branches; each branch is a list of nodes that must all hold."""

    branches: tuple[tuple[Node, ...], ...]


Node = Condition | Or


def _scalar(value: Any, field: str, op: str) -> Scalar:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return check_no_nul(value, f"filter on {field!r}: {op} value")
        except ValueError as err:
            raise FilterError(str(err)) from None
    if isinstance(value, int):
        if abs(value) > EXACT_INT:
            raise FilterError(f"filter on {field!r}: {op} value {value} is beyond "
                              "+-(2**53 - 1), the integers every store compares exactly "
                              "(metadata holds no larger one)")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise FilterError(f"filter on {field!r}: {op} takes finite numbers; non-finite "
                              f"{value!r} is not supported")
        return value
    raise FilterError(
        f"filter on {field!r}: {op} takes a str, int, float or bool, got {type(value).__name__}"
    )


class _Parser:
    def __init__(self) -> None:
        self.n = 0

    def count(self, k: int = 1) -> None:
        self.n += k
        if self.n > MAX_CONDITIONS:
            raise FilterError(f"filter has more than {MAX_CONDITIONS} conditions; split the "
                              "search, or filter on a coarser field")

    def parse(self, filter: Any, depth: int) -> list[Node]:
        if not isinstance(filter, Mapping):
            raise FilterError(f"filter must be a dict, got {type(filter).__name__}")
        if depth > MAX_DEPTH:
            raise FilterError(f"filter nests $or/$and more than {MAX_DEPTH} levels deep")
        nodes: list[Node] = []
        for field, cond in filter.items():
            if field in ("$or", "$and"):
                nodes.extend(self.logical(field, cond, depth))
                continue
            if not isinstance(field, str) or not _FIELD.match(field):
                raise FilterError(
                    f"filter field {field!r} is not a valid name (letters, digits, '_' and '-', "
                    "starting with a letter or '_'); combine filters with '$or' or '$and'"
                )
            if isinstance(cond, Mapping):
                if not cond:
                    raise FilterError(f"filter on {field!r} has an empty condition")
                for op, value in cond.items():
                    nodes.append(self.condition(field, op, value))
            else:
                self.count()
                nodes.append(Condition(field, "$eq", _scalar(cond, field, "equality")))
        return nodes

    def logical(self, op: str, value: Any, depth: int) -> list[Node]:
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence) \
                or not value:
            raise FilterError(f"{op} takes a non-empty list of filters, e.g. "
                              f'{{"{op}": [{{"lang": "it"}}, {{"year": 2024}}]}}')
        branches = [self.parse(f, depth + 1) for f in value]
        if op == "$and":
            return [node for branch in branches for node in branch]
        return [Or(tuple(tuple(b) for b in branches))]

    def condition(self, field: str, op: Any, value: Any) -> Condition:
        if op not in OPERATORS:
            raise FilterError(
                f"filter on {field!r}: unknown operator {op!r}; use one of {OPERATORS}"
            )
        if op in ("$in", "$nin"):
            if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
                raise FilterError(f"filter on {field!r}: {op} takes a list of values")
            values = tuple(_scalar(v, field, op) for v in value)
            if len(values) > MAX_IN_VALUES:
                raise FilterError(
                    f"filter on {field!r}: {op} takes at most {MAX_IN_VALUES} values, got "
                    f"{len(values)}; filter on a coarser field, or split the search"
                )
            self.count(max(1, len(values)))
            return Condition(field, op, values)
        self.count()
        if op == "$exists":
            if not isinstance(value, bool):
                raise FilterError(f"filter on {field!r}: $exists takes true or false, got "
                                  f"{value!r}")
            return Condition(field, op, value)
        if op in ("$eq", "$ne"):
            return Condition(field, op, _scalar(value, field, op))
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise FilterError(
                f"filter on {field!r}: {op} takes a number or a string, "
                f"got {type(value).__name__}"
            )
        return Condition(field, op, _scalar(value, field, op))


def parse_filter(filter: Mapping[str, Any] | None) -> list[Node]:
    """Validate a plain-dict filter into nodes that must all hold (AND).

    Raises:
        FilterError: on an unknown operator, a bad field name, a value of the wrong type or a
            filter past the bounds (:data:`MAX_IN_VALUES`, :data:`MAX_CONDITIONS`,
            :data:`MAX_DEPTH`).
    """
    if filter is None:
        return []
    return _Parser().parse(filter, 0)


def exists(metadata: Mapping[str, Any], field: str) -> bool:
    """``$exists`` semantics: present, and neither ``None`` nor an empty list."""
    value = metadata.get(field)
    return value is not None and not (isinstance(value, (list, tuple)) and len(value) == 0)


def matches(metadata: Mapping[str, Any], conditions: Sequence[Node]) -> bool:
    """Reference semantics of a parsed filter on one metadata dict (used by tests and stores)."""
    return all(_holds(metadata, c) for c in conditions)


def _holds(metadata: Mapping[str, Any], c: Node) -> bool:
    if isinstance(c, Or):
        return any(matches(metadata, branch) for branch in c.branches)
    if c.op == "$exists":
        return exists(metadata, c.field) == c.value
    if c.op == "$ne":
        return not _holds(metadata, Condition(c.field, "$eq", c.value))
    if c.op == "$nin":
        return not _holds(metadata, Condition(c.field, "$in", c.value))
    if c.field not in metadata:
        return False
    v = metadata[c.field]
    try:
        if c.op == "$eq":
            return _same(v, c.value)
        if c.op == "$in":
            return any(_same(v, x) for x in c.value)
        if isinstance(v, bool) or isinstance(v, str) != isinstance(c.value, str):
            return False
        if c.op == "$gt":
            return bool(v > c.value)
        if c.op == "$gte":
            return bool(v >= c.value)
        if c.op == "$lt":
            return bool(v < c.value)
        return bool(v <= c.value)
    except TypeError:
        return False


def _same(a: Any, b: Any) -> bool:
    # bool is not 1, and "1" is not 1.
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return False
