"""A Model Context Protocol server over a :class:`~bertino_rag.retriever.Retriever`.

Needs the ``mcp`` extra (the official ``mcp`` SDK): ``pip install 'bertino-rag[mcp]'``. The
command line runs it: ``bertino-rag mcp --store SPEC --collection NAME`` (stdio, what desktop
assistants and IDEs launch), or ``--transport http`` (streamable HTTP at ``/mcp``).

Tools (typed input and output schemas; each a thin translation onto the retriever):

- ``search(query, k, filter, mode, group_by, expand)``: the hits, each with the URI of its
  document;
- ``index_documents(documents)``: index texts (with optional ``id`` and ``metadata``); long
  ones are chunked, what is stored unchanged is not written again;
- ``delete_documents(ids)``: documents with all their chunks;
- ``list_collections()``: the store's collections, the served one with its count and stamp.

``--read-only`` leaves out the two writing tools and never creates the collection.

Resources: ``bertino://{collection}/documents/{doc_id}`` (``doc_id`` percent-encoded), the
stored entries of a hit's document (its chunks in order, with their metadata) as JSON.

A mistake (a bad filter, a mode the collection was not built for, an empty text, an unknown
document) comes back as an MCP error with the library's one-line message: a tool call as a
result with ``isError`` (the model reads it and can correct the call), a resource read as a
``-32602`` (not found) protocol error. Tool calls run one at a time, in a worker thread: the
retriever's model and store are shared by every session.
"""

# No ``from __future__ import annotations``: the SDK reads the tools' signatures at run time,
# and their bounds (``max_k``, ``max_documents``) are the factory's arguments.
from .._deps import require

require("mcp", "mcp")

import json  # noqa: E402
import threading  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from typing import Annotated, Any, Literal  # noqa: E402
from urllib.parse import quote  # noqa: E402

from mcp.server.mcpserver import MCPServer, ResourceSecurity  # noqa: E402
from mcp.server.mcpserver.exceptions import (  # noqa: E402
    ResourceNotFoundError,
    ToolError,
)
from mcp.types import ToolAnnotations  # noqa: E402
from pydantic import BaseModel, ConfigDict, Field  # noqa: E402

from .. import __version__  # noqa: E402
from ..errors import BertinoError  # noqa: E402
from ..indexing.documents import CHUNK, document_of  # noqa: E402
from ..retriever import Retriever  # noqa: E402
from ..types import Hit  # noqa: E402
from ..validation import positive_int  # noqa: E402

__all__ = ["create_mcp_server", "document_uri", "http_app"]

SCHEME = "bertino"


def document_uri(collection: str, doc_id: str) -> str:
    """The resource URI of a document of ``collection``."""
    return f"{SCHEME}://{collection}/documents/{quote(doc_id, safe='')}"


class HitOut(BaseModel):
    """One hit."""

    id: str = Field(description="id of the stored entry (a chunk, or a whole document)")
    score: float = Field(description="cosine similarity (dense), BM25 (lexical) or fused score")
    text: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    document_uri: str = Field(description="resource with the whole document of this hit")
    chunk_ids: list[str] | None = Field(
        default=None, description="with group_by='document': the document's matching chunks"
    )


class SearchResult(BaseModel):
    collection: str
    hits: list[HitOut]


class DocumentIn(BaseModel):
    """A document to index."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(description="the document's text (long texts are cut into chunks)")
    id: str | None = Field(default=None, description="default: a hash of the text")
    metadata: dict[str, Any] | None = Field(
        default=None, description="JSON metadata, searchable with filters"
    )


class IndexResult(BaseModel):
    ids: list[str] = Field(description="the documents' ids, in input order")
    n_written: int = Field(description="entries written (chunks count one each)")
    n_unchanged: int = Field(description="entries already stored unchanged (not written)")
    n_chunked: int = Field(description="documents cut into chunks")
    count: int = Field(description="entries in the collection after the call")


class DeleteResult(BaseModel):
    deleted: int = Field(description="entries deleted (a document's chunks count one each)")
    count: int = Field(description="entries in the collection after the call")


class CollectionOut(BaseModel):
    name: str
    served: bool = Field(description="whether this server searches and writes it")
    count: int | None = Field(default=None, description="entries (the served collection)")
    stamp: dict[str, Any] | None = Field(
        default=None, description="model, dims and layout the served collection was built with"
    )


class CollectionsResult(BaseModel):
    store: str
    collections: list[CollectionOut]


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def create_mcp_server(
    retriever: Retriever,
    *,
    read_only: bool = False,
    max_k: int = 50,
    max_documents: int = 1000,
    name: str = "bertino-rag",
) -> MCPServer:
    """An MCP server (the SDK's :class:`~mcp.server.mcpserver.MCPServer`) over ``retriever``.

    Args:
        retriever: the open retriever whose collection is served.
        read_only: offer ``search`` and ``list_collections`` only.
        max_k: largest ``k`` a search may ask for.
        max_documents: documents per ``index_documents`` call, ids per ``delete_documents``.
        name: the server's name, as clients show it.

    Example:
        >>> server = create_mcp_server(Retriever(dim=128, store="memory:./idx"))  # doctest: +SKIP
        >>> server.run("stdio")  # doctest: +SKIP
    """
    for what, value in (("max_k", max_k), ("max_documents", max_documents)):
        positive_int(value, what)
    collection = retriever.collection
    lock = threading.Lock()  # one call at a time on the shared model and store
    hybrid = retriever.store.has_lexical
    server = MCPServer(
        name, version=__version__,
        instructions=(
            f"Search the Italian document collection {collection!r} with `search`; each hit "
            "names its document's resource URI, readable for the whole document."
            + ("" if read_only else " `index_documents` adds or updates documents, "
               "`delete_documents` removes them.")
        ),
    )

    @contextmanager
    def library_errors() -> Iterator[None]:
        """The library's own errors (and bad input) as the tool's error, in one line."""
        with lock:
            try:
                yield
            except (BertinoError, ValueError, TypeError) as err:
                raise ToolError(_one_line(err)) from err

    def hit_out(hit: Hit) -> HitOut:
        return HitOut(
            id=hit.id, score=hit.score, text=hit.text, metadata=dict(hit.metadata),
            document_uri=document_uri(collection, document_of(hit.id, hit.metadata)),
            chunk_ids=[c.id for c in hit.chunks] if hit.chunks else None,
        )

    modes_note = ("dense (Matryoshka embeddings), lexical (Italian BM25) or hybrid (both "
                  "fused; the default here)" if hybrid else
                  "only dense here: the collection has no lexical index")

    @server.tool(
        annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False),
        description=f"Search the collection {collection!r} (Italian text) for the passages "
        "that best answer a question; best first.",
    )
    def search(
        query: Annotated[str, Field(min_length=1, description="the question or text to search")],
        k: Annotated[int, Field(ge=1, le=max_k, description="number of hits")] = 5,
        filter: Annotated[dict[str, Any] | None, Field(
            description='metadata filter: {"field": value}, {"field": {"$in": [..]}}, '
            '{"year": {"$gte": 2000}}, {"$or": [{..}, {..}]}')] = None,
        mode: Annotated[Literal["dense", "lexical", "hybrid"] | None, Field(
            description=f"search mode: {modes_note}")] = None,
        group_by: Annotated[Literal["document"] | None, Field(
            description="'document': one hit per document (its best chunk), k counting "
            "documents; dense mode only")] = None,
        expand: Annotated[int, Field(ge=0, le=5, description="neighbouring chunks joined to "
                                     "each hit on each side, for context")] = 0,
    ) -> SearchResult:
        with library_errors():
            hits = retriever.search(query, k, filter, mode=mode, group_by=group_by,
                                    expand=expand)
        return SearchResult(collection=collection, hits=[hit_out(h) for h in hits])

    @server.tool(
        annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False),
        description="The collections of this server's store; the served one with its count "
        "and the model and dims it was built with.",
    )
    def list_collections() -> CollectionsResult:
        with library_errors():
            try:
                names = retriever.store.collections()
            except NotImplementedError:
                names = []
            served = CollectionOut(name=collection, served=True, count=retriever.count(),
                                   stamp=retriever.stamp.to_dict())
        others = [CollectionOut(name=n, served=False) for n in names if n != collection]
        return CollectionsResult(store=retriever.store.kind, collections=[served, *others])

    if not read_only:
        @server.tool(
            annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False,
                                        idempotent_hint=True, open_world_hint=False),
            description=f"Add or update documents in {collection!r}. A document with the id "
            "of a stored one replaces it; without an id, the id is a hash of the text.",
        )
        def index_documents(
            documents: Annotated[list[DocumentIn | str], Field(
                min_length=1, max_length=max_documents,
                description="texts, or objects with text and optional id and metadata")],
        ) -> IndexResult:
            docs = [d if isinstance(d, str) else d.model_dump(exclude_none=True)
                    for d in documents]
            with library_errors():
                ids = retriever.index(docs, show_progress_bar=False)
                report = retriever.last_index_report
                count = retriever.count()
            assert report is not None
            return IndexResult(ids=ids, n_written=report.n_written,
                               n_unchanged=report.n_unchanged, n_chunked=report.n_chunked,
                               count=count)

        @server.tool(
            annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True,
                                        idempotent_hint=True, open_world_hint=False),
            description=f"Delete documents from {collection!r} by id, with all their chunks "
            "(unknown ids are ignored).",
        )
        def delete_documents(
            ids: Annotated[list[str], Field(min_length=1, max_length=max_documents)],
        ) -> DeleteResult:
            with library_errors():
                before = retriever.count()
                retriever.delete(ids)
                after = retriever.count()
            return DeleteResult(deleted=before - after, count=after)

    @server.resource(
        f"{SCHEME}://{{collection_name}}/documents/{{doc_id}}",
        name="document", mime_type="application/json",
        description="A stored document: its entries (chunks, in order) with their metadata.",
        # ids are looked up in the store, never used as paths (a loaded file's id is its path)
        security=ResourceSecurity(exempt_params={"doc_id"}),
    )
    def document(collection_name: str, doc_id: str) -> str:
        if collection_name != collection:
            raise ResourceNotFoundError(
                f"collection {collection_name!r} is not served here; this server serves "
                f"{collection!r}"
            )
        with lock:
            try:
                ids = retriever.store.ids_of_documents([doc_id]) or [doc_id]
                entries = retriever.get(ids)
            except (BertinoError, ValueError) as err:
                raise ResourceNotFoundError(_one_line(err)) from err
        if not entries:
            raise ResourceNotFoundError(
                f"document {doc_id!r} is not in collection {collection!r}"
            )
        entries.sort(key=lambda d: (d.metadata.get(CHUNK, 0), d.id))
        return json.dumps({
            "id": doc_id, "collection": collection,
            "entries": [{"id": d.id, "text": d.text, "metadata": d.metadata} for d in entries],
        }, ensure_ascii=False)

    return server


def http_app(server: MCPServer, *, api_key: str | None = None, host: str = "127.0.0.1",
             path: str = "/mcp") -> Callable[..., Any]:
    """The streamable HTTP ASGI app of ``server`` at ``path``; with ``api_key``, every request
    must carry it (``Authorization: Bearer KEY`` or ``X-API-Key: KEY``, as ``bertino-rag
    serve``). Serve it with uvicorn; ``bertino-rag mcp --transport http`` refuses a non-loopback
    ``host`` without a key."""
    from ..serve.middleware import ApiKeyMiddleware

    app: Any = server.streamable_http_app(streamable_http_path=path, host=host)
    if api_key:
        return ApiKeyMiddleware(app, api_key=api_key, open_paths=frozenset())
    return app
