"""Every error and warning of bertino-rag, in one leaf module.

All errors derive from :class:`BertinoError`, so ``except BertinoError`` catches whatever the
library raises on purpose. Each family also derives from the builtin its callers already
catch (``ValueError`` for bad input, ``RuntimeError`` for a store that failed), so code
written against the builtins keeps working:

- bad input: :class:`FilterError`, :class:`StampMismatchError`, :class:`EmptyQueryError`,
  :class:`LexicalUnavailableError`, :class:`StreamValidationError`,
  :class:`DocumentLoadError`, :class:`RerankerError`; for training :class:`BaseModelError`,
  :class:`TrainingDataError`, :class:`MiniBatchMemoryError` (all ``ValueError``);
- store failures: :class:`StoreError` and its kinds :class:`StoreConnectionError`,
  :class:`CollectionNotFoundError`, :class:`StoreWriteError` (with ``failed_ids``; also
  :class:`IndexWriteError`, raised by indexing), :class:`StoreCorruptionError` (``path``),
  :class:`MigrationError` (all ``RuntimeError``);
- an encoder's compiled engine that cannot run here: :class:`EngineUnavailableError`
  (``ImportError``: what to install is the fix).

This module imports nothing of the library, so any layer can raise any error without
importing a layer below it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .types import Stamp

__all__ = [
    "BadItem",
    "BaseModelError",
    "BertinoError",
    "CollectionNotFoundError",
    "DocumentLoadError",
    "EmptyQueryError",
    "EngineUnavailableError",
    "FilterError",
    "IndexFallbackWarning",
    "IndexInterrupted",
    "IndexWriteError",
    "LexicalUnavailableError",
    "MigrationError",
    "MiniBatchMemoryError",
    "RerankerError",
    "SkippedFileWarning",
    "SlowEngineWarning",
    "StampMismatchError",
    "StoreConnectionError",
    "StoreCorruptionError",
    "StoreError",
    "StoreWriteError",
    "StreamValidationError",
    "TrainingDataError",
    "TruncationWarning",
]


class BertinoError(Exception):
    """The root of every error bertino-rag raises on purpose."""


# ---------------------------------------------------------------------- bad input
class FilterError(BertinoError, ValueError):
    """A filter that cannot be understood."""


class StampMismatchError(BertinoError, ValueError):
    """A collection was built by another model, dimension or layout.

    Attributes:
        found: the collection's stamp (what it was built with), when known.
        requested: the stamp that was asked for.
    """

    def __init__(self, collection: str, diffs: list[str], *, found: Stamp | None = None,
                 requested: Stamp | None = None):
        self.collection = collection
        self.diffs = diffs
        self.found = found
        self.requested = requested
        super().__init__(
            f"collection {collection!r} was built with different settings ("
            + "; ".join(diffs)
            + "). Its vectors cannot be mixed with the new ones: use another collection name, "
            "or pass recreate=True to drop it and index again."
        )


class LexicalUnavailableError(BertinoError, ValueError):
    """Lexical or hybrid search asked of a collection built without the lexical index."""


class EmptyQueryError(BertinoError, ValueError):
    """A lexical query with no searchable term left after analysis (stopwords, punctuation)."""


class StreamValidationError(BertinoError, ValueError):
    """An invalid document in a streamed (non-list) input; earlier windows were written.

    Attributes:
        position: position of the invalid document in the input.
        n_written: documents of this call already written (they stay written).
    """

    def __init__(self, message: str, position: int, n_written: int) -> None:
        self.position = position
        self.n_written = n_written
        super().__init__(
            f"{message}. The input is a stream, validated window by window: {n_written} "
            "documents before it were already written and stay written (indexing them again "
            "is harmless). Pass a list to validate everything before writing."
        )


class DocumentLoadError(BertinoError, ValueError):
    """A file could not be read as a document.

    Attributes:
        path: the file.
        reason: why, with what to do about it.
    """

    def __init__(self, path: Any, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class BaseModelError(BertinoError, ValueError):
    """The base model of a training run cannot be trained from (not a model folder, absent,
    unreachable); raised before any data is mined or model loaded."""


class TrainingDataError(BertinoError, ValueError):
    """Training data with no usable (query, positive) pairs, or too few source documents to
    hold some apart; raised before any long step."""


class MiniBatchMemoryError(BertinoError, ValueError):
    """The cached loss's mini-batch does not fit in memory at the run's sequence length
    (measured on a GPU, estimated on a CPU); raised before any long step.

    Attributes:
        mini_batch_size: the mini-batch that does not fit.
        needed_bytes: what one forward + backward of it needs (measured or estimated; ``None``
            when it ran out of memory before a peak could be read).
        available_bytes: the memory there is for it.
    """

    def __init__(self, message: str, mini_batch_size: int, needed_bytes: int | None,
                 available_bytes: int | None) -> None:
        self.mini_batch_size = mini_batch_size
        self.needed_bytes = needed_bytes
        self.available_bytes = available_bytes
        super().__init__(message)


class RerankerError(BertinoError, ValueError):
    """A reranker that cannot rerank: a model that is not a cross-encoder (an embedding model,
    a folder without a classification head), an object without a scoring method, or scores
    that are not one finite number per (query, passage) pair. Raised before any hit of the
    search is returned."""


class BadItem(Exception):
    """An invalid document at ``position`` of the input (``err`` says why): the signal an
    indexing step raises for a document it names itself; indexing turns it into the
    ``ValueError`` or :class:`StreamValidationError` the caller sees."""

    def __init__(self, err: ValueError, position: int) -> None:
        super().__init__(str(err))
        self.err = err
        self.position = position


# ---------------------------------------------------------------------- store failures
class StoreError(BertinoError, RuntimeError):
    """A store operation failed (unreachable server, failed write, closed store).

    Every store raises this family for its own failures, so callers catch one type:

    - :class:`StoreConnectionError`: the store cannot be reached or opened (names its kind and
      location, never a key, token or password);
    - :class:`StoreWriteError`: a write failed (``failed_ids``: the ids not stored);
    - :class:`StoreCorruptionError`: a file of a store folder is missing or damaged (``path``).
    """


class StoreConnectionError(StoreError):
    """The store at ``location`` (of ``kind``: "Qdrant", "Milvus"...) cannot be reached."""

    def __init__(self, kind: str, location: str, reason: str) -> None:
        self.kind = kind
        self.location = location
        super().__init__(f"cannot reach {kind} at {location}: {reason}")


class CollectionNotFoundError(StoreError):
    """``open(..., create=False)`` on a collection that does not exist; ``existing`` lists
    the collections that do."""

    def __init__(self, collection: str, where: str, existing: Sequence[str]) -> None:
        self.collection = collection
        self.existing = list(existing)
        listed = ", ".join(repr(c) for c in self.existing) if self.existing else "none"
        super().__init__(
            f"collection {collection!r} does not exist in {where} (nothing was created); "
            f"existing collections: {listed}"
        )


class StoreWriteError(StoreError):
    """A write failed. ``failed_ids``: ids of the call that are not stored because of it."""

    def __init__(self, message: str, failed_ids: Sequence[str] = ()) -> None:
        self.failed_ids = list(failed_ids)
        super().__init__(message)


class StoreCorruptionError(StoreError):
    """A file of a store folder is missing, truncated or fails its checksum (``path``)."""

    def __init__(self, path: Any, message: str) -> None:
        self.path = path
        super().__init__(message)


class IndexWriteError(StoreWriteError):
    """A store write failed during indexing; nothing acknowledged before it is lost.

    Attributes:
        failed_ids: ids of the batch whose write failed.
        unwritten_ids: ids of every document of the call that was not written (the failed batch
            included), as far as the input was read.
        n_written: documents acknowledged by the store before the failure.
    """

    def __init__(
        self, cause: BaseException, failed_ids: list[str], unwritten_ids: list[str], n_written: int
    ) -> None:
        self.unwritten_ids = unwritten_ids
        self.n_written = n_written
        shown = ", ".join(failed_ids[:5]) + (", ..." if len(failed_ids) > 5 else "")
        super().__init__(
            f"writing a batch of {len(failed_ids)} documents failed ({type(cause).__name__}: "
            f"{cause}); failed ids: {shown}. {n_written} documents were written before it and "
            f"are kept; {len(unwritten_ids)} documents were not written.", failed_ids,
        )


class IndexInterrupted(KeyboardInterrupt):
    """Indexing interrupted (Ctrl-C) after the batches already encoded were written.

    A ``KeyboardInterrupt`` (not a :class:`BertinoError`: ``except Exception`` must not swallow
    an interrupt), with what was written: those entries are kept, and indexing the same input
    again finishes the job.

    Attributes:
        n_written: entries (documents or chunks) the store acknowledged before the interrupt.
    """

    def __init__(self, n_written: int) -> None:
        self.n_written = n_written
        super().__init__(f"indexing interrupted; {n_written} entries were written and are kept")


class MigrationError(StoreError):
    """The copy finished but the destination does not hold what the source holds."""


# ---------------------------------------------------------------------- encoders
class EngineUnavailableError(BertinoError, ImportError):
    """An encoder's compiled engine is missing, failed to load, or was built for instructions
    this CPU lacks; the message says what to install."""


# ---------------------------------------------------------------------- warnings
class TruncationWarning(UserWarning):
    """Some inputs were longer than the model's maximum sequence length and were cut."""


class SkippedFileWarning(UserWarning):
    """A file was skipped because it could not be read (the message names it and why)."""


class IndexFallbackWarning(UserWarning):
    """The engine cannot build the requested index; a near one is used instead."""


class SlowEngineWarning(UserWarning):
    """An encoder runs its portable (slower) code because this CPU lacks its fast path."""
