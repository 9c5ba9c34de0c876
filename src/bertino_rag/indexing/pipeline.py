"""Pipelined indexing: batch n is written to the store while batch n+1 is encoded.

The caller's thread validates and encodes; one writer thread upserts, in order, through a
bounded queue, so memory stays flat however long the input is. Inside a window of documents
texts are sorted by token length before they are cut into write batches, so that the
encoder's batches hold texts of similar length and little compute goes to padding.

Failure semantics:

- every document is validated against the rules of the store it goes to (``validate``: valid
  Unicode, JSON metadata with finite numbers, the store's byte limits) and named by position;
- one id may not stand for two different documents within a call (``{"id": 7}`` and
  ``{"id": "7"}`` are one id: ids are strings); a document repeated exactly is written once
  and counted in ``n_duplicates``;
- a list (or any :class:`~collections.abc.Sequence`) is validated whole before anything is
  written: a bad document means nothing of the call is written. With ``prepare`` (chunking),
  every window is prepared (and what it will write validated) before the first write;
- any other iterable (a generator, a file reader) is validated window by window: a bad
  document raises :class:`StreamValidationError`, naming its position and how many documents
  were already written (those stay written; re-running the call is idempotent, ids being
  stable);
- a failed write stops the pipeline: batches acknowledged before it stay written, and
  :class:`IndexWriteError` names the ids of the failed batch and of the documents never written.
"""

from __future__ import annotations

import itertools
import json
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import BadItem, IndexInterrupted, IndexWriteError, StreamValidationError
from ..types import Document, _coerce

__all__ = [
    "BadItem",
    "IndexWriteError",
    "PipelineStats",
    "StreamValidationError",
    "check_input",
    "index_pipelined",
]

_DONE = object()


@dataclass
class PipelineStats:
    """Counters of one pipelined indexing run."""

    n_input: int = 0
    n_written: int = 0
    n_truncated: int = 0
    #: documents repeated exactly (same id, text and metadata) within the call, written once
    n_duplicates: int = 0
    encode_seconds: float = 0.0
    write_seconds: float = 0.0
    #: time the encoder waited on the writer (a full queue, or the last write): not hidden
    wait_seconds: float = 0.0
    ids: list[str] = field(default_factory=list)


class _Writer(threading.Thread):
    """Upserts queued batches in order; after an error it drains the queue without writing."""

    def __init__(self, write: Callable[[list[Document], Any, Any], None], depth: int) -> None:
        super().__init__(name="bertino-rag-writer", daemon=True)
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self.write = write
        self.error: BaseException | None = None
        self.failed: list[str] = []
        self.skipped: list[str] = []
        self.n_written = 0
        self.seconds = 0.0

    def run(self) -> None:
        while True:
            item = self.queue.get()
            if item is _DONE:
                return
            docs, vectors, full = item
            if self.error is not None:
                self.skipped.extend(d.id for d in docs)
                continue
            started = time.perf_counter()
            try:
                self.write(docs, vectors, full)
            except BaseException as err:  # noqa: BLE001 - reported to the caller's thread
                self.error = err
                self.failed = [d.id for d in docs]
            else:
                self.n_written += len(docs)
            self.seconds += time.perf_counter() - started


Validate = Callable[[list[Document], int], None]


class _Ids:
    """Ids seen in one call: a repeat of the same document is dropped (and counted), one id
    for two different documents is an error naming both positions."""

    def __init__(self, stats: PipelineStats, validate: Validate | None) -> None:
        self.seen: dict[str, tuple[int, int]] = {}
        self.stats = stats
        self.validate = validate

    def accept(self, item: Any, position: int) -> Document | None:
        doc = _coerce(item, position)
        if self.validate is not None:
            self.validate([doc], position)
        self.stats.ids.append(doc.id)
        self.stats.n_input += 1
        digest = hash((doc.text, json.dumps(doc.metadata, sort_keys=True, default=repr)))
        first = self.seen.get(doc.id)
        if first is None:
            self.seen[doc.id] = (position, digest)
            return doc
        if first[1] != digest:
            raise ValueError(
                f"documents at positions {first[0]} and {position} have the same id {doc.id!r} "
                "but different text or metadata (ids are strings: 7 and '7' are one id); give "
                "each document its own id, or leave ids out to derive them from the text"
            )
        self.stats.n_duplicates += 1
        return None


Window = tuple[list[Document], list[int]]


def _windows(docs: Iterable[Any], window: int, stats: PipelineStats,
             validate: Validate | None = None) -> Iterator[Window]:
    """Validated windows of distinct documents, with their positions in the input; records
    every id in input order."""
    ids = _Ids(stats, validate)
    if isinstance(docs, Sequence) and not isinstance(docs, (str, bytes)):
        accepted = ((ids.accept(item, i), i) for i, item in enumerate(docs))
        unique = [(d, i) for d, i in accepted if d is not None]  # validated before any write
        for start in range(0, len(unique), window):
            part = unique[start : start + window]
            yield [d for d, _ in part], [i for _, i in part]
        return
    position = 0
    iterator = iter(docs)
    while True:
        chunk = list(itertools.islice(iterator, window))
        if not chunk:
            return
        out, at = [], []
        for item in chunk:
            try:
                doc = ids.accept(item, position)
            except ValueError as err:
                raise BadItem(err, position) from err
            if doc is not None:
                out.append(doc)
                at.append(position)
            position += 1
        if out:
            yield out, at


def check_input(docs: Sequence[Any], validate: Validate | None = None) -> PipelineStats:
    """Validate a whole list as :func:`index_pipelined` would, writing nothing.

    Raises:
        ValueError: naming the position of the first bad document.
    """
    return distinct_documents(docs, validate)[1]


def distinct_documents(
    docs: Sequence[Any], validate: Validate | None = None
) -> tuple[list[Document], PipelineStats]:
    """The documents of a list, validated, each id once (the rule of :func:`index_pipelined`):
    an exact repeat is dropped and counted, one id for two different documents is an error.

    Raises:
        ValueError: naming the position of the first bad document, or both positions of a
            repeated id.
    """
    stats = PipelineStats()
    ids = _Ids(stats, validate)
    accepted = (ids.accept(item, i) for i, item in enumerate(docs))
    return [d for d in accepted if d is not None], stats


def index_pipelined(
    docs: Iterable[Any],
    *,
    encode: Callable[[list[str]], tuple[Any, Any]],
    write: Callable[[list[Document], Any, Any], None],
    lengths: Callable[[list[str]], list[int]],
    max_length: int | None,
    batch_size: int,
    window: int,
    depth: int = 2,
    on_progress: Callable[[int], None] | None = None,
    validate: Validate | None = None,
    prepare: Callable[[list[Document], list[int]], list[Document]] | None = None,
) -> PipelineStats:
    """Encode and write ``docs`` with encoding and writing overlapped.

    Args:
        docs: the documents (see :func:`bertino_rag.types.to_documents` for accepted forms).
        encode: texts -> (index vectors, full vectors or ``None``).
        write: (documents, index vectors, full vectors) -> None; the store's upsert.
        lengths: texts -> token lengths (sort key, and counts truncated texts).
        max_length: the model's max sequence length (longer texts are counted as truncated;
            ``None``: unknown, nothing is counted).
        batch_size: documents per write.
        window: documents sorted by length together (a multiple of ``batch_size`` works best).
        depth: encoded batches that may wait for the writer (bounds memory).
        on_progress: called with the number of documents of each written batch.
        validate: (documents, position of the first) -> None, raising ValueError for a
            document the store would not keep (the store's ``check_documents``).
        prepare: (validated window, the input position of each of its documents) -> the
            documents to encode and write for it (chunking, and leaving out what the store
            already holds); default: the window as it is. It raises :class:`BadItem` for a
            document whose output the store would not keep: on a list input, every window is
            prepared before anything is written.

    Raises:
        ValueError: an invalid document in a list input; nothing was written.
        StreamValidationError: an invalid document in a streamed input.
        IndexWriteError: a write failed.
        IndexInterrupted: a ``KeyboardInterrupt`` (Ctrl-C), raised once the batches already
            encoded are written, with their number.
    """
    stats = PipelineStats()
    writer = _Writer(write, depth)
    writer.start()
    never_sent: list[str] = []
    windows: Iterator[Window] = _windows(docs, window, stats, validate)
    listed = isinstance(docs, Sequence) and not isinstance(docs, (str, bytes))
    bad: BadItem | None = None
    interrupted = False
    try:
        if prepare is not None and listed:
            try:  # every window prepared and validated before the first write
                ready = [(prepare(w, at), at) for w, at in windows]
            except BadItem as err:
                raise err.err from None
            windows = iter(ready)
            prepare = None
        for win, at in windows:
            if prepare is not None:
                win = prepare(win, at)
            sizes = lengths([d.text for d in win])
            if max_length is not None:
                stats.n_truncated += sum(1 for n in sizes if n > max_length)
            order = sorted(range(len(win)), key=lambda i: -sizes[i])
            for start in range(0, len(win), batch_size):
                if writer.error is not None:
                    never_sent.extend(win[i].id for i in order[start:])
                    break
                batch = [win[i] for i in order[start : start + batch_size]]
                began = time.perf_counter()
                vectors, full = encode([d.text for d in batch])
                waited = time.perf_counter()
                stats.encode_seconds += waited - began
                writer.queue.put((batch, vectors, full))
                stats.wait_seconds += time.perf_counter() - waited
                if on_progress is not None:
                    on_progress(len(batch))
            if writer.error is not None:
                if listed:  # a list: name everything not written
                    never_sent.extend(d.id for w, _ in windows for d in w)
                break
    except BadItem as err:
        bad = err
    except KeyboardInterrupt:
        interrupted = True
    finally:
        began = time.perf_counter()
        writer.queue.put(_DONE)
        writer.join()
        stats.wait_seconds += time.perf_counter() - began
        stats.write_seconds = writer.seconds
        stats.n_written = writer.n_written
    if interrupted:  # after the batches already encoded were written
        raise IndexInterrupted(writer.n_written)
    if bad is not None:
        raise StreamValidationError(str(bad.err), bad.position, writer.n_written) from bad.err
    if writer.error is not None:
        unwritten = list(dict.fromkeys(writer.failed + writer.skipped + never_sent))
        raise IndexWriteError(
            writer.error, writer.failed, unwritten, writer.n_written
        ) from writer.error
    return stats
