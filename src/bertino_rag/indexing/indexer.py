"""One indexing call, from documents to a store: chunking, the pipeline, the replacement swap.

:func:`index_documents` is what :meth:`bertino_rag.retriever.Retriever.index` runs. Each
document is checked once, as it is read: with chunking, what is written for it (the document,
or its chunks) is checked against the store's rules; without, the document itself. The store
then writes without checking again (``VectorStore.write_checked``). Token counts come from
the chunker's one tokenization of each document when chunking is on; without it, from one
tokenizer call per window.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import TruncationWarning
from ..types import Document
from .chunking import Chunker
from .documents import check_chunks, chunk_documents, plan_writes
from .pipeline import index_pipelined

if TYPE_CHECKING:
    from ..encoder import TextEncoder
    from ..stores.base import VectorStore
    from ..types import Stamp

__all__ = ["IndexReport", "chunker_for", "index_documents"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexReport:
    """What the last :meth:`Retriever.index` call did."""

    n_input: int
    n_written: int
    n_truncated: int
    seconds: float
    #: documents repeated exactly within the call (same id, text and metadata), written once
    n_duplicates: int = 0
    #: time spent encoding, in the caller's thread
    encode_seconds: float = 0.0
    #: time spent in store writes, in the writer thread (overlapped with encoding)
    write_seconds: float = 0.0
    #: time encoding waited for the writer: the part of writing not hidden behind encoding
    wait_seconds: float = 0.0
    #: documents stored as chunks (longer than the model reads), and the chunks of the call
    n_chunked: int = 0
    n_chunks: int = 0
    #: stored items left alone because they were already stored unchanged
    n_unchanged: int = 0
    #: stored chunks of these documents deleted because the new version no longer has them
    n_deleted: int = 0
    #: time spent cutting documents into chunks and comparing them with the store
    chunk_seconds: float = 0.0
    #: time the store spent building its search index after the writes (``build_index``)
    build_seconds: float = 0.0


def chunker_for(encoder: TextEncoder, chunking: Any) -> Chunker | None:
    """The :class:`~bertino_rag.indexing.chunking.Chunker` of a ``chunking`` setting of
    :meth:`Retriever.index` for ``encoder`` (``None`` when chunking is off)."""
    if chunking is False:
        return None
    if chunking is True:
        return Chunker.for_encoder(encoder)
    if isinstance(chunking, Chunker):
        return chunking
    if isinstance(chunking, int) and not isinstance(chunking, bool):
        return Chunker.for_encoder(encoder, max_tokens=chunking)
    if isinstance(chunking, Mapping) and set(chunking) <= {"max_tokens", "overlap"}:
        return Chunker.for_encoder(encoder, **chunking)
    raise ValueError(
        f"chunking must be True, False, a max_tokens int, a dict with max_tokens and/or "
        f"overlap, or a Chunker; got {chunking!r}"
    )


def index_documents(
    docs: Iterable[Any],
    *,
    store: VectorStore,
    encoder: TextEncoder,
    stamp: Stamp,
    collection: str,
    dim: int,
    chunker: Chunker | None,
    batch_size: int,
    window: int,
    show_progress_bar: bool | None,
) -> tuple[list[str], IndexReport]:
    """Encode and write ``docs`` (see :meth:`Retriever.index`); their ids and a report."""
    started = time.perf_counter()
    if isinstance(docs, (str, bytes)) or isinstance(docs, Mapping):
        docs = [docs]
    total = len(docs) if isinstance(docs, Sequence) else None
    if show_progress_bar is None:
        show_progress_bar = total is not None and encoder.wants_progress_bar(total)
    bar = None
    if show_progress_bar:
        from tqdm.auto import tqdm

        bar = (tqdm(total=total, desc="Indexing", unit="doc") if chunker is None
               else tqdm(desc="Indexing", unit="chunk"))
    counts = {"chunked": 0, "chunks": 0, "unchanged": 0}
    stale: list[str] = []
    #: stale ids by document, deleted once every item written for it is written
    stale_of: dict[str, list[str]] = {}
    owner_of: dict[str, str] = {}  # an item still to be written -> its document
    unwritten: dict[str, int] = {}  # a document -> its items still to be written
    planned = threading.Lock()  # prepare (this thread) and write (the writer's) share it
    # the intent record (stores/intent.py): the edited documents of each window, recorded
    # with the store at the first write of their window, so that a kill leaves a record
    window_of: dict[str, int] = {}  # an edited document -> its window
    edits: list[dict[str, tuple[list[str], list[str]]]] = []  # per window: new, stale ids
    in_flight: dict[str, tuple[list[str], list[str]]] = {}  # what the record holds
    finished: set[str] = set()  # documents whose stale ids are deleted since the last record
    recorded: list[bool] = [False]
    if chunker is not None:
        store.repair_intent()  # what an earlier call of this process left (an error)
    chunk_seconds = 0.0
    lengths: dict[str, int] = {}  # the chunker's token counts of what it writes
    specials = 0
    if chunker is not None:
        specials = chunker.tokenizer.num_special_tokens_to_add(pair=False)

    def prepare(window_docs: list[Document], positions: list[int]) -> list[Document]:
        nonlocal chunk_seconds
        began = time.perf_counter()
        assert chunker is not None
        parts = chunk_documents(window_docs, chunker, lengths)
        check_chunks(parts, positions, store.check_documents)
        plan = plan_writes(parts, store.get, store.ids_of_documents)
        counts["chunked"] += sum(1 for _, p in parts if len(p) > 1)
        counts["chunks"] += sum(len(p) for _, p in parts)
        counts["unchanged"] += plan.unchanged
        stale.extend(plan.stale)
        with planned:
            for doc_id, ids in plan.stale_of.items():
                stale_of.setdefault(doc_id, []).extend(ids)
            for doc_id, ids in plan.written_of.items():
                if doc_id not in plan.stale_of:
                    continue  # nothing to delete after it
                unwritten[doc_id] = unwritten.get(doc_id, 0) + len(ids)
                owner_of.update(dict.fromkeys(ids, doc_id))
            edits.append({d: (plan.written_of.get(d, []), ids)
                          for d, ids in plan.stale_of.items()})
            window_of.update(dict.fromkeys(plan.stale_of, len(edits) - 1))
        chunk_seconds += time.perf_counter() - began
        return plan.write

    def token_lengths(texts: list[str]) -> list[int]:
        """The chunker's counts (plus special tokens) where it measured the text, the
        tokenizer's for the others (without chunking: every text)."""
        found = [lengths.pop(t, None) for t in texts]
        missing = [t for t, n in zip(texts, found, strict=True) if n is None]
        measured = iter(encoder.token_lengths(missing) if missing else [])
        return [next(measured) if n is None else n + specials for n in found]

    def write(batch: list[Document], index: Any, full: Any) -> None:
        """Write a batch, then delete the old items of each document whose new version is
        now whole (and of documents with nothing new to write): a kill mid-call leaves old
        and new items of a document together only while its new items are being written
        (a window sorts texts by length, so they may span a few writes), never for the
        documents written before; the store's next open repairs them from the intent record
        written before the first write of their window (one record write per window)."""
        with planned:
            windows = {window_of[owner_of[d.id]] for d in batch
                       if owner_of.get(d.id) in window_of}
            for w in sorted(windows):
                for edited, (new, old) in edits[w].items():
                    window_of.pop(edited, None)
                    before = in_flight.get(edited, ([], []))
                    in_flight[edited] = (before[0] + new, before[1] + old)
            for edited in finished:
                in_flight.pop(edited, None)
            finished.clear()
        if windows:
            store.record_intent(in_flight)
            recorded[0] = True
        store.write_checked(batch, index, full)
        done: list[str] = []
        with planned:
            for d in batch:
                doc_id = owner_of.pop(d.id, None)
                if doc_id is not None:
                    unwritten[doc_id] -= 1
            completed = [i for i in stale_of if not unwritten.get(i)]
            for doc_id in completed:
                unwritten.pop(doc_id, None)
                done += stale_of.pop(doc_id)
        if done:
            store.delete(list(dict.fromkeys(done)))
            with planned:
                finished.update(completed)  # the record shrinks at its next write

    def encode(texts: list[str]) -> tuple[Any, Any]:
        out = encoder.encode(texts, kind="document", warn_truncation=False,
                             show_progress_bar=False, dim=dim)
        return out.index, (out.full if stamp.full_vectors else None)

    with store.editing():  # no repair of this process touches its record meanwhile
        try:
            stats = index_pipelined(
                docs,
                encode=encode,
                write=write if chunker is not None else store.write_checked,
                lengths=token_lengths,
                max_length=encoder.truncates_at,
                batch_size=batch_size,
                window=window,
                on_progress=bar.update if bar is not None else None,
                # without chunking, each document is what is written: checked here, once
                validate=None if chunker is not None else (
                    lambda docs, at: store.check_documents(docs, offset=at)),
                prepare=prepare if chunker is not None else None,
            )
            left = [i for ids in stale_of.values() for i in ids]
            if left:  # nothing new was written after them (a call of unchanged documents)
                store.delete(list(dict.fromkeys(left)))
            if recorded[0]:  # every edit of the call is whole: nothing to repair
                store.record_intent(None)
            if store.replacing and stats.n_input:  # recreate=True: the complete
                store.publish()  # replacement goes live; an empty call replaces nothing
        except BaseException:
            if store.replacing and store.supports_atomic_replace:
                # what this call wrote is discarded: a retry starts from an empty replacement
                try:
                    store.open_replacement(collection, stamp)
                except Exception as err:  # the first error is the one to report
                    logger.warning("discarding the failed replacement of %r failed: %s",
                                   collection, err)
            raise
        finally:
            if bar is not None:
                bar.close()
    build_started = time.perf_counter()
    if stats.n_written:
        store.build_index()  # e.g. HNSW for Qdrant Edge; searches are exact before
    build_seconds = time.perf_counter() - build_started
    if stats.n_truncated:
        warnings.warn(
            f"{stats.n_truncated} of {stats.n_written} documents are longer than the model's "
            f"max_seq_length ({encoder.max_seq_length} tokens) and were embedded from "
            "their beginning only; split long documents into chunks to embed all of them.",
            TruncationWarning,
            stacklevel=3,
        )
    report = IndexReport(
        n_input=stats.n_input, n_written=stats.n_written, n_truncated=stats.n_truncated,
        n_duplicates=stats.n_duplicates, seconds=time.perf_counter() - started,
        encode_seconds=stats.encode_seconds,
        write_seconds=stats.write_seconds, wait_seconds=stats.wait_seconds,
        n_chunked=counts["chunked"], n_chunks=counts["chunks"],
        n_unchanged=counts["unchanged"], n_deleted=len(set(stale)),
        chunk_seconds=chunk_seconds, build_seconds=build_seconds,
    )
    return stats.ids, report
