"""The input rules every entry point applies, once: ints, names, vectors, documents.

One place for each rule, so that the retriever, the stores, the service and the command line
give the same error for the same mistake (the message names the problem and the fix).
"""

from __future__ import annotations

import math
import re
import unicodedata
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .types import Document

__all__ = [
    "COLLECTION_NAME",
    "EXACT_INT",
    "RENAMED_OPTIONS",
    "renamed",
    "rename_fields",
    "renamed_options",
    "StoreLimits",
    "check_collection_name",
    "check_documents",
    "check_ids",
    "check_no_nul",
    "check_queries",
    "check_text",
    "check_vectors",
    "non_negative_int",
    "positive_int",
    "reranker_weight",
]


def positive_int(value: Any, name: str) -> int:
    """``value`` as an int when it is a positive integer (not a bool, not a float).

    Raises:
        ValueError: ``"{name} must be a positive int, got {value!r}"``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def reranker_weight(value: Any) -> float:
    """``value`` as a reranker's share of the final score: a number in (0, 1].

    Raises:
        ValueError: not a number, or outside (0, 1].
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) \
            or not 0.0 < float(value) <= 1.0:
        raise ValueError(f"a reranker's weight must be a number in (0, 1] (1: its order "
                         f"alone; 0.5: half its score, half the retrieval score), got "
                         f"{value!r}")
    return float(value)


def non_negative_int(value: Any, name: str) -> int:
    """``value`` as an int when it is 0 or a positive integer.

    Raises:
        ValueError: ``"{name} must be a non-negative int, got {value!r}"``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return int(value)


def renamed(value: Any, old_value: Any, name: str, old: str) -> tuple[Any, str]:
    """An argument that has a new name: its value (given under either name) and the name the
    caller used, for messages. The old name warns (``DeprecationWarning``).

    Raises:
        TypeError: both names given.
    """
    if old_value is None:
        return value, name
    if value is not None:
        raise TypeError(f"pass {name}= only ({old}= is its deprecated name)")
    warnings.warn(f"{old}= is deprecated; use {name}= (the Matryoshka second stage is a "
                  "rescoring; 'rerank' is left to a cross-encoder)", DeprecationWarning,
                  stacklevel=3)
    return old_value, old


#: search options that were renamed, and their names now
RENAMED_OPTIONS = {"rerank": "rescore", "rerank_k": "rescore_k"}


def renamed_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` (search keyword arguments) with deprecated names replaced by their new
    ones (:data:`RENAMED_OPTIONS`; each old name given warns, and ``None`` values of old names
    are dropped).

    Raises:
        TypeError: an option given under both names.
    """
    out = {k: v for k, v in options.items() if k not in RENAMED_OPTIONS}
    for old, new in RENAMED_OPTIONS.items():
        if options.get(old) is not None:
            out[new] = renamed(options.get(new), options[old], new, old)[0]
    return out


def rename_fields(obj: Any) -> None:
    """Move an object's search options given under deprecated names (``obj.rerank``) to their
    new names (``obj.rescore``), warning; used by the option models of the integrations."""
    for old, new in RENAMED_OPTIONS.items():
        if getattr(obj, old, None) is not None:
            setattr(obj, new, renamed(getattr(obj, new), getattr(obj, old), new, old)[0])
            setattr(obj, old, None)


def check_vectors(vectors: Any, dim: int, what: str, *, n: int | None = None,
                  collection: str | None = None) -> np.ndarray:
    """``vectors`` as a float32 ``(rows, dim)`` matrix (a flat vector is one row).

    Raises:
        ValueError: another dimension (naming the collection), another number of rows than
            ``n``, or NaN/infinite values.
    """
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != dim:
        where = f" for collection {collection!r}" if collection else ""
        raise ValueError(f"{what} must have {dim} dims{where}, got shape "
                         f"{tuple(np.shape(vectors))}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{what}: expected {n} rows, got {arr.shape[0]}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    return arr


#: Collection names every store accepts: Milvus' rule (letters, digits, ``_``; not starting with
#: a digit), the strictest of the three; at most 200 characters, leaving room for Qdrant's
#: ``__bertino_stamp`` companion within its 255. No ``/``, ``.`` or ``..``: a name never
#: leaves its store's folder.
COLLECTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,199}$")
#: the integers every store compares exactly, in metadata and filters: Qdrant (local and Edge)
#: compares numbers as float64, which holds integers exactly up to 2**53
EXACT_INT = 2**53 - 1
_MAX_DEPTH = 32


def check_no_nul(value: str, what: str) -> str:
    """``value`` when it has no NUL character. Ids, metadata keys and metadata strings (and the
    strings of a filter) cannot hold one: SQLite's JSON functions read a string only up to a NUL
    (``"x\\x00y"`` would equal ``"x"``), so not every store could compare it exactly.

    Raises:
        ValueError: naming ``what`` and the NUL's position.
    """
    if "\x00" in value:
        raise ValueError(
            f"{what} contains a NUL character (\\x00) at character {value.index(chr(0))}; ids, "
            "metadata keys and metadata values cannot hold one: remove it (e.g. "
            "value.replace('\\x00', ''))"
        )
    return value


def check_collection_name(name: Any) -> str:
    """Return ``name`` if every store accepts it as a collection name, else raise ValueError."""
    if not isinstance(name, str) or not COLLECTION_NAME.match(name):
        raise ValueError(
            f"invalid collection name {name!r}: use 1-200 letters, digits and '_', not starting "
            "with a digit (e.g. 'bertino' or 'wiki_2024'); the same rule holds on every store"
        )
    return name


@dataclass(frozen=True)
class StoreLimits:
    """Per-store limits checked by :func:`check_documents` (``None``: no limit)."""

    max_id_bytes: int | None = None
    max_text_bytes: int | None = None


def _utf8(value: str, what: str) -> int:
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError as err:
        raise ValueError(
            f"{what} is not valid Unicode (a lone surrogate {value[err.start]!r} at character "
            f"{err.start}); decode the source with errors='replace' or fix its encoding"
        ) from None


def _blank(text: str) -> bool:
    """Whether ``text`` has nothing to read: only white space and control or format characters
    (``"\\x00"``, zero-width spaces), which no model or analyzer reads as a word."""
    return all(c.isspace() or unicodedata.category(c) in ("Cc", "Cf") for c in text)


def check_text(text: Any, owner: str) -> str:
    """``text`` when it is a ``str`` of valid Unicode with something to read: the one rule for
    a document's text and a query, so that both give the same error.

    Args:
        owner: what has the text, for messages (``"document at position 3"``, ``"the query"``).

    Raises:
        ValueError: ``None``, not a ``str``, a lone surrogate (naming its position), or blank
            (only white space and control characters).
    """
    if text is None:
        raise ValueError(f"{owner} has no text (None)")
    if not isinstance(text, str):
        raise ValueError(f"{owner} has text of type {type(text).__name__}, expected str")
    _utf8(text, f"{owner}: the text")
    if _blank(text):
        raise ValueError(f"{owner} has empty text (only white space or control characters)")
    return text


def check_queries(queries: Sequence[Any]) -> list[str]:
    """The queries of a search as a list, each checked by :func:`check_text` (named by
    position: ``"query at position 2"``; a single query is ``"the query"``).

    Raises:
        ValueError: ``queries`` is a single string, or a query is not valid text.
    """
    if isinstance(queries, str):
        raise ValueError("search_batch takes a list of queries; use search() for one")
    texts = list(queries)
    for i, q in enumerate(texts):
        check_text(q, "the query" if len(texts) == 1 else f"query at position {i}")
    return texts


def check_ids(ids: Any, call: str) -> list[str]:
    """``ids`` (one id or a list of ids) as a list of strings; an int id is its decimal string,
    as :func:`~bertino_rag.types.to_documents` makes it (7 and "7" are one id).

    Raises:
        ValueError: ``None``, not a list of ids, or an id that is neither a str nor an int.
    """
    if isinstance(ids, (str, int, np.integer)) and not isinstance(ids, bool):
        ids = [ids]
    if ids is None or isinstance(ids, (bytes, Mapping)) or not isinstance(ids, Iterable):
        raise ValueError(f"{call} takes an id or a list of ids (str), got "
                         f"{type(ids).__name__}")
    out = list(ids)
    for i, one in enumerate(out):
        if isinstance(one, bool) or not isinstance(one, (str, int, np.integer)):
            raise ValueError(f"{call}: the id at position {i} is a {type(one).__name__} "
                             f"({one!r}); ids are strings")
        out[i] = one if isinstance(one, str) else str(int(one))
    return out


def _check_json(value: Any, where: str, what: str, depth: int, seen: set[int]) -> None:
    """Metadata values that mean the same on every store: JSON, finite numbers, str keys."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        _utf8(value, f"{where}: {what}")
        check_no_nul(value, f"{where}: {what}")
        return
    if isinstance(value, int):
        if abs(value) > EXACT_INT:
            raise ValueError(f"{where}: {what} = {value} is beyond +-(2**53 - 1), the integers "
                             "every store compares exactly; store it as a string")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: {what} is {value!r}; only finite numbers are "
                             "stored (JSON has no NaN or infinity): use null or drop the field")
        return
    if depth > _MAX_DEPTH or id(value) in seen:
        raise ValueError(f"{where}: {what} is nested too deep or refers to itself")
    if isinstance(value, Mapping):
        seen.add(id(value))
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(
                    f"{where}: {what} has a key of type {type(key).__name__} "
                    f"({key!r}); keys must be strings (stores would turn {key!r} into "
                    f"{str(key)!r} or 'null')"
                )
            _utf8(key, f"{where}: a key of {what}")
            check_no_nul(key, f"{where}: a key of {what}")
            _check_json(item, where, f"{what}[{key!r}]", depth + 1, seen)
        seen.discard(id(value))
        return
    if isinstance(value, (list, tuple)):
        seen.add(id(value))
        for i, item in enumerate(value):
            _check_json(item, where, f"{what}[{i}]", depth + 1, seen)
        seen.discard(id(value))
        return
    hint = {
        "set": "a list", "frozenset": "a list", "datetime": "value.isoformat()",
        "date": "value.isoformat()", "bytes": "a str (e.g. base64)", "Decimal": "a float or str",
    }.get(type(value).__name__, "value.item()" if isinstance(value, np.generic) else
          "a str, number, bool, None, list or dict")
    raise ValueError(
        f"{where}: {what} is a {type(value).__name__}, which is not JSON; store "
        f"{hint} instead"
    )


def check_documents(
    documents: Sequence[Document], limits: StoreLimits | None = None, *, offset: int = 0,
    describe: Callable[[int], str] | None = None,
) -> None:
    """Validate documents against the rules of every store (and ``limits``) before any write.

    One place for the rules: ids and texts are valid Unicode and within the store's byte
    limits; metadata is a dict with string keys whose values are JSON (str, finite numbers
    within +-(2**53 - 1), bool, None, lists and dicts of those); ids, metadata keys and strings
    hold no NUL. Ids must be unique within the call.

    Args:
        describe: how a message names ``documents[i]`` (default: ``"document at position
            {offset + i}"``); the chunks of a document are named after it.

    Raises:
        ValueError: naming the position (``offset`` + index) of the first bad document.
    """
    limits = limits or StoreLimits()
    first: dict[str, int] = {}
    for i, d in enumerate(documents):
        where = describe(i) if describe is not None else f"document at position {offset + i}"
        if not isinstance(d.id, str):
            raise ValueError(f"{where} has an id of type {type(d.id).__name__}; expected str")
        if not d.id:
            raise ValueError(f"{where} has an empty id: give it an id (a derived one is a hash "
                             "of its text: bertino_rag.types.doc_id_for)")
        n_id = _utf8(d.id, f"{where}: the id")
        check_no_nul(d.id, f"{where}: the id")
        if limits.max_id_bytes is not None and n_id > limits.max_id_bytes:
            raise ValueError(f"{where} has an id of {n_id} UTF-8 bytes ({d.id[:40]!r}...); this "
                             f"store keeps ids of at most {limits.max_id_bytes} bytes")
        if d.id in first:
            raise ValueError(
                f"documents at positions {offset + first[d.id]} and {offset + i} have the same "
                f"id {d.id!r}: ids must be unique within a call (ids are strings: 7 and '7' are "
                "one id); give each document its own id, or leave ids out to derive them"
            )
        first[d.id] = i
        n_text = _utf8(d.text, f"{where} (id {d.id!r}): the text")
        if limits.max_text_bytes is not None and n_text > limits.max_text_bytes:
            raise ValueError(
                f"{where} (id {d.id!r}) has {n_text} bytes of text; this store keeps at most "
                f"{limits.max_text_bytes}: split it into chunks"
            )
        if not isinstance(d.metadata, Mapping):
            raise ValueError(f"{where} has metadata of type {type(d.metadata).__name__}; "
                             "expected a dict")
        _check_json(d.metadata, f"{where} (id {d.id!r})", "metadata", 0, set())

