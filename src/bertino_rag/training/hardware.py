"""Fitting a training run to the machine it runs on: precision, threads, the cached loss's
mini-batch (and whether it fits in memory), data loading, and the trainer settings that keep
the loop free of host-device round trips.

The rules are plain functions of what the device reports, so they are tested on CPU with the
device's answers given; only :func:`probe_cuda_mini_batch` and :func:`cuda_peak_bytes` touch a
GPU.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "CPU_MINI_BATCH",
    "PRECISIONS",
    "available_memory_bytes",
    "check_mini_batch_fits",
    "cpu_bf16_supported",
    "cuda_peak_bytes",
    "dataloader_settings",
    "end_autocast",
    "estimate_cpu_step_bytes",
    "largest_fitting",
    "loop_settings",
    "mini_batch_candidates",
    "pick_mini_batch_size",
    "probe_cuda_mini_batch",
    "resolve_precision",
    "set_threads",
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

    ``auto``: bf16 where the device multiplies bfloat16 natively (a CUDA GPU of the Ampere
    generation or later; a CPU with AMX or AVX512-BF16: on this project's Xeon with AMX, the
    card's recipe on multilingual-e5-small trained 1.5 times faster under bf16 autocast once
    attention dropout was off, docs/training.md), else fp16 on CUDA and fp32 on CPU.
    ``fp16=True``/``False`` (the older switch) means ``"fp16"``/``"fp32"`` when ``precision``
    is ``auto``. The weights stay float32 either way: autocast runs the matrix products in the
    lower precision.

    Raises:
        ValueError: an unknown precision, fp16 off CUDA, or bf16 on a device without it.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: expected one of {PRECISIONS}")
    on_cuda = str(device).startswith("cuda")
    if precision == "auto" and fp16 is not None:
        precision = "fp16" if fp16 else "fp32"
    if precision == "auto":
        if _bf16_supported(bf16_supported, on_cuda):
            return "bf16"
        return "fp16" if on_cuda else "fp32"
    if precision == "fp16" and not on_cuda:
        raise ValueError(f"precision='fp16' needs a CUDA device (this run is on {device!r}); "
                         "use precision='bf16' (CPUs with AMX or AVX512-BF16), 'fp32' or 'auto'")
    if precision == "bf16" and not _bf16_supported(bf16_supported, on_cuda):
        if on_cuda:
            raise ValueError("precision='bf16': this GPU does not support bfloat16; use 'fp16'")
        raise ValueError("precision='bf16': this CPU has no bfloat16 instructions (AMX or "
                         "AVX512-BF16), so bf16 would be emulated and slower; use 'fp32' or "
                         "'auto'")
    return precision


def _bf16_supported(known: bool | None, on_cuda: bool = True) -> bool:
    if known is not None:
        return known
    if not on_cuda:
        return cpu_bf16_supported()
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported(
        including_emulation=False))


def cpu_bf16_supported() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AMX tiles or AVX512-BF16)."""
    import torch

    cpu = getattr(torch, "cpu", None)
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op threads (``None``: leave torch's default); returns the count."""
    import torch

    if threads is not None:
        if threads <= 0:
            raise ValueError(f"threads must be positive, got {threads}")
        torch.set_num_threads(int(threads))
    return int(torch.get_num_threads())


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


def _cuda_budget(model: Any) -> float:
    """:data:`MEMORY_SHARE` of the GPU memory there is for activations: free now (plus what
    the model already holds) less the gradients and the two AdamW moments (three times the
    trainable weights, in float32)."""
    import torch

    device = model.device
    free, _total = torch.cuda.mem_get_info(device)
    param_bytes = sum(p.numel() * 4 for p in model.parameters() if p.requires_grad)
    return MEMORY_SHARE * (free + torch.cuda.memory_allocated(device) - 3 * param_bytes)


def cuda_peak_bytes(model: Any, n: int, seq_len: int, precision: str) -> int | None:
    """The peak GPU memory of one forward + backward of ``n`` sequences of ``seq_len`` tokens
    under the run's autocast precision; ``None`` when it ran out of memory."""
    import torch

    device = model.device
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    text = " ".join(["parola"] * seq_len)
    was_training = model.training
    model.train()
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
        torch.cuda.empty_cache()
        model.train(was_training)


def probe_cuda_mini_batch(model: Any, batch_size: int, seq_len: int, precision: str,
                          columns: int = 1) -> int:
    """The largest mini-batch whose forward + backward at ``seq_len`` tokens fits the GPU.

    The budget is :func:`_cuda_budget`. Each candidate (:func:`mini_batch_candidates`) runs
    once under the run's autocast precision (:func:`cuda_peak_bytes`); an out-of-memory error
    moves on to the next smaller one. A result of ``batch_size * columns`` means the whole
    batch fits at once.
    """
    budget = _cuda_budget(model)
    best = largest_fitting(mini_batch_candidates(batch_size, columns),
                           lambda n: cuda_peak_bytes(model, n, seq_len, precision), budget)
    logger.info("mini-batch probe: %d sequences of %d tokens fit in %.1f GiB (%s, batch %d x %d "
                "texts)", best, seq_len, budget / 2**30, precision, batch_size, columns)
    return best


#: float32 values a BERT layer keeps per token for the backward pass: about 10 hidden-size
#: vectors (attention inputs and outputs, layer norms, dropout masks), 2 feed-forward-size
#: ones (the intermediate and its GELU), and 3 attention rows per head (scores, probabilities,
#: dropout mask: attention in training runs the materializing kernel). Checked against the
#: peak RSS growth of one forward + backward of multilingual-e5-small on 8 x 258 tokens: 1.93
#: GiB estimated (1.49 activations + 0.44 gradients), 2.27 GiB measured; :data:`CPU_SAFETY`
#: covers the difference.
_ACTIVATION_TERMS = (10, 2, 3)
CPU_SAFETY = 1.25


def estimate_cpu_step_bytes(model: Any, n: int, seq_len: int) -> int:
    """What one training step with a mini-batch of ``n`` sequences of ``seq_len`` tokens needs
    in RAM on a CPU, estimated: the weights, their gradients and the AdamW moments (16 bytes
    per trainable weight) plus the activations one forward + backward keeps
    (:data:`_ACTIVATION_TERMS` per token and layer), times :data:`CPU_SAFETY`."""
    config = getattr(getattr(model[0], "auto_model", None), "config", None)
    hidden = int(getattr(config, "hidden_size", 768))
    ffn = int(getattr(config, "intermediate_size", 4 * hidden))
    layers = int(getattr(config, "num_hidden_layers", 12))
    heads = int(getattr(config, "num_attention_heads", 12))
    weights = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    h, f, a = _ACTIVATION_TERMS
    per_token = layers * (h * hidden + f * ffn + a * heads * seq_len) * 4
    return int(CPU_SAFETY * (4 * weights + 12 * trainable + n * seq_len * per_token))


def available_memory_bytes() -> int | None:
    """Memory the system can give this process now (Linux ``MemAvailable``; ``None`` where it
    cannot be read)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_mini_batch_fits(model: Any, mini: int, seq_len: int, device: str, precision: str, *,
                          available: int | None = None) -> None:
    """Refuse a mini-batch that cannot fit before any long step runs.

    On CUDA, one forward + backward of ``mini`` sequences of ``seq_len`` tokens runs and its
    peak is compared with the budget; on CPU the step's RAM is estimated
    (:func:`estimate_cpu_step_bytes`) and compared with ``available``
    (:func:`available_memory_bytes` by default). A CPU that runs out of memory does not raise:
    the system stops the process, after the mining and the first evaluation, which is why the
    estimate is checked first.

    Raises:
        MiniBatchMemoryError: it does not fit (names the mini-batch, the sizes and the fix).
    """
    from ..errors import MiniBatchMemoryError

    fix = ("lower mini_batch_size (--mini-batch-size: it changes memory and speed, not the "
           "gradients) or max_seq_length, or leave mini_batch_size unset")
    if str(device).startswith("cuda"):
        budget = _cuda_budget(model)
        peak = cuda_peak_bytes(model, mini, seq_len, precision)
        if peak is None or peak > budget:
            used = "ran out of memory" if peak is None else f"peaked at {peak / 2**30:.1f} GiB"
            raise MiniBatchMemoryError(
                f"mini_batch_size={mini} does not fit on the GPU: one forward + backward of "
                f"{mini} sequences of {seq_len} tokens ({precision}) {used}, with "
                f"{budget / 2**30:.1f} GiB to spend; {fix} (unset, the largest that fits is "
                "probed)", mini, peak, int(budget))
        return
    need = estimate_cpu_step_bytes(model, mini, seq_len)
    have = available if available is not None else available_memory_bytes()
    if have is not None and need > have:
        raise MiniBatchMemoryError(
            f"mini_batch_size={mini} does not fit in memory: a training step with {mini} "
            f"sequences of {seq_len} tokens needs about {need / 2**30:.1f} GiB (weights, "
            f"gradients, optimizer and activations, estimated), {have / 2**30:.1f} GiB are "
            f"available; {fix}", mini, need, have)


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


def end_autocast(trainer: Any) -> None:
    """Take the training precision off the trained model, so that what runs after training
    (the report's evaluations, the caller's own use) computes as the saved model serves.

    Under fp16/bf16, accelerate wraps the model's ``forward`` in autocast when the trainer
    prepares it, and the wrapper stays after ``train()`` returns: encoding or scoring with the
    model object would still run its matrix products in half precision, while the saved
    weights load (and serve) in float32. ``unwrap_model(keep_fp32_wrapper=False)`` is
    accelerate's own way to remove it.
    """
    trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)


def warmup_kwargs(ratio: float) -> dict[str, Any]:
    """The warmup as a share of the steps: ``warmup_ratio`` before transformers 5, which takes
    a float ``warmup_steps`` below 1 as that share instead (and drops ``warmup_ratio``)."""
    import transformers

    major = int(transformers.__version__.split(".", 1)[0])
    if major >= 5:
        return {"warmup_steps": float(ratio)}
    return {"warmup_ratio": float(ratio)}


#: the config fields that hold the attention-probability dropout: BERT, XLM-R, ELECTRA
#: (``attention_probs_dropout_prob``); DistilBERT (BERTino), ModernBERT and most newer models
#: (``attention_dropout``).
ATTENTION_DROPOUT_KEYS = ("attention_probs_dropout_prob", "attention_dropout")


def _attention_dropout_key(config: Any) -> str | None:
    return next((k for k in ATTENTION_DROPOUT_KEYS if hasattr(config, k)), None)


def attention_dropout_kwargs(base_model: str, p: float | None,
                             device: str = "cpu") -> tuple[dict[str, Any], Any]:
    """``config_kwargs`` that load ``base_model`` with attention dropout ``p`` (``None``: the
    model's own), and a function to call on the loaded model's config: it puts the base's own
    value back, so that the saved model's config is the base's (with ``p``), or says once what
    the model's own dropout costs on a CPU (without ``p``).

    Attention dropout draws one random number per attention weight (batch x heads x length^2):
    on a CPU that draw cost more than twice the rest of the step (docs/training.md, the speed
    table), while the hidden-state dropout, a length times smaller, costs little. The modules
    read the value when they are built, so putting the config's value back afterwards keeps
    them at ``p``.

    Raises:
        ValueError: a base whose config names no attention dropout (``p`` itself is checked
            by :meth:`TrainConfig.validate`).
    """
    if p is None:
        return {}, lambda config: _note_attention_dropout(config, device)
    from transformers import AutoConfig

    base_config = AutoConfig.from_pretrained(base_model)
    key = _attention_dropout_key(base_config)
    if key is None:
        raise ValueError(f"attention_dropout={p}: the config of {base_model} "
                         f"({type(base_config).__name__}) has none of {ATTENTION_DROPOUT_KEYS}; "
                         "leave attention_dropout unset for this base")
    own = getattr(base_config, key)

    def restore(config: Any) -> None:
        setattr(config, key, own)

    return {key: float(p)}, restore


def _note_attention_dropout(config: Any, device: str) -> None:
    """On a CPU, say once what the model's own attention dropout costs when it is left on."""
    key = _attention_dropout_key(config)
    own = getattr(config, key, 0.0) if key else 0.0
    if not str(device).startswith("cuda") and own:
        logger.info("attention dropout %g (the model's own) is on: on a CPU it costs most of "
                    "each training step (multilingual-e5-small trained 3.3x faster in float32 "
                    "and 4.9x under bf16 without it); attention_dropout=0 "
                    "(--attention-dropout 0) turns it off (docs/training.md, the speed table)",
                    own)
