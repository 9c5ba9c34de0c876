"""``bertino-rag serve``: load the model and the collection once, then serve them over HTTP."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from typing import Any

from .common import deprecated_alias

__all__ = ["API_KEY_ENV", "is_loopback", "register_cli"]

API_KEY_ENV = "BERTINO_RAG_API_KEY"
MIN_KEY_LENGTH = 16


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def check_exposure(host: str, api_key: str | None) -> None:
    """Refuse to serve beyond loopback without an API key, or with a guessable one."""
    if api_key is not None and len(api_key) < MIN_KEY_LENGTH:
        raise ValueError(
            f"the API key is shorter than {MIN_KEY_LENGTH} characters; use a random one, e.g. "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    if not is_loopback(host) and not api_key:
        raise ValueError(
            f"--host {host} accepts connections from other machines, so an API key is "
            f"required: set ${API_KEY_ENV} (or --api-key). Bind to 127.0.0.1 to serve this "
            "machine only."
        )


def register_cli(sub: Any, add_common: Any = None) -> None:
    """Add the ``serve`` subcommand, with the shared encoder and collection flags
    (``add_common``, by default :func:`bertino_rag.cli.add_collection_arguments`)."""
    if add_common is None:
        from .common import add_collection_arguments as add_common
    p = sub.add_parser(
        "serve", help="serve search and indexing over HTTP with the model kept loaded",
        description="Serve one collection over HTTP (FastAPI + uvicorn). Needs the 'serve' "
        "extra: pip install 'bertino-rag[serve]'.",
    )
    add_common(p)
    from .common import add_reranker_arguments

    add_reranker_arguments(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to bind (default 127.0.0.1; any other needs an API key)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=None,
                   help=f"required API key (prefer ${API_KEY_ENV}: a flag shows in `ps`)")
    p.add_argument("--max-k", type=int, default=100)
    p.add_argument("--max-rescore-k", "--max-rerank-k", dest="max_rescore_k", type=int,
                   action=deprecated_alias("--max-rerank-k"), default=1000,
                   help="largest rescore_k a request may ask for (default: 1000)")
    p.add_argument("--max-queries", type=int, default=64, help="queries per /search request")
    p.add_argument("--max-query-chars", type=int, default=4096,
                   help="characters per query (longer ones get 413)")
    p.add_argument("--max-query-tokens", type=int, default=None,
                   help="tokens per query (default: the model's window; longer ones get 413)")
    p.add_argument("--max-documents", type=int, default=1000,
                   help="documents per POST /documents, ids per DELETE /documents")
    p.add_argument("--max-request-mb", type=float, default=16.0, help="request body size")
    p.add_argument("--max-batch", type=int, default=64, help="queries per encoder call")
    p.add_argument("--batch-wait-ms", type=float, default=2.0,
                   help="how long a search waits for others to batch with")
    p.add_argument("--index-batch", type=int, default=32,
                   help="documents per indexing step (a search waits for at most one)")
    p.add_argument("--graceful-timeout", type=float, default=60.0,
                   help="seconds in-flight requests get to finish on SIGTERM/SIGINT")
    p.add_argument("--keep-alive", type=float, default=30.0,
                   help="seconds an idle client connection stays open (above the clients' own "
                        "idle expiry, so that a reused connection is never one being closed)")
    p.add_argument("--log-level", default="info",
                   choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    from .._deps import require

    require("uvicorn", "serve")
    import uvicorn

    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    check_exposure(args.host, api_key)
    if args.api_key:
        print(f"bertino-rag serve: note: --api-key is visible to other users in the process "
              f"list; prefer ${API_KEY_ENV}", file=sys.stderr)
    from ..retriever import Retriever
    from ..serve.app import ServeSettings, create_app

    settings = ServeSettings(
        api_key=api_key, max_k=args.max_k, max_rescore_k=args.max_rescore_k,
        max_queries=args.max_queries, max_documents=args.max_documents,
        max_request_bytes=int(args.max_request_mb * 1024 * 1024), max_batch=args.max_batch,
        batch_wait_ms=args.batch_wait_ms, index_batch=args.index_batch,
        max_query_chars=args.max_query_chars, max_query_tokens=args.max_query_tokens,
    )
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from ..stores import make_store
    from .common import encoder_options, reranker_options
    from .opening import served_layout

    store = make_store(args.store)
    layout = served_layout(args, store)  # as it was built; an unreachable store: one line
    retriever = Retriever(
        store=store, rescore_k=args.rescore_k, collection=args.collection,
        fusion=args.fusion, **layout, **reranker_options(args), **encoder_options(args),
    )
    app = create_app(retriever, settings)
    uvicorn.run(
        app, host=args.host, port=args.port, log_level=args.log_level,
        timeout_graceful_shutdown=args.graceful_timeout, timeout_keep_alive=args.keep_alive,
    )
    return 0
