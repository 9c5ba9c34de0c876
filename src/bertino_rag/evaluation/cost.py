"""Bytes per document of each vector layout, and latency percentiles."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["full_bytes_per_doc", "index_layouts", "percentiles_ms", "time_calls"]


def index_layouts(dim: int) -> dict[str, int]:
    """Bytes per document of a ``dim``-d index vector: float32, int8 (scalar) and binary."""
    return {"float32": 4 * dim, "int8": dim, "binary": math.ceil(dim / 8)}


def full_layouts(full_dim: int) -> dict[str, int]:
    """Bytes per document of a full vector kept for rescoring: float32 and float16."""
    return {"float32": 4 * full_dim, "float16": 2 * full_dim}


def full_bytes_per_doc(store: Any, full_dim: int) -> tuple[int, str]:
    """Bytes of one full vector as ``store`` holds it, and the dtype counted: the store's own
    :attr:`~bertino_rag.adapters.VectorStore.full_vector_dtype` (float32 for an object that
    does not declare one)."""
    dtype = str(getattr(store, "full_vector_dtype", "float32"))
    return np.dtype(dtype).itemsize * full_dim, dtype


def time_calls(fn: Callable[[int], object], n: int, *, warmup: int = 3) -> list[float]:
    """Seconds of ``fn(i)`` for ``i`` in ``range(n)``, after ``warmup`` untimed calls."""
    for i in range(min(warmup, n)):
        fn(i)
    out: list[float] = []
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - start)
    return out


def percentiles_ms(seconds: Sequence[float]) -> dict[str, float] | None:
    """p50 and p95 in milliseconds (``None`` for no samples)."""
    if not seconds:
        return None
    arr = np.asarray(seconds, dtype=np.float64) * 1000.0
    return {"p50": float(np.percentile(arr, 50)), "p95": float(np.percentile(arr, 95)),
            "n": int(arr.size)}
