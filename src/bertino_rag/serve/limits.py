"""Bounds on a query's length, so that one request cannot stall the others' batches.

A query is encoded in the same batch as the concurrent requests' queries: without a bound, a
single 10 MB query kept the encoder (and every search queued behind it) busy for minutes. A
query is checked by characters first (free), then by tokens of the model's own tokenizer
(with the model's query prompt), before it joins a batch; beyond either bound the request is
answered 413 naming the limit and the flag that sets it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import HTTPException

__all__ = ["check_query_lengths", "query_token_limit"]


def query_token_limit(encoder: Any, configured: int | None) -> int | None:
    """The most tokens a query may have: ``configured``, else the model's window
    (``max_seq_length``) where the encoder has a tokenizer to count with, else no bound (the
    character bound still holds)."""
    if configured is not None:
        return configured
    if getattr(encoder, "tokenizer", None) is None:
        return None
    return getattr(encoder, "max_seq_length", None)


def _name(i: int, n: int) -> str:
    return "the query" if n == 1 else f"queries[{i}]"


#: characters of queries counted in the event loop (a fraction of a millisecond); more are
#: counted in a worker thread
_INLINE_CHARS = 2000


def _prompt(encoder: Any) -> str:
    return encoder.prompt("query") if callable(getattr(encoder, "prompt", None)) else ""


def _surely_within(queries: list[str], prompt: str, limit: int) -> bool:
    """Whether no query can exceed ``limit`` tokens: a character makes at most 4 tokens
    (byte-level BPE; WordPiece and SentencePiece make at most one), plus a few special
    tokens."""
    return 4 * (len(prompt) + max(map(len, queries))) + 8 <= limit


def _over_tokens(encoder: Any, queries: list[str], limit: int) -> tuple[int, int] | None:
    prompt = _prompt(encoder)
    lengths = encoder.token_lengths([prompt + q for q in queries])
    for i, n in enumerate(lengths):
        if n > limit:
            return i, n
    return None


async def check_query_lengths(queries: list[str], *, max_chars: int, max_tokens: int | None,
                              encoder: Any) -> None:
    """Refuse (413) a query longer than ``max_chars`` characters or ``max_tokens`` tokens.

    The tokens are counted only for queries within the character bound, so the count itself
    is bounded; not at all for queries too short to reach the bound; in a worker thread for a
    long request (the event loop keeps serving).
    """
    for i, q in enumerate(queries):
        if len(q) > max_chars:
            raise HTTPException(
                413, f"{_name(i, len(queries))} has {len(q)} characters; this server takes "
                f"queries of at most {max_chars} (--max-query-chars): search with a shorter "
                "question, or index long texts as documents",
            )
    if max_tokens is None or _surely_within(queries, _prompt(encoder), max_tokens):
        return
    if sum(map(len, queries)) <= _INLINE_CHARS:  # cheaper than a thread hop
        over = _over_tokens(encoder, queries, max_tokens)
    else:
        over = await asyncio.to_thread(_over_tokens, encoder, queries, max_tokens)
    if over is not None:
        i, n = over
        raise HTTPException(
            413, f"{_name(i, len(queries))} has {n} tokens (with the model's query prompt); "
            f"this server takes queries of at most {max_tokens} tokens (--max-query-tokens; "
            "by default the model's window): search with a shorter question",
        )
