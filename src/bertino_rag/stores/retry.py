"""One retry policy for every store's client calls, and one error for every failed write.

Each store builds a :class:`Retry` with its own test of what is transient (timeouts, 5xx,
429, "unavailable") and calls its client through :meth:`Retry.call` (reads and schema calls) or
:meth:`Retry.write` (writes). A transient error is retried with doubling, jittered delays; one
that stays transient becomes :class:`~bertino_rag.errors.StoreConnectionError` naming the
store and its location; an engine error of the store's own client becomes
:class:`~bertino_rag.errors.StoreError`; and any failure of a write becomes
:class:`~bertino_rag.errors.StoreWriteError` naming the ids it did not store. Secrets never
reach a message (:func:`~bertino_rag.stores.locations.redact`). Async calls run the same
policy in a worker thread.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..errors import StoreConnectionError, StoreError, StoreWriteError
from .locations import redact

__all__ = ["Retry", "never_transient"]

logger = logging.getLogger(__name__)
T = TypeVar("T")


def never_transient(err: BaseException) -> bool:
    """The test of a store whose errors are never worth retrying (an embedded engine)."""
    return False


@dataclass
class Retry:
    """How a store retries its client calls, and how their failures are reported.

    Attributes:
        kind: the store's name in messages ("Qdrant", "Milvus"...).
        where: its location, without credentials.
        transient: whether an error is worth retrying.
        attempts: retries after the first try.
        base_delay: the first delay in seconds (doubling, with 25% jitter, up to
            ``max_delay``).
        engine_errors: exception types of the store's client that become ``StoreError``.
        secrets: strings never shown in a message.
    """

    kind: str
    where: str
    transient: Callable[[BaseException], bool] = never_transient
    attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 30.0
    engine_errors: tuple[type[BaseException], ...] = ()
    secrets: Sequence[str | None] = field(default_factory=tuple)

    def clean(self, err: BaseException) -> str:
        """``err`` as text, without secrets."""
        return redact(f"{type(err).__name__}: {err}", *self.secrets)

    def call(self, fn: Callable[[], T], what: str) -> T:
        """Run ``fn``, retrying transient errors.

        Raises:
            StoreConnectionError: the error stayed transient through every retry.
            StoreError: an engine error of the store's client.
        """
        delay = self.base_delay
        for attempt in range(self.attempts + 1):
            try:
                return fn()
            except Exception as err:
                if not self.transient(err):
                    if self.engine_errors and isinstance(err, self.engine_errors):
                        raise StoreError(f"{self.kind} at {self.where}: {what} failed: "
                                         f"{self.clean(err)}") from err
                    raise
                if attempt == self.attempts:
                    raise StoreConnectionError(
                        self.kind, self.where,
                        f"{what} failed after {self.attempts} retries ({self.clean(err)}); "
                        "check that the server runs and the address is right",
                    ) from None
                logger.warning("%s %s failed (%s); retry %d/%d in %.1fs", self.kind, what,
                               type(err).__name__, attempt + 1, self.attempts, delay)
                time.sleep(delay * (1 + 0.25 * random.random()))
                delay = min(delay * 2, self.max_delay)
        raise AssertionError("unreachable")

    def write(self, fn: Callable[[], Any], ids: Sequence[str], what: str = "write") -> None:
        """Run a write of ``ids`` with :meth:`call`; any failure becomes ``StoreWriteError``
        naming the ids not stored (all of ``ids``: the write is one unit)."""
        try:
            self.call(fn, what)
        except StoreWriteError:
            raise
        except Exception as err:
            raise self.failed_write(err, ids, what) from err

    def failed_write(self, err: BaseException, ids: Sequence[str],
                     what: str = "write") -> StoreWriteError:
        """The error of a failed write of ``ids``."""
        cause = err.__cause__ if isinstance(err, StoreError) and err.__cause__ else err
        shown = ", ".join(list(ids)[:5]) + (", ..." if len(ids) > 5 else "")
        return StoreWriteError(
            f"{self.kind} at {self.where}: {what} of {len(ids)} documents failed "
            f"({self.clean(cause)}); not stored: {shown}", ids)
