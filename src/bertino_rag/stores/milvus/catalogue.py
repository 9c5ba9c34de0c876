"""The engine catalogue: the index types a MilvusStore may ask for, their build and search
parameters, and where each falls back to when the engine cannot build it.

Servers build every type; Milvus Lite 3.2 builds ``HNSW``, ``HNSW_SQ``, ``IVF_FLAT``,
``IVF_SQ8``, ``FLAT`` (and ``AUTOINDEX``), which it tells by trying on two rows
(:func:`lite_builds`). An index the engine cannot build falls back along :data:`FALLBACKS` to
the nearest one it can, with one :class:`~bertino_rag.errors.IndexFallbackWarning`.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from ...errors import IndexFallbackWarning

__all__ = ["FALLBACKS", "build_params", "check_index", "index_chain", "lite_builds",
           "quiet_pymilvus", "search_params", "warn_fallback"]

#: index types a request may name, and where each falls back to when the engine cannot build it
FALLBACKS: dict[str, tuple[str, ...]] = {
    "AUTOINDEX": ("HNSW", "FLAT"),
    "HNSW": ("FLAT",),
    "HNSW_SQ": ("HNSW", "FLAT"),
    "HNSW_PQ": ("HNSW_SQ", "HNSW", "FLAT"),
    "HNSW_PRQ": ("HNSW_SQ", "HNSW", "FLAT"),
    "DISKANN": ("HNSW", "FLAT"),
    "IVF_FLAT": ("FLAT",),
    "IVF_SQ8": ("IVF_FLAT", "FLAT"),
    "IVF_PQ": ("IVF_SQ8", "IVF_FLAT", "FLAT"),
    "IVF_RABITQ": ("IVF_SQ8", "IVF_FLAT", "FLAT"),
    "SCANN": ("IVF_SQ8", "IVF_FLAT", "FLAT"),
    "FLAT": ("BRUTE_FORCE",),
}
#: what a Milvus Lite reached over the network builds (one in this process is asked)
_LITE_INDEXES = {"HNSW", "HNSW_SQ", "IVF_FLAT", "IVF_SQ8", "FLAT", "BRUTE_FORCE", "AUTOINDEX"}


def check_index(index: str, metric: str | None) -> tuple[str, str | None]:
    """The index type and metric a store was asked for, upper-cased.

    Raises:
        ValueError: a binary or unknown index type, or a metric other than IP and COSINE.
    """
    index = str(index).upper()
    if index.startswith("BIN_"):
        raise ValueError(f"index {index!r} is for binary vectors; these vectors are float")
    if index not in FALLBACKS:
        raise ValueError(f"unknown index {index!r}; use one of {sorted(FALLBACKS)}")
    if metric is not None and metric.upper() not in ("IP", "COSINE"):
        raise ValueError(f"metric must be 'IP' or 'COSINE', got {metric!r}")
    return index, None if metric is None else metric.upper()


def build_params(index: str, dim: int, ef_construction: int, nlist: int) -> dict[str, Any]:
    """The default build parameters of ``index`` on ``dim``-dimensional vectors."""
    if index.startswith("HNSW"):
        params: dict[str, Any] = {"M": 16, "efConstruction": ef_construction}
        if index == "HNSW_SQ":
            params["sq_type"] = "SQ8"
        if index in ("HNSW_PQ", "HNSW_PRQ"):
            params.update(m=max(1, dim // 4), nbits=8)
        return params
    if index.startswith("IVF") or index == "SCANN":
        params = {"nlist": nlist}
        if index == "IVF_PQ":
            params.update(m=max(1, dim // 4), nbits=8)
        if index == "SCANN":
            params["with_raw_data"] = True
        return params
    return {}


def search_params(index: str, metric: str, limit: int, ef: int, nprobe: int,
                  lite: bool) -> dict[str, Any]:
    """The ``search_params`` of a search for ``limit`` hits on an ``index`` (HNSW's breadth
    raised to ``limit`` when lower)."""
    if index.startswith("HNSW") or (index == "AUTOINDEX" and lite):
        params: dict[str, Any] = {"ef": max(ef, limit)}
    elif index.startswith("IVF") or index == "SCANN":
        params = {"nprobe": nprobe}
    elif index == "DISKANN":
        params = {"search_list": max(ef, limit)}
    else:
        params = {}
    return {"metric_type": metric, "params": params}


def lite_builds(index: str, dim: int) -> bool:
    """Whether Milvus Lite builds ``index`` (tried on two rows by the engine in this process)."""
    try:
        from milvus_lite.index.factory import build_index_from_spec
        from milvus_lite.index.spec import IndexSpec
    except ImportError:  # a Milvus Lite server reached over the network
        return index in _LITE_INDEXES
    try:
        rows = np.random.default_rng(0).normal(size=(2, dim)).astype(np.float32)
        build_index_from_spec(IndexSpec("vector", index, "IP", {}), rows)
    except (ValueError, NotImplementedError, RuntimeError):
        return False
    return True


def index_chain(index: str, dim: int, lite: bool) -> list[str]:
    """``index`` and its fallbacks, nearest first; on Milvus Lite only those it builds (a
    server tells by refusing to create the collection)."""
    chain = [index, *FALLBACKS[index]]
    return [c for c in chain if lite_builds(c, dim)] if lite else chain


def warn_fallback(where: str, asked: str, chosen: str, why: str, warned: set[str]) -> None:
    """One :class:`IndexFallbackWarning` per store and index used instead of ``asked``."""
    if chosen != asked and chosen not in warned:
        warned.add(chosen)
        warnings.warn(f"{where} cannot build index {asked!r} ({why}); using {chosen!r} instead",
                      IndexFallbackWarning, stacklevel=5)


@contextmanager
def quiet_pymilvus() -> Iterator[None]:
    """Mute pymilvus' error log for a call whose failure is expected and handled (trying an
    index, probing for filter templating)."""
    log = logging.getLogger("pymilvus")
    previous = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(previous)
