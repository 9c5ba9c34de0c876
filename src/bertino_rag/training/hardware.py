"""Fitting a training run to the card it runs on: precision, the cached loss's mini-batch, data
loading, and the trainer settings that keep the loop free of host-device round trips.

The rules are plain functions of what the device reports, so they are tested on CPU with the
device's answers given; only :func:`probe_cuda_mini_batch` touches a GPU.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "CPU_MINI_BATCH",
    "PRECISIONS",
    "dataloader_settings",
    "largest_fitting",
    "loop_settings",
    "mini_batch_candidates",
    "pick_mini_batch_size",
    "probe_cuda_mini_batch",
    "resolve_precision",
    "warmup_kwargs",
]

logger = logging.getLogger("bertino_rag.training")

CPU_MINI_BATCH = 16  # the card's mini_batch_size; on CPU a bigger one only costs memory
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
#: share of the free GPU memory the probe lets one training step peak at (the rest is headroom
#: for fragmentation, longer batches than the probe's and the evaluation in between)
MEMORY_SHARE = 0.8


def resolve_precision(device: str, precision: str = "auto", fp16: bool | None = None, *,
                      bf16_supported: bool | None = None) -> str:
    """The autocast precision: ``"bf16"``, ``"fp16"`` or ``"fp32"``.

    ``auto``: bf16 on a CUDA device that supports it (Ampere and later), else fp16 on CUDA,
    fp32 on CPU. ``fp16=True``/``False`` (the older switch) means ``"fp16"``/``"fp32"`` when
    ``precision`` is ``auto``.

    Raises:
        ValueError: an unknown precision, or bf16/fp16 asked for off CUDA (or bf16 on a GPU
            without it).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: expected one of {PRECISIONS}")
    on_cuda = str(device).startswith("cuda")
    if precision == "auto" and fp16 is not None:
        precision = "fp16" if fp16 else "fp32"
    if precision == "auto":
        if not on_cuda:
            return "fp32"
        return "bf16" if _bf16_supported(bf16_supported) else "fp16"
    if precision != "fp32" and not on_cuda:
        raise ValueError(f"precision={precision!r} needs a CUDA device (this run is on "
                         f"{device!r}); use precision='fp32' or 'auto'")
    if precision == "bf16" and not _bf16_supported(bf16_supported):
        raise ValueError("precision='bf16': this GPU does not support bfloat16; use 'fp16'")
    return precision


def _bf16_supported(known: bool | None) -> bool:
    if known is not None:
        return known
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported(
        including_emulation=False))


def mini_batch_candidates(batch_size: int, columns: int = 1) -> list[int]:
    """Mini-batches to try, largest first: ``batch_size * columns`` (every text of a batch in
    one pass: no gradient cache needed), ``batch_size``, then powers of two below it."""
    out = [batch_size * columns] if columns > 1 else []
    out.append(batch_size)
    p = 1 << (batch_size.bit_length() - 1)
    if p == batch_size:
        p //= 2
    while p >= 1:
        out.append(p)
        p //= 2
    return out


def largest_fitting(candidates: Sequence[int], peak_bytes: Callable[[int], int | None],
                    budget: float) -> int:
    """The first candidate (largest first) whose probed peak stays within ``budget`` bytes.

    ``peak_bytes(n)`` runs one forward + backward of ``n`` sequences and returns the peak
    memory, or ``None`` when it ran out of memory; a candidate that fails is skipped and the
    next smaller one is tried. The smallest candidate is returned when none fits.
    """
    for n in candidates:
        peak = peak_bytes(n)
        if peak is not None and peak <= budget:
            return n
    return min(candidates)


def probe_cuda_mini_batch(model: Any, batch_size: int, seq_len: int, precision: str,
                          columns: int = 1) -> int:
    """The largest mini-batch whose forward + backward at ``seq_len`` tokens fits the GPU.

    The budget is :data:`MEMORY_SHARE` of the memory free on the device now minus what the
    gradients and the two AdamW moments will take (three times the weights, in float32). Each
    candidate (:func:`mini_batch_candidates`) runs once under the run's autocast precision; an
    out-of-memory error moves on to the next smaller one. A result of ``batch_size * columns``
    means the whole batch fits at once.
    """
    import torch

    device = model.device
    free, _total = torch.cuda.mem_get_info(device)
    param_bytes = sum(p.numel() * 4 for p in model.parameters() if p.requires_grad)
    budget = MEMORY_SHARE * (free + torch.cuda.memory_allocated(device) - 3 * param_bytes)
    text = " ".join(["parola"] * seq_len)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    was_training = model.training
    model.train()

    def peak(n: int) -> int | None:
        try:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            prepare = getattr(model, "preprocess", None) or model.tokenize  # 5.7+: preprocess
            features = prepare([text] * n)
            features = {k: v.to(device) for k, v in features.items()
                        if isinstance(v, torch.Tensor)}
            with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
                out = model(features)["sentence_embedding"]
            out.float().pow(2).sum().backward()
            return int(torch.cuda.max_memory_allocated(device))
        except torch.cuda.OutOfMemoryError:
            return None
        finally:
            model.zero_grad(set_to_none=True)

    try:
        best = largest_fitting(mini_batch_candidates(batch_size, columns), peak, budget)
    finally:
        torch.cuda.empty_cache()
        model.train(was_training)
    logger.info("mini-batch probe: %d sequences of %d tokens fit in %.1f GiB (%s, batch %d x %d "
                "texts)", best, seq_len, budget / 2**30, precision, batch_size, columns)
    return best


def pick_mini_batch_size(model: Any, requested: int | None, batch_size: int, device: str,
                         max_seq_length: int | None = None, *, precision: str = "fp16",
                         columns: int = 1) -> int:
    """The CachedMultipleNegativesRankingLoss mini-batch.

    The cached loss gives the same gradients for any mini-batch, so only memory and speed are
    at stake. An explicit value wins (capped at ``batch_size * columns``); on CPU the card's
    16; on a GPU the probe's answer (:func:`probe_cuda_mini_batch`). A value of at least
    ``batch_size * columns`` means every text of a batch is embedded in one pass, so the plain
    MultipleNegativesRankingLoss (same loss, no second forward) can be used.
    """
    if requested is not None:
        return max(1, min(int(requested), batch_size * max(1, columns)))
    if not str(device).startswith("cuda"):
        return min(CPU_MINI_BATCH, batch_size)
    return probe_cuda_mini_batch(model, batch_size, max_seq_length or int(model.max_seq_length),
                                 precision, columns)


def dataloader_settings(device: str, workers: int | None) -> dict[str, Any]:
    """Data loading that keeps a GPU fed: tokenizing in worker processes (off the training
    loop's critical path) with pinned memory, on CUDA only; on CPU in the main process, where
    workers would take cores from the model."""
    on_gpu = str(device).startswith("cuda")
    if workers is None:
        workers = min(4, max(0, (os.cpu_count() or 1) - 1)) if on_gpu else 0
    return {
        "dataloader_num_workers": workers,
        "dataloader_pin_memory": on_gpu,
        "dataloader_persistent_workers": workers > 0,
        "dataloader_prefetch_factor": 2 if workers > 0 else None,
    }


def loop_settings(device: str, precision: str) -> dict[str, Any]:
    """Trainer arguments for the precision, and for a loop without per-step host syncs.

    ``logging_nan_inf_filter`` reads every step's loss on the host (``torch.isnan`` in a Python
    ``if``), which waits for the GPU each step; it is off, so losses are only read at logging
    steps. TF32 matmuls are on where the GPU has them (Ampere and later).
    """
    on_gpu = str(device).startswith("cuda")
    out: dict[str, Any] = {"fp16": precision == "fp16", "bf16": precision == "bf16",
                           "logging_nan_inf_filter": False}
    if on_gpu:
        import torch

        out["tf32"] = torch.cuda.get_device_capability(device)[0] >= 8
    return out


def warmup_kwargs(ratio: float) -> dict[str, Any]:
    """The warmup as a share of the steps: ``warmup_ratio`` before transformers 5, which takes
    a float ``warmup_steps`` below 1 as that share instead (and drops ``warmup_ratio``)."""
    import transformers

    major = int(transformers.__version__.split(".", 1)[0])
    if major >= 5:
        return {"warmup_steps": float(ratio)}
    return {"warmup_ratio": float(ratio)}
