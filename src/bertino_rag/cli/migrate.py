"""``bertino-rag migrate``: copy a collection between stores (:mod:`bertino_rag.stores.migrate`)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["register_cli"]


def _cmd_migrate(args: argparse.Namespace) -> int:
    from ..errors import StoreError
    from ..stores import make_store
    from .opening import check_exists

    try:  # the source exists and has the collection, before any progress bar
        source = make_store(args.source)  # a bad spec first (building a store creates nothing)
        check_exists(args.source, "--from")
    except (StoreError, ValueError) as err:
        print(f"bertino-rag migrate: error: {err}", file=sys.stderr)
        return 1
    try:
        return _copy(args, source)
    finally:
        source.close()


def _copy(args: argparse.Namespace, source: Any) -> int:
    from ..errors import StoreError
    from ..stores.migrate import migrate
    from .opening import stamp_of

    try:
        stamp_of(source, args.collection)
    except StoreError as err:
        print(f"bertino-rag migrate: error: {err}", file=sys.stderr)
        return 1
    bar: Any = None
    if not args.quiet:
        from tqdm.auto import tqdm

        bar = tqdm(desc="Migrating", unit="doc")

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        report = migrate(source, args.destination, args.collection,
                         to_collection=args.to_collection, batch_size=args.batch_size,
                         overwrite=args.overwrite,
                         on_progress=progress if bar is not None else None)
    except StoreError as err:
        print(f"bertino-rag migrate: error: {err}", file=sys.stderr)
        return 1
    finally:
        if bar is not None:
            bar.close()
    if args.json:
        print(json.dumps(report.__dict__))
    else:
        print(f"copied {report.collection!r} -> {report.to_collection!r}: {report.written} "
              f"written, {report.skipped} already there; the destination holds "
              f"{report.destination_count} documents, as the source "
              f"({report.seconds:.1f}s)")
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``bertino-rag migrate`` to the command line."""
    p = subparsers.add_parser(
        "migrate", help="copy a collection between stores with its vectors (no re-encoding)")
    p.add_argument("--from", dest="source", required=True,
                   help="source store spec, e.g. 'qdrant:./local' or 'memory:./bertino_index'")
    p.add_argument("--to", dest="destination", required=True,
                   help="destination store spec, e.g. 'qdrant-edge:./edge' or "
                        "'qdrant:http://localhost:6333'")
    p.add_argument("--collection", default="bertino", help="collection to copy")
    p.add_argument("--to-collection", default=None,
                   help="name in the destination (default: the same)")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--overwrite", action="store_true",
                   help="rewrite points the destination already holds unchanged")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.set_defaults(func=_cmd_migrate)
