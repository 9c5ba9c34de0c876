"""Copy a collection between stores, vectors included: no re-encoding.

``migrate("qdrant:./local", "qdrant-edge:./edge", "docs")`` reads every point of ``docs``
from the source with :meth:`~bertino_rag.adapters.VectorStore.export` (ids, texts, metadata,
truncated and full vectors) and upserts it into the destination, opened with the source's
stamp: a destination collection of another model, dimension or layout is refused before
anything is written.

Resuming: upserts are idempotent by id, and points already in the destination with the same
text and metadata are skipped (``overwrite=True`` rewrites them), so running the same
migration again after a crash finishes the copy without duplicates and without rewriting what
was copied. At the end the destination's count is compared with the source's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import MigrationError
from ..validation import positive_int
from . import VectorStore, make_store

__all__ = ["MigrationError", "MigrationReport", "migrate"]


@dataclass(frozen=True)
class MigrationReport:
    """What :func:`migrate` did."""

    collection: str
    to_collection: str
    #: documents in the source
    source_count: int
    #: documents written to the destination by this run
    written: int
    #: documents already in the destination with the same text and metadata (not rewritten)
    skipped: int
    #: documents in the destination at the end
    destination_count: int
    seconds: float
    #: seconds the destination spent building its index at the end (``build_index``)
    build_seconds: float = 0.0


def migrate(
    source: VectorStore | str,
    destination: VectorStore | str,
    collection: str,
    *,
    to_collection: str | None = None,
    batch_size: int = 512,
    overwrite: bool = False,
    build_index: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> MigrationReport:
    """Copy ``collection`` from ``source`` to ``destination`` with its vectors.

    Args:
        source, destination: stores or spec strings (``"memory:DIR"``, ``"qdrant:DIR"``,
            ``"qdrant:http://..."``, ``"qdrant-edge:DIR"``, ``"milvus:FILE.db"``...).
        collection: the source collection.
        to_collection: name in the destination (default: the same).
        batch_size: points read and written per step.
        overwrite: rewrite points the destination already holds unchanged (default: skip).
        build_index: build the destination's index at the end (HNSW for Qdrant Edge).
        on_progress: called after each step with (source documents handled so far, source
            count).

    Raises:
        StoreError: the source has no such collection.
        StampMismatchError: the destination collection exists with another model, dimension
            or layout; nothing is written.
        MigrationError: after the copy, the destination holds another number of documents
            than the source (e.g. it held other documents before).
    """
    batch_size = positive_int(batch_size, "batch_size")
    target = to_collection or collection
    src = make_store(source)
    dst = make_store(destination)
    if src is dst and target == collection:
        raise ValueError("source and destination are the same collection of the same store")
    started = time.perf_counter()
    stamp = src.open_existing(collection)
    try:
        dst.open(target, stamp)  # refuses another model/dim/layout before any write
        total = src.count()
        written = skipped = done = 0
        for batch in src.export(batch_size=batch_size):
            docs, index, full = batch.documents, batch.vectors, batch.full_vectors
            if not overwrite:
                present = {d.id: d for d in dst.get([d.id for d in docs])}
                keep = [i for i, d in enumerate(docs) if not (
                    d.id in present and present[d.id].text == d.text
                    and present[d.id].metadata == d.metadata)]
                skipped += len(docs) - len(keep)
                if len(keep) < len(docs):
                    docs = [docs[i] for i in keep]
                    index = index[keep]
                    full = None if full is None else full[keep]
            if docs:
                dst.upsert(docs, index, full)
                written += len(docs)
            done += len(batch.documents)
            if on_progress is not None:
                on_progress(done, total)
        build_started = time.perf_counter()
        if build_index:
            dst.build_index()
        build_seconds = time.perf_counter() - build_started
        final = dst.count()
        report = MigrationReport(
            collection=collection, to_collection=target, source_count=total, written=written,
            skipped=skipped, destination_count=final,
            seconds=time.perf_counter() - started, build_seconds=build_seconds,
        )
        if final != total:
            raise MigrationError(
                f"after copying {collection!r} the destination {target!r} holds {final} "
                f"documents, the source {total}: the destination held other documents "
                "before, or either side was written during the copy"
            )
        return report
    finally:
        if not isinstance(source, VectorStore):
            src.close()
        if not isinstance(destination, VectorStore):
            dst.close()
