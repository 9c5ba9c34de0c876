"""Request and response bodies of the service (they make its OpenAPI schema).

Requests forbid unknown fields, so a misspelt option is a 422 naming it rather than an option
silently ignored, and their types are strict: ``"k": "5"`` or an ``id`` of ``true`` is a 422
naming the field, never coerced (a ``true`` id would become ``"1"`` and overwrite document
"1"). Bounds that depend on the server's settings (k, queries and documents per request, a
query's length) are checked by the app, which names the setting to change.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..stores.registry import STORE_KINDS
from ..validation import check_text

__all__ = [
    "CollectionInfo",
    "DeleteRequest",
    "DeleteResponse",
    "DocumentIn",
    "DocumentOut",
    "GetRequest",
    "GetResponse",
    "HealthResponse",
    "HitOut",
    "IndexRequest",
    "IndexResponse",
    "SearchRequest",
    "SearchResponse",
]


#: every request body: unknown fields and coercions refused
_STRICT = ConfigDict(extra="forbid", strict=True)


def _non_empty(text: str, what: str) -> str:
    return check_text(text, what)


class SearchRequest(BaseModel):
    """One query (``query``) or several (``queries``), with the search options."""

    model_config = _STRICT

    query: str | None = Field(default=None, description="one query; the answer has `hits`")
    queries: list[str] | None = Field(
        default=None, description="several queries; the answer has `results`, one list each"
    )
    k: int = Field(default=10, ge=1, description="hits per query")
    filter: dict[str, Any] | None = Field(
        default=None, description='metadata filter, e.g. {"lang": "it", "year": {"$gte": 2000}}'
    )
    rescore: bool | None = Field(
        default=None, description="false: no Matryoshka rescoring with full vectors")
    rescore_k: int | None = Field(default=None, ge=1, description="candidates rescored")
    rerank: bool | None = Field(default=None, description="deprecated name of rescore")
    rerank_k: int | None = Field(default=None, ge=1, description="deprecated name of rescore_k")
    mode: str | None = Field(
        default=None, description="search mode, where the server's retriever has modes"
    )
    group_by: str | None = Field(
        default=None, description="group hits (e.g. by document), where the retriever can"
    )

    @field_validator("query")
    @classmethod
    def _query(cls, v: str | None) -> str | None:
        return None if v is None else _non_empty(v, "query")

    @field_validator("queries")
    @classmethod
    def _queries(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return None
        if not v:
            raise ValueError("queries is an empty list")
        for i, q in enumerate(v):
            _non_empty(q, f"queries[{i}]")
        return v

    @model_validator(mode="after")
    def _one_of(self) -> SearchRequest:
        if (self.query is None) == (self.queries is None):
            raise ValueError("give exactly one of 'query' (a string) or 'queries' (a list)")
        for new, old in (("rescore", "rerank"), ("rescore_k", "rerank_k")):
            if getattr(self, old) is not None:
                if getattr(self, new) is not None:
                    raise ValueError(f"give {new} only ({old} is its deprecated name)")
                setattr(self, new, getattr(self, old))
                setattr(self, old, None)
        return self

    def options(self) -> dict[str, Any]:
        """Keyword arguments for ``Retriever.search_batch`` (unset options left out)."""
        out: dict[str, Any] = {"k": self.k, "filter": self.filter}
        for name in ("rescore", "rescore_k", "mode", "group_by"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


class HitOut(BaseModel):
    """One hit; fields the retriever adds to its hits are passed through."""

    model_config = ConfigDict(extra="allow")

    id: str
    text: str
    score: float
    metadata: dict[str, Any] = Field(default_factory=dict)


class SearchResponse(BaseModel):
    hits: list[HitOut] | None = Field(default=None, description="for `query`")
    results: list[list[HitOut]] | None = Field(default=None, description="for `queries`")


class DocumentIn(BaseModel):
    model_config = _STRICT

    text: str
    id: str | int | None = Field(default=None, description="default: a hash of the text")
    metadata: dict[str, Any] | None = None


class IndexRequest(BaseModel):
    """Documents to index: strings or objects with ``text`` (and optional ``id``,
    ``metadata``). Validated whole before anything is written."""

    model_config = _STRICT

    documents: list[DocumentIn | str]

    def as_inputs(self) -> list[Any]:
        return [
            d if isinstance(d, str) else d.model_dump(exclude_none=True) for d in self.documents
        ]


class IndexResponse(BaseModel):
    """The ids in input order and ``Retriever.index``'s report."""

    model_config = ConfigDict(extra="allow")

    ids: list[str]
    n_input: int
    n_written: int
    n_truncated: int
    seconds: float
    count: int = Field(description="documents in the collection after the call")


class DeleteRequest(BaseModel):
    model_config = _STRICT

    ids: list[str] | None = Field(default=None, description="ids of indexed entries")
    document_ids: list[str] | None = Field(
        default=None, description="document ids (all of a document's chunks), where supported"
    )

    @model_validator(mode="after")
    def _one_of(self) -> DeleteRequest:
        if self.ids is None and self.document_ids is None:
            raise ValueError("give 'ids' or 'document_ids'")
        return self


class DeleteResponse(BaseModel):
    deleted: int = Field(description="entries that existed and were deleted")
    count: int = Field(description="documents in the collection after the call")


class GetRequest(BaseModel):
    model_config = _STRICT

    ids: list[str] = Field(description="ids of stored entries (documents or chunks)")


class DocumentOut(BaseModel):
    id: str
    text: str
    metadata: dict[str, Any] = Field(default_factory=dict)


class GetResponse(BaseModel):
    documents: list[DocumentOut] = Field(description="the stored ones, in the order asked; "
                                         "unknown ids are left out")


class CollectionInfo(BaseModel):
    name: str
    stamp: dict[str, Any]
    count: int
    store: str = Field(description=f"store kind ({', '.join(STORE_KINDS)})")


class HealthResponse(BaseModel):
    status: str
    model: str | None = None
    collection: str | None = None
    count: int | None = None
    detail: str | None = None
