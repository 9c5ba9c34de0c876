"""Plain-dict metadata filters, parsed once and compiled by each store.

A filter is a dict of metadata field -> condition, all of which must hold (AND):

- ``{"lang": "it"}``: equality;
- ``{"year": {"$gte": 2000, "$lt": 2010}}``: ranges (``$gt``, ``$gte``, ``$lt``, ``$lte``);
- ``{"source": {"$in": ["a", "b"]}}``: membership;
- ``{"lang": {"$eq": "it"}}``: explicit equality.

Values are str, int, float or bool. A document without the field never matches.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Condition", "FilterError", "parse_filter"]

Op = Literal["$eq", "$in", "$gt", "$gte", "$lt", "$lte"]
OPERATORS: tuple[str, ...] = ("$eq", "$in", "$gt", "$gte", "$lt", "$lte")
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,127}$")
Scalar = str | int | float | bool


class FilterError(ValueError):
    """A filter that cannot be understood."""


@dataclass(frozen=True)
class Condition:
    field: str
    op: str
    value: Any  # a scalar, or a tuple of scalars for $in


def _scalar(value: Any, field: str, op: str) -> Scalar:
    if isinstance(value, (str, int, float, bool)):
        return value
    raise FilterError(
        f"filter on {field!r}: {op} takes a str, int, float or bool, got {type(value).__name__}"
    )


def parse_filter(filter: Mapping[str, Any] | None) -> list[Condition]:
    """Validate a plain-dict filter and flatten it into conditions (joined by AND).

    Raises:
        FilterError: on an unknown operator, a bad field name or a value of the wrong type.
    """
    if filter is None:
        return []
    if not isinstance(filter, Mapping):
        raise FilterError(f"filter must be a dict, got {type(filter).__name__}")
    conditions: list[Condition] = []
    for field, cond in filter.items():
        if not isinstance(field, str) or not _FIELD.match(field):
            raise FilterError(
                f"filter field {field!r} is not a valid name (letters, digits, '_' and '-', "
                "starting with a letter or '_')"
            )
        if isinstance(cond, Mapping):
            if not cond:
                raise FilterError(f"filter on {field!r} has an empty condition")
            for op, value in cond.items():
                if op not in OPERATORS:
                    raise FilterError(
                        f"filter on {field!r}: unknown operator {op!r}; use one of {OPERATORS}"
                    )
                if op == "$in":
                    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                        raise FilterError(f"filter on {field!r}: $in takes a list of values")
                    values = tuple(_scalar(v, field, op) for v in value)
                    conditions.append(Condition(field, op, values))
                elif op == "$eq":
                    conditions.append(Condition(field, op, _scalar(value, field, op)))
                else:
                    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                        raise FilterError(
                            f"filter on {field!r}: {op} takes a number or a string, "
                            f"got {type(value).__name__}"
                        )
                    conditions.append(Condition(field, op, value))
        else:
            conditions.append(Condition(field, "$eq", _scalar(cond, field, "equality")))
    return conditions


def matches(metadata: Mapping[str, Any], conditions: list[Condition]) -> bool:
    """Reference semantics of a parsed filter on one metadata dict (used by tests and stores)."""
    for c in conditions:
        if c.field not in metadata:
            return False
        v = metadata[c.field]
        try:
            if c.op == "$eq":
                ok = _same(v, c.value)
            elif c.op == "$in":
                ok = any(_same(v, x) for x in c.value)
            elif isinstance(v, bool) or isinstance(v, str) != isinstance(c.value, str):
                ok = False
            elif c.op == "$gt":
                ok = v > c.value
            elif c.op == "$gte":
                ok = v >= c.value
            elif c.op == "$lt":
                ok = v < c.value
            else:
                ok = v <= c.value
        except TypeError:
            ok = False
        if not ok:
            return False
    return True


def _same(a: Any, b: Any) -> bool:
    # bool is not 1, and "1" is not 1.
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    return a == b
