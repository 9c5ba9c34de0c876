"""``bertino-rag mcp``: serve a collection to AI assistants over the Model Context Protocol."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

__all__ = ["register_cli"]


def register_cli(sub: Any, add_common: Any = None) -> None:
    """Add the ``mcp`` subcommand, with the shared encoder and collection flags (``add_common``,
    by default :func:`bertino_rag.cli.common.add_collection_arguments`)."""
    from .serve import API_KEY_ENV

    if add_common is None:
        from .common import add_collection_arguments as add_common
    p = sub.add_parser(
        "mcp", help="serve a collection to AI assistants over the Model Context Protocol",
        description="An MCP server over one collection: tools search, index_documents, "
        "delete_documents and list_collections, and each hit's document as a resource. "
        "stdio by default (what an assistant launches); --transport http serves streamable "
        "HTTP at /mcp. Needs the 'mcp' extra: pip install 'bertino-rag[mcp]'.",
    )
    add_common(p)
    p.add_argument("--transport", choices=["stdio", "http"], default="stdio",
                   help="stdio (default) or streamable HTTP")
    p.add_argument("--host", default="127.0.0.1",
                   help="http: interface to bind (default 127.0.0.1; any other needs an API key)")
    p.add_argument("--port", type=int, default=8765, help="http: port (default 8765)")
    p.add_argument("--api-key", default=None,
                   help=f"http: required API key (prefer ${API_KEY_ENV}: a flag shows in `ps`)")
    p.add_argument("--read-only", action="store_true",
                   help="search only: no index/delete tools, and the collection must exist")
    p.add_argument("--max-k", type=int, default=50, help="largest k a search may ask for")
    p.add_argument("--log-level", default="warning",
                   choices=["critical", "error", "warning", "info", "debug"],
                   help="logging on stderr (stdout is the protocol's, under stdio)")
    p.set_defaults(func=_cmd_mcp)


def _cmd_mcp(args: argparse.Namespace) -> int:
    from .._deps import require

    require("mcp", "mcp")
    from .serve import API_KEY_ENV, check_exposure

    api_key = None
    if args.transport == "http":
        require("uvicorn", "mcp")
        api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
        check_exposure(args.host, api_key)
    elif args.api_key:
        raise ValueError("--api-key applies to --transport http; stdio is reachable only by "
                         "the process that launched this server")
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from ..integrations.mcp import create_mcp_server, http_app
    from ..retriever import Retriever
    from ..stores import make_store
    from .common import encoder_options
    from .opening import served_layout

    store = make_store(args.store)
    # as it was built; an unreachable store or (read-only) a missing collection: one line
    layout = served_layout(args, store, create=not args.read_only)
    retriever = Retriever(
        store=store, rescore_k=args.rescore_k, collection=args.collection,
        create=not args.read_only, fusion=args.fusion, **layout, **encoder_options(args),
    )
    try:
        server = create_mcp_server(retriever, read_only=args.read_only, max_k=args.max_k)
        if args.transport == "stdio":
            server.run("stdio")
        else:
            import uvicorn

            uvicorn.run(http_app(server, api_key=api_key, host=args.host), host=args.host,
                        port=args.port, log_level=args.log_level)
    finally:
        retriever.close()
    return 0
