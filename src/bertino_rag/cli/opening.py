"""Opening an existing collection from the command line, quickly and as it was built.

The store is asked first, before any model loads: an unreachable server or a missing
collection is one line in a second, not after the model loaded. Its first contact is made
without retries (the stores retry transient errors with backoff, which suits a running
service, not a person waiting for "connection refused"). Then the collection's stamp decides
how it is opened (dim, hybrid with its analyzer, full vectors), unless a flag asks for
something else: ``search Q`` on a collection indexed with ``--hybrid --dim 256`` needs neither
flag again.
"""

from __future__ import annotations

import argparse
import contextlib
import re
from collections.abc import Iterator
from typing import Any

__all__ = ["check_exists", "first_contact", "open_options", "served_layout", "stamp_of"]


def check_exists(spec: str, option: str) -> None:
    """A store spec that names a folder or file (``memory:DIR``, ``qdrant:DIR``,
    ``qdrant-edge:DIR``, ``milvus:FILE.db``) must name one that exists, where the command only
    reads: asking an embedded engine for its collections would create it.

    Raises:
        ValueError: no such folder or file, naming ``option`` and the path.
    """
    from pathlib import Path

    kind, sep, where = spec.partition(":")
    where = where.strip()
    if not sep or not where or "://" in where:
        return  # in memory, or a server
    if not Path(where).expanduser().exists():
        raise ValueError(f"{option} {spec}: no such folder or file {where!r} (nothing was "
                         "created); check the path, or index into it first")


@contextlib.contextmanager
def first_contact(store: Any) -> Iterator[None]:
    """The store's client calls in this block run once, without retries; a failure to
    connect is one :class:`~bertino_rag.errors.StoreConnectionError`."""
    from ..errors import StoreConnectionError
    from ..stores.retry import Retry

    retries = [v for v in vars(store).values() if isinstance(v, Retry)]
    saved = [r.attempts for r in retries]
    for r in retries:
        r.attempts = 0
    try:
        yield
    except StoreConnectionError as err:
        reason = re.sub(r" after 0 retries", "", str(err).partition(": ")[2])
        raise StoreConnectionError(err.kind, err.location, reason) from None
    finally:
        for r, attempts in zip(retries, saved, strict=True):
            r.attempts = attempts


def stamp_of(store: Any, collection: str) -> Any:
    """The stamp of ``collection`` in ``store``, asked once without retries.

    Raises:
        CollectionNotFoundError: there is no such collection (listing those there are).
        StoreConnectionError: the store cannot be reached.
    """
    from ..errors import CollectionNotFoundError

    with first_contact(store):
        found = store.stored_stamp(collection)
        if found is None:
            raise CollectionNotFoundError(collection, store.location, store.collections())
    return found


def open_options(args: argparse.Namespace, found: Any) -> dict[str, Any]:
    """The ``Retriever`` options that open a collection stamped ``found``: what it was built
    with, except where a flag asks otherwise (``--dim`` given, ``--hybrid`` or a lexical
    ``--mode`` on a dense collection: then the retriever names the mismatch).

    ``--no-rescore`` on a collection with full vectors opens it as it is; the command searches
    without rescoring (``rescore=False`` per search).
    """
    from ..lexical.bm25 import parse_lexical_spec

    dim = args.dim if getattr(args, "dim_given", False) else found.index_dim
    wants_lexical = bool(getattr(args, "hybrid", False)) or getattr(args, "mode", None) in (
        "lexical", "hybrid")
    hybrid = wants_lexical or found.lexical is not None
    options: dict[str, Any] = {"dim": dim, "hybrid": hybrid, "rescore": found.full_vectors}
    if hybrid and found.lexical is not None:
        options["analyzer"] = parse_lexical_spec(found.lexical)[0]
    return options


def served_layout(args: argparse.Namespace, store: Any, *, create: bool = True
                  ) -> dict[str, Any]:
    """The ``Retriever`` options of a command that serves ``args.collection`` (``serve``,
    ``mcp``): an existing collection as it was built (:func:`open_options`; ``--no-rescore``
    asks for a collection without full vectors), a new one from the flags. The store is asked
    once, without retries, before any model loads.

    Raises:
        CollectionNotFoundError: no such collection, and ``create`` is false.
    """
    from ..errors import CollectionNotFoundError

    with first_contact(store):
        found = store.stored_stamp(args.collection)
        if found is None and not create:
            raise CollectionNotFoundError(args.collection, store.location, store.collections())
    if found is None:
        return {"dim": args.dim, "hybrid": args.hybrid, "rescore": not args.no_rescore}
    return {**open_options(args, found), **({"rescore": False} if args.no_rescore else {})}
