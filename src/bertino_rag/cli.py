"""Command line: ``bertino-rag index | search | eval | train | migrate``."""

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
                   help="'memory[:DIR]', 'qdrant[:DIR|:URL]', 'qdrant-edge:DIR' or "
                        "'milvus:FILE.db|URL' "
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


def _cmd_index(args: argparse.Namespace) -> int:
    from .data import iter_documents

    retriever = _retriever(args, recreate=args.recreate)
    docs = list(iter_documents(args.path, with_title=args.with_title))
    if not docs:
        print(f"no documents found in {args.path}", file=sys.stderr)
        return 1
    ids = retriever.index(docs, show_progress_bar=not args.quiet)
    report = retriever.last_index_report
    assert report is not None
    summary = {
        "indexed": len(ids), "written": report.n_written, "truncated": report.n_truncated,
        "seconds": round(report.seconds, 2), "count": retriever.count(),
        "store": args.store, "collection": args.collection,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"indexed {summary['indexed']} documents ({summary['truncated']} truncated) in "
              f"{summary['seconds']}s; the collection {args.collection!r} now holds "
              f"{summary['count']} documents ({args.store})")
    retriever.close()
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    retriever = _retriever(args)
    flt = json.loads(args.filter) if args.filter else None
    hits = retriever.search(args.query, k=args.k, filter=flt)
    if args.json:
        print(json.dumps([{"id": h.id, "score": h.score, "text": h.text,
                           "metadata": h.metadata} for h in hits], ensure_ascii=False))
    else:
        if not hits:
            print("no hits")
        for rank, h in enumerate(hits, 1):
            text = h.text if len(h.text) <= 200 else h.text[:197] + "..."
            print(f"{rank:>2}. [{h.score:.4f}] {h.id}\n    {text}")
    retriever.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bertino-rag",
        description="Italian retrieval with Matryoshka embeddings (multi-sentence-BERTino).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("index", help="index a .txt (one document per line), .jsonl or BEIR folder")
    p.add_argument("path")
    _add_common(p)
    p.add_argument("--recreate", action="store_true", help="drop the collection first")
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
    p.set_defaults(func=_cmd_search)

    for module in ("bertino_rag.evaluation", "bertino_rag.training.cli", "bertino_rag.migrate"):
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
