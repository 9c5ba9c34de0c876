"""What the library asks of an encoder: :class:`TextEncoder`, and the Matryoshka slicing.

:class:`TextEncoder` gives the model id, the full dimension, what the model reads, token
lengths, and ``encode`` returning full and truncated vectors from one pass; it owns the
validation of texts and dims and the Matryoshka slicing once, for every implementation.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..errors import TruncationWarning

#: texts (or reranker pairs) per forward pass when the caller does not choose
DEFAULT_BATCH_SIZE = 32

__all__ = ["Encoded", "Kind", "TextEncoder", "matryoshka_slice"]

Kind = Literal["query", "document"]


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

    def wants_progress_bar(self, n: int) -> bool:
        """Whether ``n`` texts deserve a progress bar when the caller does not say: more than
        four default batches, whatever :attr:`batch_size` is."""
        return n > 4 * max(self.batch_size, DEFAULT_BATCH_SIZE)

    @property
    def max_seq_length(self) -> int | None:
        """Tokens the model reads (``None``: unknown)."""
        return None

    @property
    def truncates_at(self) -> int | None:
        """Tokens beyond which the model cuts a text (``None``: it never cuts one, or the
        length is unknown): :attr:`max_seq_length` when there is a tokenizer to count with. An
        encoder that embeds longer texts whole (in windows) returns ``None``."""
        return self.max_seq_length if self.tokenizer is not None else None

    @property
    def tokenizer(self) -> Any | None:
        """The model's Hugging Face tokenizer (``None``: none known)."""
        return None

    @property
    def default_fusion(self) -> Mapping[str, Any] | None:
        """The hybrid fusion this model declares for itself, as the settings of
        :class:`~bertino_rag.search.fusion.Fusion` (``{"method": "minmax", "weight": 0.3}``),
        used when a :class:`~bertino_rag.Retriever` is given no ``fusion``; ``None``: the
        library's default."""
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
        limit = self.truncates_at
        if limit is None or not texts:
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
