"""Command line: ``bertino-rag index | search | eval | train``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

DEFAULT_STORE = "memory:./bertino_index"


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="hub id or local path (default: $BERTINO_RAG_MODEL or "
                        "nickprock/multi-sentence-BERTino)")
    p.add_argument("--dim", type=int, default=128, help="dimension of the searched vectors")
    p.add_argument("--store", default=DEFAULT_STORE,
                   help="'memory[:DIR]', 'qdrant[:DIR|:URL]' or 'milvus:FILE.db|URL' "
                        f"(default: {DEFAULT_STORE})")
    p.add_argument("--collection", default="bertino")
    p.add_argument("--no-rerank", action="store_true",
                   help="store and search the truncated vectors only")
    p.add_argument("--rerank-k", type=int, default=100)
    p.add_argument("--backend", choices=["torch", "onnx", "openvino"], default="torch",
                   help="encoder backend; onnx/openvino export the model once and cache it")
    p.add_argument("--quantize", choices=["int8"], default=None,
                   help="int8 encoder: dynamic with onnx, static (calibrated) with openvino")


def _retriever(args: argparse.Namespace, recreate: bool = False):
    from .retriever import Retriever

    return Retriever(dim=args.dim, model=args.model, store=args.store,
                     rerank=not args.no_rerank, rerank_k=args.rerank_k,
                     collection=args.collection, recreate=recreate,
                     backend=args.backend, quantize=args.quantize)


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

    from .loaders import DocumentLoader, SkippedFileWarning

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
    docs, skipped = _read(args)  # files are read (and bad ones named) before the model loads
    if not docs:
        print(f"no documents found in {args.path}", file=sys.stderr)
        return 1
    retriever = _retriever(args, recreate=args.recreate)
    ids = retriever.index(docs, show_progress_bar=not args.quiet, chunking=_chunking(args))
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


def _where(h) -> str:
    """Where a hit comes from: its source, chunk position and page, as far as known."""
    m = h.metadata
    parts = []
    if m.get("source"):
        parts.append(str(m["source"]))
    if isinstance(m.get("chunk"), int):
        parts.append(f"chunk {m['chunk']}")
    if m.get("page"):
        parts.append(f"page {m['page']}")
    if h.chunks:
        parts.append(f"{len(h.chunks)} matching chunks")
    return f" ({', '.join(parts)})" if parts else ""


def _cmd_search(args: argparse.Namespace) -> int:
    retriever = _retriever(args)
    flt = json.loads(args.filter) if args.filter else None
    hits = retriever.search(args.query, k=args.k, filter=flt, group_by=args.group_by,
                            expand=args.expand)
    if args.json:
        print(json.dumps([{"id": h.id, "score": h.score, "text": h.text,
                           "metadata": h.metadata,
                           **({"chunks": [c.id for c in h.chunks]} if h.chunks else {})}
                          for h in hits], ensure_ascii=False))
    else:
        if not hits:
            print("no hits")
        for rank, h in enumerate(hits, 1):
            text = h.text if len(h.text) <= 200 else h.text[:197] + "..."
            print(f"{rank:>2}. [{h.score:.4f}] {h.id}{_where(h)}\n    {text}")
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
    _add_common(p)
    p.add_argument("--recreate", action="store_true", help="drop the collection first")
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
    _add_common(p)
    p.add_argument("-k", type=int, default=5)
    p.add_argument(
        "--filter", default=None, help='metadata filter as JSON, e.g. \'{"lang": "it"}\''
    )
    p.add_argument("--json", action="store_true", help="print hits as JSON")
    p.add_argument("--group-by", choices=["document"], default=None,
                   help="one hit per document (its best chunk), k counting documents")
    p.add_argument("--expand", type=int, default=0,
                   help="join this many neighbouring chunks to each hit on each side")
    p.set_defaults(func=_cmd_search)

    for module in ("bertino_rag.evaluation", "bertino_rag.training.cli"):
        try:
            register = __import__(module, fromlist=["register_cli"]).register_cli
        except (ImportError, AttributeError):
            continue
        register(sub)
    from .serve.cli import register_cli as register_serve

    register_serve(sub, _add_common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError, ImportError) as err:
        print(f"bertino-rag {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
